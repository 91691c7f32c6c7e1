"""Opening an index: the loaded ``Index``, and ``open_index``, which checks the build in use and
computes, once, everything a question needs that depends on the index alone (encoder layout,
sentence owners, document languages).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..encoders import TERMS, Encoder
from ..errors import IndexCorruptError
from ..lexical import load_bm25
from ..settings import Settings
from ..types import Document
from ..vector_store import FaissStore, VectorStore
from .folder import TERM_IDS, TERM_WEIGHTS, current_build
from .manifest import Manifest, check_compatible, read_manifest, rebuild_fix, verify_files
from .milvus import check_store, open_stores, store_of
from .spans import Chunks, Sentences, check_rows, sentence_languages, sentence_owners


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
