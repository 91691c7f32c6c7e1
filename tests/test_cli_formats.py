"""``rag index``, ``ask --json`` and ``show`` on a folder of PDF, DOCX, HTML and Markdown files (fake encoder)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import samples
from click.testing import CliRunner, Result
from samples import PAGES, write

from rag.cli import main

pytest.importorskip("reportlab", reason="the test extra is missing: pip install -e '.[test]'")
CLEAN_ENV: dict[str, str | None] = {"RAG_MODEL": None, "RAG_SEEDS": None, "RAG_INDEX": None}
# a second page that only this file has: a question about it must cite page 2
DREDGING = ["Dredging", "The dredging of the inner basin will remove eleven thousand cubic metres of silt.",
            "Dredging boats work only at night to spare the ferries."]


def rag(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], env=CLEAN_ENV)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    write(docs / "report.pdf", samples.pdf_bytes([PAGES["en"], DREDGING], title="Harbour report", created="2024-03-05"))
    blocks = [(t, 1 if i == 0 else 0) for lang in ("fr", "de") for i, t in enumerate(PAGES[lang])]
    write(docs / "word" / "rapport.docx", samples.docx_bytes(blocks, title="Rapport", created="2023-11-02"))
    write(docs / "page.html", samples.html_page("es", "El puerto", "2022-06-01", [(PAGES["es"][0], PAGES["es"][1:])]))
    write(docs / "locked.pdf", samples.pdf_bytes([PAGES["en"]], encrypt="secret"))
    write(docs / "scan.pdf", samples.scanned_pdf_bytes())
    return docs


def ask(folder: Path, index: Path, question: str) -> dict[str, Any]:
    result = rag("ask", "--seeds", folder, "--index", index, "--model", "hash", "--json", question)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def stored(index: Path, doc: str) -> dict[str, Any]:
    result = rag("show", doc, "--index", index, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_index_reports_pages_and_bad_files_by_name(folder: Path, tmp_path: Path) -> None:
    result = rag("index", "--seeds", folder, "--index", tmp_path / "index", "--model", "hash", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["documents"] == 3 and report["pages"] == 2 + 1 + 1
    assert {s["path"]: s["reason"] for s in report["skipped"]} == {
        "locked.pdf": "encrypted PDF (it needs a password): save a copy without a password and add that",
        "scan.pdf": "no text layer (a scanned or image-only PDF); OCR is not done",
    }
    assert "warning: skipping scan.pdf: no text layer" in result.stderr and "Traceback" not in result.output


def test_ask_json_cites_page_and_section_and_every_quote_is_in_the_stored_text(folder: Path, tmp_path: Path) -> None:
    index = tmp_path / "index"
    data = ask(folder, index, "How much silt will the dredging of the inner basin remove?")
    assert not data["abstained"]
    first = data["sentences"][0]
    assert first["text"] == DREDGING[1]
    assert (first["doc"], first["page"], first["section"], first["date"]) == ("report.pdf", 2, None, "2024-03-05")
    assert first["citation"].startswith("[1] report.pdf, p. 2, 2024-03-05, paragraph ")

    german = ask(folder, index, "Wann beginnen die Arbeiten an der nördlichen Mole im Frühling?")
    cited = [s for s in german["sentences"] if s["doc"] == "word/rapport.docx"]
    assert cited and all(s["page"] is None and s["section"] == "Der Hafenbericht" for s in cited)
    assert "word/rapport.docx, § Der Hafenbericht, 2023-11-02" in cited[0]["citation"]

    for answer in (data, german, ask(folder, index, "¿Qué necesita el muelle norte antes del invierno?")):
        for span in answer["sentences"] + answer["sources"]:
            doc = stored(index, span["doc"])
            assert doc["text"][span["start"] : span["end"]] == span["text"]
            assert isinstance(span["page"], int) == (doc["kind"] == "pdf")


def test_show_prints_the_stored_text_and_lists_documents(folder: Path, tmp_path: Path) -> None:
    index = tmp_path / "index"
    assert rag("index", "--seeds", folder, "--index", index, "--model", "hash").exit_code == 0
    doc = stored(index, "report.pdf")
    assert doc["kind"] == "pdf" and doc["title"] == "Harbour report" and doc["date"] == "2024-03-05"
    assert [p["page"] for p in doc["pages"]] == [1, 2] and doc["pages"][0]["start"] == 0
    assert doc["text"][doc["pages"][1]["start"] :].startswith("Dredging\n\nThe dredging of the inner basin")
    assert doc["chunks"] >= 2 and doc["sha256"] == __import__("hashlib").sha256(
        (folder / "report.pdf").read_bytes()).hexdigest()
    html = stored(index, "page.html")
    assert html["sections"] == [{"start": 0, "title": "El puerto"},
                                {"start": len("El puerto\n\n"), "title": "El informe del puerto"}]

    plain = rag("show", "page.html", "--index", index)
    assert plain.exit_code == 0 and plain.stdout == html["text"] + "\n"
    listing = rag("show", "--index", index)
    assert listing.exit_code == 0
    assert listing.stdout.splitlines()[0].split("\t")[:2] == ["page.html", "html"]
    assert "report.pdf\t2 pages\t" in listing.stdout

    missing = rag("show", "nothere.pdf", "--index", index)
    assert missing.exit_code == 2
    assert missing.stderr.startswith("error: no document 'nothere.pdf' in the index at ")
    assert "`rag show` lists them all" in missing.stderr


def test_incremental_index_treats_every_format_alike(folder: Path, tmp_path: Path) -> None:
    index = tmp_path / "index"
    assert rag("index", "--seeds", folder, "--index", index, "--model", "hash").exit_code == 0
    # a changed PDF, a removed DOCX, a new HTML page; the unchanged HTML page is reused
    write(folder / "report.pdf", samples.pdf_bytes([PAGES["en"], DREDGING, PAGES["de"]], created="2024-04-01"))
    (folder / "word" / "rapport.docx").unlink()
    write(folder / "new.html", samples.html_page("de", "Neu", None, [(PAGES["de"][0], PAGES["de"][1:])]))
    result = rag("index", "--seeds", folder, "--index", index, "--model", "hash", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["embedded_documents"], report["reused_documents"], report["removed_documents"]) == (2, 1, 1)
    assert report["pages"] == 3 + 1 + 1
    assert [p["page"] for p in stored(index, "report.pdf")["pages"]] == [1, 2, 3]
