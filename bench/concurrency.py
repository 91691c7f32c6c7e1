"""Part 5, serving many: one loaded pipeline, 1, 2, 4 and 8 threads asking at once (as Streamlit
sessions share one pipeline), each in a closed loop over the seed questions for a fixed time.

For each number of askers: throughput (answers per second, all threads together) and the p50 and
p95 latency of one answer, with the encoders' question batching (``rag.batcher``) and, in the
same run, without it (one question per model call, as before the batcher). Run alone:

    python bench/concurrency.py [--seconds 10] [--levels 1,2,4,8] [--model e5+use]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SEEDS = ROOT / "seeds"
SEED_QUESTIONS = ROOT / "evals" / "seed_questions.jsonl"
LEVELS = (1, 2, 4, 8)


def _batchers(encoder: Any) -> list[Any]:
    """The question batchers of the encoder's models (``rag.encoders._LazyEncoder.batcher``)."""
    members = [m for m, _ in getattr(encoder, "members", [(encoder, 1.0)])]
    return [m.batcher for m in members if hasattr(m, "batcher")]


def closed_loop(pipe: Any, questions: list[str], askers: int, seconds: float) -> dict[str, Any]:
    """``askers`` threads each asking the next question as soon as it has its answer, for ``seconds``."""
    from rag.evaluate.metrics import percentile

    latencies: list[list[float]] = [[] for _ in range(askers)]
    errors: list[str] = []
    start = threading.Barrier(askers + 1)
    deadline = [0.0]

    def asker(n: int) -> None:
        mine = latencies[n]
        i = n * len(questions) // askers  # threads start at different questions
        start.wait()
        while time.perf_counter() < deadline[0]:
            t0 = time.perf_counter()
            try:
                pipe.ask(questions[i % len(questions)])
            except Exception as exc:  # reported in the results, the loop goes on
                errors.append(f"{type(exc).__name__}: {exc}")
            mine.append((time.perf_counter() - t0) * 1000)
            i += 1

    threads = [threading.Thread(target=asker, args=(n,), daemon=True) for n in range(askers)]
    for t in threads:
        t.start()
    began, cpu = time.perf_counter(), time.process_time()
    deadline[0] = began + seconds
    start.wait()
    for t in threads:
        t.join()
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
    every = [ms for mine in latencies for ms in mine]
    return {"askers": askers, "answers": len(every), "seconds": elapsed, "questions_per_s": len(every) / elapsed,
            "p50_ms": percentile(every, 50), "p95_ms": percentile(every, 95),
            "cpu_ms_per_answer": cpu * 1000 / max(len(every), 1), "errors": errors[:3]}


def w_concurrency(args: dict[str, Any]) -> dict[str, Any]:
    """Build (or reuse) the seed index, open one pipeline, run the closed loops with and without batching."""
    from rag.encoders import create_encoder
    from rag.index import build_index, open_index
    from rag.load import load_documents
    from rag.pipeline import Pipeline
    from rag.settings import Settings

    settings = Settings(model=args.get("model", "e5+use"), threads=args.get("threads", Settings.threads))
    encoder = create_encoder(settings.model, settings.threads)
    index_dir = Path(args["index_dir"])
    build_index(load_documents(args.get("docs_dir", str(SEEDS))), index_dir, settings, encoder)
    pipe = Pipeline(open_index(index_dir, settings, encoder=encoder), encoder, settings)
    with open(args.get("questions", str(SEED_QUESTIONS)), encoding="utf-8") as handle:
        questions = [json.loads(line)["question"] for line in handle if line.strip()]
    for q in questions[:5]:
        pipe.ask(q)  # warm
    batchers = _batchers(encoder)
    sizes = [b.max_texts for b in batchers]
    out: dict[str, Any] = {"model": settings.model, "threads": settings.threads, "questions": len(questions),
                           "seconds": args["seconds"], "batched": [], "unbatched": []}
    for askers in args.get("levels", LEVELS):
        for mode in ("batched", "unbatched"):  # interleaved, so both see the same load on a shared machine
            for b, size in zip(batchers, sizes, strict=True):
                b.max_texts = size if mode == "batched" else 1
            out[mode].append(closed_loop(pipe, questions, askers, args["seconds"]))
    for b, size in zip(batchers, sizes, strict=True):
        b.max_texts = size
    return out


def render(result: dict[str, Any]) -> list[str]:
    """The Markdown table of part 5."""
    lines = [f"## Serving many ({result['model']}, threads={result.get('threads', '?')}, one pipeline on the seed "
             f"index, {result['questions']} seed questions in a closed loop, {result['seconds']:g} s per row)", "",
             "| askers | batched: q/s | p50 ms | p95 ms | CPU ms/answer | one per model call: q/s | p50 ms "
             "| p95 ms | CPU ms/answer |",
             "|---|---|---|---|---|---|---|---|---|"]
    for b, u in zip(result["batched"], result["unbatched"], strict=True):
        lines.append(f"| {b['askers']} | {b['questions_per_s']:.1f} | {b['p50_ms']:.1f} | {b['p95_ms']:.1f} "
                     f"| {b['cpu_ms_per_answer']:.1f} | {u['questions_per_s']:.1f} | {u['p50_ms']:.1f} "
                     f"| {u['p95_ms']:.1f} | {u['cpu_ms_per_answer']:.1f} |")
        for e in b["errors"] + u["errors"]:
            lines.append(f"  error at {b['askers']} askers: {e}")
    return lines


def main(argv: list[str] | None = None) -> int:
    import os
    import tempfile

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description="Serving many: throughput and latency at 1-8 concurrent askers.")
    parser.add_argument("--seconds", type=float, default=10.0, help="closed-loop time per row [10]")
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)), help="numbers of askers [1,2,4,8]")
    parser.add_argument("--model", default="e5+use", help="model spec [e5+use]")
    parser.add_argument("--threads", type=int, default=None, help="Settings.threads (e5's threads; USE uses 1) [2]")
    parser.add_argument("--json", action="store_true", help="print the JSON result instead of the table")
    opts = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        args = {"index_dir": str(Path(tmp) / "index"), "seconds": opts.seconds, "model": opts.model,
                "levels": [int(n) for n in opts.levels.split(",") if n.strip()]}
        if opts.threads:
            args["threads"] = opts.threads
        result = w_concurrency(args)
    print(json.dumps(result, indent=2) if opts.json else "\n".join(render(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
