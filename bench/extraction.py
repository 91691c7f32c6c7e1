"""Extraction speed: pages per second for each format, on generated documents.

    python bench/extraction.py [--pages 40] [--repeats 7]

The same text is written as a PDF (reportlab), a DOCX (python-docx), an HTML page, a
Markdown file and a plain-text file (the generators of tests/samples.py): ``--pages`` A4
pages of about 3,000 characters in English, French, German and Spanish. For the formats
without pages, "pages" are those same A4 pages of text, so the figures compare. Each format
is extracted ``--repeats`` times after one warm-up; the median is reported. Needs the test
extra (reportlab): ``pip install -e ".[test]"``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the tests' document generators, not a copy of them

import samples  # noqa: E402

from rag.formats import extract  # noqa: E402


def page_texts(pages: int) -> list[list[str]]:
    """``pages`` pages: a heading, then paragraphs from the four languages until ~3,000 characters."""
    out = []
    for number in range(pages):
        lang = samples.LANGS[number % len(samples.LANGS)]
        heading, *paragraphs = samples.PAGES[lang]
        body: list[str] = []
        while sum(len(p) for p in body) < 3000:
            body.append(paragraphs[len(body) % len(paragraphs)])
        out.append([f"{heading} {number + 1}", *body])
    return out


def documents(pages: int) -> dict[str, tuple[str, bytes]]:
    texts = page_texts(pages)
    blocks = [(t, 1 if i == 0 else 0) for page in texts for i, t in enumerate(page)]
    markdown = "\n\n".join(("## " if level else "") + t for t, level in blocks) + "\n"
    return {
        "pdf": ("bench.pdf", samples.pdf_bytes(texts, title="Bench", created="2024-03-05")),
        "docx": ("bench.docx", samples.docx_bytes(blocks, title="Bench", created="2024-03-05")),
        "html": ("bench.html", samples.html_page("en", "Bench", "2024-03-05",
                                                 [(page[0], page[1:]) for page in texts]).encode()),
        "markdown": ("bench.md", markdown.encode()),
        "text": ("bench.txt", markdown.replace("## ", "").encode()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"{args.pages} pages per document, median of {args.repeats} runs after one warm-up\n")
    print("| format | file KB | characters | median ms | pages/s | MB of text/s |")
    print("|---|---|---|---|---|---|")
    for kind, (name, data) in documents(args.pages).items():
        extracted = extract(name, data)  # warm-up: imports, the parser's first load
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            extract(name, data)
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        chars = len(extracted.text)
        print(f"| {kind} | {len(data) / 1024:,.0f} | {chars:,} | {median * 1000:,.2f} | {args.pages / median:,.0f} | "
              f"{chars / median / 1e6:,.1f} |")


if __name__ == "__main__":
    main()
