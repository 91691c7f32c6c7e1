"""Warm latency of one asker, stage by stage, optionally of another checkout of this project.

Opens the index (building it from the documents first when it is missing or stale), asks
three questions untimed, then every question once, and prints one JSON line: the median of
each ``Answer.timings_ms`` stage (``read``: the reader), the p95 of the total and its ratio to the
p50, the p50 of the total over the p50 of the question's e5 encoding (``total_over_e5``), and the
process CPU per question.
``--code`` imports ``rag`` from another checkout (a ``git worktree`` of an older commit), so
the code before a change and after it can be timed in turns on one machine:

    python bench/warm_latency.py --docs seeds --index /tmp/lat-seeds \
        --questions evals/seed_questions.jsonl [--set latent_terms=false] [--code /tmp/old]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", required=True, help="the documents folder")
    parser.add_argument("--index", required=True, help="the index folder (built when missing or stale)")
    parser.add_argument("--questions", required=True, help="a question set (JSONL with a 'question' field)")
    parser.add_argument("-n", type=int, default=0, help="ask only the first N questions [all]")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a Settings field, e.g. latent_terms=false (repeatable)")
    parser.add_argument("--code", default=str(ROOT), help="the checkout whose rag is timed [this one]")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(args.code).resolve()))

    from rag.pipeline import Pipeline, ensure_index
    from rag.settings import Settings

    settings = Settings().with_overrides(args.set)
    ensure_index(args.docs, args.index, settings)
    pipe = Pipeline.open(args.index, settings)
    with open(args.questions, encoding="utf-8") as handle:
        questions = [json.loads(line)["question"] for line in handle if line.strip()]
    questions = questions[: args.n] if args.n else questions
    for question in questions[:3]:
        pipe.ask(question)
    stages: dict[str, list[float]] = {}
    cpu = time.process_time()
    for question in questions:
        for key, ms in pipe.ask(question).timings_ms.items():
            stages.setdefault(key, []).append(ms)
    cpu_ms = (time.process_time() - cpu) * 1000 / len(questions)
    totals = sorted(stages["total"])
    p50, p95 = statistics.median(totals), totals[max(0, int(0.95 * len(totals)) - 1)]
    e5 = statistics.median(stages["encode.e5"]) if "encode.e5" in stages else None
    print(json.dumps({"code": args.code, "set": args.set, "questions": len(questions),
                      **{key: round(statistics.median(values), 1) for key, values in stages.items()},
                      "total_p95": round(p95, 1), "p95_over_p50": round(p95 / p50, 2),
                      # the answer against the question's e5 encoding in the same run (the reader's budget)
                      "total_over_e5": None if not e5 else round(p50 / e5, 2),
                      "cpu_ms_per_question": round(cpu_ms, 1)}))


if __name__ == "__main__":
    main()
