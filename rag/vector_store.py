"""Where chunk and sentence vectors are searched and read back: FAISS files, or Milvus.

Retrieval needs two things of a set of vectors (``VectorStore``): the nearest rows to a
question, and the exact vectors of a few hundred candidate rows for re-scoring. Rows are the
build's chunk or sentence numbers.

- ``FaissStore`` (the default): a FAISS index and the memory-mapped ``.npy`` vectors in the
  build folder. Each build writes new files, so it needs no add or delete.
- ``MilvusStore``: one Milvus collection per kind (chunks, sentences), shared by the builds of
  an index, written by ``MilvusCollections``. A row's primary key is a hash of (kind, document,
  document SHA-256, ordinal), so a document that changes gets new keys: a build inserts the
  rows of new or changed documents while the previous build still serves from its own rows,
  and deletes the rows of changed or removed documents (``doc_key``) only after the switch.
  The build folder keeps each row's key (``chunk_keys.npy``, ``sentence_keys.npy``).

The same client code speaks to Milvus Lite (a local ``.db`` file), a Milvus server and a
Milvus cluster (``http://host:19530``).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .errors import IndexMissingError, StoreError, StoreMismatchError
from .settings import HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, HNSW_M, MILVUS_INDEXES

KINDS = ("chunks", "sentences")
HNSW_PARAMS = {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION}  # the same graph as FAISS at scale
_INSERT_ROWS = 1000  # rows per insert call: a few MB per request at 896 dimensions
_FETCH_ROWS = 1000  # keys per get call: Milvus bounds the size of a filter expression


@runtime_checkable
class VectorStore(Protocol):
    """What retrieval reads: nearest rows for a query, and exact vectors of given rows."""

    @property
    def dim(self) -> int: ...

    def __len__(self) -> int: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows), each (len(queries), k), best first; missing results have row -1."""
        ...

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """The stored float32 vectors of ``rows``, in that order."""
        ...


class FaissStore:
    """A FAISS index over a build's vectors, which stay memory-mapped for re-scoring."""

    def __init__(self, index: Any, vectors: np.ndarray) -> None:
        self.index, self._vectors = index, vectors

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim), k)

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self._vectors[np.asarray(rows, dtype=np.int64)], dtype=np.float32)


# ------------------------------------------------------------------------------------ keys


def doc_key(doc: str, version: str) -> str:
    """One version of one document (its SHA-256 and how it was chunked): rows are deleted by this key."""
    return hashlib.blake2b(f"{doc}\0{version}".encode(), digest_size=16).hexdigest()


def row_keys(kind: str, key: str, count: int) -> np.ndarray:
    """Primary keys of the first ``count`` rows of ``kind`` of a document version (signed int64, as Milvus wants)."""
    base = f"{kind}\0{key}\0"
    return np.array(
        [int.from_bytes(hashlib.blake2b(f"{base}{i}".encode(), digest_size=8).digest(), "little", signed=True)
         for i in range(count)],
        dtype=np.int64,
    )


def default_prefix(root: str | os.PathLike[str], model_id: str) -> str:
    """Collection names of an index: one pair per index folder and model, so neither overwrites another."""
    digest = hashlib.blake2b(f"{os.path.abspath(root)}\0{model_id}".encode(), digest_size=6).hexdigest()
    return f"rag_{digest}"


# ---------------------------------------------------------------------------------- milvus


def _is_local_file(uri: str) -> bool:
    return "://" not in uri


def resolve_uri(uri: str) -> str:
    """A Milvus Lite file as an absolute path (the manifest must not depend on the working folder)."""
    return os.path.abspath(uri) if _is_local_file(uri) else uri


