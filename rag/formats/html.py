"""HTML: the main text of a page, without navigation, scripts and styles; h1-h6 start sections.

Parsed by selectolax's Lexbor engine (MIT; an HTML5 parser, so broken markup is repaired the
way browsers repair it). Nothing is ever executed: scripts and styles are dropped as elements.
"""

from __future__ import annotations

import re

from ..errors import DocumentFormatError
from .common import Extracted, Limits, assemble, clean, collapse, iso_date, text_or_none

# Elements that are never the page's text: code, styling, navigation, page furniture, forms.
DROP = (
    "script, style, noscript, template, nav, aside, form, iframe, frame, frameset, svg, math, button, select, "
    "textarea, object, embed, canvas, dialog, audio, video, [hidden], [aria-hidden='true'], "
    "[role='navigation'], [role='banner'], [role='contentinfo'], [role='search']"
)
BLOCKS = frozenset(
    "address article blockquote body caption dd details div dl dt fieldset figcaption figure h1 h2 h3 h4 h5 h6 "
    "hr li main ol p pre section summary table tbody thead tfoot tr ul header footer".split()
)
HEADINGS = frozenset(("h1", "h2", "h3", "h4", "h5", "h6"))
CELLS = frozenset(("td", "th"))
DATE_META = ("article:published_time", "date", "dc.date", "dc.date.issued", "dcterms.date", "dcterms.created",
             "dcterms.issued", "citation_publication_date", "citation_date", "pubdate", "publish-date",
             "og:published_time", "datepublished")
TITLE_META = ("og:title", "dc.title", "dcterms.title", "citation_title", "title")
_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


def decode(data: bytes) -> str:
    """The page's characters: a byte-order mark, else UTF-8, else the declared charset, else Windows-1252."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", "replace")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return data.decode("utf-16", "replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    match = _CHARSET.search(data[:4096])
    if match:
        try:
            return data.decode(match.group(1).decode("ascii"), "replace")
        except LookupError:  # an unknown charset name
            pass
    return data.decode("cp1252", "replace")


def extract_html(data: bytes, limits: Limits) -> Extracted:
    from selectolax.lexbor import LexborHTMLParser

    if len(data) > limits.html_bytes:
        raise DocumentFormatError(
            f"huge page: {len(data):,} bytes of HTML, more than the limit of {limits.html_bytes:,}"
        )
    page = decode(data)
    if "\x00" in page:  # no web page holds NUL characters: this is a binary file named .html
        raise DocumentFormatError("binary file (contains NUL bytes), not an HTML page")
    tree = LexborHTMLParser(page)
    metas: dict[str, str] = {}
    for meta in tree.css("meta"):
        attrs = meta.attributes
        key = (attrs.get("property") or attrs.get("name") or attrs.get("itemprop") or "").strip().lower()
        if key and attrs.get("content") and key not in metas:
            metas[key] = str(attrs["content"])
    title_node = tree.css_first("title")
    title = next((text_or_none(metas[k]) for k in TITLE_META if k in metas), None)
    title = title or text_or_none(title_node.text() if title_node is not None else None)
    date = next((d for d in (iso_date(metas[k]) for k in DATE_META if k in metas) if d), None)

    for node in tree.css(DROP):
        node.decompose()
    # a page's header and footer are furniture; an article's own header holds its title
    for node in tree.css("header, footer"):
        if not _inside(node, ("article", "main")):
            node.decompose()
    root = tree.css_first("main")
    if root is None:
        articles = tree.css("article")
        root = articles[0] if len(articles) == 1 else tree.body
    if root is None:
        raise DocumentFormatError("no text in this HTML page")
    text, sections = assemble(_blocks(root), limits, "html")
    if not text.strip():
        raise DocumentFormatError("no text in this HTML page (only markup, scripts or navigation)")
    return Extracted("html", text, title=title, date=date, sections=sections)


def _inside(node: object, tags: tuple[str, ...]) -> bool:
    parent = getattr(node, "parent", None)
    while parent is not None:
        if parent.tag in tags:
            return True
        parent = parent.parent
    return False


def _blocks(root: object) -> list[tuple[str, bool]]:
    """The text of ``root`` as blocks ``(text, is_heading)``, walked without recursion (pages nest deeply)."""
    blocks: list[tuple[str, bool]] = []
    buffer: list[str] = []
    heading = 0  # depth inside h1-h6
    pre = 0  # depth inside <pre>: whitespace kept

    def flush() -> None:
        lines = "".join(buffer).split("\n")
        buffer.clear()
        text = "\n".join(line.rstrip() if pre else collapse(line).strip() for line in lines).strip("\n ")
        if text:
            blocks.append((text, heading > 0))

    stack: list[tuple[object, bool]] = [(root, False)]
    while stack:
        node, leaving = stack.pop()
        tag = node.tag  # type: ignore[attr-defined]
        if leaving:
            if tag in BLOCKS:
                flush()
            if tag in HEADINGS:
                heading -= 1
            elif tag == "pre":
                pre -= 1
            continue
        if tag == "-text":
            raw = clean(node.text_content or "")  # type: ignore[attr-defined]
            buffer.append(raw if pre else raw.replace("\n", " "))  # source line breaks are spaces outside <pre>
            continue
        if tag in ("-comment", "!doctype"):
            continue
        if tag == "br":
            buffer.append("\n")
            continue
        if tag in BLOCKS:
            flush()
        if tag in HEADINGS:
            heading += 1
        elif tag == "pre":
            pre += 1
        elif tag in CELLS and buffer and "".join(buffer).strip():
            buffer.append(" | ")
        elif tag == "img" and node.attributes.get("alt"):  # type: ignore[attr-defined]
            # the alt text is the words the picture stands for (screen readers read it)
            buffer.append(f" {node.attributes['alt']} ")  # type: ignore[attr-defined]
        stack.append((node, True))
        children = list(node.iter(include_text=True))  # type: ignore[attr-defined]
        stack.extend((child, False) for child in reversed(children))
    flush()
    return blocks

