"""rag.formats and the loader on real PDF, DOCX, HTML and Markdown files made by the tests (tests/samples.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import samples  # tests/ is on sys.path (no __init__.py)
from samples import LANGS, PAGES, write

from rag.chunk import chunk_document
from rag.errors import DocumentFormatError
from rag.formats import LIMITS, SUFFIXES, extract, kind_of
from rag.load import load_documents, parse_document
from rag.types import Document

pytest.importorskip("reportlab", reason="the test extra is missing: pip install -e '.[test]'")


def multilingual_pdf() -> bytes:
    """Four pages, one per language, with ligatures in three of them."""
    return samples.pdf_bytes([PAGES[lang] for lang in LANGS], title="Rapport du port", created="2024-03-05")


def multilingual_blocks() -> list[tuple[str, int]]:
    return [(text, 1 if i == 0 else 0) for lang in LANGS for i, text in enumerate(PAGES[lang])]


def multilingual_html() -> str:
    return samples.html_page("fr", "Le port &amp; la ville", "2023-05-01",
                             [(PAGES[lang][0], PAGES[lang][1:]) for lang in LANGS])


def letters(text: str) -> str:
    """What a reader sees: ligatures as letters, one space between words."""
    return " ".join(text.replace("\ufb01", "fi").replace("\ufb02", "fl").split())


def check_spans(doc: Document) -> int:
    """Every chunk and sentence of ``doc`` equals its slice of the stored text; how many were checked."""
    chunks, sentences = chunk_document(doc, 1200, 200, 0)
    assert chunks and sentences
    for span in [*chunks, *sentences]:
        assert doc.text[span.start : span.end] == span.text
        assert span.start >= doc.body_start
    return len(chunks) + len(sentences)


# ---------------------------------------------------------------------------------- PDF


def test_pdf_pages_text_and_metadata() -> None:
    doc = parse_document("reports/port.pdf", multilingual_pdf())
    assert doc.kind == "pdf" and doc.title == "Rapport du port" and doc.date == "2024-03-05"
    assert len(doc.pages) == 4 and doc.page_count == 4 and doc.pages[0] == 0
    assert list(doc.pages) == sorted(doc.pages)
    for page, lang in enumerate(LANGS, start=1):
        for paragraph in PAGES[lang]:
            expected = letters(paragraph)
            start = doc.text.find(expected)
            assert start >= 0, (lang, expected, doc.text)  # wrapped lines joined back into the paragraph
            assert doc.page_at(start) == page and doc.page_at(start + len(expected) - 1) == page
    # ligatures become letters; accents, "œ" and "ß" stay what they are
    assert "\ufb01" not in doc.text and "plan financier de l'œuvre" in doc.text
    assert "Straße zur Brücke" in doc.text and "señor alcalde de Cádiz" in doc.text
    assert doc.lang in LANGS


def test_pdf_sentences_know_their_page() -> None:
    doc = parse_document("port.pdf", multilingual_pdf())
    _, sentences = chunk_document(doc, 1200, 200, 0)
    pages = {s.text: doc.page_at(s.start) for s in sentences}
    assert pages["Der Stadtrat prüfte im März den Finanzplan für den alten Hafen an der Straße zur Brücke."] == 3
    last = "Las obras empezarán en primavera y durarán unos dieciocho meses, según el señor alcalde de Cádiz."
    assert pages[last] == 4
    assert pages["Repairs will start in the spring and should last about eighteen months."] == 1
    assert all(s.start >= doc.pages[p - 1] for s in sentences if (p := doc.page_at(s.start)))


def test_pdf_reflow_removes_only_layout_hyphens() -> None:
    from rag.formats.pdf import reflow

    page = ("A heading\nThe engineers looked at the northern pier and the south-\n"
            "ern breakwater, then they walked along the long North-\n"
            "South road to the harbour basin and the old lighthouse.\nA short last line.\nNext paragraph.")
    # a paragraph whose last line is full is joined to the next one: sentences still split there
    assert reflow(page) == (
        "A heading\n\nThe engineers looked at the northern pier and the southern breakwater, then they walked along "
        "the long North-South road to the harbour basin and the old lighthouse. A short last line.\n\nNext paragraph."
    )


def test_empty_pages_keep_the_numbering() -> None:
    import io

    from reportlab.pdfgen import canvas

    out = io.BytesIO()
    pdf = canvas.Canvas(out)
    for text in ("Alpha is written on the first page.", "", "", "Delta is written on the fourth page."):
        if text:
            pdf.drawString(72, 720, text)
        pdf.showPage()
    pdf.save()
    doc = parse_document("p.pdf", out.getvalue())
    assert doc.text == "Alpha is written on the first page.\n\nDelta is written on the fourth page."
    assert len(doc.pages) == 4
    assert doc.page_at(doc.text.index("Alpha")) == 1 and doc.page_at(doc.text.index("Delta")) == 4


# ---------------------------------------------------------------------------------- DOCX, HTML, Markdown


def test_docx_sections_table_and_core_properties() -> None:
    data = samples.docx_bytes(multilingual_blocks(), title="Rapport", created="2023-11-02",
                              table=[["Ville", "Coût"], ["Cádiz", "12 €"], ["Köln", "7 €"]])
    doc = parse_document("port.docx", data)
    assert doc.kind == "docx" and doc.title == "Rapport" and doc.date == "2023-11-02" and doc.pages == ()
    assert [title for _, title in doc.sections] == [PAGES[lang][0] for lang in LANGS]
    for start, title in doc.sections:
        assert doc.text[start : start + len(title)] == title
    start = doc.text.index("Der Stadtrat prüfte")
    assert doc.section_at(start) == "Der Hafenbericht" and doc.page_at(start) is None
    assert doc.section_at(doc.text.index("Le conseil a examiné le plan financier de l'œuvre")) == "Le rapport du port"
    assert doc.text.endswith("Ville | Coût\n\nCádiz | 12 €\n\nKöln | 7 €")


def test_html_main_text_without_navigation_scripts_or_styles() -> None:
    doc = parse_document("saved/port.html", multilingual_html().encode())
    assert doc.kind == "html" and doc.title == "Le port & la ville" and doc.date == "2023-05-01"
    for marker in ("SCRIPT-TEXT", "STYLE-TEXT", "NAV-TEXT", "HEADER-TEXT", "FOOTER-TEXT", "color: red", "<", "alert"):
        assert marker not in doc.text
    assert doc.text.startswith("Le port & la ville\n\nThe harbour report\n\nThe council reviewed")
    assert [title for _, title in doc.sections] == ["Le port & la ville", *(PAGES[lang][0] for lang in LANGS)]
    assert doc.section_at(doc.text.index("según el señor alcalde")) == "El informe del puerto"
    assert "plan financier de l'œuvre" in doc.text  # the ligature as letters


def test_html_keeps_line_breaks_lists_tables_and_preformatted_text() -> None:
    page = ("<html><body><p>One line<br>next  line\n wrapped.</p><ul><li>first item</li><li>second</li></ul>"
            "<table><tr><th>Town</th><th>Cost</th></tr><tr><td>Köln</td><td>7 €</td></tr></table>"
            "<pre>code  keeps\n  its spaces</pre><div><span>in</span>line &amp; entities &lt;b&gt;</div>"
            "</body></html>")
    text = extract("p.html", page.encode()).text
    assert text == ("One line\nnext line wrapped.\n\nfirst item\n\nsecond\n\nTown | Cost\n\nKöln | 7 €\n\n"
                    "code  keeps\n  its spaces\n\ninline & entities <b>")


def test_html_in_a_legacy_charset_and_deeply_nested() -> None:
    legacy = '<meta charset="iso-8859-1"><p>Caf\xe9 cr\xe8me br\xfbl\xe9e.</p>'.encode("latin-1")
    assert extract("old.html", legacy).text == "Café crème brûlée."
    deep = "<div>" * 20000 + "Deep text." + "</div>" * 20000
    assert extract("deep.html", deep.encode()).text == "Deep text."


def test_markdown_headings_are_sections_and_text_is_the_file() -> None:
    md = ("date 2022-10\n# Le rapport\n\nLe conseil a examiné le plan.\n\n```\n# not a heading\n```\n\n"
          "Zweiter Teil\n------------\n\nDie Straße führt über die Brücke.\r\n")
    doc = parse_document("notes.md", md.encode())
    assert doc.text == md and doc.kind == "markdown" and doc.title == "Le rapport" and doc.date == "2022-10"
    assert doc.sections == ((md.index("# Le rapport"), "Le rapport"), (md.index("Zweiter Teil"), "Zweiter Teil"))
    assert doc.section_at(md.index("Die Straße")) == "Zweiter Teil"
    assert doc.section_at(md.index("# not")) == "Le rapport"
    plain = parse_document("notes.txt", md.encode())
    assert plain.sections == () and plain.kind == "text" and plain.text == md


def test_metadata_date_wins_over_the_date_line() -> None:
    page = '<meta name="dc.date" content="2021-07-14"><p>date 2020-01</p><p>Text of the page.</p>'
    assert parse_document("a.html", page.encode()).date == "2021-07-14"
    assert parse_document("b.html", b"<p>date 2020-01</p><p>Text of the page.</p>").date == "2020-01"
    assert parse_document("c.html", b"<p>Text of the page.</p>").date is None


def test_kinds_by_suffix() -> None:
    assert [kind_of(n) for n in ("a.PDF", "b.htm", "c.docx", "d.markdown", "e.txt", "f.doc")] == [
        "pdf", "html", "docx", "markdown", "text", None]
    assert set(SUFFIXES) >= {".pdf", ".html", ".htm", ".docx", ".md", ".txt"}
    with pytest.raises(DocumentFormatError, match="unsupported file type"):
        extract("f.doc", b"x")


# ---------------------------------------------------------------------------------- the span invariant


def test_every_span_is_exact_in_every_format(tmp_path: Path) -> None:
    blocks = multilingual_blocks()
    markdown = "\n\n".join(("## " if level else "") + text for text, level in blocks)
    write(tmp_path / "port.pdf", multilingual_pdf())
    write(tmp_path / "port.docx", samples.docx_bytes(blocks, table=[["Ville", "Coût"], ["Cádiz", "12 €"]]))
    write(tmp_path / "port.html", multilingual_html())
    write(tmp_path / "port.md", markdown)
    write(tmp_path / "port.txt", markdown.replace("## ", ""))
    loaded = load_documents(tmp_path)
    assert loaded.skipped == ()
    assert sorted(d.kind for d in loaded.documents) == ["docx", "html", "markdown", "pdf", "text"]
    for doc in loaded.documents:
        assert check_spans(doc) > 10
        # the same sentences in every format, each found whole
        assert "Los ingenieros comprobaron que el muelle norte necesita nuevos cimientos" in doc.text


# ---------------------------------------------------------------------------------- bad files


BAD: dict[str, tuple[object, str]] = {
    "locked.pdf": (lambda: samples.pdf_bytes([PAGES["en"]], encrypt="secret"),
                   r"encrypted PDF \(it needs a password\)"),
    "scan.pdf": (samples.scanned_pdf_bytes, r"^no text layer \(a scanned or image-only PDF\); OCR is not done$"),
    "truncated.pdf": (lambda: multilingual_pdf()[:4000], r"malformed or truncated PDF"),
    "garbage.pdf": (lambda: b"%PDF-1.7\n" + b"\x00garbage" * 50, r"malformed or truncated PDF"),
    "huge.pdf": (lambda: samples.huge_page_pdf_bytes(LIMITS.page_chars + 1000),
                 r"^huge page: page 1 holds 1\d\d,\d\d\d characters, more than the limit of 100,000 per page$"),
    "truncated.docx": (lambda: samples.docx_bytes(multilingual_blocks())[:5000], r"malformed or truncated DOCX"),
    "notzip.docx": (lambda: b"this is not a zip", r"malformed or truncated DOCX \(not a readable zip"),
    "nodoc.docx": (lambda: _zip({"hello.txt": b"hi"}), r"malformed DOCX \(no Word document inside the zip\)"),
    "badxml.docx": (lambda: _broken_xml_docx(), r"malformed or truncated DOCX"),
    "bomb.docx": (samples.zip_bomb_docx_bytes,
                  r"^DOCX zip bomb: it would expand to 3\d\d,\d\d\d,\d\d\d bytes, more than"),
    "ratio.docx": (lambda: samples.zip_bomb_docx_bytes(20 * 2**20),
                   r"^DOCX zip bomb: part word/document\.xml expands [\d,]+ times, more than the limit of 100$"),
    "scripts.html": (lambda: b"<html><head><script>alert(1)</script><style>p{}</style></head><body>"
                     b"<script>document.write('x')</script><nav>Home</nav></body></html>",
                     r"no text in this HTML page \(only markup, scripts or navigation\)"),
    "truncated.html": (lambda: multilingual_html().encode()[:120], r"no text in this HTML page"),
    "binary.html": (lambda: bytes(range(256)) * 40, r"^binary file \(contains NUL bytes\), not an HTML page$"),
    "empty.md": (lambda: b"   \n\n", r"empty file \(no text\)"),
}


def _zip(members: dict[str, bytes]) -> bytes:
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def _broken_xml_docx() -> bytes:
    import io
    import zipfile

    source = zipfile.ZipFile(io.BytesIO(samples.docx_bytes([("Text.", 0)])))
    return _zip({i.filename: (b"<w:document><unclosed" if i.filename == "word/document.xml" else source.read(i))
                 for i in source.infolist()})


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_file_is_refused_with_its_reason(name: str) -> None:
    make, reason = BAD[name]
    with pytest.raises(DocumentFormatError, match=reason):
        parse_document(name, make())  # type: ignore[operator]


def test_bad_files_are_reported_by_name_and_nothing_else_is_lost(tmp_path: Path) -> None:
    for name, (make, _) in BAD.items():
        write(tmp_path / "bad" / name, make())  # type: ignore[operator]
    write(tmp_path / "good.pdf", multilingual_pdf())
    write(tmp_path / "good.html", multilingual_html())
    write(tmp_path / "good.docx", samples.docx_bytes(multilingual_blocks()))
    write(tmp_path / "good.md", "# Title\n\nA good Markdown file.")
    pages: list[tuple[int, int, int]] = []
    loaded = load_documents(tmp_path, progress=lambda *args: pages.append(args))
    assert sorted(d.id for d in loaded.documents) == ["good.docx", "good.html", "good.md", "good.pdf"]
    reasons = {s.path: s.reason for s in loaded.skipped}
    assert sorted(reasons) == sorted(f"bad/{name}" for name in BAD)
    for name, (_, reason) in BAD.items():
        assert re.search(reason, reasons[f"bad/{name}"]), (name, reasons[f"bad/{name}"])
    # progress: every file once, and pages (4 for the PDF, 1 for each other document) at the end
    assert [p[:2] for p in pages] == [(i, len(BAD) + 4) for i in range(1, len(BAD) + 5)]
    assert pages[-1][2] == 4 + 3


def test_html_and_docx_over_the_text_limit_are_huge_pages() -> None:
    from rag.formats import Limits

    small = Limits(document_chars=500)
    blocks = multilingual_blocks()
    with pytest.raises(DocumentFormatError, match=r"^huge document: more than 500 characters of text in one DOCX"):
        extract("big.docx", samples.docx_bytes(blocks), small)
    with pytest.raises(DocumentFormatError, match=r"^huge document: more than 500 characters of text in one HTML"):
        extract("big.html", multilingual_html().encode(), small)
    assert extract("ok.html", multilingual_html().encode()).text  # the default limit (10 million) takes it
    with pytest.raises(DocumentFormatError, match=r"^huge page: 600 bytes of HTML, more than the limit of 599$"):
        extract("big.html", b"x" * 600, Limits(html_bytes=599))


def test_scripts_in_html_are_text_at_most_never_markup() -> None:
    page = ("<p>Click <a href='javascript:alert(1)' onclick='alert(2)'>here</a> &lt;script&gt;alert(3)&lt;/script&gt;"
            "<img src=x onerror='alert(4)'></p><iframe srcdoc='<script>alert(5)</script>'></iframe>")
    text = extract("x.html", page.encode()).text
    assert text == "Click here <script>alert(3)</script>"  # escaped text shows as text; the UI escapes it again
