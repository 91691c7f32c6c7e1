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
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ScorerError
from .features import COLUMN, SENTENCE_FEATURES, TYPE_COLUMNS, SentenceFeatures, fold

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

# The reader stage (rag.reader): the order of the sentences it read, from the scorer's and its own logit;
# the answer and abstention models see its evidence beside the scorer's.
RERANK_FEATURES = ("scorer_logit", "reader_logit", "span_score")
READER_FEATURES = ("reader_best", "reader_margin", "reader_first", "reader_span", "span_best", "span_first")
# The stage's answer and abstention models read the answer features less those that no longer earn their
# place beside the reader (the ablation in docs/reader.md: without the latent terms' P(answerable) tells
# near misses and off-topic questions from answerable ones as well, and the confidence is as well calibrated).
NOT_BESIDE_READER = ("best_terms", "terms_max")
STAGE_FEATURES = tuple(n for n in ANSWER_FEATURES if n not in NOT_BESIDE_READER) + READER_FEATURES
_STAGE_ANSWER_COLUMNS = [ANSWER_FEATURES.index(n) for n in STAGE_FEATURES if n in ANSWER_FEATURES]
STAGE = "stage.json"  # in rag/data/reader/, beside the reader's weights


@dataclass(frozen=True)
class ReaderStage:
    """How the reader's judgement is used (fit by ``python -m rag.train.stage``, out of fold)."""

    sentences: int  # the reader reads the scorer's best this many candidates
    rerank: Logistic  # RERANK_FEATURES -> the order of the read candidates (softmax: their shares)
    answer: Logistic  # STAGE_FEATURES -> P(the quoted sentences hold the answer)
    abstain: Logistic  # the same row -> P(the documents hold an answer)
    threshold: float
    support_min: float
    info: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"sentences": self.sentences, "rerank": self.rerank.to_dict(), "answer": self.answer.to_dict(),
                "abstain": self.abstain.to_dict(), "threshold": self.threshold, "support_min": self.support_min,
                "info": self.info}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReaderStage:
        return cls(int(data["sentences"]), Logistic.from_dict(data["rerank"]), Logistic.from_dict(data["answer"]),
                   Logistic.from_dict(data["abstain"]), float(data["threshold"]), float(data["support_min"]),
                   dict(data.get("info", {})))


@lru_cache(maxsize=2)
def bundled_stage(folder: str | None = None) -> ReaderStage:
    """The reader stage shipped in rag/data/reader (or ``folder``), checked against the features this version makes."""
    path = Path(folder) / STAGE if folder else Path(str(resources.files("rag") / "data" / "reader" / STAGE))
    fix = "reinstall the package, or refit it with `python -m rag.train.stage --write`"
    try:
        stage = ReaderStage.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError) as exc:
        raise ScorerError(f"cannot read the reader stage {path} ({exc}): {fix}") from exc
    if (stage.rerank.names != RERANK_FEATURES
            or not stage.answer.names == stage.abstain.names == STAGE_FEATURES):
        raise ScorerError(f"{path} was fit on other features than this version computes: {fix}")
    return stage


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
        values = dict.fromkeys(ANSWER_FEATURES, 0.0) | {"best_logit": -10.0, "specificity": sf.specificity,
                                                       "best_e5_spec": -1.0, "type_found": -1.0}
        return np.array([values[name] for name in ANSWER_FEATURES])
    order = np.argsort(-logits, kind="stable")
    best = int(order[0])
    row = sf.x[best]
    values = {
        "best_logit": logits[best],
        "best_share": float(softmax(logits)[best]),
        "margin": float(logits[best] - logits[order[1]]) if len(order) > 1 else NO_RUNNER_UP,
        "specificity": sf.specificity,
        "best_e5_spec": row[COLUMN["e5_spec"]],
        "coverage": row[COLUMN["lex_prefix"]],
        "ngram_coverage": row[COLUMN["lex_ngram"]],
        "type_match": row[TYPE_COLUMNS].sum(),
        "top_chunk_fused": sf.x[:, COLUMN["fused"]].max(),
        "best_terms": row[COLUMN["terms"]],
        "terms_max": sf.x[:, COLUMN["terms"]].max(),
        # evidence anywhere among the candidates: the question's names, the kind of thing it asks
        "names_found": sf.x[:, COLUMN["lex_name"]].max(),
        "type_found": sf.x[:, TYPE_COLUMNS].sum(axis=1).max(),
    }
    return np.array([values[name] for name in ANSWER_FEATURES], dtype=np.float64)


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


