"""Index damage: each kind is refused before use, or found by ``rag verify``, with the command that fixes it.

Every damage below is applied to a freshly built index. The library must raise an
``IndexError_`` when the index is opened (not later, at a question), with a message that
names the command to run; the CLI must exit non-zero with that message on one line of
stderr and no traceback; and running the named command must repair the index.

Opening checks each file's presence and size, not its SHA-256 (docs/reliability.md, "What
opening checks"): the damages in ``SAME_SIZE`` (bytes changed in place at the same size)
are found by ``rag verify`` instead, which must report each on one line with the fix.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result
from fakes import FakeEncoder
from helpers import MakeIndex

from rag.cli import main
from rag.encoders import HashEncoder
from rag.errors import IndexCorruptError, IndexMismatchError, IndexMissingError
from rag.index import CURRENT, FORMAT_VERSION, current_build, open_index, verify_index
from rag.pipeline import Pipeline, ensure_index
from rag.settings import Settings

HASH = Settings(model="hash")
QUESTION = "Qui a appelé le président Ilham Aliyev ?"
FIX = re.compile(r"`(rag index[^`]*)`")


@pytest.fixture
def built(make_index: MakeIndex, seeds_copy: Path) -> Path:
    return make_index(seeds_copy, settings=HASH)


# ----------------------------------------------------------------------------- damages


def _truncate(name: str, keep: float) -> Callable[[Path], None]:
    def damage(build: Path) -> None:
        data = (build / name).read_bytes()
        (build / name).write_bytes(data[: int(len(data) * keep)])

    return damage


def _flip(name: str) -> Callable[[Path], None]:
    """Same size, a few bytes changed in the middle: only a checksum can tell."""

    def damage(build: Path) -> None:
        data = bytearray((build / name).read_bytes())
        middle = len(data) // 2
        data[middle : middle + 8] = bytes(255 - b for b in data[middle : middle + 8])
        (build / name).write_bytes(bytes(data))

    return damage


def _remove(name: str) -> Callable[[Path], None]:
    def damage(build: Path) -> None:
        path = build / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()

    return damage


def _edit_manifest(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    def damage(build: Path) -> None:
        manifest = json.loads((build / "manifest.json").read_text(encoding="utf-8"))
        result = edit(manifest)
        (build / "manifest.json").write_text(json.dumps(manifest if result is None else result), encoding="utf-8")

    return damage


def _set(path: str, value: object) -> Callable[[dict], None]:
    def edit(manifest: dict) -> None:
        *parents, key = path.split(".")
        target = manifest
        for p in parents:
            target = target[p]
        target[key] = value

    return edit


def _replace_vectors(name: str, dim: int) -> Callable[[Path], None]:
    """Vectors of another dimension, with the manifest's checksums updated to match (a consistent fake)."""

    def damage(build: Path) -> None:
        rows = np.load(build / name).shape[0]
        np.save(build / name, np.ones((rows, dim), dtype=np.float32), allow_pickle=False)
        manifest = json.loads((build / "manifest.json").read_text(encoding="utf-8"))
        data = (build / name).read_bytes()
        manifest["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        (build / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")

    return damage


def _edit_document_text(build: Path) -> None:
    path = build / "documents.jsonl"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("Blinken", "Blinkem", 1), encoding="utf-8")  # same length


DAMAGES: dict[str, Callable[[Path], None]] = {
    "chunks.faiss truncated to half": _truncate("chunks.faiss", 0.5),
    "sentences.faiss truncated to 0 bytes": _truncate("sentences.faiss", 0),
    "chunks.faiss corrupted (same size)": _flip("chunks.faiss"),
    "sentence_vectors.npy corrupted (same size)": _flip("sentence_vectors.npy"),
    "chunks.npy truncated": _truncate("chunks.npy", 0.9),
    "bm25 index corrupted": _flip("bm25_chunks/data.csc.index.npy"),
    "documents.jsonl edited (same size)": _edit_document_text,
    "chunks.faiss missing": _remove("chunks.faiss"),
    "documents.jsonl missing": _remove("documents.jsonl"),
    "bm25_sentences folder missing": _remove("bm25_sentences"),
    "manifest.json missing": _remove("manifest.json"),
    "manifest truncated": _truncate("manifest.json", 0.5),
    "manifest not an object": _edit_manifest(lambda m: [m]),
    "manifest without format_version": _edit_manifest(lambda m: m.pop("format_version")),
    "manifest from the future": _edit_manifest(_set("format_version", FORMAT_VERSION + 1)),
    "manifest from the past": _edit_manifest(_set("format_version", FORMAT_VERSION - 1)),
    "manifest without the file list": _edit_manifest(lambda m: m.pop("files")),
    "manifest checksum edited": _edit_manifest(lambda m: m["files"]["chunks.faiss"].update(sha256="0" * 64)),
    "manifest dimension edited": _edit_manifest(_set("model.dim", 384)),
    "manifest document count edited": _edit_manifest(_set("counts.documents", 7)),
    "vectors of another dimension": _replace_vectors("chunk_vectors.npy", 384),
}

