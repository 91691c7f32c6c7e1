"""Read documents as people have them: PDF, HTML, DOCX, Markdown and plain text.

``extract(name, data)`` turns a file's bytes into an ``Extracted``: the document's text, which
every offset of the project indexes and the index stores, with its page and section starts,
title and date. For ``.txt`` and ``.md`` the text is the file itself (decoded, newlines
untouched); for the other formats it is the text we extract, so quotes are checked against
that stored text, never against the file bytes. Every failure is a ``DocumentFormatError``
whose message is the reason shown next to the file's name.
"""

from __future__ import annotations

from ..errors import DocumentFormatError
from .common import LIMITS, Extracted, Limits

__all__ = ["KINDS", "LIMITS", "SUFFIXES", "DocumentFormatError", "Extracted", "Limits", "extract", "kind_of"]

# suffix -> kind; the loader reads exactly these, the UI accepts exactly these for upload
KINDS: dict[str, str] = {
    ".txt": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".pdf": "pdf",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".docx": "docx",
}
SUFFIXES = tuple(KINDS)


def kind_of(name: str) -> str | None:
    """The format of a file from its name (``"pdf"``, ``"html"``, ...), or None when it is not read."""
    lower = name.lower()
    for suffix, kind in KINDS.items():
        if lower.endswith(suffix):
            return kind
    return None


def extract(name: str, data: bytes, limits: Limits = LIMITS) -> Extracted:
    """The text and metadata of the file ``name`` holding ``data``; raises ``DocumentFormatError``.

    Third-party parsers meet hostile files here, so anything they raise becomes a
    ``DocumentFormatError`` naming the format: one bad file must never stop the others.
    """
    kind = kind_of(name)
    if kind is None:
        raise DocumentFormatError(f"unsupported file type: use one of {', '.join(SUFFIXES)}")
    try:
        if kind == "pdf":
            from .pdf import extract_pdf

            return extract_pdf(data, limits)
        if kind == "html":
            from .html import extract_html

            return extract_html(data, limits)
        if kind == "docx":
            from .docx import extract_docx

            return extract_docx(data, limits)
        from .text import extract_text

        return extract_text(data, markdown=kind == "markdown")
    except DocumentFormatError:
        raise
    except MemoryError:
        raise DocumentFormatError(f"too large to read as {kind.upper()} in memory") from None
    except RecursionError:
        raise DocumentFormatError(f"malformed {kind.upper()} (nested too deeply)") from None
    except Exception as exc:  # a parser's own error on a malformed file: report it, never a traceback
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise DocumentFormatError(f"malformed or truncated {kind.upper()} file ({detail})") from exc
