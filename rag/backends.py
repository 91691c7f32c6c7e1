"""Where a distributed engine plugs in: bulk embedding and vector search behind two small protocols.

One machine runs both in-process (``LocalEmbedder``, ``FaissStore``); docs/scaling.md says
from the benchmark at what corpus size that stops being enough. Past it, the same pipeline
runs with an engine behind each protocol, e.g. Ray Data ``map_batches`` for embedding and a
sharded vector database for search. Chunks, sentences, offsets and citations stay with the
project; an engine only ever sees ids, texts and vectors, so answers still quote and cite
the source exactly.

The contract both sides keep:

- ids are the project's row numbers (chunk or sentence ids) as int64;
- vectors are L2-normalised float32 rows, and a score is an inner product (a cosine);
- ``search`` returns, per query row, up to ``k`` (scores, ids) best first, padded with id -1;
- the index records which encoder made its vectors (``model_id``): mixing models is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .encoders import Encoder, encode_passages, normalise
from .errors import IndexCorruptError

__all__ = ["EmbeddingBackend", "FaissStore", "LocalEmbedder", "VectorStore"]

Progress = Callable[[int], None]


@runtime_checkable
class EmbeddingBackend(Protocol):
    """Turns many passages into vectors: in this process, in a process pool, or on a cluster."""

    @property
    def model_id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def embed_passages(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        """One L2-normalised float32 row per text, in input order."""
        ...


@runtime_checkable
class VectorStore(Protocol):
    """A searchable set of (id, vector) rows: one FAISS file here, or a sharded service."""

    @property
    def dim(self) -> int: ...

    @property
    def ntotal(self) -> int: ...

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each of shape (len(queries), k), best first; missing results have id -1."""
        ...

    def save(self, path: str | Path) -> None: ...


class LocalEmbedder:
    """The in-process backend: the project's own ``Encoder``."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder

    @property
    def model_id(self) -> str:
        return self.encoder.model_id

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def embed_passages(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        return encode_passages(self.encoder, texts, progress)


class FaissStore:
    """The single-machine backend: one FAISS index with explicit int64 ids.

    ``index`` is any FAISS index built for inner product (flat, HNSW, IVF); ids are kept with
    ``IndexIDMap`` unless the index already takes them (IVF does).
    """

    def __init__(self, index: Any) -> None:
        import faiss

        if not hasattr(index, "add_with_ids") or isinstance(index, (faiss.IndexFlat, faiss.IndexHNSW)):
            index = faiss.IndexIDMap(index)
        self.index = index

    @classmethod
    def flat(cls, dim: int) -> FaissStore:
        import faiss

        return cls(faiss.IndexFlatIP(dim))  # inner product over unit vectors = cosine

    @classmethod
    def load(cls, path: str | Path) -> FaissStore:
        import faiss

        try:
            return cls(faiss.read_index(str(path)))
        except RuntimeError as exc:
            raise IndexCorruptError(f"cannot read the vector index {str(path)!r} ({exc}): rebuild the index") from exc

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        vectors = normalise(vectors)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors: give one id per vector")
        if vectors.shape[1] != self.dim:
            raise ValueError(f"vectors have dimension {vectors.shape[1]}, the index {self.dim}: use the same model")
        self.index.add_with_ids(vectors, ids)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        scores, ids = self.index.search(queries, k)
        return scores, ids

    def save(self, path: str | Path) -> None:
        import faiss

        faiss.write_index(self.index, str(path))
