"""rag.evaluate.questions: the question-set format, its errors, and locating gold passages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import SEED_QUESTIONS, SEEDS, write_lines

from rag.errors import QuestionSetError
from rag.evaluate.questions import EvalCase, QuestionSet, load_questions, locate_passages
from rag.load import load_documents

GOOD = {"id": "q1", "question": "Who?", "question_lang": "en", "doc": "a.txt", "answers": ["Ann"]}


def test_load_questions_reads_every_field(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "q.jsonl", [
        {**GOOD, "context": "Ann came.", "history": ["Before?"]},
        "",
        {"id": 7, "question": "Why?", "question_lang": "fr", "doc": None, "answers": [], "near_miss": True,
         "group": "why"},
        {"id": 8, "question": "Weather?", "question_lang": "fr", "doc": None, "answers": [], "near_miss": False},
    ])
    qs = load_questions(path)
    assert qs.source == str(path)
    assert qs.cases == (
        EvalCase("q1", "Who?", "en", "a.txt", ("Ann",), "Ann came.", True, ("Before?",), line=1),
        EvalCase("7", "Why?", "fr", None, (), None, False, (), line=3, near_miss=True, group="why"),
        EvalCase("8", "Weather?", "fr", None, (), None, False, (), line=4, near_miss=False),
    )


def test_the_seed_question_set_is_valid() -> None:
    qs = load_questions(SEED_QUESTIONS)
    documents = {d.id: d.text for d in load_documents(SEEDS).documents}
    spans = locate_passages(qs, documents)
    assert len(spans) == sum(1 for c in qs.cases if c.context)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"line 2: not valid JSON \(.*column 2\): write one JSON object per line"),
        ('["a list"]', r"line 2: not a JSON object"),
        ({"id": "x", "question": "Q?"}, r"line 2: missing 'question_lang', 'answers': every line needs"),
        ({**GOOD, "id": "x", "question": "  "}, r"line 2: 'question' must be a non-empty string, not \"  \""),
        ({**GOOD, "id": "x", "answers": "Ann"}, r"line 2: 'answers' must be a list of non-empty strings"),
        ({**GOOD, "id": "x", "answers": [""]}, r"line 2: 'answers' must be a list of non-empty strings"),
        ({**GOOD, "id": "x", "doc": 3}, r"line 2: 'doc' must be a non-empty string or null, not 3"),
        ({**GOOD, "id": "x", "answerable": "yes"}, r"line 2: 'answerable' must be true or false"),
        ({**GOOD, "id": "x", "answers": [], "answerable": True}, r"'answerable' is true but 'answers' is empty"),
        ({**GOOD, "id": "x", "answerable": False}, r"'answerable' is false but 'answers' is not empty"),
        ({**GOOD, "id": "x", "history": "Before?"}, r"'history' must be a list of non-empty strings"),
        ({**GOOD, "id": None}, r"line 2: 'id' must be a non-empty string, not null"),
        ({**GOOD, "id": "x", "answers": [], "near_miss": "yes"},
         r"'near_miss' must be true, false or null, not \"yes\""),
        ({**GOOD, "id": "x", "near_miss": False}, r"'near_miss' is for unanswerable questions: remove it, or empty"),
        ({**GOOD, "id": "x", "group": 3}, r"line 2: 'group' must be a non-empty string or null, not 3"),
        (GOOD, r"line 2: id 'q1' was already used on line 1: give every question its own id"),
    ],
)
def test_bad_lines_are_reported_with_their_number(tmp_path: Path, line: object, message: str) -> None:
    path = write_lines(tmp_path / "q.jsonl", [GOOD, line])
    with pytest.raises(QuestionSetError, match=message):
        load_questions(path)


def test_all_bad_lines_are_reported_at_once(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "q.jsonl", [GOOD, *["{"] * 7])
    with pytest.raises(QuestionSetError, match=r"has 7 bad lines: line 2: .*; line 6: [^;]*; and 2 more$"):
        load_questions(path)


def test_empty_and_missing_question_files(tmp_path: Path) -> None:
    with pytest.raises(QuestionSetError, match="holds no question: write one JSON object per line"):
        load_questions(write_lines(tmp_path / "empty.jsonl", [""]))
    with pytest.raises(QuestionSetError, match=r"does not exist: give the path of a \.jsonl question set"):
        load_questions(tmp_path / "nope.jsonl")
    with pytest.raises(QuestionSetError, match="is a folder"):
        load_questions(tmp_path)


def test_a_byte_order_mark_is_not_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_text("\ufeff" + json.dumps(GOOD) + "\n", encoding="utf-8")
    assert load_questions(path).cases[0].id == "q1"


def test_gold_documents_passages_and_answers_must_be_in_the_index() -> None:
    documents = {"a.txt": "Intro.\n\nAnn came on Monday."}
    cases = (
        EvalCase("ok", "Who?", "en", "a.txt", ("Ann",), "Ann came on Monday.", line=1),
        EvalCase("nodoc", "Who?", "en", "b.txt", ("Ann",), line=2),
        EvalCase("noctx", "Who?", "en", "a.txt", ("Ann",), "Ann left.", line=3),
        EvalCase("noans", "Who?", "en", "a.txt", ("Bob",), line=4),
        EvalCase("ctx-no-doc", "Who?", "en", None, ("Ann",), "Ann came.", line=5),
    )
    with pytest.raises(QuestionSetError) as info:
        locate_passages(QuestionSet("q.jsonl", cases), documents)
    message = str(info.value)
    assert message.startswith("q.jsonl has 4 bad lines: ")
    assert "line 2: doc 'b.txt' is not in the index" in message
    assert "line 3: context not found verbatim in 'a.txt'" in message
    assert "line 4: answer 'Bob' does not occur in 'a.txt'" in message
    assert "line 5: has a context but no doc" in message
    assert locate_passages(QuestionSet("q.jsonl", cases[:1]), documents) == {"ok": (8, 27)}
