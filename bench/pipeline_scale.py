"""Part 4, the whole-project scale curve: the pipeline on synthetic corpora with generated vectors
(chunking, BM25, FAISS, spans, retrieval, answers), encoding excluded.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag.evaluate.metrics import timing_percentiles

from . import common
from .common import ROOT, SHARED_BENCH, Runner, current_rss_mb, dir_bytes, peak_rss_mb, read_questions
from .vectors import ClusteredVectors


class SyntheticEncoder:
    """Clustered vectors instead of a model, each text always mapped to the same vector.

    The whole pipeline runs as with a real model (chunking, BM25, FAISS, spans, retrieval,
    answers) while encoding costs nothing, so build and query times are the project's own.
    """

    model_id = "synthetic-clustered"

    def __init__(self, dim: int) -> None:
        self._gen = ClusteredVectors(dim)
        self.dim = dim

    def _rows(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        digest = hashlib.blake2b("\x1f".join(texts).encode("utf-8", "surrogatepass"), digest_size=8).digest()
        return self._gen.sample(len(texts), int.from_bytes(digest, "little"))

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._rows(list(texts))

    def encode_passages(self, texts: Sequence[str], progress: Callable[[int], None] | None = None) -> np.ndarray:
        texts = list(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)  # filled in place, as the library's encoders do
        for i in range(0, len(texts), 4096):
            out[i : i + 4096] = self._rows(texts[i : i + 4096])
        if progress:
            progress(len(texts))
        return out


def make_corpus(folder: Path, chunks: int, seed: int = 0) -> int:
    """Documents of real bench sentences, reshuffled: five ~800-character paragraphs each.

    A paragraph fits in one 1200-character chunk, so the corpus holds about ``chunks`` chunks.
    """
    sentences: list[str] = []
    for path in sorted(SHARED_BENCH.glob("*/docs/*.txt")):
        for para in path.read_text(encoding="utf-8").split("\n\n"):
            sentences.extend(s.strip() + "." for s in para.replace("\ufeff", "").split(". ") if len(s) > 20)
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    made, doc = 0, 0
    while made < chunks:
        paras = []
        for _ in range(min(5, chunks - made)):
            picked: list[str] = []
            size = 0
            while size < 700:
                s = rng.choice(sentences)
                picked.append(s)
                size += len(s) + 1
            paras.append(" ".join(picked))
            made += 1
        (folder / f"d{doc:07d}.txt").write_text("\n\n".join(paras) + "\n", encoding="utf-8")
        doc += 1
    return doc


def w_pipe_build(args: dict[str, Any]) -> dict[str, Any]:
    from rag.index import build_index
    from rag.load import load_documents
    from rag.settings import Settings

    settings = Settings(model="synthetic", lexical="always")
    started = time.perf_counter()
    loaded = load_documents(args["docs_dir"])
    load_s = time.perf_counter() - started
    report = build_index(loaded, args["index_dir"], settings, SyntheticEncoder(args["dim"]), full=True)
    return {"load_s": load_s, "build_s": report.seconds, "chunks": report.chunks, "sentences": report.sentences,
            "documents": report.documents, "build_peak_rss_mb": peak_rss_mb(),
            "disk_bytes": dir_bytes(Path(args["index_dir"]))}


def w_pipe_query(args: dict[str, Any]) -> dict[str, Any]:
    from rag.pipeline import Pipeline
    from rag.settings import Settings

    # lexical "always": every question pays for BM25 too (the bench questions are English and the
    # corpus German and Spanish, so "same-language" would never use it)
    settings = Settings(model="synthetic", lexical="always")
    base = current_rss_mb()
    started = time.perf_counter()
    pipe = Pipeline.open(args["index_dir"], settings, SyntheticEncoder(args["dim"]))
    open_s = time.perf_counter() - started
    loaded_mb = current_rss_mb() - base
    rows = read_questions(args["questions"])[: args["n"]]
    timings: list[dict[str, float]] = []
    for i, row in enumerate(rows):
        c0 = time.process_time()
        answer = pipe.ask(row["question"])
        cpu = (time.process_time() - c0) * 1000
        if i >= 3:  # warm
            timings.append({**answer.timings_ms, "cpu": cpu})
    out: dict[str, Any] = {"open_s": open_s, "index_mb": loaded_mb, "serve_peak_rss_mb": peak_rss_mb(),
                           "faiss": type(pipe.index.chunk_faiss).__name__,
                           "faiss_sentences": type(pipe.index.sentence_faiss).__name__}
    for key, p in timing_percentiles(timings).items():  # every stage the pipeline reports, and CPU
        out[f"{key}_p50_ms"] = round(p["p50_ms"] or 0, 2)
        out[f"{key}_p95_ms"] = round(p["p95_ms"] or 0, 2)
    return out


def first_answer(args: dict[str, Any]) -> dict[str, Any]:
    """In a fresh interpreter: bring the index up to date as `rag ask` does, open it, answer one question.

    ``mode`` "quick" is the library's path (a stat-only scan of the documents, sizes of the index
    files); "full" re-creates the path before it (every document read, parsed and hashed, every
    index file hashed at open), for the ratio in the same run.
    """
    from rag.index import index_status, open_index
    from rag.load import load_documents
    from rag.pipeline import Pipeline, ensure_index
    from rag.settings import Settings

    settings = Settings(model="synthetic", lexical="always")
    t0 = time.perf_counter()
    encoder = SyntheticEncoder(args["dim"])  # the stand-in for a model: not the project's time, taken out below
    encoder_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    if args["mode"] == "quick":
        up_to_date = ensure_index(args["docs_dir"], args["index_dir"], settings, encoder) is None
        t1 = time.perf_counter()
        pipe = Pipeline.open(args["index_dir"], settings, encoder)
    else:
        up_to_date = index_status(args["index_dir"], load_documents(args["docs_dir"]), settings) == "ok"
        t1 = time.perf_counter()
        pipe = Pipeline(open_index(args["index_dir"], settings, verify=True, encoder=encoder), encoder, settings)
    t2 = time.perf_counter()
    answer = pipe.ask(args["question"])
    t3 = time.perf_counter()
    return {"answered_at": time.time(), "encoder_s": encoder_s, "up_to_date": up_to_date, "check_s": t1 - t0,
            "open_s": t2 - t1, "ask_s": t3 - t2, "sources": len(answer.sources), "rss_mb": current_rss_mb(),
            "peak_rss_mb": peak_rss_mb()}


def w_pipe_first(args: dict[str, Any]) -> dict[str, Any]:
    """Time to first answer: spawn a fresh interpreter, measured to the moment its answer is made, less the
    set-up of the synthetic encoder (a random rotation: seconds, standing in for loading a model).

    Each mode ``repeats`` times, interleaved (quick, full, quick, ...), files in the page cache; then
    ``verify_index`` with the documents once (what `rag verify --docs` costs).
    """
    from rag.index import verify_index

    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in args.get("modes", ("quick", "full"))}
    question = read_questions(args["questions"])[0]["question"]
    for _ in range(args.get("repeats", 3)):
        for mode in runs:
            child = {**args, "mode": mode, "question": question}
            spawned = time.time()
            proc = subprocess.run([sys.executable, "-m", "bench.pipeline_scale", "first-answer", json.dumps(child)],
                                  capture_output=True, text=True, cwd=ROOT, check=False)
            if proc.returncode != 0:
                return {"error": proc.stderr.strip().splitlines()[-1:] or f"exit code {proc.returncode}"}
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            result["first_answer_s"] = result.pop("answered_at") - spawned - result["encoder_s"]
            runs[mode].append(result)
    out: dict[str, Any] = {"runs": runs}
    for mode, rows in runs.items():
        for key in ("first_answer_s", "encoder_s", "check_s", "open_s", "ask_s", "rss_mb"):
            out[f"{mode}_{key}"] = statistics.median(r[key] for r in rows)
        out[f"{mode}_up_to_date"] = all(r["up_to_date"] for r in rows)
    if not args.get("verify", True):
        return out
    report = verify_index(args["index_dir"], args["docs_dir"])
    out.update(verify_s=report.seconds, verify_ok=report.ok, verify_bytes=report.bytes,
               verify_documents=report.documents)
    return out


def run_pipeline_scale(opts: argparse.Namespace, bench: dict[str, Any], runner: Runner, work: Path,
                       dim: int) -> dict[str, Any]:
    """Part 4: the whole project on synthetic corpora with generated vectors."""
    out: dict[str, Any] = {"dim": dim, "sizes": {}}
    for n in opts.pipeline_sizes:
        corpus = common.CACHE / f"corpus-{n}"
        if not corpus.is_dir():
            make_corpus(corpus, n)
        index_dir = work / f"pipe-index-{n}"
        shutil.rmtree(index_dir, ignore_errors=True)
        entry: dict[str, Any] = {"build": runner.run("pipe_build", {"docs_dir": str(corpus),
                                                                     "index_dir": str(index_dir), "dim": dim})}
        if "error" not in entry["build"]:
            entry["query"] = runner.run("pipe_query", {"index_dir": str(index_dir), "dim": dim,
                                                       "questions": bench["questions"], "n": 53})
            entry["first"] = runner.run("pipe_first", {"index_dir": str(index_dir), "docs_dir": str(corpus),
                                                       "dim": dim, "questions": bench["questions"]})
        out["sizes"][n] = entry
        shutil.rmtree(index_dir, ignore_errors=True)
    return out


if __name__ == "__main__":  # python -m bench.pipeline_scale first-answer ARGS: the child of w_pipe_first
    if sys.argv[1:2] == ["first-answer"]:
        print(json.dumps(first_answer(json.loads(sys.argv[2])), default=float))
