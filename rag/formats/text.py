"""Plain text and Markdown: the text is the file itself; Markdown headings start sections."""

from __future__ import annotations

import re

from ..errors import DocumentFormatError
from .common import Extracted

_NEWLINE = re.compile(r"\r\n|\r|\n")  # what markdown-it counts as a line break


def extract_text(data: bytes, markdown: bool) -> Extracted:
    """Decoded as UTF-8 with newlines untouched, so offsets index the file as read with ``newline=""``."""
    if b"\x00" in data:
        raise DocumentFormatError("binary file (contains NUL bytes)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentFormatError(f"not valid UTF-8 (byte {exc.start})") from None
    if not markdown:
        return Extracted("text", text)
    sections = markdown_sections(text)
    title = next((title for _, title, level in sections if level == 1), None)
    return Extracted("markdown", text, title=title, sections=tuple((start, title) for start, title, _ in sections))


def markdown_sections(text: str) -> list[tuple[int, str, int]]:
    """``(offset of the heading line, heading text, level)`` for each ATX or setext heading.

    markdown-it-py parses the file, so a ``#`` inside a code block is no heading.
    """
    from markdown_it import MarkdownIt

    line_starts = [0] + [m.end() for m in _NEWLINE.finditer(text)]
    tokens = MarkdownIt("commonmark").parse(text)
    out: list[tuple[int, str, int]] = []
    for i, token in enumerate(tokens):
        if token.type != "heading_open" or token.map is None or i + 1 >= len(tokens):
            continue
        inline = tokens[i + 1]
        plain = "".join(child.content for child in inline.children or () if child.type in ("text", "code_inline"))
        title = " ".join(plain.split())
        if title and token.map[0] < len(line_starts):
            out.append((line_starts[token.map[0]], title, int(token.tag[1:])))
    return out
