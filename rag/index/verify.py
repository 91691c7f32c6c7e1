"""The full check of an index (``rag verify``): every file's SHA-256, and optionally the documents'.

Opening an index checks that each file is there with its recorded size, and reads it; a
document is taken as unchanged when its size and mtime are (``rag.index.fresh``). Neither
sees a file changed in place at the same size (a flipped byte, an edit that restores the
mtime). ``verify_index`` hashes everything against the manifest and returns one ``Problem``
per thing found, each worded with the command that fixes it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from shlex import quote

from ..errors import IndexCorruptError
from ..load import scan_sources
from .fresh import recorded_sources
from .manifest import read_manifest, rebuild_fix, sha256_file
from .milvus import store_of
from .store import current_build, open_index


@dataclass(frozen=True)
class Problem:
    """One thing found wrong: what (``index file NAME`` or ``document ID``) and the whole message, fix included."""

    subject: str
    message: str


@dataclass(frozen=True)
class VerifyReport:
    index: str
    build: str
    files: int  # index files hashed
    bytes: int  # their total size
    documents: int | None  # documents hashed (None: no documents folder given)
    seconds: float
    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_index(root: str | os.PathLike[str], documents_dir: str | os.PathLike[str] | None = None) -> VerifyReport:
    """Hash every file of the build in use against its manifest and check that it opens; with ``documents_dir``,
    hash every document against the SHA-256 recorded at build time.

    A missing index or an unreadable manifest raises (``IndexMissingError``, ``IndexCorruptError``),
    as opening would; everything else found is returned in ``problems``.
    """
    started = time.perf_counter()
    root = Path(root)
    build = current_build(root)
    manifest = read_manifest(build)
    fix = rebuild_fix(root)
    problems: list[Problem] = []
    total = 0
    for name, meta in manifest.files.items():
        path = build / name
        subject = f"index file {name}"
        try:
            size = path.stat().st_size
            total += size
            if size != meta.bytes:
                problems.append(Problem(subject, f"{subject} has {size} bytes, the manifest says {meta.bytes}: {fix}"))
            elif sha256_file(path) != meta.sha256:
                problems.append(Problem(subject, f"{subject} does not match its checksum (damaged or edited at the "
                                                 f"same size): {fix}"))
        except FileNotFoundError:
            problems.append(Problem(subject, f"{subject} is missing: {fix}"))
        except OSError as exc:
            problems.append(Problem(subject, f"{subject} cannot be read ({exc.strerror or exc}): {fix}"))
    if not problems and store_of(manifest) == "faiss":  # every file is as built: do they fit together?
        try:
            open_index(root)
        except IndexCorruptError as exc:
            problems.append(Problem(f"index {root}", str(exc)))
    documents = None
    if documents_dir is not None:
        found = _check_documents(root, build, documents_dir)
        documents, problems = found[0], problems + found[1]
    return VerifyReport(str(root), build.name, len(manifest.files), total, documents,
                        time.perf_counter() - started, tuple(problems))


def _check_documents(root: Path, build: Path, documents_dir: str | os.PathLike[str]) -> tuple[int, list[Problem]]:
    """Hash each document the build read; report the changed, removed and new ones."""
    recorded = {s.path: s for s in recorded_sources(build, read_manifest(build))[0]}
    folder = Path(documents_dir)
    update = f"update the index with `rag index --seeds {quote(str(folder))} --index {quote(str(root))}`"
    now = {s.path: s for s in scan_sources(folder)}
    problems, hashed = [], 0
    for doc_id, was in recorded.items():
        if was.sha256 is None:
            continue  # skipped at build time: never indexed
        subject = f"document {doc_id}"
        if doc_id not in now:
            problems.append(Problem(subject, f"{subject} was removed from {str(folder)!r} since the index was built: "
                                             f"{update}"))
            continue
        path = folder / doc_id
        try:
            # a pipe or a device is never read (load_documents skips them too)
            digest = sha256_file(path) if path.is_file() else "not a regular file"
        except OSError as exc:
            problems.append(Problem(subject, f"{subject} cannot be read ({exc.strerror or exc}): {update}"))
            continue
        hashed += 1
        if digest != was.sha256:
            if (now[doc_id].bytes, now[doc_id].mtime_ns) == (was.bytes, was.mtime_ns):
                problems.append(Problem(subject, f"{subject} changed since the index was built, with the same size "
                                                 f"and modification time (`rag ask` cannot see that): {update}"))
            else:
                problems.append(Problem(subject, f"{subject} changed since the index was built: {update}"))
    for doc_id in sorted(now.keys() - recorded.keys()):
        problems.append(Problem(f"document {doc_id}", f"document {doc_id} is new since the index was built: {update}"))
    return hashed, problems
