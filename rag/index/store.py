"""The index folder on disk: layout, the CURRENT pointer, the build lock, atomic writes, and opening.

Layout of an index folder::

    index/
      CURRENT            name of the build in use (replaced atomically)
      builds/<build>/    manifest.json, documents.jsonl, chunks.npy, sentences.npy,
                         chunk_vectors.npy, sentence_vectors.npy, background.npy, chunks.faiss,
                         sentences.faiss, bm25_chunks/, bm25_sentences/,
                         sentence_terms.npy and sentence_term_weights.npy (models with e5:
                         each sentence's latent terms, rag.encoders.E5Encoder.encode_terms)
                         (with the Milvus store: chunk_keys.npy and sentence_keys.npy instead
                         of the vectors and FAISS files; rag.index.milvus)

A build is written into ``builds/.tmp-*``, flushed, renamed, and only then named in
``CURRENT``: a crash at any point leaves the previous build in use. JSON, NumPy and FAISS
files only, never pickle. ``open_index`` also computes, once, everything a question needs
that depends on the index alone (encoder layout, sentence owners, document languages).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from shlex import quote
from typing import Any

import numpy as np

from ..encoders import TERMS, Encoder
from ..errors import IndexCorruptError, IndexMissingError
from ..lexical import build_bm25, load_bm25, save_bm25
from ..settings import DEFAULT_MODEL, Settings
from ..types import Chunk, Document, Span
from ..vector_store import FaissStore, VectorStore
from .manifest import FileEntry, Manifest, check_compatible, read_manifest, rebuild_fix, sha256_file, verify_files
from .milvus import check_store, open_stores, store_of
from .spans import Chunks, Sentences, check_rows, sentence_languages, sentence_owners

CURRENT = "CURRENT"
BUILDS = "builds"
TMP_PREFIX = ".tmp-"
TERM_IDS, TERM_WEIGHTS = "sentence_terms.npy", "sentence_term_weights.npy"
# Exact search reads every vector: ~0.5 us per 896-d vector here (466 ms at 1M, docs/scaling.md),
# so 20 MiB of vectors (~5,800 at 896 dimensions, ~13,600 at 384) cost ~3 ms per search. Above
# that an HNSW graph takes over (recall@10 0.998 and 0.90 ms p50 at 1M vectors, same run).
EXACT_SEARCH_BYTES = 20 * 2**20


@dataclass(frozen=True)
class Part:
    """Where one encoder's unit vector sits inside the stored (possibly fused) vectors."""

    start: int
    stop: int
    scale: float  # the stored part is unit vector * scale
    weight: float  # its weight in the score


@dataclass(frozen=True)
class Index:
    """A loaded index: spans, vectors, FAISS and BM25 indexes, and what questions read from them.

    Read-only once loaded. The last four fields are derived at open time, never per question.
    """

    path: Path
    manifest: Manifest
    documents: dict[str, Document]
    chunks: Chunks  # a Sequence[Chunk] built on read (rag.index.spans)
    sentences: Sentences  # a Sequence[Span]
    chunk_vectors: np.ndarray | None  # memory-mapped; None when the vectors are in Milvus
    sentence_vectors: np.ndarray | None
    chunk_faiss: Any  # None with Milvus
    sentence_faiss: Any
    bm25_chunks: Any
    bm25_sentences: Any
    sentence_terms: tuple[np.ndarray, np.ndarray] | None  # latent-term ids and weights (memory-mapped); None without e5
    background: np.ndarray  # mean embedding of generic text in the documents' languages
    parts: tuple[Part, ...]  # each member encoder's columns in the vectors
    sentence_chunk: np.ndarray  # for each sentence, the first chunk that holds it
    languages: frozenset[str]  # the documents' detected languages
    sentence_lang: np.ndarray  # for each sentence, its document's language (object array; None if unknown)
    chunk_store: VectorStore  # what retrieval searches and re-scores from (rag.vector_store)
    sentence_store: VectorStore

    @property
    def model(self) -> str:
        return self.manifest.model_spec

    @property
    def built_at(self) -> str:
        return self.manifest.built_at

    def chunks_per_document(self) -> dict[str, int]:
        """How many chunks each document has (0 for none), counted without building the chunks."""
        counts = np.bincount(self.chunks.doc_positions(), minlength=len(self.chunks.ids)).tolist()
        return dict(zip(self.chunks.ids, counts, strict=True))


# ---------------------------------------------------------------------------------- folder


def builds_dir(root: Path) -> Path:
    return root / BUILDS


