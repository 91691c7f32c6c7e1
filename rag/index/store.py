"""Writing a build: the FAISS indexes (exact or HNSW by size), and ``write_build``, the atomic write.

A build is written into ``builds/.tmp-*``, flushed, renamed, and only then named in
``CURRENT`` (the folder's layout is in ``rag.index.folder``): a crash at any point leaves the
previous build in use. JSON, NumPy and FAISS files only, never pickle. The folder's helpers and
``open_index`` (``rag.index.loaded``) are re-exported here, where the rest of the package has
always imported them.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import IndexCorruptError
from ..lexical import build_bm25, save_bm25
from ..settings import HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, HNSW_M
from ..types import Chunk, Document, Span
from .folder import (
    BUILDS,
    CURRENT,
    TERM_IDS,
    TERM_WEIGHTS,
    TMP_PREFIX,
    build_lock,
    builds_dir,
    clean_leftovers,
    current_build,
    fsync_dir,
    settings_for,
)
from .loaded import Index, Part, layout, open_index
from .manifest import FileEntry, Manifest, sha256_file

__all__ = [
    "BUILDS",
    "CURRENT",
    "EXACT_SEARCH_BYTES",
    "FAISS_BATCH_ROWS",
    "TERM_IDS",
    "TERM_WEIGHTS",
    "TMP_PREFIX",
    "Index",
    "Part",
    "VectorHandover",
    "build_lock",
    "builds_dir",
    "clean_leftovers",
    "current_build",
    "faiss_from_npy",
    "fsync_dir",
    "layout",
    "make_faiss",
    "open_index",
    "settings_for",
    "write_build",
]

# Exact search reads every vector: ~0.5 us per 896-d vector here (466 ms at 1M, docs/scaling.md),
# so 20 MiB of vectors (~5,800 at 896 dimensions, ~13,600 at 384) cost ~3 ms per search. Above
# that an HNSW graph takes over (recall@10 0.998 and 0.90 ms p50 at 1M vectors, same run).
EXACT_SEARCH_BYTES = 20 * 2**20


def _new_faiss(rows: int, dim: int) -> Any:
    """An empty FAISS index for ``rows`` vectors: exact up to ``EXACT_SEARCH_BYTES``, HNSW above."""
    import faiss

    index: Any
    if rows * dim * 4 <= EXACT_SEARCH_BYTES:
        # inner product over unit vectors = cosine similarity
        index = faiss.IndexFlatIP(dim)
    else:
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
    return index


def make_faiss(vectors: np.ndarray) -> Any:
    index = _new_faiss(vectors.shape[0], vectors.shape[1])
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


FAISS_BATCH_ROWS = 65536  # vectors read back at a time when a graph is built from a saved .npy


def faiss_from_npy(path: Path, batch_rows: int = FAISS_BATCH_ROWS) -> Any:
    """``make_faiss`` over the vectors saved in ``path``, read back ``batch_rows`` at a time with
    plain reads (no memory map, so the pages read stay in the page cache, not in this process):
    the build holds FAISS's copy of the vectors and one batch, never the vectors twice."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        shape, fortran, dtype = read_header(handle) if read_header else ((), True, None)
        if fortran or dtype != np.float32 or len(shape) != 2:
            raise IndexCorruptError(f"{path} does not hold a C-ordered 2-d float32 array as write_build saves "
                                    f"(format {version}, {dtype}, shape {shape}): rebuild the index")
        rows, dim = shape
        index = _new_faiss(rows, dim)
        for start in range(0, rows, batch_rows):
            n = min(batch_rows, rows - start)
            batch = np.fromfile(handle, dtype=np.float32, count=n * dim)
            if batch.size != n * dim:
                raise IndexCorruptError(f"{path} ended after {start * dim + batch.size} of {rows * dim} values")
            index.add(batch.reshape(n, dim))
    return index


class VectorHandover:
    """The chunk and sentence vectors a build hands to ``write_build``, which takes them (``take``)
    and so holds the last reference: once they are saved it lets them go, and FAISS builds its
    graphs from the files. The caller keeps no other reference to the arrays."""

    def __init__(self, chunk_vectors: np.ndarray, sentence_vectors: np.ndarray) -> None:
        self._arrays: tuple[np.ndarray, np.ndarray] | None = (chunk_vectors, sentence_vectors)

    def take(self) -> tuple[np.ndarray, np.ndarray]:
        if self._arrays is None:
            raise RuntimeError("these vectors were handed over already")
        arrays, self._arrays = self._arrays, None
        return arrays


