"""The documents folder as the chat app changes it: add uploaded files, remove documents.

Uploads are checked (type, size, readable by ``rag.formats``) before anything is written,
then written atomically: into a hidden temporary file of the folder (the loader skips hidden
files), flushed, then linked under the final name, which fails rather than replace a file
that exists. A name already taken gets " (2)", " (3)", ... before its suffix; the same bytes
under the same name are refused as already there. Removing a document moves it into the
hidden ``.removed/`` folder beside it, so a click never destroys a file.
"""

from __future__ import annotations

import os
import re
import unicodedata
import uuid
from dataclasses import dataclass
from pathlib import Path

from .errors import DocumentFormatError, DocumentsError
from .formats import SUFFIXES, kind_of
from .index.store import fsync_dir
from .load import parse_document

UPLOAD_MAX_BYTES = 50 * 2**20  # stated in the UI; a 50 MB PDF is several thousand pages
REMOVED = ".removed"
_MAX_NAME = 180
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")


@dataclass(frozen=True)
class Added:
    """What became of one uploaded file: ``saved_as`` (its document id) or ``refused`` with the reason."""

    name: str
    saved_as: str | None = None
    refused: str | None = None
    pages: int = 0

    @property
    def renamed(self) -> bool:
        return self.saved_as is not None and self.saved_as != self.name

    @property
    def message(self) -> str:
        if self.refused is not None:
            return f"{self.name} was not added: {self.refused}"
        if self.renamed:
            return f"{self.name} was added as {self.saved_as} (a different file of that name is already there)"
        return f"{self.name} was added"


def clean_name(name: str) -> str:
    """The uploaded file's own name, without folders, checked; raises ``DocumentFormatError``."""
    base = unicodedata.normalize("NFC", re.split(r"[/\\]", name)[-1]).strip()
    if not base or base.startswith(".") or _UNSAFE.search(base):
        raise DocumentFormatError("the file name is empty, hidden or holds control characters: rename the file")
    if len(base.encode("utf-8")) > _MAX_NAME:
        raise DocumentFormatError(f"the file name is longer than {_MAX_NAME} bytes: rename the file")
    if kind_of(base) is None:
        raise DocumentFormatError(f"unsupported file type: use one of {', '.join(SUFFIXES)}")
    return base


def _candidates(name: str) -> list[str]:
    stem, dot, suffix = name.rpartition(".")
    return [name] + [f"{stem} ({n}){dot}{suffix}" for n in range(2, 100)]


def add_file(folder: str | os.PathLike[str], name: str, data: bytes) -> Added:
    """Check and write one uploaded file into ``folder``; never replaces an existing file."""
    try:
        base = clean_name(name)
        if len(data) > UPLOAD_MAX_BYTES:
            raise DocumentFormatError(f"{len(data) / 2**20:.1f} MB, over the limit of {UPLOAD_MAX_BYTES // 2**20} MB")
        document = parse_document(base, data)  # refuse what the index would skip, before writing it
    except DocumentFormatError as exc:
        return Added(name, refused=str(exc))
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".upload-{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "xb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        for candidate in _candidates(base):
            target = root / candidate
            try:
                os.link(tmp, target)  # atomic, and fails when the name is taken: never overwrites
            except FileExistsError:
                if target.is_file() and target.read_bytes() == data:
                    return Added(name, refused=f"the same file is already in the documents folder as {candidate}")
                continue
            fsync_dir(root)
            return Added(name, saved_as=candidate, pages=document.page_count)
        return Added(name, refused="too many files of that name already: rename the file")
    finally:
        tmp.unlink(missing_ok=True)


def remove_document(folder: str | os.PathLike[str], doc_id: str) -> Path:
    """Move the document ``doc_id`` out of the index's sight, into ``.removed/``; where it went."""
    root = Path(folder).resolve()
    path = (root / doc_id).resolve()
    if root not in path.parents or not path.is_file() or any(p.startswith(".") for p in Path(doc_id).parts):
        raise DocumentsError(f"no document {doc_id!r} in {str(folder)!r}: it may have been removed already")
    bin_dir = root / REMOVED
    bin_dir.mkdir(exist_ok=True)
    for candidate in _candidates(path.name):
        target = bin_dir / candidate
        try:
            os.link(path, target)
        except FileExistsError:
            continue
        path.unlink()
        fsync_dir(path.parent)
        return target
    raise DocumentsError(f"cannot remove {doc_id!r}: {bin_dir} holds too many files of that name; empty it")
