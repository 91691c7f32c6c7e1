"""Evaluation metrics: pure functions over ranks, strings and per-question rows.

Each is checked on hand-made values in tests/test_evaluate_metrics.py; the benchmark
(bench/) imports them too, so `rag eval` and the bench report the same figures.

Definitions (docs/evaluation.md has the long form):

- ranks are 1-based; a document counts once, at its best chunk; items with equal scores are a
  tie and a gold item in a tie ranks after every non-gold item of the tie (pessimistic);
- ``doc_*`` metrics cover questions with a gold ``doc``, ``passage_*`` those with a ``context``;
- ``answer_accuracy`` and ``citation_accuracy`` cover answerable questions; an abstention
  counts as wrong;
- abstention is the positive class for ``abstain_precision`` and ``abstain_recall``.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Protocol

DOC_KS = (1, 3, 5)
PASSAGE_KS = (1, 5)
MRR_K = 10
RETRIEVAL_METRICS = (
    *(f"doc_hit@{k}" for k in DOC_KS),
    f"doc_mrr@{MRR_K}",
    *(f"passage_hit@{k}" for k in PASSAGE_KS),
    f"passage_mrr@{MRR_K}",
)
ANSWER_METRICS = ("answer_accuracy", "citation_accuracy")
ABSTENTION_METRICS = ("abstain_precision", "abstain_recall", "false_abstention_rate")
LATENCY_METRICS = ("p50_ms", "p95_ms")

Metrics = dict[str, float | None]


class Quoted(Protocol):
    """What a citation check needs of a quoted sentence: where it claims to come from, and its text."""

    @property
    def doc(self) -> str: ...
    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...
    @property
    def text(self) -> str: ...


# ---------------------------------------------------------------------------------- ranks


def gold_rank(relevant: Sequence[bool], scores: Sequence[float] | None = None) -> int | None:
    """The 1-based rank of the first relevant item of a ranking, or None when none is relevant.

    With ``scores`` (highest first), items of equal score are a tie, and the rank is the
    pessimistic one: relevant items of a tie come after its other items, so an order the
    scores do not decide earns no credit. Without scores, the positions are the ranking.
    """
    if scores is not None:
        if len(scores) != len(relevant):
            raise ValueError(f"{len(relevant)} items but {len(scores)} scores")
        if any(b > a for a, b in pairwise(scores)):
            raise ValueError("scores must be in ranking order, highest first")
    start = 0
    while start < len(relevant):
        end = start + 1
        if scores is not None:
            while end < len(relevant) and scores[end] == scores[start]:
                end += 1
        found = sum(1 for r in relevant[start:end] if r)
        if found:
            return start + 1 + (end - start - found)
        start = end
    return None


def doc_ranking(ranked: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
    """Distinct documents in the order of their chunks' ranking, each scored by its best chunk."""
    seen: set[str] = set()
    out = []
    for doc, score in ranked:
        if doc not in seen:
            seen.add(doc)
            out.append((doc, score))
    return out


def hit_at(rank: int | None, k: int) -> float:
    return 1.0 if rank is not None and rank <= k else 0.0


def reciprocal_rank(rank: int | None, k: int) -> float:
    """1/rank when the gold item is in the top ``k``, else 0 (the term of MRR@k)."""
    return 1.0 / rank if rank is not None and rank <= k else 0.0


def overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Do two half-open character spans share at least one character?"""
    return a[0] < b[1] and b[0] < a[1]


# ---------------------------------------------------------------------------------- answers


def normalise_text(text: str) -> str:
    """Case-folded, accents removed, whitespace runs (any kind) made one space."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(bare.casefold().split())


def contains_answer(text: str | None, answers: Iterable[str]) -> bool:
    """Does ``text`` contain one of the gold ``answers``, ignoring case, accents and whitespace?"""
    if not text:
        return False
    folded = normalise_text(text)
    return any(normalise_text(a) in folded for a in answers if normalise_text(a))


