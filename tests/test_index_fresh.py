"""The quick freshness check: an up-to-date index is used without reading a document or hashing a file."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes import FAKE, FakeEncoder
from helpers import SEED_DOC, MakeIndex

import rag.index.manifest
import rag.load
from rag.cli import main
from rag.index import build_index, current_build, quick_status, read_manifest
from rag.index.fresh import RACY_NS, SIDECAR
from rag.load import load_documents, scan_sources
from rag.pipeline import Pipeline, ensure_index

QUESTION = "Qu'a proposé Blinken ?"
HOUR_NS = 3600 * 10**9


def _age(folder: Path, seconds: float = 3600) -> None:
    """Set every file's mtime well before now, as for documents written some time before the build."""
    past = time.time() - seconds
    for path in folder.rglob("*"):
        os.utime(path, (past, past))


@pytest.fixture
def built(make_index: MakeIndex, seeds_copy: Path) -> Path:
    _age(seeds_copy)
    return make_index(seeds_copy)


@pytest.fixture
def no_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any document parsed or any file hashed fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("read a document or hashed a file")

    monkeypatch.setattr(rag.load, "parse_document", refuse)
    monkeypatch.setattr(rag.index.manifest, "sha256_file", refuse)


def test_an_up_to_date_index_answers_without_reading_a_document_or_hashing(
    built: Path, seeds_copy: Path, no_reading: None
) -> None:
    assert quick_status(built, seeds_copy, FAKE) == "ok"
    encoder = FakeEncoder()
    assert ensure_index(seeds_copy, built, FAKE, encoder) is None
    answer = Pipeline.open(built, FAKE, encoder).ask(QUESTION)
    assert answer.sources and not encoder.passages
    # and through `rag ask`, documents folder given
    result = CliRunner().invoke(main, ["ask", "--index", str(built), "--seeds", str(seeds_copy), "--model", "hash",
                                       QUESTION], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "Citations:" in result.output or "No answer found" in result.output


def test_the_control_case_reads_documents(built: Path, seeds_copy: Path, no_reading: None) -> None:
    """The fixture above does catch reading: a changed folder makes ensure_index read, and fail here."""
    (seeds_copy / "new.txt").write_text("date 2022-10\n\nUn nouveau document sur le phare de Brest.\n",
                                        encoding="utf-8")
    assert quick_status(built, seeds_copy, FAKE) == "unknown"
    with pytest.raises(AssertionError, match="read a document"):
        ensure_index(seeds_copy, built, FAKE, FakeEncoder())


def test_a_touched_but_unchanged_file_is_not_re_embedded_and_the_next_start_is_stat_only(
    built: Path, seeds_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_use = current_build(built).name
    _age(seeds_copy, seconds=60)  # touched: another mtime, same bytes
    assert quick_status(built, seeds_copy, FAKE) == "unknown"
    encoder = FakeEncoder()
    assert ensure_index(seeds_copy, built, FAKE, encoder) is None  # read and hashed: the same bytes
    assert not encoder.passages and current_build(built).name == in_use
    sidecar = json.loads((current_build(built) / SIDECAR).read_text(encoding="utf-8"))
    assert sidecar["build"] == in_use
    assert [f["mtime_ns"] for f in sidecar["files"]] == [s.mtime_ns for s in scan_sources(seeds_copy)]

    monkeypatch.setattr(rag.load, "parse_document", lambda *a: pytest.fail("read a document"))
    assert quick_status(built, seeds_copy, FAKE) == "ok"
    assert ensure_index(seeds_copy, built, FAKE, FakeEncoder()) is None


def test_rag_index_records_touched_files_too(built: Path, seeds_copy: Path) -> None:
    _age(seeds_copy, seconds=60)
    report = build_index(load_documents(seeds_copy), built, FAKE, FakeEncoder())
    assert report.up_to_date
    assert quick_status(built, seeds_copy, FAKE) == "ok"


def test_added_removed_and_resized_files_send_ensure_index_back_to_reading(built: Path, seeds_copy: Path) -> None:
    (seeds_copy / "new.txt").write_text("date 2022-10\n\nUn nouveau document sur le phare de Brest.\n",
                                        encoding="utf-8")
    _age(seeds_copy)
    assert quick_status(built, seeds_copy, FAKE) == "unknown"
    report = ensure_index(seeds_copy, built, FAKE, FakeEncoder())
    assert report is not None and report.embedded_documents == 1 and report.reused_documents == 1
    assert quick_status(built, seeds_copy, FAKE) == "ok"

    (seeds_copy / "new.txt").unlink()
    assert quick_status(built, seeds_copy, FAKE) == "unknown"
    report = ensure_index(seeds_copy, built, FAKE, FakeEncoder())
    assert report is not None and report.removed_documents == 1

    with open(seeds_copy / SEED_DOC.name, "a", encoding="utf-8") as handle:
        handle.write("\nUne phrase de plus.\n")
    _age(seeds_copy)
    assert quick_status(built, seeds_copy, FAKE) == "unknown"
    report = ensure_index(seeds_copy, built, FAKE, FakeEncoder())
    assert report is not None and report.embedded_documents == 1


def test_a_file_written_just_before_the_scan_is_not_trusted_by_its_mtime(make_index: MakeIndex,
                                                                          seeds_copy: Path) -> None:
    """Racily clean: a file written within RACY_NS of the build's scan may change again within the same mtime
    tick; the quick check reads the documents instead (and the next scan, later, records a trusted state)."""
    recent = time.time() - RACY_NS / 2e9
    os.utime(seeds_copy / SEED_DOC.name, (recent, recent))
    index_dir = make_index(seeds_copy)
    assert quick_status(index_dir, seeds_copy, FAKE) == "unknown"
    manifest = read_manifest(current_build(index_dir))
    assert manifest.scanned_ns - manifest.sources[0].mtime_ns < RACY_NS


def test_a_content_change_at_the_same_size_and_mtime_is_not_seen_by_the_quick_check(
    built: Path, seeds_copy: Path
) -> None:
    """The documented blind spot (rag verify --docs finds it: tests/test_index_verify.py)."""
    path = seeds_copy / SEED_DOC.name
    st = path.stat()
    data = path.read_bytes()
    path.write_bytes(data.replace(b"Blinken", b"Blinkem", 1))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert quick_status(built, seeds_copy, FAKE) == "ok"
    assert ensure_index(seeds_copy, built, FAKE, FakeEncoder()) is None


def test_a_damaged_sidecar_falls_back_to_the_manifest(built: Path, seeds_copy: Path) -> None:
    (current_build(built) / SIDECAR).write_text("{not json", encoding="utf-8")
    assert quick_status(built, seeds_copy, FAKE) == "ok"
    _age(seeds_copy, seconds=60)
    assert quick_status(built, seeds_copy, FAKE) == "unknown"  # the damaged record is not trusted either way
