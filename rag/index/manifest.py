"""The index manifest: a typed record of how a build was made, read, validated and checked.

``manifest.json`` is written once per build and never edited. It holds the format version,
the model (spec, id, dimension, member layout), the settings, the splitter version, per-document
hashes, each source file's size, mtime and SHA-256 (``sources``: what the quick freshness
check compares) and the size and SHA-256 of every index file, so a damaged index is found before use and an
index built with another model or other chunking is recognised as such (``check_compatible``).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from shlex import quote
from typing import Any

from ..chunk import SPLITTER_VERSION
from ..encoders import Encoder
from ..errors import IndexCorruptError, IndexMismatchError
from ..files import sha256_file
from ..settings import Settings, canonical_model
from ..types import SkippedFile, SourceFile

# 2: documents.jsonl keeps each document's kind, title, pages and sections;
# 3: ``sources`` records each file of the documents folder (size, mtime, SHA-256) for the quick freshness check
FORMAT_VERSION = 4  # 4: sentence latent terms
REQUIRED = ("settings", "model", "documents", "files", "counts", "built_at", "sources")


def rebuild_fix(root: str | os.PathLike[str]) -> str:
    """The command that replaces a damaged index, as it must be typed (spaces and all)."""
    return f"rebuild with `rag index --full --index {quote(str(root))}`"


@dataclass(frozen=True)
class ModelPart:
    """One member model of a (possibly fused) encoder, in the order its columns are stored."""

    id: str
    dim: int
    weight: float


@dataclass(frozen=True)
class ModelInfo:
    spec: str  # as recorded; ``canonical_model`` of it is what settings are compared with
    id: str
    dim: int
    parts: tuple[ModelPart, ...] = ()  # empty in builds that predate fused models: one part of weight 1


@dataclass(frozen=True)
class DocumentEntry:
    id: str
    sha256: str
    chars: int
    date: str | None = None
    lang: str | None = None
    kind: str = "text"
    pages: int = 0  # PDF pages; 0 for a format without pages


@dataclass(frozen=True)
class FileEntry:
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Counts:
    documents: int
    chunks: int
    sentences: int
    pages: int  # PDF pages, plus one for each document without pages


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` holds. ``to_dict`` writes the keys in the order builds always have."""

    format_version: int
    rag_version: str
    built_at: str
    model: ModelInfo
    settings: dict[str, Any]  # ``Settings.to_dict()`` of the build, as recorded
    splitter_version: int | None
    exact_search_bytes: int | None
    counts: Counts
    documents: tuple[DocumentEntry, ...]
    skipped: tuple[SkippedFile, ...] = ()
    versions: dict[str, str] = field(default_factory=dict)
    files: dict[str, FileEntry] = field(default_factory=dict)
    build: str = ""
    sources: tuple[SourceFile, ...] = ()  # every candidate file of the documents folder, as read
    scanned_ns: int = 0  # when the documents folder was scanned (time.time_ns())

    @property
    def model_spec(self) -> str:
        """The canonical spec of the model the index was built with."""
        return canonical_model(str(self.settings.get("model", self.model.spec)))

    def build_key(self) -> dict[str, Any]:
        """What the build depends on, as ``Settings.build_key()`` plus the splitter version."""
        return {"model": self.model_spec, "chunk_size": self.settings.get("chunk_size"),
                "chunk_overlap": self.settings.get("chunk_overlap"),
                # builds from before the setting existed embedded their chunks
                "chunk_vectors": self.settings.get("chunk_vectors", "encoded"),
                "latent_terms": self.settings.get("latent_terms", True),
                "terms_pass": self.settings.get("terms_pass", "two"),  # made in a pass of their own before
                "splitter_version": self.splitter_version}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """A manifest from parsed JSON; raises ``KeyError``/``TypeError``/``ValueError`` when malformed."""
        model = data["model"]
        return cls(
            format_version=int(data["format_version"]),
            rag_version=str(data.get("rag_version", "")),
            built_at=str(data["built_at"]),
            model=ModelInfo(
                spec=str(model.get("spec", data["settings"].get("model", ""))), id=str(model["id"]),
                dim=int(model["dim"]),
                parts=tuple(ModelPart(str(p["id"]), int(p["dim"]), float(p["weight"]))
                            for p in model.get("parts") or ()),
            ),
            settings=dict(data["settings"]),
            splitter_version=data.get("splitter_version"),
            exact_search_bytes=data.get("exact_search_bytes"),
            counts=Counts(**{k: int(data["counts"][k]) for k in ("documents", "chunks", "sentences", "pages")}),
            documents=tuple(
                DocumentEntry(str(d["id"]), str(d["sha256"]), int(d.get("chars", 0)), d.get("date"), d.get("lang"),
                              str(d["kind"]), int(d["pages"]))
                for d in data["documents"]
            ),
            skipped=tuple(SkippedFile(str(s["path"]), str(s["reason"])) for s in data.get("skipped", [])),
            versions=dict(data.get("versions", {})),
            files={str(k): FileEntry(v.get("bytes"), v.get("sha256")) for k, v in data["files"].items()},
            build=str(data.get("build", "")),
            sources=sources_from_dict(data["sources"]),
            scanned_ns=int(data["sources"]["scanned_ns"]),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to ``manifest.json`` (``files`` and ``build`` only once known)."""
        out: dict[str, Any] = {
            "format_version": self.format_version,
            "rag_version": self.rag_version,
            "built_at": self.built_at,
            "model": {"spec": self.model.spec, "id": self.model.id, "dim": self.model.dim,
                      "parts": [{"id": p.id, "dim": p.dim, "weight": p.weight} for p in self.model.parts]},
            "settings": self.settings,
            "splitter_version": self.splitter_version,
            "exact_search_bytes": self.exact_search_bytes,
            "counts": {"documents": self.counts.documents, "chunks": self.counts.chunks,
                       "sentences": self.counts.sentences, "pages": self.counts.pages},
            "documents": [{"id": d.id, "sha256": d.sha256, "chars": d.chars, "date": d.date, "lang": d.lang,
                           "kind": d.kind, "pages": d.pages}
                          for d in self.documents],
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            "versions": self.versions,
            "sources": sources_to_dict(self.sources, self.scanned_ns),
        }
        if self.files:
            out["files"] = {k: {"bytes": v.bytes, "sha256": v.sha256} for k, v in self.files.items()}
        if self.build:
            out["build"] = self.build
        return out


def sources_to_dict(sources: tuple[SourceFile, ...], scanned_ns: int) -> dict[str, Any]:
    return {"scanned_ns": scanned_ns,
            "files": [{"path": f.path, "bytes": f.bytes, "mtime_ns": f.mtime_ns, "sha256": f.sha256} for f in sources]}


def sources_from_dict(data: dict[str, Any]) -> tuple[SourceFile, ...]:
    """``sources_to_dict`` read back; raises ``KeyError``/``TypeError``/``ValueError`` when malformed."""
    return tuple(SourceFile(str(f["path"]), int(f["bytes"]), int(f["mtime_ns"]),
                            None if f["sha256"] is None else str(f["sha256"])) for f in data["files"])


# Manifests read lately, by path, each with the stat it was read at: `rag ask` reads the same
# manifest to check freshness and again to open the index (6 MB of JSON at 100k chunks, about
# 0.1 s a parse). Builds never rewrite a manifest in place; any write changes its ctime.
_READ: dict[str, tuple[tuple[int, int, int, int], Manifest]] = {}
_READ_LOCK = threading.Lock()
_READ_KEEP = 8


def read_manifest(build: Path) -> Manifest:
    """The manifest of one build folder; ``IndexCorruptError`` (with the fix) when unreadable or too new/old.

    A manifest read before is not parsed again while its file's inode, size, mtime and ctime are
    the same (a ``Manifest`` is immutable, so it is shared)."""
    path = build / "manifest.json"
    try:
        st = path.stat()
    except OSError:
        return _read_manifest(build)  # says what is wrong
    stamp = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    with _READ_LOCK:
        seen = _READ.get(str(path))
    if seen is not None and seen[0] == stamp:
        return seen[1]
    manifest = _read_manifest(build)
    with _READ_LOCK:
        if len(_READ) >= _READ_KEEP:
            _READ.pop(next(iter(_READ)))
        _READ[str(path)] = (stamp, manifest)
    return manifest


def _read_manifest(build: Path) -> Manifest:
    root = build.parent.parent
    fix = rebuild_fix(root)
    try:
        data = json.loads((build / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexCorruptError(f"index {str(root)!r} has no manifest.json: {fix}") from None
    except (OSError, ValueError) as exc:
        raise IndexCorruptError(f"index manifest {build / 'manifest.json'} is unreadable ({exc}): {fix}") from exc
    if not isinstance(data, dict):
        raise IndexCorruptError(f"index manifest {build / 'manifest.json'} is not a JSON object: {fix}")
    version = data.get("format_version")
    if not isinstance(version, int):
        raise IndexCorruptError(f"index manifest has no format_version: {fix}")
    if version > FORMAT_VERSION:
        raise IndexCorruptError(
            f"index {str(root)!r} has format version {version}, newer than this program reads ({FORMAT_VERSION}): "
            f"upgrade rag, or {fix}"
        )
    if version < FORMAT_VERSION:
        raise IndexCorruptError(
            f"index {str(root)!r} has the old format version {version} (this program reads {FORMAT_VERSION}): {fix}"
        )
    for key in REQUIRED:
        if key not in data:
            raise IndexCorruptError(f"index manifest lacks {key!r}: {fix}")
    try:
        return Manifest.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise IndexCorruptError(f"index manifest {build / 'manifest.json'} is malformed ({exc!r}): {fix}") from exc


def verify_files(build: Path, manifest: Manifest, checksums: bool = True) -> None:
    """Check every file the manifest lists: present, same size and (optionally) same SHA-256."""
    fix = rebuild_fix(build.parent.parent)
    for name, meta in manifest.files.items():
        path = build / name
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise IndexCorruptError(f"index file {name} is missing: {fix}") from None
        if size != meta.bytes:
            raise IndexCorruptError(f"index file {name} has {size} bytes, the manifest says {meta.bytes}: {fix}")
        if checksums and sha256_file(path) != meta.sha256:
            raise IndexCorruptError(f"index file {name} does not match its checksum (damaged or edited): {fix}")


def wanted_key(settings: Settings) -> dict[str, Any]:
    """The build key an index made now with ``settings`` would have."""
    return {**settings.build_key(), "splitter_version": SPLITTER_VERSION}


def check_compatible(
    manifest: Manifest, settings: Settings, root: str | os.PathLike[str], encoder: Encoder | None = None
) -> bool:
    """Does the index fit these settings and this encoder? The one place that decides it.

    Raises ``IndexMismatchError`` (with the command that fixes it) when the index was built
    with another model: another spec than ``settings.model``, or, given ``encoder``, another
    model id or dimension. Returns False when only the build key differs (chunking or the
    splitter changed: the index is stale and a build redoes it), True when it fits.
    """
    where, have = str(root), manifest.model_spec
    if have != settings.model:
        raise IndexMismatchError(
            f"the index at {where!r} was built with model {have!r}, not {settings.model!r}: "
            f"rebuild it with `rag index --full --model {quote(settings.model)} --index {quote(where)}`, "
            f"or ask with --model {have}"
        )
    if encoder is not None and (encoder.dim != manifest.model.dim or encoder.model_id != manifest.model.id):
        raise IndexMismatchError(
            f"the index at {where!r} was built by {manifest.model.id!r} ({manifest.model.dim} dimensions) "
            f"but the model now loaded is {encoder.model_id!r} ({encoder.dim} dimensions): rebuild it with "
            f"`rag index --full --model {quote(settings.model)} --index {quote(where)}`"
        )
    return manifest.build_key() == wanted_key(settings)