def citation_correct(
    citations: Sequence[Quoted], answers: Iterable[str], gold_doc: str | None, documents: Mapping[str, str]
) -> bool:
    """Is a quoted sentence holding a gold answer cited to the gold document, with a span that quotes it exactly?"""
    answers = tuple(answers)
    for c in citations:
        if not contains_answer(c.text, answers):
            continue
        right_doc = gold_doc is None or c.doc == gold_doc
        if right_doc and c.doc in documents and documents[c.doc][c.start : c.end] == c.text:
            return True
    return False


# ---------------------------------------------------------------------------------- aggregates


def mean(values: Iterable[float]) -> float | None:
    """The mean, or None for no values (a metric no question counts for)."""
    items = list(values)
    return sum(items) / len(items) if items else None


def abstention_scores(abstained: Sequence[bool], answerable: Sequence[bool]) -> Metrics:
    """Abstention as the positive class: precision and recall on unanswerable questions, and the
    false-abstention rate on answerable ones. None where the denominator is empty."""
    if len(abstained) != len(answerable):
        raise ValueError(f"{len(abstained)} abstentions but {len(answerable)} answerable flags")
    pairs = list(zip(abstained, answerable, strict=True))
    right = sum(1 for a, ok in pairs if a and not ok)
    n_abstained = sum(1 for a, _ in pairs if a)
    n_unanswerable = sum(1 for _, ok in pairs if not ok)
    n_answerable = len(pairs) - n_unanswerable
    return {
        "abstain_precision": right / n_abstained if n_abstained else None,
        "abstain_recall": right / n_unanswerable if n_unanswerable else None,
        "false_abstention_rate": (n_abstained - right) / n_answerable if n_answerable else None,
    }


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100), interpolating linearly between closest ranks (NumPy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


# ---------------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class CaseResult:
    """What happened to one question: the row written by ``--out``."""

    id: str
    question_lang: str
    answerable: bool
    abstained: bool
    question: str = ""
    line: int = 0
    gold_doc: str | None = None
    has_context: bool = False
    doc_rank: int | None = None  # rank of the gold document among distinct documents
    passage_rank: int | None = None  # rank of the first chunk overlapping the gold passage
    answer: str | None = None  # what the user sees; None when abstaining
    answer_correct: bool | None = None  # None for unanswerable questions
    citation_correct: bool | None = None
    confidence: float = 0.0
    # For calibrating abstention without asking again: the value make_answer compares with
    # the threshold, the raw cosine of the best answer sentence, and the sentences that would
    # be shown without the threshold.
    abstain_score: float | None = None
    best_sentence_score: float | None = None
    candidate_answer: str | None = None
    candidate_correct: bool | None = None
    rewritten_question: str | None = None
    citations: tuple[tuple[str, int, int], ...] = ()
    top_docs: tuple[str, ...] = ()
    latency_ms: float = 0.0


def summarise(results: Sequence[CaseResult]) -> Metrics:
    """Every metric over ``results`` (None where no question qualifies), plus ``n``."""
    with_doc = [r for r in results if r.gold_doc is not None]
    with_context = [r for r in results if r.has_context]
    answerable = [r for r in results if r.answerable]
    out: Metrics = {"n": float(len(results))}
    for k in DOC_KS:
        out[f"doc_hit@{k}"] = mean(hit_at(r.doc_rank, k) for r in with_doc)
    out[f"doc_mrr@{MRR_K}"] = mean(reciprocal_rank(r.doc_rank, MRR_K) for r in with_doc)
    for k in PASSAGE_KS:
        out[f"passage_hit@{k}"] = mean(hit_at(r.passage_rank, k) for r in with_context)
    out[f"passage_mrr@{MRR_K}"] = mean(reciprocal_rank(r.passage_rank, MRR_K) for r in with_context)
    out["answer_accuracy"] = mean(float(r.answer_correct is True) for r in answerable)
    out["citation_accuracy"] = mean(float(r.citation_correct is True) for r in answerable)
    out.update(abstention_scores([r.abstained for r in results], [r.answerable for r in results]))
    latencies = [r.latency_ms for r in results]
    out["p50_ms"] = percentile(latencies, 50)
    out["p95_ms"] = percentile(latencies, 95)
    return out
