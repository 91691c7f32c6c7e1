"""rag.evaluate.report: limits, the text table, the JSON object and the --out rows, on hand-made rows."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from helpers import HAND_MADE, case_result

from rag.errors import SettingsError
from rag.evaluate.metrics import CaseResult
from rag.evaluate.report import check_limits, parse_limits, report_dict, report_text, write_results
from rag.evaluate.runner import EvalReport


def _report(results: Sequence[CaseResult] = HAND_MADE, build_s: float | None = 1.25) -> EvalReport:
    return EvalReport(source="q.jsonl", model="hash", abstain_threshold=0.25, results=tuple(results), build_s=build_s)


def test_report_breaks_metrics_down_by_question_language() -> None:
    report = _report()
    assert list(report.by_lang) == ["en", "fr"]  # most questions first, then by name
    assert report.by_lang["en"]["answer_accuracy"] == 1.0
    assert report.by_lang["fr"]["abstain_precision"] == 0.5
    data = report_dict(report)
    assert data["n"] == 4 and data["build_s"] == 1.2
    assert data["retrieval"]["doc_mrr@10"] == pytest.approx(0.4167)
    assert set(data["answers"]) == {"answer_accuracy", "first_sentence_accuracy", "citation_accuracy"}
    assert set(data["abstention"]) == {"abstain_precision", "abstain_recall", "abstain_recall_near_miss",
                                       "abstain_recall_off_topic", "false_abstention_rate"}
    assert set(data["latency"]) == {"p50_ms", "p95_ms", "stages"}
    assert data["latency"]["stages"] == {}  # the hand-made rows carry no stage timings
    assert set(data["calibration"]) == {"ece", "reliability"} and len(data["calibration"]["reliability"]) == 10
    assert data["by_lang"]["fr"]["n"] == 2
    assert data["by_lang"]["fr"]["retrieval"]["passage_hit@1"] is None
    json.dumps(data)  # serialisable as it is


def test_report_text_is_a_table_with_a_column_per_language() -> None:
    text = report_text(_report())
    header = next(line for line in text.splitlines() if line.strip().startswith("all"))
    assert header.split() == ["all", "en", "fr"]
    row = next(line for line in text.splitlines() if line.startswith("answer_accuracy"))
    assert row.split() == ["answer_accuracy", "0.667", "1.000", "0.000"]
    assert "index built in 1.2 s" in text


# ------------------------------------------------------------------------------ limits


def test_limits_parse_and_check() -> None:
    limits = parse_limits(["passage_hit@1=0.9", "answer_accuracy = 0.5"], ["p95_ms=35"])
    assert limits == {"passage_hit@1": ("min", 0.9), "answer_accuracy": ("min", 0.5), "p95_ms": ("max", 35.0)}
    failures = check_limits(_report(), limits)
    assert failures == ["passage_hit@1 = 0 < 0.9 (--min)", "p95_ms = 38.5 > 35 (--max)"]
    assert check_limits(_report(), parse_limits(["doc_hit@5=0.6667"])) == []  # compared as shown, rounded


def test_a_limit_on_an_unmeasured_metric_fails() -> None:
    report = _report([case_result(answerable=False, abstained=True)])
    assert check_limits(report, parse_limits(["passage_hit@1=0.1"])) == [
        "passage_hit@1 was not measured (no question it applies to), so --min passage_hit@1=0.1 cannot hold"
    ]


@pytest.mark.parametrize(
    ("minimums", "maximums", "message"),
    [
        (["recall=0.9"], [], r"unknown --min key 'recall': use one of doc_hit@1, .*abstain_recall_off_topic$"),
        (["false_abstention_rate=0.1"], [], r"better when lower: use --max false_abstention_rate=0.1"),
        ([], ["answer_accuracy=0.1"], r"better when higher: use --min answer_accuracy=0.1"),
        (["passage_hit@1"], [], r"--min needs KEY=VALUE, e.g. --min passage_hit@1=0.9"),
        (["passage_hit@1=high"], [], r"--min passage_hit@1 needs a number, not 'high'"),
        (["passage_hit@1=90"], [], r"is a fraction: give a value between 0 and 1, not 90"),
    ],
)
def test_bad_limits_name_the_fix(minimums: list[str], maximums: list[str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        parse_limits(minimums, maximums)


def test_write_results_one_json_line_per_question(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "rows.jsonl"
    write_results(_report(), out)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["1", "2", "3", "4"]
    assert {"doc_rank", "passage_rank", "answer", "abstained", "confidence", "abstain_score", "best_sentence_score",
            "candidate_correct", "latency_ms", "first_sentence_correct", "near_miss", "group",
            "timings_ms"} <= set(rows[0])


def test_report_shows_the_reliability_table_the_ece_and_the_stage_times() -> None:
    rows = [
        case_result(id="a", confidence=0.95, answer_correct=True, timings_ms={"encode": 4.0, "total": 10.0}),
        case_result(id="b", confidence=0.9, answer_correct=False, timings_ms={"encode": 6.0, "total": 30.0}),
        case_result(id="c", answerable=False, abstained=True, confidence=0.3, near_miss=True,
                    timings_ms={"encode": 5.0, "total": 20.0}),
    ]
    report = _report(rows)
    data = report_dict(report)
    bins = data["calibration"]["reliability"]
    assert [b["count"] for b in bins] == [0, 0, 0, 0, 0, 0, 0, 1, 0, 2]
    assert bins[9] == {"low": 0.9, "high": 1.0, "count": 2, "mean_confidence": 0.925, "accuracy": 0.5}
    assert bins[7]["mean_confidence"] == 0.7 and bins[7]["accuracy"] == 1.0  # 1 - 0.3: the abstention, right
    assert data["calibration"]["ece"] == pytest.approx(round((2 * 0.425 + 0.3) / 3, 4))
    assert data["latency"]["stages"] == {"encode": {"p50_ms": 5.0, "p95_ms": 5.9},
                                         "total": {"p50_ms": 20.0, "p95_ms": 29.0}}
    assert data["counts"]["near_miss"] == 1 and data["counts"]["off_topic"] == 0
    assert data["abstention"]["abstain_recall_near_miss"] == 1.0
    assert data["abstention"]["abstain_recall_off_topic"] is None
    text = report_text(report)
    assert "  [0.9, 1.0]     2      0.925     0.500" in text
    assert "  [0.0, 0.1)     0          -         -" in text
    assert next(line for line in text.splitlines() if line.startswith("ece")).split()[1] == "0.383"
    assert next(line for line in text.splitlines() if line.startswith("  encode")).split() == ["encode", "5.0", "5.9"]
    assert check_limits(report, parse_limits([], ["ece=0.3"])) == ["ece = 0.3833 > 0.3 (--max)"]
