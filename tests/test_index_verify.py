"""``rag verify``: damage that opening an index or the quick freshness check cannot see, reported with the fix."""

from __future__ import annotations

import json
import os
import shlex
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from fakes import FAKE, FakeEncoder
from helpers import SEED_DOC, MakeIndex

import rag.index.manifest
from rag.cli import main
from rag.errors import IndexCorruptError
from rag.index import current_build, open_index, verify_index
from rag.pipeline import Pipeline

QUESTION = "Qu'a proposé Blinken ?"


@pytest.fixture
def built(make_index: MakeIndex, seeds_copy: Path) -> Path:
    past = time.time() - 3600
    os.utime(seeds_copy / SEED_DOC.name, (past, past))
    return make_index(seeds_copy)


def _verify(*args: str) -> Result:
    return CliRunner().invoke(main, ["verify", *args], catch_exceptions=False)


def _run_fix(line: str) -> None:
    """Run the `rag index ...` command the message names, exactly as printed."""
    command = shlex.split(line.split("`rag index", 1)[1].split("`", 1)[0])
    result = CliRunner().invoke(main, ["index", *command, "--model", "hash"], catch_exceptions=False)
    assert result.exit_code == 0, result.output


def _flip_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle] ^= 0xFF
    path.write_bytes(bytes(data))


def test_an_undamaged_index_verifies(built: Path, seeds_copy: Path) -> None:
    report = verify_index(built, seeds_copy)
    assert report.ok and report.documents == 1
    assert report.files == len(rag.index.manifest.read_manifest(current_build(built)).files)
    result = _verify("--index", str(built), "--docs", str(seeds_copy))
    assert result.exit_code == 0 and result.stdout.startswith("OK: hashed"), result.output


def test_a_flipped_byte_in_an_index_file_opens_but_is_caught_by_verify(built: Path, seeds_copy: Path) -> None:
    _flip_middle(current_build(built) / "sentence_vectors.npy")
    Pipeline.open(built, FAKE, FakeEncoder()).ask(QUESTION)  # the blind spot of a quick open, documented

    report = verify_index(built)
    assert [p.subject for p in report.problems] == ["index file sentence_vectors.npy"]
    result = _verify("--index", str(built), "--json")
    assert result.exit_code == 1
    [problem] = json.loads(result.stdout)["problems"]
    assert "sentence_vectors.npy does not match its checksum" in problem["message"]

    result = _verify("--index", str(built))
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("problem: index file sentence_vectors.npy") and "`rag index --full --index " in line
    _run_fix(line)
    assert verify_index(built).ok


def test_a_truncated_index_file_is_caught_at_open_without_hashing(
    built: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = current_build(built) / "chunks.faiss"
    path.write_bytes(path.read_bytes()[:100])
    monkeypatch.setattr(rag.index.manifest, "sha256_file", lambda p: pytest.fail("hashed at open"))
    with pytest.raises(IndexCorruptError, match=r"chunks\.faiss has 100 bytes, the manifest says \d+: rebuild"):
        open_index(built, FAKE)


def test_a_document_changed_at_the_same_size_and_mtime_is_reported_by_verify_docs(
    built: Path, seeds_copy: Path
) -> None:
    path = seeds_copy / SEED_DOC.name
    st = path.stat()
    path.write_bytes(path.read_bytes().replace(b"Blinken", b"Blinkem", 1))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))

    assert verify_index(built).ok  # the index itself is sound
    report = verify_index(built, seeds_copy)
    [problem] = report.problems
    assert problem.subject == f"document {SEED_DOC.name}"
    assert "same size and modification time" in problem.message

    result = _verify("--index", str(built), "--docs", str(seeds_copy))
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert f"`rag index --seeds {shlex.quote(str(seeds_copy))} --index {shlex.quote(str(built))}`" in line
    _run_fix(line)
    assert verify_index(built, seeds_copy).ok


def test_verify_docs_reports_new_and_removed_documents(built: Path, seeds_copy: Path) -> None:
    (seeds_copy / "new.txt").write_text("Un nouveau document sur le phare de Brest, assez long.\n", encoding="utf-8")
    moved = seeds_copy.parent / "moved.txt"
    (seeds_copy / SEED_DOC.name).rename(moved)
    messages = sorted(p.message for p in verify_index(built, seeds_copy).problems)
    assert len(messages) == 2
    assert messages[0].startswith(f"document {SEED_DOC.name} was removed from")
    assert messages[1].startswith("document new.txt is new since the index was built: update the index with")


def test_an_edited_manifest_checksum_is_caught_by_verify(built: Path) -> None:
    manifest_path = current_build(built) / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["files"]["chunks.npy"]["sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    [problem] = verify_index(built).problems
    assert "index file chunks.npy does not match its checksum" in problem.message


def test_verify_of_no_index_names_the_build_command(tmp_path: Path) -> None:
    result = _verify("--index", str(tmp_path / "none"))
    assert result.exit_code == 2 and "build it with `rag index --index" in result.stderr
