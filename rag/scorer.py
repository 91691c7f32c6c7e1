"""Learned scores: which candidate sentence answers, and how likely the answer is right.

Two logistic regressions, fit by scripts/train_scorer.py on the XQuAD development sets (and
the seed tuning questions) and stored as JSON in rag/data/scorer.json, never pickled; here
they run in NumPy only.

- the sentence model: a linear score over ``rag.features`` rows, trained so that its softmax
  over a question's candidates is the probability that each one is the answering sentence;
- two question-level models over the same features (the best sentence's score and share, its
  margin over the runner-up, specificity, coverage of the question's words, question-type
  match): the answer model, P(the quoted sentences hold the answer), which is the answer's
  confidence; and the abstention model, P(the documents answer the question), below whose
  stored threshold the program abstains. Both learn from the XQuAD and seed tuning questions
  as asked; the abstention model also from made unanswerable ones (the answering sentences
  masked out; the question's document left out).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

from .errors import ScorerError
from .features import SENTENCE_FEATURES, SentenceFeatures, fold

# Question-level features of the answer model, from the candidates' sentence-model logits.
ANSWER_FEATURES = ("best_logit", "best_share", "margin", "specificity", "best_e5_spec", "coverage", "ngram_coverage",
                   "type_match", "top_chunk_fused", "best_terms", "terms_max", "names_found", "type_found")
NO_RUNNER_UP = 5.0  # the margin of a lone candidate: a clear lead (logit units)
NEAR_DUPLICATE = 0.6  # character 4-gram Jaccard at which a support only repeats what is quoted


@dataclass(frozen=True)
class Logistic:
    """``sigmoid(((x - mean) / scale) @ weights + bias)``, features named in ``names``."""

    names: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float

    def logit(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return np.asarray(((x - self.mean) / self.scale) @ self.weights + self.bias, dtype=np.float64)

    def prob(self, x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.clip(self.logit(x), -50, 50)))

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "weights": self.weights.tolist(), "bias": self.bias}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Logistic:
        return cls(tuple(data["names"]), np.asarray(data["mean"], dtype=np.float64),
                   np.asarray(data["scale"], dtype=np.float64), np.asarray(data["weights"], dtype=np.float64),
                   float(data["bias"]))


@dataclass(frozen=True)
class ScorerModel:
    sentence: Logistic
    answer: Logistic  # P(the quoted sentences hold the answer): the confidence
    abstain: Logistic  # P(the documents hold an answer)
    threshold: float  # abstain when the abstention model's probability is below this
    support_min: float  # a supporting sentence needs at least this share of the candidates' probability
    info: dict[str, Any]  # how it was trained (written by the training script)

    def to_dict(self) -> dict[str, Any]:
        return {"sentence": self.sentence.to_dict(), "answer": self.answer.to_dict(),
                "abstain": self.abstain.to_dict(), "threshold": self.threshold,
                "support_min": self.support_min, "info": self.info}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScorerModel:
        return cls(Logistic.from_dict(data["sentence"]), Logistic.from_dict(data["answer"]),
                   Logistic.from_dict(data["abstain"]),
                   float(data["threshold"]), float(data["support_min"]), dict(data.get("info", {})))


SCORER, SCORER_NO_TERMS = "scorer.json", "scorer-no-terms.json"  # with and without latent terms


@lru_cache(maxsize=4)
def bundled_model(name: str = SCORER) -> ScorerModel:
    """The weights shipped in rag/data (read once per process)."""
    try:
        text = (resources.files("rag") / "data" / name).read_text(encoding="utf-8")
        model = ScorerModel.from_dict(json.loads(text))
    except (OSError, ValueError, KeyError) as exc:
        raise ScorerError(f"cannot read the answer scorer rag/data/{name} ({exc}): reinstall the package or "
                          "retrain it with `python scripts/train_scorer.py`") from exc
    if model.sentence.names != SENTENCE_FEATURES or not model.answer.names == model.abstain.names == ANSWER_FEATURES:
        raise ScorerError(f"rag/data/{name} was trained on other features than this version computes: "
                          "retrain it with `python scripts/train_scorer.py`")
    return model


def answer_features(sf: SentenceFeatures, logits: np.ndarray) -> np.ndarray:
    """The answer model's row (``ANSWER_FEATURES``) for the candidates ``sf`` scored ``logits``."""
    if not sf.sentences:
        return np.array([-10.0, 0.0, 0.0, sf.specificity, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0])
    col = {name: i for i, name in enumerate(SENTENCE_FEATURES)}
    order = np.argsort(-logits, kind="stable")
    best = int(order[0])
    margin = float(logits[best] - logits[order[1]]) if len(order) > 1 else NO_RUNNER_UP
    row = sf.x[best]
    kinds = [col[k] for k in ("type_when", "type_number", "type_who", "type_where")]
    type_match = row[kinds].sum()
    return np.array([logits[best], float(softmax(logits)[best]), margin, sf.specificity, row[col["e5_spec"]],
                     row[col["lex_prefix"]], row[col["lex_ngram"]], type_match, sf.x[:, col["fused"]].max(),
                     row[col["terms"]], sf.x[:, col["terms"]].max(),
                     # evidence anywhere among the candidates: the question's names, the kind of thing it asks
                     sf.x[:, col["lex_name"]].max(), sf.x[:, kinds].sum(axis=1).max()])


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max())
    return np.asarray(e / e.sum(), dtype=np.float64)


def grams(text: str) -> set[str]:
    folded = " ".join(fold(text).split())
    return {folded[i : i + 4] for i in range(max(1, len(folded) - 3))}


def near_duplicate(a: set[str], b: set[str]) -> bool:
    return len(a & b) / max(len(a | b), 1) >= NEAR_DUPLICATE


@dataclass(frozen=True)
class Choice:
    """The sentences an answer quotes: the best first, then its supports."""

    sentences: tuple[int, ...]  # index sentence ids, best first
    probs: tuple[float, ...]  # sentence-model probability of each (softmax over the candidates)
    confidence: float  # answer-model probability that the quoted sentences hold the answer
    answerable: float  # abstention-model probability that the documents answer the question
    abstain: bool


def choose(sf: SentenceFeatures, texts: list[str], model: ScorerModel, max_sentences: int = 3) -> Choice:
    """Score the candidates, pick the best sentence and at most ``max_sentences - 1`` supports.

    A support must itself be likely (``support_min``) and must not nearly repeat a sentence
    already quoted (``texts[i]`` is candidate i's text).
    """
    if not sf.sentences:
        row = answer_features(sf, np.zeros(0))[None, :]
        return Choice((), (), float(model.answer.prob(row)[0]), float(model.abstain.prob(row)[0]), True)
    logits = model.sentence.logit(sf.x)
    probs = softmax(logits)
    row = answer_features(sf, logits)[None, :]
    confidence, answerable = float(model.answer.prob(row)[0]), float(model.abstain.prob(row)[0])
    order = [int(i) for i in np.argsort(-logits, kind="stable")]
    picked = [order[0]]
    shown = [grams(texts[order[0]])]
    for i in order[1:]:
        if len(picked) >= max_sentences or probs[i] < model.support_min:
            break
        g = grams(texts[i])
        if any(near_duplicate(g, other) for other in shown):
            continue
        picked.append(i)
        shown.append(g)
    return Choice(tuple(sf.sentences[i] for i in picked), tuple(float(probs[i]) for i in picked),
                  confidence, answerable, answerable < model.threshold)
