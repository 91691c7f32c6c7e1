"""The index folder: its layout, the ``CURRENT`` pointer, the build lock and the clean-up of old builds.

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

A build is written into ``builds/.tmp-*`` (``rag.index.store.write_build``), flushed, renamed,
and only then named in ``CURRENT``: a crash at any point leaves the previous build in use.
``rag.index.loaded.open_index`` reads the build ``CURRENT`` names.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from shlex import quote
from typing import Any

from ..errors import IndexCorruptError, IndexMissingError
from ..settings import DEFAULT_MODEL, Settings
from .manifest import read_manifest

CURRENT = "CURRENT"
BUILDS = "builds"
TMP_PREFIX = ".tmp-"
TERM_IDS, TERM_WEIGHTS = "sentence_terms.npy", "sentence_term_weights.npy"


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

    The index's own choices of how it was built (``chunk_vectors``, ``latent_terms``, ``terms_pass``:
    two for indexes made before the setting, so their questions' terms are made as their sentences'
    were) are kept,
    so that asking never rebuilds an index its builder made on purpose; an explicit change
    (``with_``, ``rag index --chunk-vectors``) still rebuilds it. A missing or unreadable index
    falls back to the defaults (building it will say more).
    """
    built: dict[str, Any] = {}
    try:
        manifest = read_manifest(current_build(root))
        model = model if model is not None else manifest.model_spec
        built = {k: manifest.settings[k] for k in ("chunk_vectors", "latent_terms") if k in manifest.settings}
        built["terms_pass"] = manifest.build_key()["terms_pass"]
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
