"""Part 3, the vector scale curve: synthetic clustered vectors, exact and approximate FAISS indexes,
build time, single-query latency, recall@10 against exact search, memory and disk.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rag.evaluate.metrics import percentile

from . import common
from .common import Runner, current_rss_mb, peak_rss_mb

K = 10  # recall@K of approximate indexes against exact search


N_QUERIES = 200  # synthetic queries per size for recall and latency


N_CENTRES = 4096


class ClusteredVectors:
    """Unit vectors around a few thousand centres, with a decaying (low intrinsic dimension) spectrum.

    Real sentence embeddings share a common direction (unrelated texts still have cosine ~0.5
    to 0.8) and vary mostly along a few hundred directions; iid Gaussian vectors have neither,
    so every neighbour is nearly equidistant and ANN recall looks worse than it is. Here:
    centre = normalise(mu + 0.9 v), point = normalise(centre + 0.55 h), v and h Gaussian with
    variance 1/i along the i-th axis of a fixed random rotation. Queries come the same way.
    """

    def __init__(self, dim: int, seed: int = 0, centres: int = N_CENTRES) -> None:
        rng = np.random.default_rng(seed)
        self.dim = dim
        scales = 1.0 / np.sqrt(np.arange(1, dim + 1, dtype=np.float64))
        self.scales = (scales / np.linalg.norm(scales)).astype(np.float32)
        q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        self.rotation = q.astype(np.float32)
        mu = rng.standard_normal(dim).astype(np.float32)
        self.mu = mu / np.linalg.norm(mu)
        self.centres = self._unit(self.mu + 0.9 * self._shaped(rng, centres))

    def _shaped(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return (rng.standard_normal((n, self.dim), dtype=np.float32) * self.scales) @ self.rotation.T

    @staticmethod
    def _unit(x: np.ndarray) -> np.ndarray:
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    def sample(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        ids = rng.integers(0, len(self.centres), n)
        return self._unit(self.centres[ids] + 0.55 * self._shaped(rng, n))

    def write(self, path: Path, n: int, seed: int, block: int = 100_000) -> None:
        """n vectors straight to a .npy file, block by block (1M x 896 float32 is 3.6 GB)."""
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, self.dim))
        for i, start in enumerate(range(0, n, block)):
            stop = min(n, start + block)
            out[start:stop] = self.sample(stop - start, seed * 1_000_003 + i)
        out.flush()
        del out


def vector_stats(vectors: np.ndarray, rng_seed: int = 0, sample: int = 2000) -> dict[str, float]:
    """Mean cosine of random pairs and of each sampled vector's nearest other vector."""
    rng = np.random.default_rng(rng_seed)
    n = len(vectors)
    pick = rng.choice(n, min(sample, n), replace=False)
    a = np.asarray(vectors[pick], dtype=np.float32)
    pairs = np.einsum("ij,ij->i", a, np.asarray(vectors[rng.choice(n, len(pick))], dtype=np.float32))
    best = np.full(len(pick), -2.0, dtype=np.float32)
    for start in range(0, n, 100_000):
        block = np.asarray(vectors[start : start + 100_000], dtype=np.float32)
        sims = a @ block.T
        own = (pick >= start) & (pick < start + len(block))
        sims[np.nonzero(own)[0], pick[own] - start] = -2.0
        best = np.maximum(best, sims.max(axis=1))
    return {"random_pair_cosine": round(float(pairs.mean()), 3), "nearest_cosine": round(float(best.mean()), 3)}


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int, block: int = 100_000) -> np.ndarray:
    """Exact inner-product top-k ids, computed blockwise so 1M vectors never sit in memory twice."""
    best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), k), dtype=np.int64)
    for start in range(0, len(vectors), block):
        sims = queries @ np.asarray(vectors[start : start + block], dtype=np.float32).T
        kk = min(k, sims.shape[1])
        part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        s = np.concatenate([best_s, np.take_along_axis(sims, part, axis=1)], axis=1)
        i = np.concatenate([best_i, part + start], axis=1)
        order = np.argsort(-s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(s, order, axis=1), np.take_along_axis(i, order, axis=1)
    return best_i


def ivf_nlist(n: int) -> int:
    """A power of two near 2*sqrt(n), at least 16: clusters of a few hundred vectors."""
    return max(16, 2 ** round(math.log2(2 * math.sqrt(n))))


def make_ann(method: str, vectors: np.ndarray, threads: int = 2) -> tuple[Any, dict[str, Any]]:
    """Build one FAISS index over ``vectors`` (n x d, unit rows; inner product = cosine)."""
    import faiss

    faiss.omp_set_num_threads(threads)
    n, d = vectors.shape
    info: dict[str, Any] = {}
    index: Any
    if method == "flat":
        index = faiss.IndexFlatIP(d)
    elif method == "hnsw":
        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        info = {"M": 32, "efConstruction": 80}
    elif method in ("ivf", "ivfsq8"):
        nlist = ivf_nlist(n)
        quantizer = faiss.IndexFlatIP(d)
        if method == "ivf":
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_8bit,
                                                  faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = 10  # k-means converges well before faiss's default 25 for this use
        train_n = min(n, 32 * nlist)
        rng = np.random.default_rng(1)
        sample = np.ascontiguousarray(vectors[np.sort(rng.choice(n, train_n, replace=False))], dtype=np.float32)
        index.train(sample)
        info = {"nlist": nlist, "train_vectors": train_n}
    else:
        raise ValueError(f"unknown index method {method!r}: use flat, hnsw, ivf or ivfsq8")
    for start in range(0, n, 100_000):
        index.add(np.ascontiguousarray(vectors[start : start + 100_000], dtype=np.float32))
    return index, info


def search_settings(method: str) -> list[dict[str, int]]:
    if method == "hnsw":
        return [{"efSearch": ef} for ef in (64, 128, 256)]
    if method in ("ivf", "ivfsq8"):
        return [{"nprobe": p} for p in (8, 16, 32, 64)]
    return [{}]


def apply_search_setting(index: Any, setting: dict[str, int]) -> None:
    if "efSearch" in setting:
        index.hnsw.efSearch = setting["efSearch"]
    if "nprobe" in setting:
        index.nprobe = setting["nprobe"]


def w_scale_gen(args: dict[str, Any]) -> dict[str, Any]:
    """Vectors, queries and exact top-K for one size, cached on disk."""
    n, dim = args["n"], args["dim"]
    folder = Path(args["folder"])
    folder.mkdir(parents=True, exist_ok=True)
    gen = ClusteredVectors(dim)
    started = time.perf_counter()
    if not (folder / "vectors.npy").exists():
        gen.write(folder / "vectors.tmp.npy", n, seed=n)
        os.replace(folder / "vectors.tmp.npy", folder / "vectors.npy")
    gen_seconds = time.perf_counter() - started
    vectors = np.load(folder / "vectors.npy", mmap_mode="r")
    queries = gen.sample(N_QUERIES, seed=7)
    np.save(folder / "queries.npy", queries)
    started = time.perf_counter()
    truth = exact_top_k(vectors, queries, K)
    np.save(folder / "truth.npy", truth)
    return {"generate_s": gen_seconds, "exact_truth_s": time.perf_counter() - started,
            "stats": vector_stats(vectors) if n <= 200_000 else None}


def w_scale_build(args: dict[str, Any]) -> dict[str, Any]:
    import faiss

    folder = Path(args["folder"])
    vectors = np.load(folder / "vectors.npy", mmap_mode="r")
    before = current_rss_mb()
    started = time.perf_counter()
    index, info = make_ann(args["method"], vectors)
    seconds = time.perf_counter() - started
    path = folder / f"{args['method']}.faiss"
    faiss.write_index(index, str(path))
    return {"build_s": seconds, "disk_bytes": path.stat().st_size, "build_peak_rss_mb": peak_rss_mb(),
            "rss_before_mb": before, **info}


def w_scale_serve(args: dict[str, Any]) -> dict[str, Any]:
    """Load one index in a fresh process, then time single queries at each search setting."""
    import faiss

    faiss.omp_set_num_threads(2)
    folder = Path(args["folder"])
    queries = np.load(folder / "queries.npy")
    truth = np.load(folder / "truth.npy")
    base = current_rss_mb()
    started = time.perf_counter()
    index = faiss.read_index(str(folder / f"{args['method']}.faiss"))
    load_s = time.perf_counter() - started
    loaded_mb = current_rss_mb() - base
    rerank = args.get("rerank", 0)
    vectors = np.load(folder / "vectors.npy", mmap_mode="r") if rerank else None
    timed = queries[: args.get("timed_queries", len(queries))]
    results = []
    for setting in search_settings(args["method"]):
        apply_search_setting(index, setting)
        index.search(queries[:2], K)  # warm
        found = np.zeros((len(queries), K), dtype=np.int64)
        latencies, cpu = [], []
        for i, q in enumerate(queries):
            c0, t0 = time.process_time(), time.perf_counter()
            _, ids = index.search(q[None, :], max(K, rerank))
            if vectors is not None:  # exact cosine of the candidates, as rag.retrieve re-scores them
                cand = ids[0][ids[0] >= 0]
                sims = np.asarray(vectors[np.sort(cand)], dtype=np.float32) @ q
                ids = np.sort(cand)[np.argsort(-sims)][None, :K]
            if i < len(timed):
                latencies.append((time.perf_counter() - t0) * 1000)
                cpu.append((time.process_time() - c0) * 1000)
            found[i, : ids.shape[1]] = ids[0][:K]
        recall = float(np.mean([len(set(found[i]) & set(truth[i])) / K for i in range(len(queries))]))
        results.append({**setting, "recall@10": round(recall, 4), "p50_ms": round(percentile(latencies, 50) or 0, 3),
                        "p95_ms": round(percentile(latencies, 95) or 0, 3),
                        "cpu_p50_ms": round(percentile(cpu, 50) or 0, 3), "timed_queries": len(latencies)})
    return {"load_s": load_s, "index_mb": loaded_mb, "serve_peak_rss_mb": peak_rss_mb(), "settings": results}


def run_scale(opts: argparse.Namespace, runner: Runner, dim: int, out: dict[str, Any],
              saved: Callable[[], None]) -> None:
    """Part 3: the vector scale curve, into ``out``; ``saved`` is called after each size."""
    out.update({"dim": dim, "k": K, "queries": N_QUERIES, "sizes": {}})
    for n in opts.sizes:
        folder = common.CACHE / f"vectors-{dim}-{n}"
        entry: dict[str, Any] = {"raw_vectors_mb": n * dim * 4 / 2**20}
        entry["data"] = runner.run("scale_gen", {"n": n, "dim": dim, "folder": str(folder)})
        if "error" in entry["data"]:
            out["sizes"][n] = entry
            continue
        for method in opts.methods:
            if method == "hnsw" and n > opts.hnsw_max:
                entry[method] = {"skipped": f"n > --hnsw-max {opts.hnsw_max}"}
                continue
            build = runner.run("scale_build", {"folder": str(folder), "method": method})
            result: dict[str, Any] = {"build": build}
            if "error" not in build:
                timed = 20 if method == "flat" and n >= 100_000 else N_QUERIES
                result["serve"] = runner.run("scale_serve", {"folder": str(folder), "method": method,
                                                             "timed_queries": timed})
                if method == "ivfsq8":
                    result["serve_rerank50"] = runner.run("scale_serve", {"folder": str(folder), "method": method,
                                                                          "rerank": 50})
                with contextlib.suppress(OSError):
                    (folder / f"{method}.faiss").unlink()
            entry[method] = result
        out["sizes"][n] = entry
        saved()
        if not opts.keep_vectors and n >= 100_000:
            shutil.rmtree(folder, ignore_errors=True)
