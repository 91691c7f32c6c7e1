"""The ``rag`` command: summaries, the --json contracts, automatic indexing, and one-line errors."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from helpers import SEED_DOC

from rag.cli import answer_text, main
from rag.index import FORMAT_VERSION, current_build
from rag.types import Answer, Quote

NOTES = "# Notes\n\nThe lighthouse of Cordouan was built in 1611 by Louis de Foix.\nIt stands in the Gironde estuary.\n"
LIGHTHOUSE = "When was the lighthouse of Cordouan built?"
CLEAN_ENV: dict[str, str | None] = {"RAG_MODEL": None, "RAG_SEEDS": None, "RAG_INDEX": None}


def rag(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], env=CLEAN_ENV)


def file_text(path: Path) -> str:
    with open(path, encoding="utf-8", newline="") as handle:
        return handle.read()


@pytest.fixture
def seeds(seeds_copy: Path) -> Path:
    """The seed, a Markdown file in a subfolder and a binary file that is skipped."""
    (seeds_copy / "sub").mkdir()
    (seeds_copy / "sub" / "notes.md").write_text(NOTES, encoding="utf-8")
    (seeds_copy / "bad.txt").write_bytes(b"\x00\x01\x02binary")
    return seeds_copy


@pytest.fixture
def index_dir(tmp_path: Path) -> Path:
    return tmp_path / "index"


def manifest_counts(index_dir: Path) -> dict[str, int]:
    return json.loads((current_build(index_dir) / "manifest.json").read_text(encoding="utf-8"))["counts"]


def assert_one_line_error(result: Result, *fragments: str) -> None:
    assert result.exit_code not in (0, None), result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# ------------------------------------------------------------------------------- rag index


def test_index_prints_a_summary(seeds: Path, index_dir: Path) -> None:
    result = rag("index", "--seeds", seeds, "--index", index_dir, "--model", "hash")

    assert result.exit_code == 0, result.output
    counts = manifest_counts(index_dir)
    summary = result.stdout.strip()
    assert re.fullmatch(
        rf"Indexed 2 documents \(2 embedded, 0 reused, 0 removed; 2 pages\), 1 files skipped: "
        rf"{counts['chunks']} chunks, "
        rf"{counts['sentences']} sentences in \d+\.\d s -> {re.escape(str(index_dir))}",
        summary,
    ), summary
    assert "warning: skipping bad.txt: binary file" in result.stderr

    again = rag("index", "--seeds", seeds, "--index", index_dir, "--model", "hash")
    assert again.exit_code == 0
    assert again.stdout.strip() == (
        f"Index {index_dir} is up to date: 2 documents (2 pages), {counts['chunks']} chunks, "
        f"{counts['sentences']} sentences, 1 files skipped."
    )

    full = rag("index", "--seeds", seeds, "--index", index_dir, "--model", "hash", "--full")
    assert full.exit_code == 0
    assert full.stdout.startswith("Indexed 2 documents (2 embedded, 0 reused, 0 removed; 2 pages)")


def test_index_chunk_vectors_option(seeds: Path, index_dir: Path) -> None:
    result = rag("index", "--seeds", seeds, "--index", index_dir, "--model", "hash", "--chunk-vectors", "derived")
    assert result.exit_code == 0, result.output
    settings = json.loads(next((index_dir / "builds").glob("*/manifest.json")).read_text(encoding="utf-8"))["settings"]
    assert settings["chunk_vectors"] == "derived"
    # the other kind is never mixed in: the next build re-embeds every document
    again = rag("index", "--seeds", seeds, "--index", index_dir, "--model", "hash", "--chunk-vectors", "encoded")
    assert again.stdout.startswith("Indexed 2 documents (2 embedded, 0 reused, 0 removed; 2 pages)"), again.output


def test_an_index_built_on_purpose_is_kept_by_the_next_plain_command(seeds: Path, index_dir: Path) -> None:
    result = rag("index", "--seeds", seeds, "--index", index_dir, "--model", "hash", "--chunk-vectors", "derived",
                 "--no-latent-terms")
    assert result.exit_code == 0, result.output
    settings = json.loads(next((index_dir / "builds").glob("*/manifest.json")).read_text(encoding="utf-8"))["settings"]
    assert settings["chunk_vectors"] == "derived" and settings["latent_terms"] is False
    build = (index_dir / "CURRENT").read_text(encoding="utf-8")
    # a plain `rag index` or `rag ask` keeps the index's choices instead of rebuilding it with the defaults
    again = rag("index", "--seeds", seeds, "--index", index_dir)
    assert again.exit_code == 0 and "is up to date" in again.stdout, again.output
    asked = rag("ask", "--seeds", seeds, "--index", index_dir, "What did Blinken offer?")
    assert asked.exit_code == 0, asked.output
    assert (index_dir / "CURRENT").read_text(encoding="utf-8") == build
    # naming the other choice rebuilds
    terms = rag("index", "--seeds", seeds, "--index", index_dir, "--latent-terms")
    assert terms.stdout.startswith("Indexed 2 documents (2 embedded, 0 reused"), terms.output


def test_index_json(seeds: Path, index_dir: Path) -> None:
    result = rag("index", "--seeds", seeds, "--index", index_dir, "--model", "hash", "--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    counts = manifest_counts(index_dir)
    assert report["documents"] == 2
    assert (report["chunks"], report["sentences"]) == (counts["chunks"], counts["sentences"])
    assert report["skipped"] == [{"path": "bad.txt", "reason": "binary file (contains NUL bytes)"}]
    assert isinstance(report["seconds"], float) and report["seconds"] >= 0
    assert (report["embedded_documents"], report["reused_documents"], report["removed_documents"]) == (2, 0, 0)
    assert report["up_to_date"] is False
    assert report["index"] == str(index_dir)

    (seeds / "sub" / "notes.md").unlink()
    report = json.loads(rag("index", "--seeds", seeds, "--index", index_dir, "--model", "hash", "--json").stdout)
    assert (report["documents"], report["embedded_documents"], report["removed_documents"]) == (1, 0, 1)


# ------------------------------------------------------------------------------- rag ask


def check_answer_json(data: dict[str, Any], seeds: Path) -> None:
    assert {"question", "answer", "abstained", "confidence", "sentences", "sources"} <= set(data)
    assert isinstance(data["question"], str)
    assert isinstance(data["abstained"], bool)
    if data["abstained"]:  # no figure that reads as confidence in an answer
        assert data["confidence"] is None
    else:
        assert isinstance(data["confidence"], float) and 0.0 <= data["confidence"] <= 1.0
    assert data["answer"] is None if data["abstained"] else isinstance(data["answer"], str)
    assert isinstance(data["sentences"], list) and isinstance(data["sources"], list)
    for s in data["sentences"]:
        assert {"text", "doc", "start", "end", "page", "section", "citation"} <= set(s)
        assert file_text(seeds / s["doc"])[s["start"] : s["end"]] == s["text"]
        assert f"{s['doc']}" in s["citation"] and f"chars {s['start']}-{s['end']}" in s["citation"]
    for s in data["sources"]:
        assert {"citation", "doc", "start", "end", "text", "score", "page", "section"} <= set(s)
        assert isinstance(s["score"], float)
        assert file_text(seeds / s["doc"])[s["start"] : s["end"]] == s["text"]
    if not data["abstained"]:
        assert data["sentences"]
        assert data["answer"] == " ".join(s["text"] for s in data["sentences"])


def test_ask_json_builds_the_missing_index_first(seeds: Path, index_dir: Path) -> None:
    result = rag("ask", "--seeds", seeds, "--index", index_dir, "--model", "hash", "--json", LIGHTHOUSE)

    assert result.exit_code == 0, result.output
    assert "Indexed 2 documents (2 embedded" in result.stderr  # progress and summary go to stderr
    assert "skipped bad.txt: binary file" in result.stderr
    data = json.loads(result.stdout)
    check_answer_json(data, seeds)
    assert data["question"] == LIGHTHOUSE
    assert data["abstained"] is False
    [sentence] = data["sentences"]
    assert sentence["doc"] == "sub/notes.md"  # relative to the seeds folder, "/" separated
    assert sentence["text"] == "The lighthouse of Cordouan was built in 1611 by Louis de Foix."
    span = f"chars {sentence['start']}-{sentence['end']}"
    assert sentence["citation"] == f"[1] sub/notes.md, § Notes, paragraph 2, {span}"


def test_ask_rebuilds_only_when_a_seed_changed(seeds: Path, index_dir: Path) -> None:
    assert rag("ask", "--seeds", seeds, "--index", index_dir, "--model", "hash", LIGHTHOUSE).exit_code == 0

    unchanged = rag("ask", "--seeds", seeds, "--index", index_dir, "--model", "hash", "--json", LIGHTHOUSE)
    assert unchanged.exit_code == 0
    assert "Indexed" not in unchanged.stderr

    with open(seeds / "sub" / "notes.md", "a", encoding="utf-8") as handle:
        handle.write("\nThe keeper in 1900 was Jean Morlaix.\n")
    changed = rag("ask", "--seeds", seeds, "--index", index_dir, "--model", "hash", "--json",
                  "Who was the keeper in 1900?")
    assert changed.exit_code == 0, changed.output
    assert "Indexed 2 documents (1 embedded, 1 reused, 0 removed; 2 pages)" in changed.stderr
    data = json.loads(changed.stdout)
    check_answer_json(data, seeds)
    assert "Jean Morlaix" in data["answer"]


def test_ask_without_model_uses_the_indexs_model(seeds: Path, index_dir: Path) -> None:
    assert rag("index", "--seeds", seeds, "--index", index_dir, "--model", "hash").exit_code == 0
    result = rag("ask", "--seeds", seeds, "--index", index_dir, "--json", LIGHTHOUSE)  # no --model: not e5+use
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["sentences"][0]["doc"] == "sub/notes.md"


def test_ask_answers_from_the_index_when_the_seeds_folder_is_gone(seeds: Path, index_dir: Path) -> None:
    assert rag("index", "--seeds", seeds, "--index", index_dir, "--model", "hash").exit_code == 0
    shutil.rmtree(seeds)
    result = rag("ask", "--seeds", seeds, "--index", index_dir, "--model", "hash", "--json", LIGHTHOUSE)
    assert result.exit_code == 0, result.output
    assert "1611" in json.loads(result.stdout)["answer"]


def test_ask_text_output(seeds: Path, index_dir: Path) -> None:
    result = rag("ask", "--seeds", seeds, "--index", index_dir, "--model", "hash", LIGHTHOUSE)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"Answer \(confidence \d\.\d\d\):", lines[0])
    assert lines[1] == "  «The lighthouse of Cordouan was built in 1611 by Louis de Foix.» [1]"
    assert "Citations:" in lines
    assert re.fullmatch(r"  \[1\] sub/notes\.md, § Notes, paragraph 2, chars \d+-\d+", lines[-1])

    abstained = rag("ask", "--seeds", seeds, "--index", index_dir, "--model", "hash", "What is the capital of Peru?")
    assert abstained.exit_code == 0
    assert abstained.stdout.startswith("No answer found in the documents.\n")
    assert "confidence" not in abstained.stdout  # a figure there reads as confidence in an answer
    assert "Possibly related passages:" in abstained.stdout
    assert f"[1] {SEED_DOC.name}, 2022-10, paragraph" in abstained.stdout or "[1] sub/notes.md" in abstained.stdout


def test_the_words_that_answer_are_printed_and_in_the_json() -> None:
    text = "Blinken offered support in the delimitation of borders."
    start = 100
    at = start + text.index("support")
    quoted = Quote(1, "a.txt", start, start + len(text), text, 2, score=0.8, role="answer", reader=0.93,
                   span=(at, at + len("support in the delimitation of borders")))
    answer = Answer("What did Blinken offer?", False, 0.9, sentences=(quoted,))
    lines = answer_text(answer).splitlines()
    assert lines[1] == f"  «{text}» [1]"
    assert lines[2] == "      the words that answer: «support in the delimitation of borders»"
    [sentence] = answer.to_dict()["sentences"]
    assert sentence["reader"] == 0.93 and sentence["probability"] == 0.8
    span = sentence["span"]
    assert span["text"] == "support in the delimitation of borders"
    assert text[span["sentence_start"] : span["sentence_end"]] == span["text"]
    assert (span["start"], span["end"]) == (at, at + len(span["text"]))
    plain = Answer("q", False, 0.9, sentences=(Quote(1, "a.txt", 0, len(text), text, 1, role="answer"),))
    assert plain.to_dict()["sentences"][0]["span"] is None and "the words" not in answer_text(plain)


# ------------------------------------------------------------------------------- errors


def _corrupt(index_dir: Path) -> None:
    path = current_build(index_dir) / "chunks.faiss"
    path.write_bytes(path.read_bytes()[:100])


def _future(index_dir: Path) -> None:
    path = current_build(index_dir) / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["format_version"] = FORMAT_VERSION + 1
    path.write_text(json.dumps(manifest), encoding="utf-8")


@pytest.mark.parametrize(
    ("question", "fragments"),
    [
        ("", ["the question is empty: type a question about the documents"]),
        ("  \t ", ["the question is empty"]),
        ("x" * 2001, ["the question is 2,001 characters long; the limit is 2,000: ask a shorter question"]),
    ],
    ids=["empty", "blank", "too long"],
)
def test_bad_questions_are_refused_before_any_work(seeds: Path, index_dir: Path, question: str,
                                                    fragments: list[str]) -> None:
    result = rag("ask", "--seeds", seeds, "--index", index_dir, "--model", "hash", "--json", question)
    assert_one_line_error(result, *fragments)
    assert not index_dir.exists()  # refused before indexing


def test_missing_seeds_folder(tmp_path: Path, index_dir: Path) -> None:
    nowhere = tmp_path / "nowhere"
    for command in ("ask", "index"):
        args = ["--seeds", nowhere, "--index", index_dir, "--model", "hash"]
        result = rag(command, *args, *(["Who?"] if command == "ask" else []))
        assert_one_line_error(result, f"documents folder '{nowhere}' does not exist: create it")


def test_empty_seeds_folder(tmp_path: Path, index_dir: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = rag("index", "--seeds", tmp_path / "empty", "--index", index_dir, "--model", "hash")
    assert_one_line_error(result, "no readable document in", "add documents (.txt, .md")


@pytest.mark.parametrize(
    ("harm", "fragments"),
    [
        (_corrupt, ["chunks.faiss", "rebuild with `rag index --full --index"]),
        (_future, [f"format version {FORMAT_VERSION + 1}, newer than this program", "rag index --full"]),
    ],
    ids=["truncated faiss", "future format"],
)
def test_damaged_index(seeds: Path, index_dir: Path, harm: Any, fragments: list[str]) -> None:
    assert rag("index", "--seeds", seeds, "--index", index_dir, "--model", "hash").exit_code == 0
    harm(index_dir)

    result = rag("ask", "--seeds", seeds, "--index", index_dir, "--model", "hash", "--json", LIGHTHOUSE)

    assert_one_line_error(result, *fragments)
    # and the command it names repairs the index
    assert rag("index", "--seeds", seeds, "--index", index_dir, "--model", "hash", "--full").exit_code == 0
    assert rag("ask", "--seeds", seeds, "--index", index_dir, "--model", "hash", LIGHTHOUSE).exit_code == 0


def test_model_mismatch(seeds: Path, index_dir: Path) -> None:
    assert rag("index", "--seeds", seeds, "--index", index_dir, "--model", "hash").exit_code == 0

    result = rag("ask", "--seeds", seeds, "--index", index_dir, "--model", "e5", "--json", LIGHTHOUSE)

    assert_one_line_error(result, "built with model 'hash', not 'e5'", "rag index --full --model e5",
                          "or ask with --model hash")
    assert manifest_counts(index_dir)["documents"] == 2  # left as it was


def test_bad_model_spec(seeds_copy: Path, index_dir: Path) -> None:
    result = rag("index", "--seeds", seeds_copy, "--index", index_dir, "--model", "e5+use:heavy")
    assert_one_line_error(result, "bad model spec 'e5+use:heavy': write e5+use:0.35")


# ------------------------------------------------------------------------------- real process


def _rag_command() -> list[str]:
    script = Path(sys.executable).parent / "rag"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "rag.cli"]


def test_real_subprocess(seeds: Path, index_dir: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    base = [*_rag_command(), "ask", "--seeds", str(seeds), "--index", str(index_dir), "--model", "hash"]

    done = subprocess.run([*base, "--json", LIGHTHOUSE], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=300, check=False)

    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "Indexed 2 documents" in done.stderr
    data = json.loads(done.stdout)
    check_answer_json(data, seeds)
    assert data["sentences"][0]["doc"] == "sub/notes.md"

    failed = subprocess.run([*base, "--json", "   "], capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=300, check=False)
    assert failed.returncode != 0
    assert failed.stdout == ""
    assert failed.stderr.strip() == "error: the question is empty: type a question about the documents"
