"""Ray and Milvus on this machine: build throughput on 1 and 2 Ray worker nodes, Milvus Lite against FAISS.

Run inside a loopback-only network namespace (Ray probes outside hosts, Milvus listens on
every interface), from the repository root::

    unshare -n sh -c 'ip link set lo up; exec python -m bench.engines --out bench/results/engines.json'

Part 1 builds the first ``--ray-docs`` documents of the set with ``rag.distributed.RayEncoder``
on a local cluster (a head without CPUs and 1 or 2 one-CPU worker nodes, one single-thread
actor each) and locally (``rag.pool``, 2 processes), compares the vectors, and the answers to
the seed questions of a seed build on Ray against a local one. Part 2 indexes the whole set
into FAISS, Milvus FLAT and Milvus HNSW from the same vectors (a replaying encoder, so the
model runs once), then asks every question: identical rankings and answers (FLAT),
recall@10 of the HNSW search against exact search, and latency of the dense search and of
the whole retrieval.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import CACHE, ROOT, SHARED_BENCH
from rag.distributed import RayEncoder, ray_environment
from rag.encoders import create_encoder
from rag.index import build_index, open_index
from rag.load import load_documents
from rag.pipeline import Pipeline
from rag.pool import pooled_encoder
from rag.retrieve import retrieve
from rag.settings import Settings


class ReplayEncoder:
    """Passages from a finished build's vectors (by text), questions from the real model: encode once."""

    def __init__(self, texts: Sequence[str], vectors: np.ndarray, real: Any) -> None:
        self.table = {t: vectors[i] for i, t in enumerate(texts)}
        self.real, self.model_id, self.dim, self.wrapped = real, real.model_id, real.dim, real

    def encode_passages(self, texts: Sequence[str], progress: Callable[[int], None] | None = None) -> np.ndarray:
        missing = [t for t in texts if t not in self.table]
        if missing:
            for t, v in zip(missing, self.real.encode_passages(missing), strict=True):
                self.table[t] = v
        return np.stack([self.table[t] for t in texts]).astype(np.float32)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.real.encode_queries(texts)


def _docs_subset(set_dir: Path, n: int, target: Path) -> Path:
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for path in sorted((set_dir / "docs").glob("*.txt"))[:n]:
        shutil.copy(path, target / path.name)
    return target


def ray_part(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    ray_environment()
    from ray.cluster_utils import Cluster

    settings = Settings(model=args.model)
    docs = _docs_subset(SHARED_BENCH / args.set, args.ray_docs, work / "ray-docs")
    loaded = load_documents(docs)
    out: dict[str, Any] = {"documents": len(loaded.documents)}
    started = time.perf_counter()
    local = build_index(loaded, work / "ray-local", settings, pooled_encoder(args.model, 2, 2), full=True)
    out["local_pool_2_processes"] = {"seconds": time.perf_counter() - started, "texts": local.chunks + local.sentences}
    reference = open_index(work / "ray-local")
    for nodes in (1, 2):
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
        try:
            started = time.perf_counter()
            for _ in range(nodes):
                cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
            cluster_s = time.perf_counter() - started
            encoder = RayEncoder(args.model, cluster.address, create_encoder(args.model, 2))
            started = time.perf_counter()
            report = build_index(loaded, work / f"ray-{nodes}", settings, encoder, full=True)
            seconds = time.perf_counter() - started
            built = open_index(work / f"ray-{nodes}")
            assert built.chunk_vectors is not None and reference.chunk_vectors is not None
            assert built.sentence_vectors is not None and reference.sentence_vectors is not None
            diff = max(float(np.abs(built.chunk_vectors - reference.chunk_vectors).max()),
                       float(np.abs(built.sentence_vectors - reference.sentence_vectors).max()))
            texts = report.chunks + report.sentences
            out[f"ray_{nodes}_worker_nodes"] = {
                "cluster_start_s": cluster_s, "seconds": seconds, "texts": texts, "texts_per_s": texts / seconds,
                "texts_per_node": dict(encoder.last_nodes), "max_abs_diff_vs_local": diff,
            }
            if nodes == 2:  # the seed questions: a seed build on Ray against a local one
                seeds = load_documents(ROOT / "seeds")
                build_index(seeds, work / "seed-ray", settings, encoder, full=True)
                build_index(seeds, work / "seed-local", settings, create_encoder(args.model, 2), full=True)
                out["seed_answers_equal"] = _answers(work / "seed-ray", settings) == _answers(work / "seed-local",
                                                                                           settings)
        finally:
            cluster.shutdown()
    return out


def _answers(index_dir: Path, settings: Settings) -> list[Any]:
    pipe = Pipeline.open(index_dir, settings)
    rows = [json.loads(line) for line in (ROOT / "evals" / "seed_questions.jsonl").open(encoding="utf-8")]
    return [(a.text, [(c.doc, c.start, c.end) for c in a.sentences])
            for a in (pipe.ask(r["question"]) for r in rows)]


def _median_ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 3)


