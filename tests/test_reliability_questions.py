"""Strange questions: each gets an answer, an abstention or a clear message, never a traceback.

The library may only return an ``Answer`` or raise ``QuestionError`` with a message; the
CLI may only print an answer (exit 0) or one ``error:`` line (exit non-zero). Whatever is
quoted must still be the source text at the cited offsets.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from rag.cli import main
from rag.encoders import HashEncoder
from rag.errors import QuestionError, RagError
from rag.index import build_index
from rag.load import load_documents
from rag.pipeline import Pipeline
from rag.settings import Settings
from rag.types import Answer

HASH = Settings(model="hash")
SEEDS = Path(__file__).resolve().parent.parent / "seeds"
LIMIT = HASH.max_question_chars

# name -> question; None in REFUSED means "must be answered or abstained from"
QUESTIONS: dict[str, str] = {
    "empty": "",
    "spaces": "   ",
    "whitespace mix": " \t\r\n\f\v ",
    "unicode spaces": "\u00a0\u2003\u3000\u2028\u2029",
    "only NUL": "\x00",
    "100,000 characters": "Blinken " * 12_500,
    "one over the limit": "a" * (LIMIT + 1),
    "exactly the limit": ("Aliyev " * LIMIT)[:LIMIT],
    "one 2,000-character word": "x" * LIMIT,
    "control characters": "\x00\x01\x07Qui\x08 a \x1b[31mappelé\x1b[0m Aliyev\x7f\x9b ?",
    "only control characters": "\x01\x02\x1b\x7f\x85\x9f",
    "only punctuation": "?!...;;,,--«»“”¿¡",
    "emoji": "🙂🎉👍🏽",
    "emoji ZWJ sequence": "👨‍👩‍👧‍👦 ?",
    "emoji with words": "Blinken 📞 Aliyev ❓",
    "zero-width characters": "\u200b\u200c\u200d\ufeff\u2060",
    "right-to-left override": "\u202eBlinken a appelé qui ?",
    "combining accents": "e\u0301" * 900,
    "lone surrogate": "Blinken \udcff ?",
    "HTML": "<script>alert('x')</script><b>Blinken</b> <img src=x onerror=alert(1)>",
    "Markdown": "# Titre\n\n**Blinken** a dit [quoi](http://example.com) ? `code` > citation",
    "SQL": "'; DROP TABLE documents; -- Blinken",
    "SQL tautology": "\" OR 1=1 --",
    "format strings": "{0} {question!r} %s %(x)s {{}} $HOME ${PATH}",
    "path traversal": "../../etc/passwd",
    "JSON": '{"question": "Blinken", "top_k": 999}',
    "newlines everywhere": "Qui\n\na\n\nappelé\n\nAliyev\n?",
    "Arabic": "من اتصل بالرئيس علييف؟",
    "Chinese": "谁给阿利耶夫总统打了电话？",
    "Cyrillic": "Кто позвонил президенту Алиеву?",
    "Greek": "Ποιος τηλεφώνησε στον πρόεδρο Αλίεφ;",
    "French, plain": "Qui a appelé le président Ilham Aliyev ?",
}
REFUSED = {
    "empty": "empty", "spaces": "empty", "whitespace mix": "empty", "unicode spaces": "empty",
    "only NUL": "empty", "only control characters": "empty",
    "100,000 characters": "100,000 characters long; the limit is 2,000", "one over the limit": "the limit is 2,000",
}


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("questions")
    shutil.copytree(SEEDS, root / "seeds")
    build_index(load_documents(root / "seeds"), root / "index", HASH, HashEncoder())
    return root / "index"


@pytest.fixture(scope="module")
def pipeline(index_dir: Path) -> Pipeline:
    return Pipeline.open(index_dir, HASH, HashEncoder())


def _cases() -> list[str]:
    return sorted(QUESTIONS)


def _check_citations(answer: Answer) -> None:
    for c in answer.sentences:
        source = (SEEDS / c.doc).read_text(encoding="utf-8")
        assert source[c.start : c.end] == c.text
    for s in answer.sources:
        assert (SEEDS / s.doc).read_text(encoding="utf-8")[s.start : s.end] == s.text


# ----------------------------------------------------------------------------- library


@pytest.mark.parametrize("name", _cases())
def test_library_answers_abstains_or_refuses_clearly(pipeline: Pipeline, name: str) -> None:
    question = QUESTIONS[name]
    if name in REFUSED:
        with pytest.raises(QuestionError, match=REFUSED[name]):
            pipeline.ask(question)
        return
    answer = pipeline.ask(question)
    assert answer.abstained == (answer.text is None)
    assert 0.0 <= answer.confidence <= 1.0
    assert answer.sources, "even an abstention shows the possibly related passages"
    _check_citations(answer)
    answer.question.encode("utf-8")  # whatever shows the answer must be able to write it


@pytest.mark.parametrize("name", sorted(QUESTIONS))
def test_library_strange_history_never_breaks_a_follow_up(pipeline: Pipeline, name: str) -> None:
    """The conversation may hold any of them; a follow-up that needs it must still work."""
    answer = pipeline.ask("Et la Croix-Rouge ?", history=[QUESTIONS[name]])
    _check_citations(answer)
    if answer.rewritten_question is not None:
        assert len(answer.rewritten_question) <= LIMIT


@pytest.mark.parametrize("bad", [None, 42, b"Blinken", ["Blinken"]], ids=["None", "int", "bytes", "list"])
def test_library_refuses_a_question_that_is_not_text(pipeline: Pipeline, bad: object) -> None:
    with pytest.raises(QuestionError, match="must be text"):
        pipeline.ask(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("top_k", [0, -1])
def test_library_refuses_a_bad_top_k_with_a_message(pipeline: Pipeline, top_k: int) -> None:
    with pytest.raises(RagError, match="top_k must be a whole number of at least 1"):
        pipeline.ask("Blinken", top_k=top_k)


def test_library_huge_top_k_returns_every_passage_once(pipeline: Pipeline) -> None:
    answer = pipeline.ask("Blinken", top_k=10_000)
    assert len(answer.sources) == len({(s.doc, s.start) for s in answer.sources}) == len(pipeline.index.chunks)


# ----------------------------------------------------------------------------- CLI


def _cli(index_dir: Path, *args: str) -> Result:
    return CliRunner().invoke(
        main, ["ask", "--index", str(index_dir), "--seeds", str(index_dir.parent / "seeds"), *args],
        catch_exceptions=False,
    )


@pytest.mark.parametrize("name", _cases())
def test_cli_answers_abstains_or_fails_in_one_line(index_dir: Path, name: str) -> None:
    result = _cli(index_dir, "--json", "--", QUESTIONS[name])
    assert "Traceback" not in result.output
    if name in REFUSED:
        assert result.exit_code != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: the question"), result.stderr
        assert REFUSED[name] in lines[0]
        return
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["abstained"] == (payload["answer"] is None)
    for s in payload["sentences"] + payload["sources"]:
        assert (SEEDS / s["doc"]).read_text(encoding="utf-8")[s["start"] : s["end"]] == s["text"]


@pytest.mark.parametrize("name", ["HTML", "Markdown", "emoji", "control characters", "right-to-left override"])
def test_cli_text_output_for_strange_questions(index_dir: Path, name: str) -> None:
    result = _cli(index_dir, "--", QUESTIONS[name])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(("Answer (confidence", "No answer found in the documents"))


def _real_ask(index_dir: Path, question: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [os.fsencode(sys.executable), b"-m", b"rag.cli", b"ask", b"--index", os.fsencode(index_dir),
         b"--seeds", os.fsencode(index_dir.parent / "seeds"), b"--json", b"--", question],
        capture_output=True, timeout=300,
    )


@pytest.mark.parametrize("question, expected", [
    (b"\x1b[2J\x1b[31mAliyev\x07 \xe2\x80\xae?", 0),
    (b"   ", 2),
    (b"B" * 100_000, 2),
    (b"Blinken \xff\xfe ?", 0),
], ids=["escape sequences", "blank", "100,000 bytes", "not UTF-8"])
def test_cli_in_a_real_process_with_raw_argv_bytes(index_dir: Path, question: bytes, expected: int) -> None:
    """Through a real argv: escape sequences, bytes that are not UTF-8, a 100,000-byte argument."""
    proc = _real_ask(index_dir, question)
    out, err = proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8")  # the output must be UTF-8
    assert "Traceback" not in out + err
    assert proc.returncode == expected, err
    if expected == 0:
        json.loads(out)
    else:
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: the question"), err
