"""What every format shares: the ``Extracted`` value, the limits, dates and text clean-up."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import DocumentFormatError


@dataclass(frozen=True)
class Limits:
    """Size limits that keep one hostile file from exhausting the machine (stated in docs/documents.md and the UI)."""

    # A dense A4 page holds about 5,000 characters; 20 times that is no page a person reads.
    page_chars: int = 100_000
    # HTML and DOCX have no pages: the whole text is one "page" (about 2,000 A4 pages).
    document_chars: int = 10_000_000
    html_bytes: int = 50 * 2**20
    # DOCX is a zip: its declared sizes are checked before anything is decompressed.
    zip_total_bytes: int = 200 * 2**20
    zip_members: int = 5_000
    # Word's own XML compresses about 30x (styles.xml); a member 100x smaller than it expands is a bomb.
    zip_ratio: float = 100.0
    zip_ratio_floor_bytes: int = 2**20  # small members may compress better, harmlessly


LIMITS = Limits()


@dataclass(frozen=True)
class Extracted:
    """A document's text with its structure, as ``rag.formats.extract`` returns it."""

    kind: str  # "pdf", "html", "docx", "markdown" or "text"
    text: str
    title: str | None = None
    date: str | None = None  # "YYYY-MM" or "YYYY-MM-DD" from the file's own metadata
    pages: tuple[int, ...] = ()  # start offset of each page (PDF), ascending
    sections: tuple[tuple[int, str], ...] = ()  # (start offset, heading) in document order


# Typographic ligatures are one glyph for two or three letters; as letters they can be searched.
# "œ" and "æ" are letters of French and Danish, not ligatures, and stay.
_LIGATURES = str.maketrans({"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl",
                            "\ufb05": "st", "\ufb06": "st"})
# Soft hyphens, zero-width characters, PDFium's markers and controls other than tab and newline.
_INVISIBLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u00ad\u200b\u2060\ufeff\ufffe\uffff]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u3000]+")
_ISO_DATE = re.compile(r"\s*(\d{4})-?(\d{2})(?:-?(\d{2}))?")


def clean(text: str) -> str:
    """Extracted text made searchable: ligatures as letters, invisible characters dropped."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _INVISIBLE.sub("", text.translate(_LIGATURES))


def collapse(text: str) -> str:
    """Runs of spaces (HTML's and Word's layout spaces) as one; a no-break space stays when alone."""
    return _SPACES.sub(lambda m: m.group() if m.group() == "\u00a0" else " ", text)


def iso_date(value: object) -> str | None:
    """``YYYY-MM-DD`` (or ``YYYY-MM``) from a metadata value such as ``2024-03-05T10:00`` or ``D:20240305``."""
    if value is None:
        return None
    if hasattr(value, "year") and hasattr(value, "month"):
        day = getattr(value, "day", None)
        return f"{value.year:04d}-{value.month:02d}" + (f"-{day:02d}" if day else "")
    raw = str(value).strip()
    if raw.startswith("D:"):  # the PDF date format
        raw = raw[2:]
    match = _ISO_DATE.match(raw)
    if not match:
        return None
    year, month, day = int(match.group(1)), int(match.group(2)), match.group(3)
    if not (1000 <= year <= 9999 and 1 <= month <= 12) or (day is not None and not 1 <= int(day) <= 31):
        return None
    return f"{year:04d}-{month:02d}" + (f"-{day}" if day else "")


def text_or_none(value: object) -> str | None:
    text = " ".join(str(value).split()) if value is not None else ""
    return text or None


def assemble(blocks: Iterable[tuple[str, bool]], limits: Limits, kind: str) -> tuple[str, tuple[tuple[int, str], ...]]:
    """Blocks ``(text, is_heading)`` joined by blank lines (one paragraph each); headings start sections."""
    parts: list[str] = []
    sections: list[tuple[int, str]] = []
    size = 0
    for text, heading in blocks:
        text = text.strip()
        if not text:
            continue
        if parts:
            parts.append("\n\n")
            size += 2
        if heading:
            sections.append((size, " ".join(text.split())))
        parts.append(text)
        size += len(text)
        if size > limits.document_chars:
            raise DocumentFormatError(
                f"huge document: more than {limits.document_chars:,} characters of text in one {kind.upper()} file "
                f"(the limit): split it into smaller files"
            )
    return "".join(parts), tuple(sections)
