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

import time
from dataclasses import dataclass, field

import numpy as np

from .index import Index
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
    sentence_cosine: dict[int, float]  # first encoder's raw cosine of every candidate sentence
    specificity: float  # best sentence cosine minus the cosine to generic text (abstention feature)
    timings_ms: dict[str, float] = field(default_factory=dict)
    query_vector: np.ndarray | None = None  # the encoded question (fused layout), for rag.features


def zscore(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return values
    std = float(values.std())
    return (values - values.mean()) / (std if std > 1e-9 else 1.0)


def _lexical_gate(index: Index, question: str, settings: Settings) -> tuple[str | None, bool]:
    if settings.lexical == "never" or settings.lexical_weight <= 0:
        return None, False
    qlang = detect_language(question)
    if settings.lexical == "always":
        return qlang, True
    return qlang, qlang is not None and qlang in index.languages


def retrieve(index: Index, query_vector: np.ndarray, question: str, settings: Settings) -> Retrieval:
    """Rank candidate chunks and score their sentences for one encoded question."""
    t0 = time.perf_counter()
    q = np.ascontiguousarray(query_vector, dtype=np.float32).reshape(1, -1)
    n_chunks, n_sents = len(index.chunks), len(index.sentences)
    k = min(settings.candidates, n_chunks)
    _, chunk_ids = index.chunk_store.search(q, k)
    _, sent_ids = index.sentence_store.search(q, min(settings.candidates, n_sents))
    owner = index.sentence_chunk
    candidates = {int(c) for c in chunk_ids[0] if c >= 0}
    candidates.update(int(owner[s]) for s in sent_ids[0] if s >= 0)

    qlang, lexical = _lexical_gate(index, question, settings)
    tokens = tokenize(question) if lexical else []
    lexical = lexical and bool(tokens)
    bm25_sent_all = None
    if lexical:
        bm25_chunk_all = bm25_scores(index.bm25_chunks, tokens)
        top_lex = top_k(bm25_chunk_all, k)
        candidates.update(int(c) for c in top_lex if bm25_chunk_all[c] > 0)
        bm25_sent_all = bm25_scores(index.bm25_sentences, tokens)
    t_search = time.perf_counter()

    cand = np.array(sorted(candidates), dtype=np.int64)
    bounds = [(index.chunks[c].first_sentence, index.chunks[c].last_sentence) for c in cand]
    sents = np.array(sorted({s for a, b in bounds for s in range(a, b)}), dtype=np.int64)
    position = {int(s): i for i, s in enumerate(sents)}
    members = [[position[s] for s in range(a, b)] for a, b in bounds]

    chunk_score = np.zeros(len(cand))
    sent_score = np.zeros(len(sents))
    first_sent_cos = np.zeros(len(sents))
    specificity = -1.0
    # read once: from a memory map (FAISS) or in one request per kind (Milvus)
    cand_vectors, sent_vectors = index.chunk_store.vectors(cand), index.sentence_store.vectors(sents)
    for i, part in enumerate(index.parts):
        qp = q[0, part.start : part.stop] / part.scale
        c_cos = cand_vectors[:, part.start : part.stop] @ qp / part.scale
        s_cos = sent_vectors[:, part.start : part.stop] @ qp / part.scale if sents.size else np.zeros(0)
        best = np.array([s_cos[m].max() if m else -1.0 for m in members])
        chunk_score += part.weight * (zscore(c_cos) + zscore(best))
        sent_score += part.weight * zscore(s_cos)
        if i == 0:
            first_sent_cos = s_cos
            if s_cos.size:
                specificity = float(s_cos.max() - qp @ (index.background[part.start : part.stop] / part.scale))
    if lexical and bm25_sent_all is not None and sents.size:
        same = (np.ones(len(sents), dtype=bool) if settings.lexical == "always"
                else np.asarray(index.sentence_lang[sents] == qlang, dtype=bool))
        lex = settings.lexical_weight * zscore(bm25_sent_all[sents]) * same
        sent_score += lex
        chunk_score += settings.lexical_weight * zscore(
            np.array([bm25_sent_all[sents[m]].max() if m else 0.0 for m in members])
        ) * np.array([same[m[0]] if m else False for m in members])

    order = np.argsort(-chunk_score, kind="stable")
    ranked = []
    for i in order:
        m = members[i]
        best_sent = int(sents[m[int(np.argmax(first_sent_cos[m]))]]) if m else -1
        ranked.append(RankedChunk(int(cand[i]), float(chunk_score[i]), best_sent))
    t_end = time.perf_counter()
    return Retrieval(
        question=question, question_lang=qlang, lexical=lexical, ranked=ranked,
        sentence_score=dict(zip(sents.tolist(), sent_score.tolist(), strict=True)),
        sentence_cosine=dict(zip(sents.tolist(), first_sent_cos.astype(float).tolist(), strict=True)),
        specificity=specificity,
        timings_ms={"search": (t_search - t0) * 1000, "score": (t_end - t_search) * 1000},
        query_vector=q[0],
    )
