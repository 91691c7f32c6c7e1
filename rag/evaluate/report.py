"""What a report is checked against and how it is shown: ``--min``/``--max`` limits, the text
table, the JSON object and the per-question rows of ``--out``."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..errors import RagError, SettingsError
from .metrics import (
    ABSTENTION_METRICS,
    ANSWER_METRICS,
    CALIBRATION_METRICS,
    LATENCY_METRICS,
    RETRIEVAL_METRICS,
    SPAN_METRICS,
    CaseResult,
    Metrics,
    ReliabilityBin,
    reliability,
    stage_percentiles,
)
from .runner import EvalReport

# What --min and --max may check: a fraction that should be high, or one that should be low.
HIGHER_IS_BETTER = (*RETRIEVAL_METRICS, *ANSWER_METRICS, *SPAN_METRICS,
                    *(k for k in ABSTENTION_METRICS if k != "false_abstention_rate"))
LOWER_IS_BETTER = ("false_abstention_rate", *CALIBRATION_METRICS, *LATENCY_METRICS, "build_s")
FRACTIONS = frozenset((*HIGHER_IS_BETTER, "false_abstention_rate", *CALIBRATION_METRICS))


# ---------------------------------------------------------------------------------- limits


def parse_limits(minimums: Iterable[str] = (), maximums: Iterable[str] = ()) -> dict[str, tuple[str, float]]:
    """``KEY=VALUE`` bounds from ``--min`` and ``--max``, as {key: ("min" | "max", value)}."""
    out: dict[str, tuple[str, float]] = {}
    for kind, specs, known, other in (("min", minimums, HIGHER_IS_BETTER, "max"),
                                      ("max", maximums, LOWER_IS_BETTER, "min")):
        for spec in specs:
            key, sep, raw = spec.partition("=")
            key = key.strip()
            if not sep or not key:
                example = "passage_hit@1=0.9" if kind == "min" else "p95_ms=500"
                raise SettingsError(f"--{kind} needs KEY=VALUE, e.g. --{kind} {example}, not {spec!r}")
            if key not in known:
                if key in (HIGHER_IS_BETTER if kind == "max" else LOWER_IS_BETTER):
                    raise SettingsError(f"{key} is better when {'higher' if kind == 'max' else 'lower'}: "
                                        f"use --{other} {key}={raw.strip()}")
                raise SettingsError(f"unknown --{kind} key {key!r}: use one of {', '.join(known)}")
            try:
                value = float(raw)
            except ValueError:
                raise SettingsError(f"--{kind} {key} needs a number, not {raw.strip()!r}") from None
            if key in FRACTIONS and not 0.0 <= value <= 1.0:
                raise SettingsError(f"--{kind} {key} is a fraction: give a value between 0 and 1, not {raw.strip()}")
            out[key] = (kind, value)
    return out


def check_limits(report: EvalReport, limits: Mapping[str, tuple[str, float]]) -> list[str]:
    """One line per bound the report does not meet; [] when all hold."""
    metrics = report.metrics
    failures = []
    for key, (kind, bound) in limits.items():
        value = metrics.get(key)
        if value is None:
            failures.append(f"{key} was not measured (no question it applies to), so --{kind} {key}={bound:g} "
                            "cannot hold")
            continue
        shown = round(value, _digits(key))  # compare what the report shows
        if (kind == "min" and shown < bound) or (kind == "max" and shown > bound):
            sign = "<" if kind == "min" else ">"
            failures.append(f"{key} = {shown:g} {sign} {bound:g} (--{kind})")
    return failures


# ---------------------------------------------------------------------------------- output


def _digits(key: str) -> int:
    return 1 if key.endswith(("_ms", "_s")) else 4


def _rounded(value: float | None, key: str) -> float | None:
    return None if value is None else round(value, _digits(key))


def _counts(results: Sequence[CaseResult]) -> dict[str, int]:
    return {
        "answerable": sum(1 for r in results if r.answerable),
        "unanswerable": sum(1 for r in results if not r.answerable),
        "with_doc": sum(1 for r in results if r.gold_doc is not None),
        "with_context": sum(1 for r in results if r.has_context),
        "near_miss": sum(1 for r in results if not r.answerable and r.near_miss is True),
        "off_topic": sum(1 for r in results if not r.answerable and r.near_miss is False),
    }


def _bin_dict(b: ReliabilityBin) -> dict[str, Any]:
    return {"low": b.low, "high": b.high, "count": b.count, "mean_confidence": _rounded(b.mean_confidence, ""),
            "accuracy": _rounded(b.accuracy, "")}


def _grouped(metrics: Metrics, rows: Sequence[CaseResult]) -> dict[str, Any]:
    stages = {stage: {k: _rounded(v, k) for k, v in p.items()} for stage, p in stage_percentiles(rows).items()}
    return {
        "retrieval": {k: _rounded(metrics[k], k) for k in RETRIEVAL_METRICS},
        "answers": {k: _rounded(metrics[k], k) for k in ANSWER_METRICS},
        "words": {k: _rounded(metrics[k], k) for k in SPAN_METRICS},
        "abstention": {k: _rounded(metrics[k], k) for k in ABSTENTION_METRICS},
        "calibration": {**{k: _rounded(metrics[k], k) for k in CALIBRATION_METRICS},
                        "reliability": [_bin_dict(b) for b in reliability(rows)]},
        "latency": {**{k: _rounded(metrics[k], k) for k in LATENCY_METRICS}, "stages": stages},
    }


def report_dict(report: EvalReport) -> dict[str, Any]:
    """The report as one JSON-ready object: ``n``, metric groups, ``build_s`` and ``by_lang``."""
    by_lang = {}
    for lang, metrics in report.by_lang.items():
        rows = [r for r in report.results if r.question_lang == lang]
        by_lang[lang] = {"n": len(rows), "counts": _counts(rows), **_grouped(metrics, rows)}
    return {
        "n": report.n,
        "questions": report.source,
        "model": report.model,
        "index": report.index,
        "abstain_threshold": report.abstain_threshold,
        "counts": _counts(report.results),
        **_grouped(report.metrics, report.results),
        "build_s": _rounded(report.build_s, "build_s"),
        "by_lang": by_lang,
        "settings": report.settings,
    }


def _cell(value: float | None, key: str) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if key.endswith("_ms") else f"{value:.3f}"


def report_text(report: EvalReport) -> str:
    """A readable table: one row per metric, one column for all questions and one per question language."""
    counts = _counts(report.results)
    built = ("index not rebuilt by this run" if report.build_s is None
             else f"index built in {report.build_s:.1f} s")
    lines = [
        f"{report.n} questions from {report.source} ({counts['answerable']} answerable, "
        f"{counts['unanswerable']} unanswerable)",
        f"model {report.model}, abstains below {report.abstain_threshold:g}; {built}",
        "",
    ]
    by_lang = report.by_lang
    columns = [("all", report.metrics), *by_lang.items()]
    width = max(len(k) for k in (*RETRIEVAL_METRICS, *ABSTENTION_METRICS)) + 2
    lines.append("".ljust(width) + "".join(name.rjust(8) for name, _ in columns))
    lines.append("n".ljust(width) + "".join(f"{int(m['n'] or 0):>8}" for _, m in columns))
    for group in (RETRIEVAL_METRICS, ANSWER_METRICS, SPAN_METRICS, ABSTENTION_METRICS, CALIBRATION_METRICS,
                  LATENCY_METRICS):
        if group is SPAN_METRICS and all(m[k] is None for _, m in columns for k in group):
            continue  # no reader read: no words to score
        lines.append("")
        for key in group:
            lines.append(key.ljust(width) + "".join(_cell(m[key], key).rjust(8) for _, m in columns))
    scored = (*RETRIEVAL_METRICS, *ANSWER_METRICS, *ABSTENTION_METRICS, *CALIBRATION_METRICS)
    if any(m[k] is None for _, m in columns for k in scored):
        lines.append("")
        lines.append("-: no question of that column counts for the metric (docs/evaluation.md says which do)")
    lines += ["", *_reliability_lines(reliability(report.results))]
    stages = stage_percentiles(report.results)
    if stages:
        lines += ["", "time per stage (ms, Answer.timings_ms)  p50      p95"]
        lines += [f"  {stage:<36}" + _cell(p["p50_ms"], "_ms").rjust(5) + _cell(p["p95_ms"], "_ms").rjust(9)
                  for stage, p in stages.items()]
    return "\n".join(lines)


def _reliability_lines(table: Sequence[ReliabilityBin]) -> list[str]:
    """The reliability table of all questions: confidence in the outcome shown against how often it was right."""
    lines = ["reliability (all questions; right = answered with a gold answer, or abstained on an unanswerable one)",
             "  confidence     n  mean conf  accuracy"]
    for b in table:
        closing = "]" if b.high >= 1.0 else ")"
        lines.append(f"  [{b.low:.1f}, {b.high:.1f}{closing} {b.count:>5}  {_cell(b.mean_confidence, ''):>9}  "
                     f"{_cell(b.accuracy, ''):>8}")
    return lines


def write_results(report: EvalReport, path: str | Path) -> None:
    """One JSON line per question (ranks, answer, abstention, confidence, raw score, latency)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as out:
            for result in report.results:
                out.write(json.dumps(asdict(result), ensure_ascii=False) + "\n")
    except OSError as exc:
        raise RagError(f"cannot write {path} ({exc.strerror or exc}): choose a writable --out file") from exc
