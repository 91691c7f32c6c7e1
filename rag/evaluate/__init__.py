"""Stage 7, evaluate: question sets, metrics, a runner over a ``Pipeline``, and the report.

- ``questions``: the JSONL question-set format (``load_questions``, ``locate_passages``);
- ``metrics``: pure metric functions over ranks, strings and rows (``summarise``), also used by bench/;
- ``runner``: ``evaluate`` asks each question once through ``Pipeline.ask_traced``;
- ``report``: ``--min``/``--max`` limits, the text table, the JSON object, the ``--out`` rows.

docs/evaluation.md defines every metric.
"""

from __future__ import annotations

from .metrics import (
    ABSTENTION_METRICS,
    ANSWER_METRICS,
    CALIBRATION_METRICS,
    LATENCY_METRICS,
    RETRIEVAL_METRICS,
    CaseResult,
    ReliabilityBin,
    abstention_scores,
    citation_correct,
    contains_answer,
    doc_ranking,
    expected_calibration_error,
    gold_rank,
    hit_at,
    normalise_text,
    outcome_confidence,
    outcome_correct,
    overlaps,
    percentile,
    reciprocal_rank,
    reliability,
    reliability_table,
    stage_percentiles,
    summarise,
    timing_percentiles,
)
from .questions import EvalCase, QuestionSet, gold_span, load_questions, locate_passages, parse_case
from .report import check_limits, parse_limits, report_dict, report_text, write_results
from .runner import EvalReport, evaluate

__all__ = [
    "ABSTENTION_METRICS",
    "ANSWER_METRICS",
    "CALIBRATION_METRICS",
    "LATENCY_METRICS",
    "RETRIEVAL_METRICS",
    "CaseResult",
    "EvalCase",
    "EvalReport",
    "QuestionSet",
    "ReliabilityBin",
    "abstention_scores",
    "check_limits",
    "citation_correct",
    "contains_answer",
    "doc_ranking",
    "evaluate",
    "expected_calibration_error",
    "gold_rank",
    "gold_span",
    "hit_at",
    "load_questions",
    "locate_passages",
    "normalise_text",
    "outcome_confidence",
    "outcome_correct",
    "overlaps",
    "parse_case",
    "parse_limits",
    "percentile",
    "reciprocal_rank",
    "reliability",
    "reliability_table",
    "report_dict",
    "report_text",
    "stage_percentiles",
    "summarise",
    "timing_percentiles",
    "write_results",
]