def milvus_part(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import faiss

    settings = Settings(model=args.model)
    loaded = load_documents(SHARED_BENCH / args.set / "docs")
    real = create_encoder(args.model, 2)
    # an up-to-date FAISS build of an earlier run is reused: encoding is not what this part measures
    report = build_index(loaded, work / "faiss", settings, pooled_encoder(args.model, 2, 2))
    out: dict[str, Any] = {"faiss_build_s": None if report.up_to_date else report.seconds}
    base = open_index(work / "faiss")
    assert base.chunk_vectors is not None and base.sentence_vectors is not None
    texts = [c.text for c in base.chunks] + [s.text for s in base.sentences]
    vectors = np.vstack([base.chunk_vectors, base.sentence_vectors])
    replay = ReplayEncoder(texts, vectors, real)
    questions = [json.loads(line)["question"]
                 for line in (SHARED_BENCH / args.set / "questions.jsonl").open(encoding="utf-8")]
    questions = questions[: args.questions]
    qvecs = real.encode_queries(questions)
    stores = {"faiss": (work / "faiss", settings)}
    for kind in ("FLAT", "HNSW"):
        db = work / f"milvus-{kind}.db"
        shutil.rmtree(db, ignore_errors=True)  # Milvus Lite keeps a folder under that name
        s = settings.with_(store="milvus", milvus_uri=str(db), milvus_index=kind)
        started = time.perf_counter()
        build_index(loaded, work / f"milvus-{kind}", s, replay, full=True)
        out[f"milvus_{kind}_build_s"] = time.perf_counter() - started
        stores[f"milvus_{kind}"] = (work / f"milvus-{kind}", settings)
    exact = {"chunks": faiss.IndexFlatIP(base.chunk_vectors.shape[1]),
             "sentences": faiss.IndexFlatIP(base.sentence_vectors.shape[1])}
    exact["chunks"].add(np.ascontiguousarray(base.chunk_vectors))
    exact["sentences"].add(np.ascontiguousarray(base.sentence_vectors))
    results: dict[str, Any] = {}
    for name, (index_dir, s) in stores.items():
        pipe = Pipeline.open(index_dir, s, real)
        search_s, retrieve_s, rankings, answers, recall = [], [], [], [], []
        for q, qv in zip(questions, qvecs, strict=True):
            t0 = time.perf_counter()
            _, rows = pipe.index.chunk_store.search(qv[None, :], 100)
            pipe.index.chunk_store.vectors(rows[0][rows[0] >= 0])
            search_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            r = retrieve(pipe.index, qv, q, s)
            retrieve_s.append(time.perf_counter() - t0)
            rankings.append([x.chunk for x in r.ranked])
            answers.append(pipe.ask(q).text)
            for kind, store in (("chunks", pipe.index.chunk_store), ("sentences", pipe.index.sentence_store)):
                _, got = store.search(qv[None, :], 10)
                _, want = exact[kind].search(qv[None, :].astype(np.float32), 10)
                recall.append(len(set(got[0]) & set(want[0])) / 10)
        results[name] = {"p50_search_and_fetch_ms": _median_ms(search_s), "p50_retrieve_ms": _median_ms(retrieve_s),
                         "recall@10_vs_exact": float(np.mean(recall)), "rankings": rankings, "answers": answers}
    for name in ("milvus_FLAT", "milvus_HNSW"):
        same_rank = np.mean([a == b for a, b in zip(results[name]["rankings"], results["faiss"]["rankings"],
                                                     strict=True)])
        same_answer = np.mean([a == b for a, b in zip(results[name]["answers"], results["faiss"]["answers"],
                                                      strict=True)])
        results[name]["same_ranking_as_faiss"] = float(same_rank)
        results[name]["same_answer_as_faiss"] = float(same_answer)
    for r in results.values():
        del r["rankings"], r["answers"]
    out.update({"questions": len(questions), "chunks": len(base.chunks), "sentences": len(base.sentences),
                "stores": results})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", default="xquad-de-de")
    parser.add_argument("--model", default="e5+use")
    parser.add_argument("--ray-docs", type=int, default=12)
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--parts", default="ray,milvus")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "engines.json")
    args = parser.parse_args()
    interfaces = sorted(name for _, name in __import__("socket").if_nameindex())
    if interfaces != ["lo"]:
        raise SystemExit("run inside a loopback-only namespace: unshare -n sh -c 'ip link set lo up; exec python -m "
                         "bench.engines'")
    work = CACHE / "engines"
    work.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    result: dict[str, Any] = {"load_average_at_start": load, "set": args.set, "model": args.model}
    if "ray" in args.parts:
        result["ray"] = ray_part(args, work)
        print(json.dumps(result["ray"], indent=1), flush=True)
    if "milvus" in args.parts:
        result["milvus"] = milvus_part(args, work)
        print(json.dumps(result["milvus"], indent=1), flush=True)
    result["load_average_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
