"""An index whose vectors live in Milvus: which collections, which rows, and when rows go.

The build folder keeps everything else (documents, spans, BM25, the background vector) plus
the Milvus key of every chunk and sentence (``chunk_keys.npy``, ``sentence_keys.npy``). Keys
hash (document, SHA-256, chunking) and the row's ordinal, so one document version always
gets the same keys and a changed document new ones. Order of a build (rag.index.build):

1. delete the rows an interrupted build left (listed in ``milvus-pending.json``), then list
   the document versions this build will insert there;
2. insert the rows of new and changed documents: the build in use never reads them;
3. write the build folder and switch ``CURRENT`` (the atomic step, as with FAISS);
4. delete the rows of document versions the new build no longer holds, drop the previous
   build's collections if it used others, and remove the pending list.

A failure before 3 leaves the previous build current with all its rows.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..chunk import SPLITTER_VERSION
from ..errors import IndexCorruptError, StoreError, StoreMismatchError
from ..settings import Settings
from ..types import Chunk, Document, Span
from ..vector_store import MilvusCollections, MilvusStore, default_prefix, doc_key, resolve_uri, row_keys
from .manifest import Manifest, rebuild_fix

PENDING = "milvus-pending.json"


def store_of(manifest: Manifest) -> str:
    return str(manifest.settings.get("store") or "faiss")


def check_store(manifest: Manifest, settings: Settings, root: str | os.PathLike[str], building: bool) -> None:
    """Refuse a store option that disagrees with the index (building: unless it is a full rebuild)."""
    have = store_of(manifest)
    if settings.store is None or settings.store == have:
        return
    fix = (f"rebuild it with `rag index --full --store {settings.store} --index {root}`" if building
           else f"leave out --store, or rebuild it with `rag index --full --store {settings.store}`")
    raise StoreMismatchError(f"the index at {str(root)!r} keeps its vectors in {have}, not {settings.store}: {fix}")


def resolve(settings: Settings, root: Path, model_id: str, previous: Manifest | None) -> Settings:
    """The build's Milvus settings made explicit (absolute Lite path, collection prefix), for the manifest."""
    before = previous.settings if previous is not None and store_of(previous) == "milvus" else {}
    uri = settings.milvus_uri or before.get("milvus_uri")
    if not uri:
        raise StoreError("--store milvus needs --milvus-uri: a Milvus Lite file (e.g. index.db) or "
                         "http://HOST:19530")
    prefix = settings.milvus_collection or default_prefix(root, model_id)
    return settings.with_(store="milvus", milvus_uri=resolve_uri(str(uri)), milvus_collection=prefix)


def connect(settings: Settings) -> MilvusCollections:
    assert settings.milvus_uri and settings.milvus_collection
    return MilvusCollections(settings.milvus_uri, settings.milvus_collection, token=os.environ.get("MILVUS_TOKEN"))


def version_key(doc: Document | str, sha256: str, settings: dict[str, object], splitter: int | None) -> str:
    doc_id = doc.id if isinstance(doc, Document) else doc
    # derived chunk vectors are other rows; encoded keys stay as they were before the setting existed
    kind = ":derived" if settings.get("chunk_vectors", "encoded") == "derived" else ""
    return doc_key(doc_id, f"{sha256}:{settings.get('chunk_size')}:{settings.get('chunk_overlap')}:{splitter}{kind}")


def manifest_keys(manifest: Manifest) -> set[str]:
    """The document versions (``doc_key``) a build's rows belong to."""
    return {version_key(d.id, d.sha256, manifest.settings, manifest.splitter_version) for d in manifest.documents}


def keys_of(rows: Sequence[Span], kind: str, versions: dict[str, str]) -> np.ndarray:
    """Each row's key: its document version's key and its ordinal within that document."""
    out = np.zeros(len(rows), dtype=np.int64)
    start = 0
    while start < len(rows):
        doc = rows[start].doc
        stop = start
        while stop < len(rows) and rows[stop].doc == doc:
            stop += 1
        out[start:stop] = row_keys(kind, versions[doc], stop - start)
        start = stop
    return out


def build_keys(documents: Sequence[Document], chunks: Sequence[Chunk], sentences: Sequence[Span],
               settings: Settings) -> tuple[dict[str, str], np.ndarray, np.ndarray]:
    versions = {d.id: version_key(d, d.sha256, settings.to_dict(), SPLITTER_VERSION) for d in documents}
    return versions, keys_of(chunks, "chunks", versions), keys_of(sentences, "sentences", versions)


@contextlib.contextmanager
def pending(root: Path, collections: MilvusCollections, inserting: set[str], keep: set[str]) -> Iterator[None]:
    """Steps 1 and 4's pending list: rows of an interrupted build are deleted by the next one."""
    path = root / PENDING
    if path.exists():
        try:
            left = set(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            left = set()
        collections.delete_documents(left - keep)
    path.write_text(json.dumps(sorted(inserting)), encoding="utf-8")
    yield
    path.unlink(missing_ok=True)


def insert_rows(collections: MilvusCollections, kind: str, rows: Sequence[Span], keys: np.ndarray,
                versions: dict[str, str], todo: list[int], vectors: np.ndarray) -> None:
    collections.insert(kind, keys[todo], [versions[rows[i].doc] for i in todo], [rows[i].doc for i in todo], vectors)


def after_switch(collections: MilvusCollections, previous: Manifest | None, keep: set[str]) -> None:
    """Step 4: the rows and collections only the previous build used."""
    if previous is None or store_of(previous) != "milvus":
        return
    same = (previous.settings.get("milvus_uri") == collections.uri
            and previous.settings.get("milvus_collection") == collections.prefix)
    if same:
        collections.delete_documents(manifest_keys(previous) - keep)
        return
    with contextlib.suppress(StoreError):  # another server gone away must not fail a finished build
        old = MilvusCollections(str(previous.settings["milvus_uri"]), str(previous.settings["milvus_collection"]))
        if old.uri == collections.uri:
            old.drop()


def open_stores(manifest: Manifest, settings: Settings | None, build: Path) -> tuple[MilvusStore, MilvusStore]:
    """The build's two Milvus stores, checked against its model; ``settings.milvus_uri`` may point elsewhere."""
    recorded = Settings.from_dict({k: v for k, v in manifest.settings.items() if k.startswith("milvus_")})
    uri = (settings.milvus_uri if settings is not None else None) or recorded.milvus_uri
    collections = connect(recorded.with_(milvus_uri=uri))
    collections.check(manifest.model.id, manifest.model.dim)
    try:
        chunk_keys = np.load(build / "chunk_keys.npy", allow_pickle=False)
        sentence_keys = np.load(build / "sentence_keys.npy", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise IndexCorruptError(f"index keys in {build} cannot be read ({exc}): "
                                f"{rebuild_fix(build.parent.parent)}") from exc
    dim = manifest.model.dim
    return (MilvusStore(collections, "chunks", chunk_keys, dim),
            MilvusStore(collections, "sentences", sentence_keys, dim))
