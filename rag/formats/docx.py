"""DOCX: paragraphs and tables of the body, read by python-docx; Heading and Title styles start sections.

A DOCX file is a zip: its declared sizes are checked before python-docx decompresses
anything, so a zip bomb is refused without being expanded (``zipfile`` never inflates a
member past its declared size). python-docx's XML parser resolves no entities.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Iterator

from ..errors import DocumentFormatError
from .common import Extracted, Limits, assemble, clean, collapse, iso_date, text_or_none


def check_zip(data: bytes, limits: Limits) -> None:
    """Refuse a zip whose members would expand past the limits; raises ``DocumentFormatError``."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except zipfile.BadZipFile as exc:
        raise DocumentFormatError(f"malformed or truncated DOCX (not a readable zip: {exc})") from None
    if len(members) > limits.zip_members:
        raise DocumentFormatError(
            f"DOCX zip bomb: {len(members):,} parts, more than the limit of {limits.zip_members:,}"
        )
    total = sum(m.file_size for m in members)
    if total > limits.zip_total_bytes:
        raise DocumentFormatError(
            f"DOCX zip bomb: it would expand to {total:,} bytes, more than the limit of {limits.zip_total_bytes:,}"
        )
    for m in members:
        ratio = m.file_size / max(m.compress_size, 1)
        if m.file_size > limits.zip_ratio_floor_bytes and ratio > limits.zip_ratio:
            raise DocumentFormatError(
                f"DOCX zip bomb: part {m.filename} expands {ratio:,.0f} times, more than the limit of "
                f"{limits.zip_ratio:,.0f}"
            )


def extract_docx(data: bytes, limits: Limits) -> Extracted:
    check_zip(data, limits)
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, KeyError):  # KeyError: a zip without [Content_Types].xml or word/document.xml
        raise DocumentFormatError("malformed DOCX (no Word document inside the zip)") from None
    props = document.core_properties
    text, sections = assemble(_blocks(document), limits, "docx")
    if not text.strip():
        raise DocumentFormatError("no text in this DOCX file")
    return Extracted(
        "docx", text,
        title=text_or_none(props.title),
        date=iso_date(props.created) or iso_date(props.modified),
        sections=sections,
    )


def _heading_test() -> Callable[[object], bool]:
    """Whether a paragraph has a Title or Heading style, looking each style up once.

    ``Paragraph.style`` searches styles.xml on every call: 95 % of the extraction time of a
    40-page document before this cache (bench/extraction.py).
    """
    names: dict[str | None, bool] = {}

    def is_heading(paragraph: object) -> bool:
        style_id = paragraph._p.style  # type: ignore[attr-defined]
        if style_id not in names:
            name = (paragraph.style.name or "").lower()  # type: ignore[attr-defined]
            names[style_id] = name == "title" or name.startswith("heading")
        return names[style_id]

    return is_heading


def _paragraph_text(paragraph: object) -> str:
    # a manual line break inside a paragraph is a line break of the text too
    return "\n".join(collapse(line).strip() for line in clean(getattr(paragraph, "text", "")).split("\n"))


def _blocks(document: object) -> Iterator[tuple[str, bool]]:
    """Body paragraphs and table rows in reading order (headers, footers and comments are page furniture)."""
    is_heading = _heading_test()
    for item in document.iter_inner_content():  # type: ignore[attr-defined]
        if hasattr(item, "rows"):
            for row in item.rows:
                cells: list[str] = []
                for cell in row.cells:
                    value = " ".join(_paragraph_text(p) for p in cell.paragraphs).strip()
                    if value and (not cells or cells[-1] != value):  # merged cells repeat their text
                        cells.append(value)
                yield " | ".join(cells), False
        else:
            yield _paragraph_text(item), is_heading(item)