def _spans_array(rows: Sequence[Span], doc_pos: dict[str, int], chunk: bool) -> np.ndarray:
    width = 6 if chunk else 4
    out = np.zeros((len(rows), width), dtype=np.int64)
    for i, s in enumerate(rows):
        out[i, :4] = (doc_pos[s.doc], s.start, s.end, s.paragraph)
        if chunk:
            assert isinstance(s, Chunk)
            out[i, 4:] = (s.first_sentence, s.last_sentence)
    return out


def write_build(
    root: Path,
    manifest: Manifest,
    documents: Sequence[Document],
    chunks: list[Chunk],
    sentences: list[Span],
    vectors: VectorHandover | None,
    background_vector: np.ndarray,
    fail_after: str | None,
    keys: tuple[np.ndarray, np.ndarray] | None = None,
    terms: tuple[np.ndarray, np.ndarray] | None = None,
) -> Path:
    """Write one build beside the others and switch ``CURRENT`` to it atomically; its folder.

    ``vectors``: the chunk and sentence vectors, taken from the handover (so that they are freed
    once saved, before FAISS copies them into its graphs); None with ``keys``.
    ``keys`` (the Milvus store) replaces the vectors and FAISS files with each row's Milvus key.
    ``terms``: each sentence's latent terms (ids, weights), for models that make them (e5).
    ``fail_after`` names a step after which to raise (tests inject crashes with it).
    """
    import faiss

    builds = builds_dir(root)
    builds.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    name = f"{stamp}-{uuid.uuid4().hex[:8]}"
    tmp = builds / f"{TMP_PREFIX}{os.getpid()}-{name}"
    tmp.mkdir()
    doc_pos = {d.id: i for i, d in enumerate(documents)}

    def step(done: str) -> None:
        if fail_after == done:
            raise RuntimeError(f"injected failure after {done}")

    with open(tmp / "documents.jsonl", "w", encoding="utf-8") as out:
        for d in documents:
            row = {"id": d.id, "sha256": d.sha256, "body_start": d.body_start, "date": d.date, "lang": d.lang,
                   "kind": d.kind, "title": d.title, "pages": list(d.pages),
                   "sections": [[start, title] for start, title in d.sections], "text": d.text}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    step("documents.jsonl")
    np.save(tmp / "chunks.npy", _spans_array(chunks, doc_pos, chunk=True), allow_pickle=False)
    np.save(tmp / "sentences.npy", _spans_array(sentences, doc_pos, chunk=False), allow_pickle=False)
    np.save(tmp / "background.npy", background_vector, allow_pickle=False)
    if keys is not None:
        np.save(tmp / "chunk_keys.npy", keys[0], allow_pickle=False)
        np.save(tmp / "sentence_keys.npy", keys[1], allow_pickle=False)
    else:
        assert vectors is not None
        chunk_vectors, sentence_vectors = vectors.take()
        np.save(tmp / "chunk_vectors.npy", chunk_vectors, allow_pickle=False)
        step("chunk_vectors.npy")
        np.save(tmp / "sentence_vectors.npy", sentence_vectors, allow_pickle=False)
        del chunk_vectors, sentence_vectors  # the last references: the graphs read the files back
        faiss.write_index(faiss_from_npy(tmp / "chunk_vectors.npy"), str(tmp / "chunks.faiss"))
        step("chunks.faiss")
        faiss.write_index(faiss_from_npy(tmp / "sentence_vectors.npy"), str(tmp / "sentences.faiss"))
    if terms is not None:
        np.save(tmp / TERM_IDS, terms[0], allow_pickle=False)
        np.save(tmp / TERM_WEIGHTS, terms[1], allow_pickle=False)
    save_bm25(build_bm25([c.text for c in chunks]), str(tmp / "bm25_chunks"))
    save_bm25(build_bm25([s.text for s in sentences]), str(tmp / "bm25_sentences"))
    step("bm25")
    files = {}
    for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
        files[path.relative_to(tmp).as_posix()] = FileEntry(path.stat().st_size, sha256_file(path))
    manifest = replace(manifest, files=files, build=name)
    with open(tmp / "manifest.json", "w", encoding="utf-8") as out:
        json.dump(manifest.to_dict(), out, ensure_ascii=False, indent=2)
        out.flush()
        os.fsync(out.fileno())
    step("manifest.json")
    fsync_dir(tmp)
    final = builds / name
    os.rename(tmp, final)
    fsync_dir(builds)
    step("rename")
    pointer_tmp = root / f"{CURRENT}.{os.getpid()}.tmp"
    with open(pointer_tmp, "w", encoding="utf-8") as out:
        out.write(name + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(pointer_tmp, root / CURRENT)  # the atomic switch
    fsync_dir(root)
    return final
