"""Stage 5, retrieve: rank chunks for a question by dense chunk, dense best-sentence and lexical scores.

Candidates come from the FAISS chunk and sentence indexes (the union of both); each
candidate chunk is then scored exactly as

    z(chunk cosine) + z(best sentence cosine) [+ w · z(BM25) when the question is in the
    language of the chunk's document]

with z-scores taken over the candidates, so the parts add up whatever their scales.
BM25 is gated on language because it hurt cross-lingual questions in our measurements and
helped same-language ones (see docs/evaluation.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .index import Index, tokenize
from .load import detect_language
from .settings import Settings


@dataclass(frozen=True)
class RankedChunk:
    chunk: int  # chunk id in the index
    score: float  # fused z-score used for ranking
    cosine: float  # raw dense cosine of the chunk
    best_sentence: int
    best_sentence_cosine: float


@dataclass
class Retrieval:
    question: str
    question_lang: str | None
    lexical: bool
    ranked: list[RankedChunk]
    sentence_cosine: dict[int, float]  # raw dense cosine of every candidate sentence
    sentence_lexical: dict[int, float]  # z-scored BM25 of candidate sentences (empty when not used)
    timings_ms: dict[str, float] = field(default_factory=dict)


def zscore(values: np.ndarray) -> np.ndarray:
    if values.size == 0:
        return values.astype(np.float64)
    std = float(values.std())
    return (values - values.mean()) / (std if std > 1e-9 else 1.0)


def sentence_chunks(index: Index) -> np.ndarray:
    """For each sentence, the first chunk that holds it (cached on the index)."""
    cached = getattr(index, "_sentence_chunk", None)
    if cached is None:
        cached = np.zeros(len(index.sentences), dtype=np.int64)
        for cid in range(len(index.chunks) - 1, -1, -1):
            c = index.chunks[cid]
            cached[c.first_sentence : c.last_sentence] = cid
        index._sentence_chunk = cached  # type: ignore[attr-defined]
    return cached


def retrieve(index: Index, query_vector: np.ndarray, question: str, settings: Settings) -> Retrieval:
    """Rank candidate chunks for one question whose encoded vector is ``query_vector``."""
    t0 = time.perf_counter()
    q = np.ascontiguousarray(query_vector, dtype=np.float32).reshape(1, -1)
    n_chunks, n_sents = len(index.chunks), len(index.sentences)
    k = min(settings.candidates, n_chunks)
    _, chunk_ids = index.chunk_faiss.search(q, k)
    _, sent_ids = index.sentence_faiss.search(q, min(settings.candidates * 2, n_sents))
    owner = sentence_chunks(index)
    candidates = {int(c) for c in chunk_ids[0] if c >= 0}
    candidates.update(int(owner[s]) for s in sent_ids[0] if s >= 0)

    qlang = detect_language(question) if settings.lexical == "same-language" else None
    lexical = settings.lexical == "always" or (
        settings.lexical == "same-language" and qlang is not None
        and any(d.lang == qlang for d in index.documents.values())
    )
    tokens = tokenize(question) if lexical else []
    lexical = lexical and bool(tokens) and settings.lexical_weight > 0
    if lexical:
        bm25_all = np.asarray(index.bm25_chunks.get_scores(tokens), dtype=np.float64)
        top_lex = np.argsort(-bm25_all)[:k]
        candidates.update(int(c) for c in top_lex if bm25_all[c] > 0)
    t_search = time.perf_counter()

    cand = np.array(sorted(candidates), dtype=np.int64)
    chunk_cos = index.chunk_vectors[cand] @ q[0]
    sent_lists = [range(index.chunks[c].first_sentence, index.chunks[c].last_sentence) for c in cand]
    all_sents = np.array(sorted({s for r in sent_lists for s in r}), dtype=np.int64)
    sent_cos_arr = index.sentence_vectors[all_sents] @ q[0] if all_sents.size else np.zeros(0)
    sent_cos = dict(zip(all_sents.tolist(), sent_cos_arr.astype(float).tolist()))
    best_ids = [max(r, key=lambda s: sent_cos[s]) if len(r) else -1 for r in sent_lists]
    best_cos = np.array([sent_cos[s] if s >= 0 else -1.0 for s in best_ids])

    score = zscore(chunk_cos.astype(np.float64)) + zscore(best_cos)
    sentence_lexical: dict[int, float] = {}
    if lexical:
        same = np.array([
            settings.lexical == "always" or index.documents[index.chunks[c].doc].lang == qlang for c in cand
        ])
        score = score + settings.lexical_weight * zscore(bm25_all[cand]) * same
        bm25_sent = np.asarray(index.bm25_sentences.get_scores(tokens), dtype=np.float64)[all_sents]
        sentence_lexical = dict(zip(all_sents.tolist(), (settings.lexical_weight * zscore(bm25_sent)).tolist()))
    order = np.argsort(-score, kind="stable")
    ranked = [
        RankedChunk(int(cand[i]), float(score[i]), float(chunk_cos[i]), int(best_ids[i]), float(best_cos[i]))
        for i in order
    ]
    t_end = time.perf_counter()
    return Retrieval(
        question=question, question_lang=qlang, lexical=lexical, ranked=ranked, sentence_cosine=sent_cos,
        sentence_lexical=sentence_lexical,
        timings_ms={"search": (t_search - t0) * 1000, "score": (t_end - t_search) * 1000},
    )