class MilvusCollections:
    """The two collections (chunks, sentences) of one index in one Milvus, Lite file or server."""

    def __init__(self, uri: str, prefix: str, token: str | None = None, timeout: float = 30.0) -> None:
        self.uri, self.prefix, self.timeout = resolve_uri(uri), prefix, timeout
        # pymilvus logs each failed call with its traceback; the failure is raised as a StoreError instead
        logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
        try:
            from pymilvus import MilvusClient
        except ImportError as exc:
            raise StoreError('the Milvus store needs pymilvus: pip install -e ".[milvus]"') from exc
        try:
            self.client = MilvusClient(self.uri, token=token or "", timeout=timeout)
        except Exception as exc:  # pymilvus raises several kinds; all mean "not reachable"
            raise StoreError(
                f"cannot reach Milvus at {self.uri!r} ({_reason(exc)}): start the server, or pass a reachable "
                "--milvus-uri (a Milvus Lite file such as index.db, or http://HOST:19530)"
            ) from exc

    def name(self, kind: str) -> str:
        return f"{self.prefix}_{kind}"

    # -- schema ------------------------------------------------------------------------

    def ensure(self, model_id: str, dim: int, index_type: str = "HNSW") -> None:
        """Create both collections, or check that existing ones hold this model's vectors."""
        from pymilvus import DataType, MilvusClient

        if index_type not in MILVUS_INDEXES:
            raise StoreError(f"milvus_index must be one of {', '.join(MILVUS_INDEXES)}, not {index_type!r}")
        for kind in KINDS:
            name = self.name(kind)
            if self._call(self.client.has_collection, name):
                self.check(model_id, dim, kinds=(kind,))
                continue
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("doc_key", DataType.VARCHAR, max_length=32)
            schema.add_field("doc", DataType.VARCHAR, max_length=1024)  # for people reading the collection
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
            params = self.client.prepare_index_params()
            params.add_index(field_name="vector", index_type=index_type, metric_type="IP",  # cosine on unit vectors
                             params=HNSW_PARAMS if index_type == "HNSW" else {})
            # No scalar index on doc_key: deletes by document scan it, which every server version
            # accepts (INVERTED needs 2.4+; the 2.3.5 server of PyPI's `milvus` package refuses it).
            self._call(self.client.create_collection, name, schema=schema, index_params=params,
                       consistency_level="Strong",  # a build's rows are searchable as soon as it switches
                       properties={"rag.model_id": model_id, "rag.dim": str(dim)})

    def check(self, model_id: str, dim: int, kinds: Sequence[str] = KINDS) -> None:
        """Refuse collections that are missing or hold another model's or dimension's vectors."""
        for kind in kinds:
            name = self.name(kind)
            if not self._call(self.client.has_collection, name):
                raise IndexMissingError(
                    f"Milvus at {self.uri!r} has no collection {name!r}: rebuild with `rag index --full --store milvus`"
                )
            info = self._call(self.client.describe_collection, name)
            have_dim = next((int(f["params"]["dim"]) for f in info.get("fields", [])
                             if f.get("name") == "vector" and "dim" in f.get("params", {})), None)
            have_model = info.get("properties", {}).get("rag.model_id")
            if have_dim != dim or have_model != model_id:
                raise StoreMismatchError(
                    f"Milvus collection {name!r} holds vectors of model {have_model!r} ({have_dim} dimensions), "
                    f"not {model_id!r} ({dim}): choose another --milvus-collection, or drop that collection"
                )
            # A server (or Lite) restarted since the build holds collections released from memory
            self._call(self.client.load_collection, name)

    def drop(self) -> None:
        for kind in KINDS:
            if self._call(self.client.has_collection, self.name(kind)):
                self._call(self.client.drop_collection, self.name(kind))

    # -- rows --------------------------------------------------------------------------

    def insert(self, kind: str, keys: np.ndarray, doc_keys: Sequence[str], docs: Sequence[str],
               vectors: np.ndarray) -> None:
        name = self.name(kind)
        for start in range(0, len(keys), _INSERT_ROWS):
            stop = start + _INSERT_ROWS
            rows = [{"id": int(k), "doc_key": dk, "doc": d[:1024], "vector": v}
                    for k, dk, d, v in zip(keys[start:stop], doc_keys[start:stop], docs[start:stop],
                                           np.asarray(vectors[start:stop], dtype=np.float32).tolist(), strict=True)]
            self._call(self.client.upsert, name, rows)  # upsert: a retried build may re-send rows

    def delete_documents(self, doc_keys: Iterable[str]) -> None:
        """Delete every row of these document versions, in both collections."""
        keys = sorted(set(doc_keys))
        for kind in KINDS:
            for start in range(0, len(keys), _FETCH_ROWS):
                batch = ", ".join(f'"{k}"' for k in keys[start : start + _FETCH_ROWS])  # hex only: no quoting
                self._call(self.client.delete, self.name(kind), filter=f"doc_key in [{batch}]")

    def count(self, kind: str) -> int:
        rows = self._call(self.client.query, self.name(kind), filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def search(self, kind: str, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, keys) per query, best first, padded with key 0 and score -inf."""
        queries = np.asarray(queries, dtype=np.float32).reshape(len(queries), -1)
        params = {"metric_type": "IP", "params": {"ef": max(HNSW_EF_SEARCH, k)}}
        hits = self._call(self.client.search, self.name(kind), data=queries.tolist(), limit=k,
                          output_fields=["id"], search_params=params)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        keys = np.zeros((len(queries), k), dtype=np.int64)
        for q, row in enumerate(hits):
            for j, hit in enumerate(row[:k]):
                scores[q, j], keys[q, j] = hit["distance"], hit["id"]
        return scores, keys

    def fetch(self, kind: str, keys: np.ndarray) -> dict[int, np.ndarray]:
        out: dict[int, np.ndarray] = {}
        wanted = [int(k) for k in keys]
        for start in range(0, len(wanted), _FETCH_ROWS):
            rows = self._call(self.client.get, self.name(kind), ids=wanted[start : start + _FETCH_ROWS],
                              output_fields=["vector"])
            for row in rows:
                out[int(row["id"])] = np.asarray(row["vector"], dtype=np.float32)
        return out

    def close(self) -> None:
        self.client.close()

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except Exception as exc:
            raise StoreError(f"Milvus at {self.uri!r} refused {getattr(method, '__name__', 'a request')} "
                             f"({_reason(exc)}): check that it is running and reachable") from exc


def _reason(exc: Exception) -> str:
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(str(message).split())[:300]


class MilvusStore:
    """One build's view of a Milvus collection, as rows: keys the build does not hold are ignored.

    Such keys belong to another build of the same index (a build being written, or one that
    failed before its switch); over-fetching by ``slack`` keeps ``k`` results despite them.
    """

    def __init__(self, collections: MilvusCollections, kind: str, keys: np.ndarray, dim: int,
                 slack: int = 16) -> None:
        self.collections, self.kind, self._dim, self.slack = collections, kind, dim, slack
        self.keys = np.asarray(keys, dtype=np.int64)
        self._order = np.argsort(self.keys, kind="stable")
        self._sorted = self.keys[self._order]

    @property
    def dim(self) -> int:
        return self._dim

    def __len__(self) -> int:
        return len(self.keys)

    def rows_of(self, keys: np.ndarray) -> np.ndarray:
        """Row of each key, -1 where this build has no such key."""
        keys = np.asarray(keys, dtype=np.int64)
        if not len(self._sorted):
            return np.full(keys.shape, -1, dtype=np.int64)
        pos = np.clip(np.searchsorted(self._sorted, keys), 0, len(self._sorted) - 1)
        return np.where(self._sorted[pos] == keys, self._order[pos], -1).astype(np.int64)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, keys = self.collections.search(self.kind, queries, k + self.slack)
        rows = np.where(np.isfinite(scores), self.rows_of(keys), -1)
        out_scores = np.full((len(rows), k), -np.inf, dtype=np.float32)
        out_rows = np.full((len(rows), k), -1, dtype=np.int64)
        for q in range(len(rows)):
            keep = rows[q] >= 0
            found = rows[q][keep][:k]
            out_rows[q, : len(found)], out_scores[q, : len(found)] = found, scores[q][keep][:k]
        return out_scores, out_rows

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        keys = self.keys[rows]
        found = self.collections.fetch(self.kind, keys)
        if len(found) < len(set(keys.tolist())):
            raise IndexMissingError(
                f"Milvus collection {self.collections.name(self.kind)!r} lacks rows of this build (the index was "
                "rebuilt or the collection changed since it was opened): open the index again"
            )
        if not len(rows):
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([found[int(k)] for k in keys])
