"""Is the index current for the documents folder? The quick check reads no document and hashes nothing.

A build records every candidate file of the documents folder with its size and mtime as they
were just before it was read, and the SHA-256 of what was read (``Manifest.sources``). When a
stat-only scan finds the same files with the same sizes and mtimes, the index is current and
no document is opened. Anything else (a file added, removed, resized or touched) sends the
caller back to reading and hashing every document, as before; a touched file whose bytes did
not change is then not re-embedded (same SHA-256), and ``record_sources`` stores its new stats
in ``sources.json`` beside the manifest, so the next start is stat-only again.

What a size and mtime cannot see (an edit that keeps the size and restores the mtime, or a
clock set back) is found by ``rag verify --docs`` (``rag.index.verify``): docs/reliability.md.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..errors import DocumentsError, IndexCorruptError, IndexMismatchError, IndexMissingError
from ..load import scan_sources
from ..settings import Settings
from ..types import LoadResult, SourceFile
from .manifest import Manifest, check_compatible, read_manifest, sources_from_dict, sources_to_dict
from .store import current_build

SIDECAR = "sources.json"  # refreshed stats of the build's documents; a cache: the manifest is the fallback
# A file written within this much of the scan that recorded it may be written again within the same
# mtime tick (coarse clocks, FAT's 2 s, NFS): its mtime is not trusted and the check reads the documents.
RACY_NS = 2_000_000_000


def recorded_sources(build: Path, manifest: Manifest) -> tuple[tuple[SourceFile, ...], int]:
    """The documents' stats last recorded for this build (``sources.json`` when valid, else the manifest's)."""
    try:
        data = json.loads((build / SIDECAR).read_text(encoding="utf-8"))
        if data.get("build") == manifest.build:
            return sources_from_dict(data), int(data["scanned_ns"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # missing or damaged: the manifest's record still holds
    return manifest.sources, manifest.scanned_ns


def unchanged(recorded: Sequence[SourceFile], scanned_ns: int, now: Sequence[SourceFile]) -> bool:
    """Do the files found now have the recorded paths, sizes and mtimes (and were they not written too close
    to the recording scan to trust)?"""
    if len(recorded) != len(now):
        return False
    for was, is_ in zip(recorded, now, strict=True):
        if (was.path, was.bytes, was.mtime_ns) != (is_.path, is_.bytes, is_.mtime_ns):
            return False
        if was.mtime_ns >= scanned_ns - RACY_NS:
            return False
    return True


@dataclass(frozen=True)
class IndexState:
    """What an index folder holds for these settings, before any document is compared: the one
    classification behind ``quick_status``, ``index_status`` and ``ensure_index``.

    ``status`` is ``missing``, ``mismatch`` (another model; ``mismatch`` is the error that says the
    command that fixes it), ``stale`` (other chunking) or ``ok`` (same build key).
    """

    status: str
    build: Path | None = None
    manifest: Manifest | None = None
    mismatch: IndexMismatchError | None = None

    def holds(self, loaded: LoadResult) -> bool:
        """Same build key and the same documents: nothing to build."""
        return self.status == "ok" and self.manifest is not None and same_documents(self.manifest.documents,
                                                                                    loaded.documents)


def index_state(root: str | os.PathLike[str], settings: Settings) -> IndexState:
    """Classify the index at ``root`` against ``settings``; a damaged manifest raises ``IndexCorruptError``."""
    try:
        build = current_build(root)
    except IndexMissingError:
        return IndexState("missing")
    manifest = read_manifest(build)
    try:
        if not check_compatible(manifest, settings, root):
            return IndexState("stale", build, manifest)
    except IndexMismatchError as error:
        return IndexState("mismatch", build, manifest, error)
    return IndexState("ok", build, manifest)


class Hashed(Protocol):
    """A document as a build records it (``Document``, the manifest's ``DocumentEntry``)."""

    @property
    def id(self) -> str: ...
    @property
    def sha256(self) -> str: ...


def same_documents(recorded: Iterable[Hashed], documents: Iterable[Hashed]) -> bool:
    """The same documents, by id and SHA-256 of their bytes: the one test of "nothing to re-embed"."""
    return {d.id: d.sha256 for d in recorded} == {d.id: d.sha256 for d in documents}


def index_status(root: str | os.PathLike[str], loaded: LoadResult, settings: Settings) -> str:
    """``missing``, ``mismatch`` (another model), ``stale`` (documents or chunking) or ``ok``.

    A damaged index raises ``IndexCorruptError``: rebuilding it unasked would hide the damage
    and overwrite an index written by a newer version.
    """
    state = index_state(root, settings)
    if state.status != "ok":
        return state.status
    return "ok" if state.holds(loaded) else "stale"


def quick_status(root: str | os.PathLike[str], documents_dir: str | os.PathLike[str], settings: Settings) -> str:
    """``missing``, ``mismatch`` (another model), ``stale`` (chunking), ``ok`` (current, by stats alone) or
    ``unknown`` (the stats differ: read the documents and ask ``index_status``).

    A damaged manifest raises ``IndexCorruptError``, as ``index_status`` does.
    """
    state = index_state(root, settings)
    if state.status != "ok" or state.build is None or state.manifest is None:
        return state.status
    try:
        now = scan_sources(documents_dir)
    except DocumentsError:
        return "unknown"  # reading the folder will say what is wrong with it
    return "ok" if unchanged(*recorded_sources(state.build, state.manifest), now) else "unknown"


def record_sources(root: str | os.PathLike[str], loaded: LoadResult) -> bool:
    """Store ``loaded``'s stats for the build in use when its documents are exactly ``loaded``'s; True if written.

    For a folder whose files were touched but not changed: the next quick check passes again.
    Best effort: a build folder removed meanwhile, or a read-only index, leaves the record as it was.
    """
    try:
        build = current_build(root)
        manifest = read_manifest(build)
    except (IndexMissingError, IndexCorruptError):
        return False
    if not same_documents(manifest.documents, loaded.documents):
        return False
    if unchanged(*recorded_sources(build, manifest), loaded.sources):
        return False  # already what a quick check passes on
    tmp = build / f".{SIDECAR}.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps({"build": manifest.build, **sources_to_dict(loaded.sources, loaded.scanned_ns)},
                                  ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, build / SIDECAR)  # readers see the old record or the new one, never half of one
    except OSError:
        tmp.unlink(missing_ok=True)
        return False
    return True
