"""Stage 1, load: read a documents folder into ``Document`` values, skipping what cannot be read."""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

from .errors import DocumentsError
from .types import Document, LoadResult, SkippedFile

SUFFIXES = (".txt", ".md")
# "date 2022-10" (optionally "date: 2022-10-05") before the first words of the file.
_DATE_PREFIX = re.compile(r"\A[\ufeff\s]*date:?[ \t]+(\d{4}-\d{2}(?:-\d{2})?)\b[ \t]*(?:\r?\n)?")
_LEADING_BLANK = re.compile(r"[\ufeff\s]*")


def iter_files(root: Path) -> Iterator[Path]:
    """Candidate files below ``root`` in a stable order, following directory symlinks once."""
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            st = folder.stat()
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen:  # a symlink loop or a second link to the same folder
            continue
        seen.add((st.st_dev, st.st_ino))
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()
            except OSError:  # a symlink to itself: load_documents reports it below instead of losing it
                is_dir = False
            if is_dir:
                subfolders.append(Path(entry.path))
            elif entry.name.lower().endswith(SUFFIXES):
                yield Path(entry.path)
        stack.extend(reversed(subfolders))


def parse_document(doc_id: str, data: bytes) -> Document:
    """Decode one file and find its metadata. Raises ``UnicodeDecodeError`` or ``ValueError``."""
    if b"\x00" in data:
        raise ValueError("binary file (contains NUL bytes)")
    text = data.decode("utf-8")
    date = None
    match = _DATE_PREFIX.match(text)
    if match:
        date = match.group(1)
        body_start = match.end()
    else:
        body_start = 0
    body_start += _LEADING_BLANK.match(text, body_start).end() - body_start  # type: ignore[union-attr]
    if body_start >= len(text) or not text[body_start:].strip():
        raise ValueError("empty file (no text)")
    return Document(
        id=doc_id,
        text=text,
        sha256=hashlib.sha256(data).hexdigest(),
        body_start=body_start,
        date=date,
        lang=detect_language(text[body_start : body_start + 3000]),
    )


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of ``text``, or None when it is too short to tell."""
    if len(text.strip()) < 20:
        return None
    import py3langid

    lang, _ = py3langid.classify(text)
    return str(lang)


def load_documents(root: str | os.PathLike[str]) -> LoadResult:
    """Read every ``.txt`` and ``.md`` file below ``root``.

    Unreadable, binary, undecodable and empty files are returned in ``skipped`` with the
    reason; a folder with no usable document raises ``DocumentsError``.
    """
    folder = Path(root)
    if not folder.is_dir():
        raise DocumentsError(
            f"documents folder {str(folder)!r} does not exist: create it and put .txt or .md files in it"
        )
    documents: list[Document] = []
    skipped: list[SkippedFile] = []
    for path in iter_files(folder):
        doc_id = path.relative_to(folder).as_posix()
        try:
            doc_id.encode("utf-8")
        except UnicodeEncodeError:  # Linux names are bytes; ids must be text we can write and print
            shown = doc_id.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            skipped.append(SkippedFile(shown, "file name is not valid UTF-8: rename the file"))
            continue
        try:
            # a pipe would block the read and a device (a link to /dev/zero) would never end
            if not stat.S_ISREG(path.stat().st_mode):
                skipped.append(SkippedFile(doc_id, "not a regular file (a pipe, socket or device)"))
                continue
            data = path.read_bytes()
        except OSError as exc:
            skipped.append(SkippedFile(doc_id, f"cannot be read ({exc.strerror or exc})"))
            continue
        try:
            documents.append(parse_document(doc_id, data))
        except UnicodeDecodeError as exc:
            skipped.append(SkippedFile(doc_id, f"not valid UTF-8 (byte {exc.start})"))
        except ValueError as exc:
            skipped.append(SkippedFile(doc_id, str(exc)))
    if not documents:
        detail = f" ({len(skipped)} file(s) skipped: {skipped[0].path}: {skipped[0].reason})" if skipped else ""
        raise DocumentsError(
            f"no readable .txt or .md document in {str(folder)!r}{detail}: add UTF-8 text files to it"
        )
    return LoadResult(tuple(documents), tuple(skipped))
