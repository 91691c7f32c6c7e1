"""Evaluation metrics: pure functions over ranks, strings and per-question rows.

Each is checked on hand-made values in tests/test_evaluate_metrics.py; the benchmark
(bench/) imports them too, so `rag eval` and the bench report the same figures.

Definitions (docs/evaluation.md has the long form):

- ranks are 1-based; a document counts once, at its best chunk; items with equal scores are a
  tie and a gold item in a tie ranks after every non-gold item of the tie (pessimistic);
- ``doc_*`` metrics cover questions with a gold ``doc``, ``passage_*`` those with a ``context``;
- ``answer_accuracy`` and ``citation_accuracy`` cover answerable questions; an abstention
  counts as wrong;
- ``first_sentence_accuracy`` (answerable questions): the first quoted sentence, in the order
  of ``Answer.sentences``, holds a gold answer;
- abstention is the positive class for ``abstain_precision`` and ``abstain_recall``;
  ``abstain_recall_near_miss`` and ``abstain_recall_off_topic`` split the recall by the
  question set's ``near_miss`` flag;
- a question's outcome is right when it was answered with a gold answer or rightly abstained
  on; its confidence in that outcome is ``Answer.confidence`` when answered and one minus it
  when abstaining; the reliability table bins these, and ``ece`` sums the gaps.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
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
ANSWER_METRICS = ("answer_accuracy", "first_sentence_accuracy", "citation_accuracy")
ABSTENTION_METRICS = ("abstain_precision", "abstain_recall", "abstain_recall_near_miss", "abstain_recall_off_topic",
                      "false_abstention_rate")
# the reader's words in the first quoted sentence, through the whole pipeline (SQuAD's F1 and exact match)
SPAN_METRICS = ("span_f1", "span_exact_match", "span_shown", "span_f1_when_shown")
CALIBRATION_METRICS = ("ece",)
LATENCY_METRICS = ("p50_ms", "p95_ms")
RELIABILITY_BINS = 10

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


# ---------------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class ReliabilityBin:
    """One confidence bin of a reliability table: [low, high), the last bin also holding 1.0."""

    low: float
    high: float
    count: int
    mean_confidence: float | None  # None for an empty bin
    accuracy: float | None  # the share of right outcomes in the bin


def reliability_table(confidences: Sequence[float], correct: Sequence[bool],
                      bins: int = RELIABILITY_BINS) -> list[ReliabilityBin]:
    """``bins`` equal-width confidence bins over [0, 1]: how many outcomes, their mean confidence, the share right."""
    if len(confidences) != len(correct):
        raise ValueError(f"{len(confidences)} confidences but {len(correct)} outcomes")
    if bins < 1:
        raise ValueError(f"bins must be at least 1, not {bins}")
    members: list[list[int]] = [[] for _ in range(bins)]
    for i, c in enumerate(confidences):
        if not 0.0 <= c <= 1.0:
            raise ValueError(f"confidence {c} is outside [0, 1]")
        members[min(int(c * bins), bins - 1)].append(i)
    return [
        ReliabilityBin(
            low=b / bins, high=(b + 1) / bins, count=len(ids),
            mean_confidence=mean(confidences[i] for i in ids), accuracy=mean(float(correct[i]) for i in ids),
        )
        for b, ids in enumerate(members)
    ]


def expected_calibration_error(table: Sequence[ReliabilityBin]) -> float | None:
    """Sum over bins of (share of outcomes in the bin) x |accuracy - mean confidence|; None without outcomes."""
    total = sum(b.count for b in table)
    if not total:
        return None
    return sum(b.count / total * abs((b.accuracy or 0.0) - (b.mean_confidence or 0.0)) for b in table if b.count)



def largest_threshold(answerable_scores: Mapping[str, Sequence[float]], target: float,
                      grid: Sequence[float]) -> float | None:
    """The one abstention threshold rule: the largest threshold on ``grid`` at which the false
    abstention rate (the share of answerable questions scoring under it) is at most ``target``
    in every group of ``answerable_scores``; None when no threshold on the grid is."""
    best = None
    for t in sorted(grid):
        if all(sum(score < t for score in scores) / len(scores) <= target
               for scores in answerable_scores.values() if scores):
            best = float(t)
    return best


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
    near_miss: bool | None = None  # from the question set: unanswerable on-topic (True) or off-topic (False)
    group: str | None = None  # from the question set: paraphrases of one question share it
    doc_rank: int | None = None  # rank of the gold document among distinct documents
    passage_rank: int | None = None  # rank of the first chunk overlapping the gold passage
    answer: str | None = None  # what the user sees; None when abstaining
    answer_correct: bool | None = None  # None for unanswerable questions
    citation_correct: bool | None = None
    first_sentence_correct: bool | None = None  # the first quoted sentence holds a gold answer
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
    timings_ms: dict[str, float] = field(default_factory=dict)  # Answer.timings_ms: per stage of the pipeline
    # The reader's words in the first quoted sentence (answerable questions it read; None otherwise):
    # its best span whatever its probability, scored against the gold answers as rag.evaluate.reading
    # does (0 when the answer abstained), and whether the answer showed those words (rag.answer.SPAN_SHOWN).
    span: str | None = None
    span_f1: float | None = None
    span_exact: float | None = None
    span_shown: bool | None = None


def outcome_correct(r: CaseResult) -> bool:
    """Answered with a gold answer (answerable), or abstained (unanswerable)."""
    return r.answer_correct is True if r.answerable else r.abstained


def outcome_confidence(r: CaseResult) -> float:
    """The confidence in the outcome shown: ``Answer.confidence`` (that the question is answered) when
    answered, one minus it when abstaining."""
    return 1.0 - r.confidence if r.abstained else r.confidence


def reliability(results: Sequence[CaseResult], bins: int = RELIABILITY_BINS) -> list[ReliabilityBin]:
    """The reliability table of ``results``' outcomes."""
    return reliability_table([outcome_confidence(r) for r in results], [outcome_correct(r) for r in results], bins)


