"""rag.library and the app engine's documents: uploads written atomically, never overwriting; removal; updates."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import samples
from samples import PAGES, write

from rag.errors import DocumentsError
from rag.library import REMOVED, UPLOAD_MAX_BYTES, add_file, remove_document
from rag.ui import AppConfig, Engine

pytest.importorskip("reportlab", reason="the test extra is missing: pip install -e '.[test]'")
DREDGING = ["Dredging", "The dredging of the inner basin will remove eleven thousand cubic metres of silt."]


def two_pages() -> bytes:
    return samples.pdf_bytes([PAGES["en"], DREDGING], created="2024-03-05")


def listing(folder: Path) -> list[str]:
    """Every entry of the folder, hidden ones included (a leftover temporary file would show here)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def test_upload_is_written_whole_and_a_taken_name_gets_a_new_one(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    first = add_file(folder, "report.pdf", two_pages())
    assert (first.saved_as, first.refused, first.pages, first.renamed) == ("report.pdf", None, 2, False)
    other = samples.pdf_bytes([PAGES["fr"]])
    second = add_file(folder, "report.pdf", other)
    assert second.saved_as == "report (2).pdf" and second.renamed
    assert second.message == "report.pdf was added as report (2).pdf (a different file of that name is already there)"
    assert (folder / "report.pdf").read_bytes() == two_pages()  # the first is untouched
    assert (folder / "report (2).pdf").read_bytes() == other
    same = add_file(folder, "report.pdf", two_pages())
    assert same.saved_as is None
    assert same.refused == "the same file is already in the documents folder as report.pdf"
    assert listing(folder) == ["report (2).pdf", "report.pdf"]  # no temporary file left behind


@pytest.mark.parametrize(("name", "data", "reason"), [
    ("notes.odt", b"PK", r"unsupported file type: use one of \.txt, \.md"),
    ("../../etc/passwd.txt", b"root", None),  # folders in the name are dropped, not followed
    (".hidden.md", b"# x\n\ntext", "the file name is empty, hidden or holds control characters"),
    ("bad\x07name.txt", b"text", "the file name is empty, hidden or holds control characters"),
    ("scan.pdf", None, r"no text layer \(a scanned or image-only PDF\); OCR is not done"),
    ("locked.pdf", None, r"encrypted PDF"),
    ("big.txt", b"a" * (UPLOAD_MAX_BYTES + 1), r"50\.0 MB, over the limit of 50 MB"),
    ("empty.md", b"  \n", r"empty file"),
])
def test_bad_uploads_are_refused_with_the_reason_and_nothing_is_written(
        tmp_path: Path, name: str, data: bytes | None, reason: str | None) -> None:
    import re

    folder = tmp_path / "docs"
    if data is None:
        data = samples.scanned_pdf_bytes() if name == "scan.pdf" else samples.pdf_bytes([PAGES["en"]], encrypt="pw")
    added = add_file(folder, name, data)
    if reason is None:
        assert added.saved_as == "passwd.txt" and listing(folder) == ["passwd.txt"]
        assert not (tmp_path / "etc").exists()
        return
    assert added.saved_as is None and added.refused is not None and re.search(reason, added.refused)
    assert added.message.startswith(f"{name} was not added: ")
    assert not folder.exists() or listing(folder) == []


def test_remove_moves_the_document_aside_and_refuses_what_is_not_a_document(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    write(folder / "sub" / "a.md", "# A\n\nAlpha.")
    write(tmp_path / "outside.txt", "Not in the folder.")
    moved = remove_document(folder, "sub/a.md")
    assert moved == folder.resolve() / REMOVED / "a.md" and moved.read_text() == "# A\n\nAlpha."
    assert not (folder / "sub" / "a.md").exists()
    for bad in ("sub/a.md", "../outside.txt", f"{REMOVED}/a.md", "sub"):
        with pytest.raises(DocumentsError, match=r"no document .* it may have been removed already"):
            remove_document(folder, bad)
    assert (tmp_path / "outside.txt").exists()


def test_engine_adds_lists_and_removes_documents_with_incremental_updates(tmp_path: Path) -> None:
    folder = write(tmp_path / "docs" / "notes.md", "# Notes\n\nThe harbour opened in 1887.").parent
    engine = Engine(AppConfig(folder, tmp_path / "index", "hash"))
    engine.start()
    page = samples.html_page("es", "Puerto", None, [("Obras", PAGES["es"][1:])]).encode()
    added = engine.add_files([("report.pdf", two_pages()), ("scan.pdf", samples.scanned_pdf_bytes()),
                              ("page.html", page)])
    assert [a.saved_as for a in added] == ["report.pdf", None, "page.html"]
    status = engine.rebuild_status(wait=120)
    assert not status.running and status.error is None and status.report is not None
    assert not status.full and status.report.reused_documents == 1 and status.report.embedded_documents == 2
    assert (status.read, status.to_read, status.pages) == (3, 3, 4)
    rows = {r.id: r for r in engine.documents()}
    assert set(rows) == {"notes.md", "report.pdf", "page.html"}
    assert rows["report.pdf"].pages == 2 and rows["report.pdf"].kind == "pdf" and rows["report.pdf"].chunks >= 2
    assert rows["page.html"].pages is None and rows["notes.md"].pages is None
    answer, view = engine.ask("How much silt will the dredging of the inner basin remove?")
    assert answer.sentences[0].page == 2 and answer.sentences[0].text == DREDGING[1]
    assert view.passages[0].label.startswith(r"\[1\] report\.pdf · p\. 2 · 2024\-03\-05 · paragraph")
    assert engine.facts().pages == 4

    engine.remove("report.pdf")
    status = engine.rebuild_status(wait=120)
    assert status.report is not None and status.report.removed_documents == 1 and status.report.embedded_documents == 0
    assert [r.id for r in engine.documents()] == ["notes.md", "page.html"]
    assert os.path.exists(folder / REMOVED / "report.pdf")


def test_a_change_during_a_build_is_built_next(tmp_path: Path) -> None:
    folder = write(tmp_path / "docs" / "a.md", "# A\n\nAlpha is first.").parent
    engine = Engine(AppConfig(folder, tmp_path / "index", "hash"))
    engine.start()
    first = engine.start_rebuild(full=True)
    engine.add_files([("b.md", b"# B\n\nBeta is second.")])  # while the full rebuild may still run
    status = engine.rebuild_status(wait=120)
    assert status.number >= first.number and not status.running and status.error is None
    assert [r.id for r in engine.documents()] == ["a.md", "b.md"]
