"""Stage 1, load: read a documents folder into ``Document`` values, skipping what cannot be read.

Each format is read by ``rag.formats``; this module walks the folder and adds the metadata.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import DocumentFormatError, DocumentsError
from .formats import SUFFIXES, extract
from .types import Document, LoadResult, SkippedFile, SourceFile

# (documents read, documents to read, pages read): extraction of a large PDF folder takes a while
LoadProgress = Callable[[int, int, int], None]
# "date 2022-10" (optionally "date: 2022-10-05") before the first words of the file.
_DATE_PREFIX = re.compile(r"\A[\ufeff\s]*date:?[ \t]+(\d{4}-\d{2}(?:-\d{2})?)\b[ \t]*(?:\r?\n)?")
_LEADING_BLANK = re.compile(r"[\ufeff\s]*")


def iter_files(root: Path) -> Iterator[Path]:
    """Candidate files below ``root`` in a stable order, following directory symlinks once."""
    return (Path(entry.path) for entry in _candidates(root))


def _candidates(root: Path) -> Iterator[os.DirEntry[str]]:
    """``iter_files`` as directory entries (no ``Path`` made per file: the quick check scans 20,000 files).
    Each entry's path is ``str(root)`` joined with the names below it (``_relative`` relies on it)."""
    seen: set[tuple[int, int]] = set()
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
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
                subfolders.append(entry.path)
            elif entry.name.lower().endswith(SUFFIXES):
                yield entry
        stack.extend(reversed(subfolders))


def parse_document(doc_id: str, data: bytes) -> Document:
    """Read one file's bytes as its suffix says, and find its metadata.

    Raises ``DocumentFormatError`` (a ``ValueError``) with the reason when it cannot be read.
    Title and date come from the file's own metadata (PDF info, HTML meta tags, DOCX core
    properties), else the date from a leading ``date YYYY-MM`` line.
    """
    extracted = extract(doc_id, data)
    text = extracted.text
    date = None
    match = _DATE_PREFIX.match(text)
    if match:
        date = match.group(1)
        body_start = match.end()
    else:
        body_start = 0
    body_start += _LEADING_BLANK.match(text, body_start).end() - body_start  # type: ignore[union-attr]
    if body_start >= len(text) or not text[body_start:].strip():
        raise DocumentFormatError("empty file (no text)")
    return Document(
        id=doc_id,
        text=text,
        sha256=hashlib.sha256(data).hexdigest(),
        body_start=body_start,
        date=extracted.date or date,
        lang=detect_language(text[body_start : body_start + 3000]),
        title=extracted.title,
        kind=extracted.kind,
        pages=extracted.pages,
        sections=extracted.sections,
    )


_IDENTIFIER_LOCK = threading.Lock()
_identifier_loaded = False


def load_language_identifier() -> None:
    """Load py3langid's model now, once per process (~0.5 s, decompressing it).

    ``Pipeline.open`` starts this in a thread while the index opens, so the first question does
    not wait for it; a question arriving meanwhile waits for that load rather than starting another.
    """
    global _identifier_loaded
    with _IDENTIFIER_LOCK:
        if not _identifier_loaded:
            import py3langid

            py3langid.classify("load the model")  # it loads on first use
            _identifier_loaded = True


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of ``text``, or None when it is too short to tell."""
    if len(text.strip()) < 20:
        return None
    if not _identifier_loaded:
        load_language_identifier()
    import py3langid

    lang, _ = py3langid.classify(text)
    return str(lang)


def _folder(root: str | os.PathLike[str]) -> Path:
    folder = Path(root)
    if not folder.is_dir():
        raise DocumentsError(
            f"documents folder {str(folder)!r} does not exist: create it and put documents "
            f"({', '.join(SUFFIXES)}) in it"
        )
    return folder


def _source_id(folder: Path, path: Path) -> tuple[str, bool]:
    """The document id of ``path`` and whether it is valid (Linux names are bytes; ids must be UTF-8 text)."""
    return _id_text(path.relative_to(folder).as_posix())


def _id_text(doc_id: str) -> tuple[str, bool]:
    try:
        doc_id.encode("utf-8")
    except UnicodeEncodeError:
        return doc_id.encode("utf-8", "surrogateescape").decode("utf-8", "replace"), False
    return doc_id, True


def _stat(path: Path) -> tuple[int, int]:
    """(size, mtime_ns) of ``path``, following symlinks; (-1, -1) when it cannot be stat'ed."""
    try:
        st = path.stat()
    except OSError:
        return -1, -1
    return st.st_size, st.st_mtime_ns