def timing_percentiles(timings: Iterable[Mapping[str, float]]) -> dict[str, dict[str, float | None]]:
    """p50 and p95 of each key of per-question stage timings, in the order the keys first appear."""
    stages: dict[str, list[float]] = {}
    for row in timings:
        for stage, ms in row.items():
            stages.setdefault(stage, []).append(ms)
    return {stage: {"p50_ms": percentile(v, 50), "p95_ms": percentile(v, 95)} for stage, v in stages.items()}


def stage_percentiles(results: Sequence[CaseResult]) -> dict[str, dict[str, float | None]]:
    """p50 and p95 of each pipeline stage in the rows' ``timings_ms`` (whatever stages the pipeline reports)."""
    return timing_percentiles(r.timings_ms for r in results)


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
    out["first_sentence_accuracy"] = mean(float(r.first_sentence_correct is True) for r in answerable)
    out["citation_accuracy"] = mean(float(r.citation_correct is True) for r in answerable)
    out.update(abstention_scores([r.abstained for r in results], [r.answerable for r in results]))
    for key, flag in (("abstain_recall_near_miss", True), ("abstain_recall_off_topic", False)):
        out[key] = mean(float(r.abstained) for r in results if not r.answerable and r.near_miss is flag)
    out["ece"] = expected_calibration_error(reliability(results))
    # the words that answer, through the whole pipeline (None without a reader)
    read = [r for r in answerable if r.span_f1 is not None]
    out["span_f1"] = mean(r.span_f1 for r in read if r.span_f1 is not None)
    out["span_exact_match"] = mean(r.span_exact for r in read if r.span_exact is not None)
    out["span_shown"] = mean(float(r.span_shown is True) for r in read)
    out["span_f1_when_shown"] = mean(r.span_f1 for r in read if r.span_shown and r.span_f1 is not None)
    latencies = [r.latency_ms for r in results]
    out["p50_ms"] = percentile(latencies, 50)
    out["p95_ms"] = percentile(latencies, 95)
    return out
