"""Stage 5, retrieve: rank chunks and score sentences for a question.

Candidates are the union of the nearest chunks, the chunks of the nearest sentences (both
from FAISS over the fused vectors) and, when lexical search applies, the best BM25 chunks.
Each candidate chunk is then scored exactly, per encoder of the model (e5 and USE for the
default ``e5+use``) with weight w:

    sum_w  w * [ z(chunk cosine) + z(best sentence cosine) ]
      + lexical_weight * z(best sentence BM25)       only when the question's language
                                                     is the document's language

z-scores are taken over the candidates, so parts of different scales add up. Sentences get
``sum_w w * z(sentence cosine) + lexical_weight * z(BM25)``. On the XQuAD development sets
the chunk+best-sentence pairing was worth ~4 points of passage hit@1 over chunks alone, and
BM25 helped same-language questions but hurt cross-lingual ones, hence the language gate
(docs/evaluation.md).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field

import numpy as np

from .index import Index
from .index.spans import FIRST, LAST
from .lexical import bm25_scores, tokenize, top_k
from .load import detect_language
from .settings import Settings


@dataclass(frozen=True)
class RankedChunk:
    chunk: int  # chunk id in the index
    score: float  # fused z-score used for ranking
    best_sentence: int  # the chunk's best sentence by the first encoder's cosine


@dataclass
class Retrieval:
    question: str
    question_lang: str | None
    lexical: bool
    ranked: list[RankedChunk]
    sentence_score: dict[int, float]  # fused z-score of every candidate sentence
    background: float  # first encoder's cosine of the question to generic text (rag/data/background.tsv)
    timings_ms: dict[str, float] = field(default_factory=dict)
    query_terms: tuple[np.ndarray, np.ndarray] | None = None  # its latent terms (ids, weights), for rag.features
    # every candidate sentence's raw cosine per encoder of the model (columns: ``Index.parts``),
    # rows in the order of ``sentence_ids`` (sorted): computed once here, read by rag.features
    sentence_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    part_cosines: np.ndarray = field(default_factory=lambda: np.zeros((0, 1)))

    @functools.cached_property
    def sentence_cosine(self) -> dict[int, float]:
        """The first encoder's raw cosine of every candidate sentence, by sentence id (read from
        ``part_cosines``, not stored twice)."""
        first = self.part_cosines[:, 0] if self.part_cosines.shape[1] else np.zeros(len(self.sentence_ids))
        return dict(zip(self.sentence_ids.tolist(), first.astype(float).tolist(), strict=True))

    @property
    def specificity(self) -> float:
        """The best sentence's cosine minus the cosine to generic text (an abstention feature); -1 without sentences."""
        return max(self.sentence_cosine.values()) - self.background if self.sentence_cosine else -1.0