# Damage to the folder rather than to a build.
POINTER_DAMAGES: dict[str, Callable[[Path], object]] = {  # write_text's count is dropped
    "CURRENT names a missing build": lambda root: (root / CURRENT).write_text("20990101T000000000000-deadbeef\n"),
    "CURRENT empty": lambda root: (root / CURRENT).write_text(""),
    "CURRENT names a path": lambda root: (root / CURRENT).write_text("../../etc\n"),
    "build folder deleted": lambda root: shutil.rmtree(current_build(root)),
}


# Same size, bytes changed in place: only a checksum tells, so ``rag verify`` finds them, not opening.
SAME_SIZE = {"chunks.faiss corrupted (same size)", "sentence_vectors.npy corrupted (same size)",
             "bm25 index corrupted", "documents.jsonl edited (same size)", "manifest checksum edited"}


def _named_fix(message: str) -> list[str]:
    """The `rag index ...` command ``message`` names, split as a shell splits it."""
    found = FIX.search(message)
    assert found is not None, f"no `rag index` command in: {message}"
    return shlex.split(found.group(1))


def _damage(index_dir: Path, name: str) -> None:
    if name in DAMAGES:
        DAMAGES[name](current_build(index_dir))
    else:
        POINTER_DAMAGES[name](index_dir)


ALL = sorted(set(DAMAGES) - SAME_SIZE) + sorted(POINTER_DAMAGES)
VERIFY_ONLY = sorted(SAME_SIZE)


# ----------------------------------------------------------------------------- library


@pytest.mark.parametrize("damage", ALL)
def test_damage_is_refused_when_the_index_is_opened(built: Path, damage: str) -> None:
    _damage(built, damage)
    with pytest.raises(IndexCorruptError, match=r"rebuild with `rag index --full --index .+`"):
        Pipeline.open(built, HASH, HashEncoder())


@pytest.mark.parametrize("damage", ALL)
def test_damage_is_not_silently_rebuilt_by_ensure_index(built: Path, seeds_copy: Path, damage: str) -> None:
    """The app and `rag ask` call ensure_index first: damage must be reported, not papered over."""
    before = sorted(p.name for p in (built / "builds").iterdir())
    _damage(built, damage)
    with pytest.raises(IndexCorruptError, match=r"`rag index --full --index .+`"):
        ensure_index(seeds_copy, built, HASH, HashEncoder())
        Pipeline.open(built, HASH, HashEncoder())
    assert sorted(p.name for p in (built / "builds").iterdir()) == before or damage == "build folder deleted"


@pytest.mark.parametrize("damage", VERIFY_ONLY)
def test_same_size_damage_is_found_by_verify_with_the_fix(built: Path, damage: str) -> None:
    _damage(built, damage)
    report = verify_index(built)
    assert len(report.problems) == 1, report.problems
    assert re.search(r"does not match its checksum.*: rebuild with `rag index --full --index .+`",
                     report.problems[0].message)


def test_future_format_is_never_overwritten_by_a_question(built: Path, seeds_copy: Path) -> None:
    """An index written by a newer rag must survive an older rag being asked a question."""
    DAMAGES["manifest from the future"](current_build(built))
    in_use = current_build(built).name
    with pytest.raises(IndexCorruptError, match="newer than this program reads"):
        ensure_index(seeds_copy, built, HASH, HashEncoder())
    assert current_build(built).name == in_use


def test_missing_index_names_the_build_command(tmp_path: Path) -> None:
    with pytest.raises(IndexMissingError, match=r"build it with `rag index --index .+`"):
        Pipeline.open(tmp_path / "nothing-here", HASH, HashEncoder())


def test_index_of_another_model_is_refused_with_both_fixes(built: Path) -> None:
    with pytest.raises(IndexMismatchError, match=r"built with model 'hash', not 'e5'.*`rag index --full --model e5 "
                                                 r"--index .+`, or ask with --model hash"):
        Pipeline.open(built, Settings(model="e5"))


# Same spec name, another model: what a replaced sentence-transformers folder looks like.
OTHER_MODELS = {"other-dimension": {"model_id": "hash-bow-128", "dim": 128},
                "other-model-id": {"model_id": "another-model-256"}}


@pytest.mark.parametrize("poses_as", OTHER_MODELS.values(), ids=OTHER_MODELS.keys())
def test_encoder_that_differs_from_the_manifest_is_refused_at_open(built: Path, poses_as: dict[str, Any]) -> None:
    with pytest.raises(IndexMismatchError, match=r"`rag index --full"):
        pipeline = Pipeline.open(built, HASH, FakeEncoder(**poses_as))
        pipeline.ask(QUESTION)