def current_build(root: str | os.PathLike[str]) -> Path:
    """The folder of the build in use; ``IndexMissingError`` when there is none."""
    root = Path(root)
    pointer = root / CURRENT
    arg = quote(str(root))  # the fix commands below must run as printed, spaces and all
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise IndexMissingError(f"no index at {str(root)!r}: build it with `rag index --index {arg}`") from None
    except OSError as exc:
        raise IndexCorruptError(
            f"cannot read {pointer} ({exc}): rebuild with `rag index --full --index {arg}`"
        ) from exc
    build = builds_dir(root) / name
    if not name or "/" in name or not build.is_dir():
        raise IndexCorruptError(
            f"index {str(root)!r} points to a missing build {name!r}: rebuild with `rag index --full --index {arg}`"
        )
    return build


def settings_for(root: str | os.PathLike[str], model: str | None = None, base: Settings | None = None) -> Settings:
    """The settings to use with the index at ``root``: ``model`` if given, else the index's model, else the default.

    The index's own choices of how it was built (``chunk_vectors``, ``latent_terms``) are kept,
    so that asking never rebuilds an index its builder made on purpose; an explicit change
    (``with_``, ``rag index --chunk-vectors``) still rebuilds it. A missing or unreadable index
    falls back to the defaults (building it will say more).
    """
    built: dict[str, Any] = {}
    try:
        manifest = read_manifest(current_build(root))
        model = model if model is not None else manifest.model_spec
        built = {k: manifest.settings[k] for k in ("chunk_vectors", "latent_terms") if k in manifest.settings}
    except (IndexMissingError, IndexCorruptError):
        model = model if model is not None else DEFAULT_MODEL
    return (base or Settings()).with_(model=model, **built)


@contextlib.contextmanager
def build_lock(root: Path) -> Iterator[None]:
    """One builder at a time per index folder (readers never wait)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def clean_leftovers(root: Path, keep: int = 2) -> list[str]:
    """Remove temporary folders of interrupted builds and builds older than the last ``keep``.

    Call with the build lock held. The build in use and the one before it stay, so a reader
    that has just read CURRENT can still load its build.
    """
    builds = builds_dir(root)
    if not builds.is_dir():
        return []
    removed = []
    try:
        in_use = current_build(root).name
    except (IndexMissingError, IndexCorruptError):
        in_use = None
    finished = sorted((p for p in builds.iterdir() if not p.name.startswith(TMP_PREFIX)), key=lambda p: p.name)
    # newer than the build in use yet never switched to: a crash between rename and switch
    orphans = [p for p in finished if in_use is not None and p.name > in_use]
    finished = [p for p in finished if p not in orphans]
    stale = [p for p in finished if p.name != in_use][: max(0, len(finished) - keep)]
    for path in [p for p in builds.iterdir() if p.name.startswith(TMP_PREFIX)] + orphans + stale:
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
    for pointer in root.glob(f"{CURRENT}.*.tmp"):  # a CURRENT written but never swapped in
        pointer.unlink(missing_ok=True)
        removed.append(pointer.name)
    return removed


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable (the folder entry itself is flushed)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------- write


def _new_faiss(rows: int, dim: int) -> Any:
    """An empty FAISS index for ``rows`` vectors: exact up to ``EXACT_SEARCH_BYTES``, HNSW above."""
    import faiss

    index: Any
    if rows * dim * 4 <= EXACT_SEARCH_BYTES:
        # inner product over unit vectors = cosine similarity
        index = faiss.IndexFlatIP(dim)
    else:
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = 128
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


# ---------------------------------------------------------------------------------- open


def layout(manifest: Manifest) -> tuple[Part, ...]:
    """Each member encoder's columns, scale and weight in the stored vectors."""
    specs = manifest.model.parts or ()
    members = [(p.dim, p.weight) for p in specs] or [(manifest.model.dim, 1.0)]
    total = sum(w for _, w in members)
    parts, col = [], 0
    for dim, weight in members:
        parts.append(Part(col, col + dim, float(np.sqrt(weight / total)), weight))
        col += dim
    return tuple(parts)


