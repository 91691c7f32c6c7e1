"""PDF: the text layer of each page, read by PDFium (pypdfium2), with page start offsets.

PDFium is the PDF engine of Chromium: fast (see bench/extraction.py), tolerant of damaged
files, and shipped inside the pypdfium2 wheel (Apache-2.0 / BSD-3-Clause), so no external
program is needed. It is not thread-safe, hence the lock: the chat app builds in a thread.
"""

from __future__ import annotations

import threading

from ..errors import DocumentFormatError
from .common import Extracted, Limits, clean, iso_date, text_or_none

_PDFIUM = threading.Lock()
# A line shorter than this share of the page's longest line ends its paragraph (or is a heading):
# wrapped lines fill the text width, a paragraph's last line rarely does.
SHORT_LINE = 0.7


def extract_pdf(data: bytes, limits: Limits) -> Extracted:
    import pypdfium2 as pdfium

    with _PDFIUM:
        try:
            pdf = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as exc:
            if "password" in str(exc).lower():
                raise DocumentFormatError(
                    "encrypted PDF (it needs a password): save a copy without a password and add that"
                ) from None
            raise DocumentFormatError(f"malformed or truncated PDF ({exc})") from None
        try:
            metadata = pdf.get_metadata_dict(skip_empty=True)
            pages_text = []
            for number in range(len(pdf)):
                page = pdf[number]
                try:
                    textpage = page.get_textpage()
                    try:
                        count = textpage.count_chars()
                        if count > limits.page_chars:
                            raise DocumentFormatError(
                                f"huge page: page {number + 1} holds {count:,} characters, more than the limit "
                                f"of {limits.page_chars:,} per page"
                            )
                        pages_text.append(textpage.get_text_range() if count > 0 else "")
                    finally:
                        textpage.close()
                finally:
                    page.close()
        finally:
            pdf.close()
    parts: list[str] = []
    starts: list[int] = []
    size = 0
    for raw in pages_text:
        body = reflow(clean(raw))
        if parts and body:
            parts.append("\n\n")  # pages are paragraphs apart: no chunk or sentence spans two pages
            size += 2
        starts.append(size)
        parts.append(body)
        size += len(body)
    text = "".join(parts)
    if not text.strip():
        raise DocumentFormatError("no text layer (a scanned or image-only PDF); OCR is not done")
    return Extracted(
        "pdf", text,
        title=text_or_none(metadata.get("Title")),
        date=iso_date(metadata.get("CreationDate")) or iso_date(metadata.get("ModDate")),
        pages=tuple(starts),
    )


def reflow(page: str) -> str:
    """A page's lines joined into paragraphs: wrapped lines by a space, paragraphs by a blank line.

    PDF text has a line break at every wrapped line and none between paragraphs; our sentence
    splitter ends a sentence at a line break, so wrapped lines are joined first. A hyphen at a
    line's end before a lower-case letter is a word cut by the layout, and is removed.
    """
    lines = [" ".join(line.split()) for line in page.split("\n")]
    lines = [line for line in lines if line]
    if not lines:
        return ""
    width = max(len(line) for line in lines)
    out = [lines[0]]
    for previous, line in zip(lines, lines[1:]):
        if len(previous) < SHORT_LINE * width:
            out.append("\n\n")
        elif previous.endswith("-") and len(previous) > 1 and previous[-2].isalpha() and line[0].islower():
            out[-1] = out[-1][:-1]
        elif not previous.endswith("-"):
            out.append(" ")
        out.append(line)
    return "".join(out)