def test_fix_command_survives_a_path_with_spaces(make_index: MakeIndex, seeds_copy: Path) -> None:
    """The command in the message must be runnable as printed, even for "My Index"."""
    index_dir = make_index(seeds_copy, index="My Index", settings=HASH)
    _damage(index_dir, "chunks.faiss truncated to half")
    with pytest.raises(IndexCorruptError) as caught:
        open_index(index_dir, HASH)
    command = _named_fix(str(caught.value))
    assert command[command.index("--index") + 1] == str(index_dir)


def test_damage_is_found_even_without_checksums_when_sizes_differ(built: Path) -> None:
    """``verify=False`` (a quick open) still checks every file's size."""
    _damage(built, "chunks.faiss truncated to half")
    with pytest.raises(IndexCorruptError, match=r"chunks\.faiss has \d+ bytes"):
        open_index(built, HASH, verify=False)


def test_an_undamaged_index_opens(built: Path) -> None:
    """The control case: without damage the same calls succeed (so the tests above can fail)."""
    Pipeline.open(built, HASH, HashEncoder()).ask(QUESTION)


# ----------------------------------------------------------------------------- CLI


def _ask(index_dir: Path, seeds: Path, *extra: str) -> Result:
    return CliRunner().invoke(
        main, ["ask", "--index", str(index_dir), "--seeds", str(seeds), *extra, QUESTION], catch_exceptions=False,
    )


def _assert_clean_failure(result: Result, *, needs: str = "rag index") -> str:
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and needs in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("seeds_present", [True, False], ids=["with-seeds", "index-only"])
@pytest.mark.parametrize("damage", ALL)
def test_cli_ask_on_a_damaged_index_fails_in_one_line_and_the_named_command_fixes_it(
    built: Path, seeds_copy: Path, tmp_path: Path, damage: str, seeds_present: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _damage(built, damage)
    seeds = seeds_copy if seeds_present else tmp_path / "no-seeds-here"
    line = _assert_clean_failure(_ask(built, seeds))
    # run the command exactly as printed (the model and documents come from the environment)
    monkeypatch.setenv("RAG_MODEL", "hash")
    monkeypatch.setenv("RAG_SEEDS", str(seeds_copy))
    fix = _named_fix(line)
    assert fix[:2] == ["rag", "index"], fix
    repaired = CliRunner().invoke(main, fix[1:], catch_exceptions=False)
    assert repaired.exit_code == 0, repaired.output
    assert _ask(built, seeds_copy, "--model", "hash").exit_code == 0


@pytest.mark.parametrize("damage", VERIFY_ONLY)
def test_cli_verify_reports_same_size_damage_in_one_line_and_the_named_command_fixes_it(
    built: Path, seeds_copy: Path, damage: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    _damage(built, damage)
    found = CliRunner().invoke(main, ["verify", "--index", str(built)], catch_exceptions=False)
    assert found.exit_code == 1 and "Traceback" not in found.output
    [line] = found.stderr.strip().splitlines()
    assert line.startswith("problem: index file ") and "does not match its checksum" in line, line
    monkeypatch.setenv("RAG_MODEL", "hash")
    monkeypatch.setenv("RAG_SEEDS", str(seeds_copy))
    fix = _named_fix(line)
    assert fix[:4] == ["rag", "index", "--full", "--index"], fix
    assert CliRunner().invoke(main, fix[1:], catch_exceptions=False).exit_code == 0
    assert CliRunner().invoke(main, ["verify", "--index", str(built)], catch_exceptions=False).exit_code == 0
    assert _ask(built, seeds_copy, "--model", "hash").exit_code == 0


def test_cli_ask_with_another_model_fails_in_one_line(built: Path, seeds_copy: Path) -> None:
    line = _assert_clean_failure(_ask(built, seeds_copy, "--model", "e5"), needs="rag index --full --model e5")
    assert "--model hash" in line


def test_cli_ask_without_an_index_or_documents_fails_in_one_line(tmp_path: Path) -> None:
    _assert_clean_failure(_ask(tmp_path / "index", tmp_path / "seeds"), needs="does not exist: create it")


@pytest.mark.parametrize("damage", ["chunks.faiss truncated to half", "manifest from the future"])
def test_cli_in_a_real_process_exits_non_zero_without_traceback(built: Path, tmp_path: Path, damage: str) -> None:
    _damage(built, damage)
    proc = subprocess.run(
        [sys.executable, "-m", "rag.cli", "ask", "--index", str(built), "--seeds", str(tmp_path / "absent"), QUESTION],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "rag index" in proc.stderr, proc.stderr
