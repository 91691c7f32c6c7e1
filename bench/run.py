"""The one benchmark command: speed, quality and scale, side by side in one run.

    python bench/run.py                       # everything, default sizes (slow: see bench/README.md)
    python bench/run.py --quick               # a few documents and questions, 1k-vector scale curve
    python bench/run.py --skip-baselines --sizes 1000,10000

It prints a Markdown table and writes the full results as JSON to bench/results/. Every
configuration runs in its own subprocess (``python bench/run.py worker NAME ARGS``), so
peak memory (``ru_maxrss``) and cold start are measured per configuration and never mix.
This file is the entry point; the parts live beside it (systems.py, encoding.py, vectors.py,
pipeline_scale.py; common.py and render.py) and score answers with the library's own
metrics (rag.evaluate.metrics).

Parts:
1. systems on one bench set (same documents, same questions): this project with its
   default model and with all-MiniLM-L6-v2, langchain splitter + FAISS flat + MiniLM, txtai
   hybrid + MiniLM: build time and throughput, warm latency p50/p95 (encode, search,
   answer), cold start to first answer, peak memory, index size, quality, ratios to ours;
2. encoding: raw encoder throughput on the same texts (2 threads in one process vs 2
   warm worker processes of 1 thread, ``rag.pool``) against what ``rag.index.build_index``
   reaches as a whole build, with the default settings (pooled) and with ``processes=1``;
   and the build-cost ratio: ``rag index --full`` (both kinds of chunk vectors) over one raw e5
   pass on the same documents as paragraphs, interleaved rounds, median ratio;
3. vector scale curve, 1k to 1M synthetic clustered vectors of the default model's
   dimension: exact, HNSW and IVF(+SQ8) indexes, build time, p50/p95 search latency,
   recall@10 against exact search, serving memory and disk;
4. pipeline scale curve: the whole project (chunking, BM25, FAISS, spans, retrieval) on
   synthetic corpora with generated vectors, for build time, query latency, memory, disk;
5. serving many: one pipeline on the seed index, 1, 2, 4, 8 threads asking at once in a closed
   loop: throughput and p50/p95 latency, with and without the encoders' question batching.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# before numpy, faiss or a model is imported, here and in every worker
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as rag/__init__.py: busy-waiting is ruinous when shared
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench import common  # noqa: E402
from bench.common import RESULTS, Runner, prepare_set, resolve_model  # noqa: E402
from bench.concurrency import w_concurrency  # noqa: E402
from bench.encoding import run_encoding, run_index_ratio, w_query_encode, w_raw_encode  # noqa: E402
from bench.pipeline_scale import run_pipeline_scale, w_pipe_build, w_pipe_first, w_pipe_query  # noqa: E402
from bench.render import report  # noqa: E402
from bench.systems import (  # noqa: E402
    finish_systems,
    run_systems,
    w_cold,
    w_lc_build,
    w_lc_query,
    w_ours_build,
    w_ours_query,
    w_tx_build,
    w_tx_query,
)
from bench.vectors import run_scale, w_scale_build, w_scale_gen, w_scale_serve  # noqa: E402

DEFAULT_SIZES = (1_000, 10_000, 100_000, 1_000_000)


DEFAULT_PIPELINE_SIZES = (1_000, 10_000, 100_000)

WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {  # one per subprocess
    "raw_encode": w_raw_encode, "query_encode": w_query_encode, "ours_build": w_ours_build, "ours_query": w_ours_query,
    "lc_build": w_lc_build, "lc_query": w_lc_query, "tx_build": w_tx_build, "tx_query": w_tx_query,
    "cold": w_cold, "scale_gen": w_scale_gen, "scale_build": w_scale_build, "scale_serve": w_scale_serve,
    "pipe_build": w_pipe_build, "pipe_query": w_pipe_query, "pipe_first": w_pipe_first, "concurrency": w_concurrency,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Speed, quality and scale benchmark (see bench/README.md).")
    parser.add_argument("--set", default="xquad-en-de", help="bench set in ../shared/bench [xquad-en-de]")
    parser.add_argument("--max-docs", type=int, default=None, help="use the first N documents of the set [all]")
    parser.add_argument("--questions", type=int, default=300, help="questions asked per system [300]")
    parser.add_argument("--models", default="e5+use,minilm",
                        help="our model specs, the first is the reference for ratios [e5+use,minilm]")
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="vector scale curve sizes")
    parser.add_argument("--methods", default="flat,hnsw,ivf,ivfsq8", help="indexes in the scale curve")
    parser.add_argument("--hnsw-max", type=int, default=10**9,
                        help="skip HNSW above this size (its build is the slowest part) [no limit]")
    parser.add_argument("--pipeline-sizes", default=",".join(map(str, DEFAULT_PIPELINE_SIZES)),
                        help="whole-project scale curve sizes, in chunks ('' to skip)")
    parser.add_argument("--dim", type=int, default=None, help="vector dimension of the scale curves "
                        "[the first model's]")
    parser.add_argument("--skip-baselines", action="store_true", help="only this project, no langchain/txtai")
    parser.add_argument("--skip-systems", action="store_true", help="no systems comparison")
    parser.add_argument("--skip-encoding", action="store_true", help="no encoder throughput comparison")
    parser.add_argument("--concurrency-seconds", type=float, default=10.0,
                        help="closed-loop seconds per row of the serving-many part; 0 skips it [10]")
    parser.add_argument("--skip-index-ratio", action="store_true",
                        help="no `rag index --full` / raw e5 paragraph pass ratio")
    parser.add_argument("--ratio-runs", type=int, default=3,
                        help="interleaved rounds of the index/raw ratio, the median is reported [3; 1 with --quick]")
    parser.add_argument("--ratio-modes", type=lambda s: [m.strip() for m in s.split(";") if m.strip()],
                        default=None, help="the builds of the ratio, ';'-separated names of "
                        "bench.encoding.BUILD_MODES [all]")
    parser.add_argument("--quick", action="store_true",
                        help="smallest run: 2 documents, 12 questions, 1k vectors, 1k-chunk pipeline")
    parser.add_argument("--keep-vectors", action="store_true", help="keep generated vectors >= 100k in the cache")
    parser.add_argument("--timeout", type=float, default=7200, help="seconds allowed per worker [7200]")
    parser.add_argument("--out", type=Path, default=None, help="JSON file [bench/results/bench-<time>.json]")
    parser.add_argument("--cache", type=Path, default=common.CACHE,
                        help="folder for copied sets, generated vectors and corpora, indexes [bench/results/cache]")
    opts = parser.parse_args(argv)
    common.CACHE = opts.cache.resolve()
    if opts.quick:
        opts.max_docs = opts.max_docs or 2
        opts.questions = min(opts.questions, 12)
        if opts.ratio_runs == parser.get_default("ratio_runs"):
            opts.ratio_runs = 1
        if opts.sizes == parser.get_default("sizes"):
            opts.sizes = "1000"
        if opts.pipeline_sizes == parser.get_default("pipeline_sizes"):
            opts.pipeline_sizes = "1000"
        if opts.concurrency_seconds == parser.get_default("concurrency_seconds"):
            opts.concurrency_seconds = 1.0
    opts.models = [m.strip() for m in opts.models.split(",") if m.strip()]
    opts.sizes = [int(s) for s in opts.sizes.split(",") if s.strip()]
    opts.pipeline_sizes = [int(s) for s in opts.pipeline_sizes.split(",") if s.strip()]
    opts.methods = [m.strip() for m in opts.methods.split(",") if m.strip()]

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    started = datetime.now(timezone.utc)
    results: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "command": "python bench/run.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "loadavg": os.getloadavg(), "cpus": os.cpu_count(), "python": sys.version.split()[0],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    work = common.CACHE / "work"
    work.mkdir(parents=True, exist_ok=True)
    runner = Runner(log, opts.timeout)
    bench = prepare_set(opts.set, opts.max_docs, opts.questions)
    results["bench"] = bench
    from rag.encoders import create_encoder

    dim = opts.dim or create_encoder(resolve_model(opts.models[0])).dim
    out_path = opts.out or RESULTS / f"bench-{started.strftime('%Y%m%dT%H%M%S')}.json"

    def save() -> None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
        if opts.out is None:
            shutil.copyfile(out_path, RESULTS / "latest.json")

    if not opts.skip_systems:
        log("systems side by side")
        results["systems"] = run_systems(opts, bench, runner, work)
        finish_systems(results["systems"], bench)
        save()
    if not opts.skip_encoding:
        log("encoding throughput")
        results["encoding"] = run_encoding(opts, bench, runner, work, results.get("systems", {}))
        save()
    if opts.concurrency_seconds > 0:
        log("serving many")
        results["concurrency"] = runner.run("concurrency", {
            "index_dir": str(work / "index-seeds"), "seconds": opts.concurrency_seconds,
            "model": resolve_model(opts.models[0])})
        save()
    if not opts.skip_index_ratio:
        log("rag index --full against one raw e5 paragraph pass")
        results["index_ratio"] = run_index_ratio(opts, bench, runner, work)
        save()
    if opts.pipeline_sizes:
        log("whole-project scale curve")
        results["pipeline_scale"] = run_pipeline_scale(opts, bench, runner, work, dim)
        save()
    if opts.sizes:
        log("vector scale curve")
        results["scale"] = {}
        run_scale(opts, runner, dim, results["scale"], save)
        save()
    results["seconds"] = (datetime.now(timezone.utc) - started).total_seconds()
    results["table"] = report(results)
    save()
    print(results["table"])
    print(f"results: {out_path}")
    return 0


def worker_main(name: str, raw_args: str) -> int:
    result = WORKERS[name](json.loads(raw_args))
    print(json.dumps(result, default=float))
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "worker":
        sys.exit(worker_main(sys.argv[2], sys.argv[3]))
    sys.exit(main())