def zscore(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return values
    std = float(values.std())
    return (values - values.mean()) / (std if std > 1e-9 else 1.0)


@dataclass(frozen=True)
class LexicalEvidence:
    """What retrieval needs from the question's words alone: computed while the question is encoded."""

    question_lang: str | None
    lexical: bool  # does BM25 count for this question (language gate, and words to match)
    chunk_scores: np.ndarray | None  # BM25 of every chunk (None when lexical is False)
    sentence_scores: np.ndarray | None  # BM25 of every sentence


def lexical_evidence(index: Index, question: str, settings: Settings) -> LexicalEvidence:
    """The question's language and, when lexical search applies, its BM25 scores over the index.

    Depends on the question text only, not on its vector: ``Pipeline`` runs it while the
    encoders run (they release the GIL).
    """
    if settings.lexical == "never" or settings.lexical_weight <= 0:
        return LexicalEvidence(None, False, None, None)
    qlang = detect_language(question)
    lexical = settings.lexical == "always" or (qlang is not None and qlang in index.languages)
    tokens = tokenize(question) if lexical else []
    if not tokens:
        return LexicalEvidence(qlang, False, None, None)
    return LexicalEvidence(qlang, True, bm25_scores(index.bm25_chunks, tokens),
                           bm25_scores(index.bm25_sentences, tokens))


def _segments(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, non-empty mask) of consecutive segments of these lengths in a flat array."""
    offsets = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    return offsets, lengths > 0


def _segment_max(values: np.ndarray, offsets: np.ndarray, filled: np.ndarray, empty: float) -> np.ndarray:
    """The maximum of each segment of ``values`` (``empty`` for an empty segment)."""
    out = np.full(len(offsets), empty, dtype=np.float64)
    if values.size:
        out[filled] = np.maximum.reduceat(values, offsets[filled])
    return out


def retrieve(index: Index, query_vector: np.ndarray, question: str, settings: Settings,
             evidence: LexicalEvidence | None = None,
             query_terms: tuple[np.ndarray, np.ndarray] | None = None) -> Retrieval:
    """Rank candidate chunks and score their sentences for one encoded question.

    ``evidence`` is ``lexical_evidence(index, question, settings)`` when the caller computed it
    already (the pipeline does, while encoding); ``query_terms`` the question's latent terms,
    carried for the answer stage.
    """
    t0 = time.perf_counter()
    q = np.ascontiguousarray(query_vector, dtype=np.float32).reshape(1, -1)
    n_chunks, n_sents = len(index.chunks), len(index.sentences)
    k = min(settings.candidates, n_chunks)
    _, chunk_ids = index.chunk_store.search(q, k)
    _, sent_ids = index.sentence_store.search(q, min(settings.candidates, n_sents))
    owner = index.sentence_chunk
    found = [chunk_ids[0][chunk_ids[0] >= 0], owner[sent_ids[0][sent_ids[0] >= 0]]]

    if evidence is None:
        evidence = lexical_evidence(index, question, settings)
    qlang, lexical = evidence.question_lang, evidence.lexical
    bm25_sent_all = evidence.sentence_scores
    if lexical and evidence.chunk_scores is not None:
        bm25_chunk_all = evidence.chunk_scores
        top_lex = np.asarray(top_k(bm25_chunk_all, k), dtype=np.int64)
        found.append(top_lex[bm25_chunk_all[top_lex] > 0])
    cand = np.unique(np.concatenate(found).astype(np.int64))
    t_search = time.perf_counter()

    # Each candidate's sentences form a contiguous range of ids, so of positions in ``sents``;
    # ``flat`` lists every candidate's sentence positions one candidate after the other.
    first, last = index.chunks.rows[cand, FIRST], index.chunks.rows[cand, LAST]  # no Chunk built
    lengths = np.maximum(last - first, 0)
    offsets, filled = _segments(lengths)
    ids = np.repeat(first - offsets, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)
    sents = np.unique(ids)
    flat = np.searchsorted(sents, ids)

    chunk_score = np.zeros(len(cand))
    sent_score = np.zeros(len(sents))
    part_cos = np.zeros((len(sents), len(index.parts)))
    background = 0.0
    # read once: from a memory map (FAISS) or in one request per kind (Milvus)
    cand_vectors, sent_vectors = index.chunk_store.vectors(cand), index.sentence_store.vectors(sents)
    for i, part in enumerate(index.parts):
        qp = q[0, part.start : part.stop] / part.scale
        c_cos = cand_vectors[:, part.start : part.stop] @ qp / part.scale
        s_cos = sent_vectors[:, part.start : part.stop] @ qp / part.scale if sents.size else np.zeros(0)
        best = _segment_max(s_cos[flat], offsets, filled, -1.0)
        chunk_score += part.weight * (zscore(c_cos) + zscore(best))
        sent_score += part.weight * zscore(s_cos)
        part_cos[:, i] = s_cos
        if i == 0:
            background = float(qp @ (index.background[part.start : part.stop] / part.scale))
    first_sent_cos = part_cos[:, 0] if index.parts else np.zeros(len(sents))
    if lexical and bm25_sent_all is not None and sents.size:
        same = (np.ones(len(sents), dtype=bool) if settings.lexical == "always"
                else np.asarray(index.sentence_lang[sents] == qlang, dtype=bool))
        lex = settings.lexical_weight * zscore(bm25_sent_all[sents]) * same
        sent_score += lex
        # a chunk counts when its first sentence is in the question's language
        chunk_same = np.zeros(len(cand), dtype=bool)
        chunk_same[filled] = same[flat[offsets[filled]]]
        chunk_score += settings.lexical_weight * zscore(
            _segment_max(bm25_sent_all[sents[flat]], offsets, filled, 0.0)) * chunk_same

    order = np.argsort(-chunk_score, kind="stable")
    best_sent = np.full(len(cand), -1, dtype=np.int64)
    if flat.size:  # each chunk's best sentence by the first encoder: the first position of its maximum
        values = first_sent_cos[flat]
        top = _segment_max(values, offsets, filled, np.inf)
        hits = np.flatnonzero(values == np.repeat(top, lengths))
        best_sent[filled] = sents[flat[hits[np.searchsorted(hits, offsets[filled])]]]
    ranked = [RankedChunk(c, s, b) for c, s, b in zip(cand[order].tolist(), chunk_score[order].tolist(),
                                                      best_sent[order].tolist(), strict=True)]
    t_end = time.perf_counter()
    return Retrieval(
        question=question, question_lang=qlang, lexical=lexical, ranked=ranked,
        sentence_score=dict(zip(sents.tolist(), sent_score.tolist(), strict=True)),
        background=background,
        timings_ms={"search": (t_search - t0) * 1000, "fuse": (t_end - t_search) * 1000},
        query_terms=query_terms, sentence_ids=sents, part_cosines=part_cos,
    )