@dataclass(frozen=True)
class ReadOut:
    """What the reader said of the candidates it read, in the order ``reader_candidates`` names them."""

    logits: np.ndarray  # its answer head
    span_probs: np.ndarray  # its best span's probability
    span_scores: np.ndarray  # best start plus best end logit over the sentence's words

    def rerank_rows(self, scorer_logits: np.ndarray) -> np.ndarray:
        """``RERANK_FEATURES`` rows, given the scorer's logits of the same candidates."""
        return np.column_stack([scorer_logits, self.logits, self.span_scores])

    def head(self, n: int) -> ReadOut:
        return ReadOut(self.logits[:n], self.span_probs[:n], self.span_scores[:n])


def reader_features(read: ReadOut | None, final: np.ndarray) -> np.ndarray:
    """``READER_FEATURES`` of the read candidates, ``final`` their reranked logits."""
    if read is None or not len(read.logits):
        return np.array([-10.0, 0.0, -10.0, 0.0, 0.0, 0.0])
    ranked = np.sort(read.logits)[::-1]
    best = int(np.argmax(final))
    margin = float(ranked[0] - ranked[1]) if len(ranked) > 1 else NO_RUNNER_UP
    return np.array([float(ranked[0]), margin, float(read.logits[best]), float(read.span_probs[best]),
                     float(read.span_scores.max()), float(read.span_scores[best])])


def stage_row(answer_row: np.ndarray, read: ReadOut | None, final: np.ndarray) -> np.ndarray:
    """The stage's row (``STAGE_FEATURES``): the answer features it keeps, then the reader's."""
    return np.concatenate([answer_row[_STAGE_ANSWER_COLUMNS], reader_features(read, final)])


def reader_candidates(logits: np.ndarray, stage: ReaderStage) -> list[int]:
    """The candidates the reader reads: the scorer's best ``stage.sentences`` by its ``logits``."""
    return [int(i) for i in np.argsort(-logits, kind="stable")[: stage.sentences]]


def choose(sf: SentenceFeatures, texts: list[str], model: ScorerModel, max_sentences: int = 3,
           stage: ReaderStage | None = None, read: ReadOut | None = None,
           logits: np.ndarray | None = None) -> Choice:
    """Score the candidates, pick the best sentence and at most ``max_sentences - 1`` supports.

    A support must itself be likely (``support_min``) and must not nearly repeat a sentence
    already quoted (``texts[i]`` is candidate i's text). ``logits`` are the scorer's sentence
    logits when the caller has them (else ``model`` computes them). With the reader ``stage``,
    ``read`` holds what the reader said of the candidates ``reader_candidates`` names:
    only those are quoted, in the stage's order, and its models give confidence and abstention.
    """
    if not sf.sentences:
        row = answer_features(sf, np.zeros(0))[None, :]
        if stage is not None:
            row = stage_row(row[0], None, np.zeros(0))[None, :]
            return Choice((), (), float(stage.answer.prob(row)[0]), float(stage.abstain.prob(row)[0]), True)
        return Choice((), (), float(model.answer.prob(row)[0]), float(model.abstain.prob(row)[0]), True)
    logits = model.sentence.logit(sf.x) if logits is None else logits
    row = answer_features(sf, logits)[None, :]
    if stage is not None and read is not None:
        top = reader_candidates(logits, stage)
        final = stage.rerank.logit(read.rerank_rows(logits[top]))
        row = stage_row(row[0], read, final)[None, :]
        probs = np.zeros(len(logits))
        probs[top] = softmax(final)
        order = [top[int(i)] for i in np.argsort(-final, kind="stable")]
        answer, abstain, support_min, threshold = stage.answer, stage.abstain, stage.support_min, stage.threshold
    else:
        probs = softmax(logits)
        order = [int(i) for i in np.argsort(-logits, kind="stable")]
        answer, abstain, support_min, threshold = model.answer, model.abstain, model.support_min, model.threshold
    confidence, answerable = float(answer.prob(row)[0]), float(abstain.prob(row)[0])
    picked = [order[0]]
    shown = [grams(texts[order[0]])]
    for i in order[1:]:
        if len(picked) >= max_sentences or probs[i] < support_min:
            break
        g = grams(texts[i])
        if any(near_duplicate(g, other) for other in shown):
            continue
        picked.append(i)
        shown.append(g)
    return Choice(tuple(sf.sentences[i] for i in picked), tuple(float(probs[i]) for i in picked),
                  confidence, answerable, answerable < threshold)