def open_index(
    root: str | os.PathLike[str],
    settings: Settings | None = None,
    verify: bool = False,
    encoder: Encoder | None = None,
) -> Index:
    """Load the build in use at ``root``, refusing a damaged index or one built with another model.

    Every file the manifest lists must be there with its recorded size; ``verify`` also checks
    each file's SHA-256 (builds do, before reusing vectors; ``rag verify`` does; a plain open
    does not: hashing a 100k-chunk index costs seconds, see docs/reliability.md).
    With ``settings`` (and ``encoder``) given, ``check_compatible`` refuses another model.
    """
    import faiss

    root = Path(root)
    build = current_build(root)
    manifest = read_manifest(build)
    if settings is not None:  # another model or store is refused before any file is read
        check_compatible(manifest, settings, root)
        check_store(manifest, settings, root, building=False)
    milvus = store_of(manifest) == "milvus"
    verify_files(build, manifest, checksums=verify)
    fix = rebuild_fix(root)
    try:
        documents: dict[str, Document] = {}
        with open(build / "documents.jsonl", encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                documents[row["id"]] = Document(
                    id=row["id"], text=row["text"], sha256=row["sha256"], body_start=row["body_start"],
                    date=row["date"], lang=row["lang"], title=row["title"], kind=row["kind"],
                    pages=tuple(int(p) for p in row["pages"]),
                    sections=tuple((int(start), str(title)) for start, title in row["sections"]),
                )
        order = list(documents.values())
        chunk_rows = np.load(build / "chunks.npy", allow_pickle=False)
        sent_rows = np.load(build / "sentences.npy", allow_pickle=False)
        background = np.load(build / "background.npy", allow_pickle=False)
        chunk_vectors = sentence_vectors = chunk_faiss = sentence_faiss = None
        if not milvus:
            # Memory-mapped: FAISS holds its own copy for search; re-scoring reads ~150 rows per
            # question, so only those pages become resident (a loaded copy doubled the RAM at scale).
            # Builds never rewrite a file in place, so the mapping cannot be truncated under us.
            chunk_vectors = np.load(build / "chunk_vectors.npy", allow_pickle=False, mmap_mode="r")
            sentence_vectors = np.load(build / "sentence_vectors.npy", allow_pickle=False, mmap_mode="r")
            # FAISS's vectors memory-mapped too (IO_FLAG_MMAP_IFC: the flat storage of a flat or HNSW
            # index): reading 2 GB of them took ~3 s of a 100k-chunk open; the graph is still read.
            chunk_faiss = faiss.read_index(str(build / "chunks.faiss"), faiss.IO_FLAG_MMAP_IFC)
            sentence_faiss = faiss.read_index(str(build / "sentences.faiss"), faiss.IO_FLAG_MMAP_IFC)
        bm25_chunks = load_bm25(str(build / "bm25_chunks"))
        bm25_sentences = load_bm25(str(build / "bm25_sentences"))
        sentence_terms = None
        if TERM_IDS in manifest.files:
            sentence_terms = (np.load(build / TERM_IDS, allow_pickle=False, mmap_mode="r"),
                              np.load(build / TERM_WEIGHTS, allow_pickle=False, mmap_mode="r"))
    except (OSError, ValueError, KeyError, RuntimeError, json.JSONDecodeError) as exc:
        raise IndexCorruptError(f"index at {str(root)!r} cannot be read ({type(exc).__name__}: {exc}): {fix}") from exc

    texts = tuple(d.text for d in order)
    problem = check_rows(chunk_rows, sent_rows, [len(t) for t in texts])
    if problem is not None:
        raise IndexCorruptError(f"index at {str(root)!r} has inconsistent spans ({problem}): {fix}")
    ids = tuple(d.id for d in order)
    # built per read (a question reads a few hundred): building all ~560k at open took seconds at 100k chunks
    chunks, sentences = Chunks(chunk_rows, ids, texts), Sentences(sent_rows, ids, texts)
    dim = manifest.model.dim
    parts = layout(manifest)
    chunk_store: VectorStore
    sentence_store: VectorStore
    if milvus:
        chunk_store, sentence_store = open_stores(manifest, settings, build)
    else:
        assert chunk_vectors is not None and sentence_vectors is not None
        chunk_store = FaissStore(chunk_faiss, chunk_vectors)
        sentence_store = FaissStore(sentence_faiss, sentence_vectors)
        if chunk_vectors.shape != (len(chunks), dim) or sentence_vectors.shape != (len(sentences), dim):
            raise IndexCorruptError(f"index at {str(root)!r} has inconsistent sizes or dimensions: {fix}")
    consistent = (
        len(chunk_store) == len(chunks)
        and len(sentence_store) == len(sentences)
        and chunk_store.dim == dim
        and sentence_store.dim == dim
        and len(documents) == manifest.counts.documents
        and background.shape == (dim,)
        and parts[-1].stop == dim
        and (sentence_terms is None or sentence_terms[0].shape == sentence_terms[1].shape == (len(sentences), TERMS))
    )
    if not consistent:
        raise IndexCorruptError(f"index at {str(root)!r} has inconsistent sizes or dimensions: {fix}")
    if settings is not None and encoder is not None:  # its id and dimension, once the index is known sound
        check_compatible(manifest, settings, root, encoder)
    return Index(
        build, manifest, documents, chunks, sentences, chunk_vectors, sentence_vectors, chunk_faiss, sentence_faiss,
        bm25_chunks, bm25_sentences, sentence_terms, background,
        parts=parts,
        sentence_chunk=sentence_owners(chunk_rows, len(sent_rows)),
        languages=frozenset(d.lang for d in documents.values() if d.lang),
        sentence_lang=sentence_languages(sent_rows, [d.lang for d in order]),
        chunk_store=chunk_store,
        sentence_store=sentence_store,
    )