def scan_sources(root: str | os.PathLike[str]) -> tuple[SourceFile, ...]:
    """Every candidate file below ``root`` with its size and mtime, nothing read: the quick freshness check.

    The same files, in the same order, as ``load_documents`` records in ``LoadResult.sources``.
    """
    folder = _folder(root)
    prefix = len(os.path.join(str(folder), ""))  # entries' paths are str(folder) joined with the names below
    out = []
    for entry in _candidates(folder):
        try:
            st = os.stat(entry.path)  # follows symlinks, as _stat does
            size, mtime_ns = st.st_size, st.st_mtime_ns
        except OSError:
            size, mtime_ns = -1, -1
        out.append(SourceFile(_id_text(entry.path[prefix:].replace(os.sep, "/"))[0], size, mtime_ns))
    return tuple(out)


def load_documents(root: str | os.PathLike[str], progress: LoadProgress | None = None) -> LoadResult:
    """Read every document below ``root`` (``rag.formats.SUFFIXES``: text, Markdown, PDF, HTML, DOCX).

    Unreadable, binary, undecodable, malformed, encrypted, empty and oversized files are
    returned in ``skipped`` with the reason; a folder with no usable document raises
    ``DocumentsError``. ``progress`` hears of every file read, with the pages read so far.
    Each file's size and mtime are taken before it is read (``sources``): a change while it is
    read shows at the next check.
    """
    folder = _folder(root)
    scanned_ns = time.time_ns()
    documents: list[Document] = []
    skipped: list[SkippedFile] = []
    sources: list[SourceFile] = []
    paths = list(iter_files(folder))
    pages = 0
    for done, path in enumerate(paths, start=1):
        doc = _read(folder, path, skipped, sources)
        if doc is not None:
            documents.append(doc)
            pages += doc.page_count
        if progress:
            progress(done, len(paths), pages)
    if not documents:
        detail = f" ({len(skipped)} file(s) skipped: {skipped[0].path}: {skipped[0].reason})" if skipped else ""
        raise DocumentsError(f"no readable document in {str(folder)!r}{detail}: add documents "
                             f"({', '.join(SUFFIXES)}) to it")
    return LoadResult(tuple(documents), tuple(skipped), tuple(sources), scanned_ns)


def _read(folder: Path, path: Path, skipped: list[SkippedFile], sources: list[SourceFile]) -> Document | None:
    """One file as a ``Document``, or None after adding why it was skipped to ``skipped``; its stat to ``sources``."""
    doc_id, valid = _source_id(folder, path)
    size, mtime_ns = _stat(path)  # before reading: a later change shows in the next check
    if not valid:
        skipped.append(SkippedFile(doc_id, "file name is not valid UTF-8: rename the file"))
        sources.append(SourceFile(doc_id, size, mtime_ns))
        return None
    try:
        # a pipe would block the read and a device (a link to /dev/zero) would never end
        if not stat.S_ISREG(path.stat().st_mode):
            skipped.append(SkippedFile(doc_id, "not a regular file (a pipe, socket or device)"))
            sources.append(SourceFile(doc_id, size, mtime_ns))
            return None
        data = path.read_bytes()
    except OSError as exc:
        skipped.append(SkippedFile(doc_id, f"cannot be read ({exc.strerror or exc})"))
        sources.append(SourceFile(doc_id, size, mtime_ns))
        return None
    try:
        doc = parse_document(doc_id, data)
    except ValueError as exc:  # DocumentFormatError, and any ValueError of language detection
        skipped.append(SkippedFile(doc_id, str(exc)))
        sources.append(SourceFile(doc_id, size, mtime_ns))
        return None
    sources.append(SourceFile(doc_id, size, mtime_ns, doc.sha256))
    return doc
