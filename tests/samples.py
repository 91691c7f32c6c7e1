"""Real documents made by the tests: PDF (reportlab), DOCX (python-docx) and HTML (by hand).

Texts in English, French, German and Spanish with accents and typographic ligatures
("ﬁ", "ﬂ") beside real letters that look like them ("œ", "ß"). The PDF font is Bitstream
Vera, shipped inside reportlab, so no system font is needed.
"""

from __future__ import annotations

import io
import os
import zipfile
from datetime import datetime, timezone
from pathlib import Path

# One page per language; each page's second sentence is unique to it (tests look it up).
PAGES: dict[str, list[str]] = {
    "en": [
        "The harbour report",
        "The council reviewed the ﬁnancial plan for the old harbour in March. The engineers found that the "
        "northern pier needs a new foundation before the winter storms arrive.",
        "Repairs will start in the spring and should last about eighteen months.",
    ],
    "fr": [
        "Le rapport du port",
        "Le conseil a examiné le plan ﬁnancier de l'œuvre portuaire en mars. Les ingénieurs ont constaté "
        "que la jetée nord a besoin de nouvelles fondations avant l'arrivée des tempêtes d'hiver.",
        "Les travaux commenceront au printemps et dureront environ dix-huit mois, selon la sœur du maire.",
    ],
    "de": [
        "Der Hafenbericht",
        "Der Stadtrat prüfte im März den Finanzplan für den alten Hafen an der Straße zur Brücke. Die "
        "Ingenieure stellten fest, dass die nördliche Mole vor den Winterstürmen ein neues Fundament braucht.",
        "Die Arbeiten beginnen im Frühling und dauern ungefähr achtzehn Monate, erklärte die Bürgermeisterin.",
    ],
    "es": [
        "El informe del puerto",
        "El consejo revisó en marzo el plan ﬁnanciero del viejo puerto de la región. Los ingenieros "
        "comprobaron que el muelle norte necesita nuevos cimientos antes de que lleguen las tormentas del invierno.",
        "Las obras empezarán en primavera y durarán unos dieciocho meses, según el señor alcalde de Cádiz.",
    ],
}
LANGS = tuple(PAGES)


def _vera() -> str:
    import reportlab

    return os.path.join(os.path.dirname(reportlab.__file__), "fonts", "Vera.ttf")


def pdf_bytes(pages: list[list[str]], title: str | None = None, created: str | None = None,
              encrypt: str | None = None) -> bytes:
    """A PDF with one page per entry: its first string as a heading, the others as wrapped paragraphs."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont
    from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate

    pdfmetrics.registerFont(TTFont("Vera", _vera()))
    body = ParagraphStyle("body", fontName="Vera", fontSize=11, leading=15, spaceAfter=10)
    head = ParagraphStyle("head", fontName="Vera", fontSize=16, leading=20, spaceAfter=12)
    out = io.BytesIO()
    kwargs: dict[str, object] = {"title": title or "", "invariant": True}
    if encrypt is not None:
        from reportlab.lib import pdfencrypt

        kwargs["encrypt"] = pdfencrypt.StandardEncryption(encrypt, ownerPassword=encrypt + "-owner", strength=128)
    doc = SimpleDocTemplate(out, pagesize=A4, **kwargs)
    story: list[object] = []
    for number, page in enumerate(pages):
        if number:
            story.append(PageBreak())
        story.append(Paragraph(page[0], head))
        story.extend(Paragraph(p, body) for p in page[1:])
    doc.build(story)
    data = out.getvalue()
    if created is not None:  # invariant=True writes a fixed date; put the wanted one in its place
        fixed = b"D:20000101000000+00'00'"
        stamp = ("D:" + created.replace("-", "") + "000000+00'00'")[: len(fixed)].encode()
        data = data.replace(fixed, stamp.ljust(len(fixed), b"0"))
    return data


def scanned_pdf_bytes() -> bytes:
    """Two pages holding only a picture, as a scanner writes them: no text layer."""
    from PIL import Image, ImageDraw
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    picture = Image.new("RGB", (400, 200), "white")
    ImageDraw.Draw(picture).text((20, 80), "Scanned text is pixels", fill="black")
    out = io.BytesIO()
    pdf = canvas.Canvas(out, pagesize=A4)
    for _ in range(2):
        pdf.drawImage(ImageReader(picture), 50, 500, width=400, height=200)
        pdf.showPage()
    pdf.save()
    return out.getvalue()


def huge_page_pdf_bytes(chars: int) -> bytes:
    """One page with at least ``chars`` characters of text (tiny font on a large page)."""
    from reportlab.pdfgen import canvas

    out = io.BytesIO()
    line = "word " * 200  # 1,000 characters
    rows = chars // len(line) + 1
    pdf = canvas.Canvas(out, pagesize=(4000, rows * 2 + 20))
    pdf.setFont("Helvetica", 1)
    for row in range(rows):
        pdf.drawString(5, 10 + row * 2, line)
    pdf.showPage()
    pdf.save()
    return out.getvalue()


def docx_bytes(blocks: list[tuple[str, int]], title: str | None = None, created: str | None = None,
               table: list[list[str]] | None = None) -> bytes:
    """A DOCX of ``(text, heading level)`` blocks (level 0: a body paragraph), then an optional table."""
    import docx

    document = docx.Document()
    for text, level in blocks:
        if level:
            document.add_heading(text, level)
        else:
            document.add_paragraph(text)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for r, row in enumerate(table):
            for c, value in enumerate(row):
                grid.cell(r, c).text = value
    if title is not None:
        document.core_properties.title = title
    if created is not None:
        document.core_properties.created = datetime.fromisoformat(created).replace(tzinfo=timezone.utc)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def zip_bomb_docx_bytes(expanded: int = 300 * 2**20) -> bytes:
    """A valid DOCX whose document.xml inflates from about 300 KB to ``expanded`` bytes of one repeated byte."""
    source = zipfile.ZipFile(io.BytesIO(docx_bytes([("A small document.", 0)])))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as bomb:
        for item in source.infolist():
            if item.filename == "word/document.xml":
                with bomb.open(item.filename, "w", force_zip64=True) as member:
                    block = b" " * 2**20
                    for _ in range(expanded // len(block)):
                        member.write(block)
            else:
                bomb.writestr(item, source.read(item.filename))
    return out.getvalue()


def html_page(lang: str, title: str, date: str | None, sections: list[tuple[str, list[str]]]) -> str:
    """A saved web page: navigation, a script, a style and a footer around an article with h2 sections."""
    meta = f'<meta name="date" content="{date}">' if date else ""
    body = "".join(f"<h2>{h}</h2>" + "".join(f"<p>{p}</p>" for p in ps) for h, ps in sections)
    return (
        f'<!DOCTYPE html><html lang="{lang}"><head><meta charset="utf-8"><title>{title}</title>{meta}'
        '<style>p { color: red; } .x::after { content: "STYLE-TEXT"; }</style>'
        "<script>document.write('SCRIPT-TEXT'); alert('SCRIPT-TEXT');</script></head><body>"
        '<nav><a href="/">Home NAV-TEXT</a> <a href="/about">About</a></nav>'
        f"<header>Site banner HEADER-TEXT</header><main><h1>{title}</h1>{body}</main>"
        "<footer>Copyright FOOTER-TEXT</footer><script>var x = 'SCRIPT-TEXT';</script></body></html>"
    )


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path
