"""The question-set format: one JSON object per line, parsed, checked and located in the documents.

``load_questions`` reads a file and reports every malformed line at once, by number, with
the fix; ``locate_passages`` checks the set against the indexed documents (gold documents,
passages and answers must be in them) and finds where each gold passage is.
docs/evaluation.md lists the fields.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import QuestionSetError
from .metrics import normalise_text

_MAX_LISTED_ERRORS = 5


@dataclass(frozen=True)
class EvalCase:
    """One line of a question set."""

    id: str
    question: str
    question_lang: str
    doc: str | None  # gold document id (path relative to the documents folder)
    answers: tuple[str, ...]  # as they appear in the document; () when unanswerable
    context: str | None = None  # the gold passage, verbatim in the document
    answerable: bool = True
    history: tuple[str, ...] = ()  # earlier questions of the same conversation
    line: int = 0
    # unanswerable only: True for an on-topic near miss (same people and places, a fact the
    # documents do not state), False for an off-topic question; None when the set does not say
    near_miss: bool | None = None
    group: str | None = None  # shared by paraphrases of one question; written to the rows, not scored


@dataclass(frozen=True)
class QuestionSet:
    source: str  # the file, for messages
    cases: tuple[EvalCase, ...]


def _text(row: dict[str, Any], key: str, optional: bool = False) -> str | None:
    value = row.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        want = "a non-empty string or null" if optional else "a non-empty string"
        raise ValueError(f"{key!r} must be {want}, not {json.dumps(value, ensure_ascii=False)}")
    return value


def _strings(row: dict[str, Any], key: str) -> tuple[str, ...]:
    value = row.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError(f"{key!r} must be a list of non-empty strings, not {json.dumps(value, ensure_ascii=False)}")
    return tuple(value)


def parse_case(row: Any, line: int) -> EvalCase:
    """One question-set line as an ``EvalCase``; ``ValueError`` says what is wrong and how to fix it."""
    if not isinstance(row, dict):
        raise ValueError('not a JSON object: write {"id": ..., "question": ..., "question_lang": ..., "doc": ..., '
                         '"answers": [...]}')
    missing = [k for k in ("id", "question", "question_lang", "answers") if k not in row]
    if missing:
        raise ValueError(f"missing {', '.join(repr(k) for k in missing)}: every line needs id, question, "
                         "question_lang and answers ([] when unanswerable)")
    case_id = row["id"]
    if isinstance(case_id, bool) or not isinstance(case_id, (str, int)) or not str(case_id).strip():
        raise ValueError(f"'id' must be a non-empty string, not {json.dumps(case_id, ensure_ascii=False)}")
    answers = _strings(row, "answers")
    answerable = row.get("answerable", bool(answers))
    if not isinstance(answerable, bool):
        raise ValueError(f"'answerable' must be true or false, not {json.dumps(answerable)}")
    if answerable and not answers:
        raise ValueError("'answerable' is true but 'answers' is empty: list the answer strings, or set it to false")
    if not answerable and answers:
        raise ValueError("'answerable' is false but 'answers' is not empty: empty the list, or set it to true")
    near_miss = row.get("near_miss")
    if near_miss is not None and not isinstance(near_miss, bool):
        raise ValueError(f"'near_miss' must be true, false or null, not {json.dumps(near_miss, ensure_ascii=False)}")
    if near_miss is not None and answerable:
        raise ValueError("'near_miss' is for unanswerable questions: remove it, or empty 'answers'")
    return EvalCase(
        id=str(case_id),
        question=_text(row, "question") or "",
        question_lang=_text(row, "question_lang") or "",
        doc=_text(row, "doc", optional=True),
        answers=answers,
        context=_text(row, "context", optional=True),
        answerable=answerable,
        history=_strings(row, "history"),
        line=line,
        near_miss=near_miss,
        group=_text(row, "group", optional=True),
    )


def _error_list(source: str, errors: list[str]) -> str:
    if len(errors) == 1:
        return f"{source} {errors[0]}"
    listed = "; ".join(errors[:_MAX_LISTED_ERRORS])
    more = f"; and {len(errors) - _MAX_LISTED_ERRORS} more" if len(errors) > _MAX_LISTED_ERRORS else ""
    return f"{source} has {len(errors)} bad lines: {listed}{more}"


def load_questions(path: str | Path) -> QuestionSet:
    """Read a JSONL question set; every malformed line is reported, with its number, in one ``QuestionSetError``."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise QuestionSetError(
            f"question file {str(path)!r} does not exist: give the path of a .jsonl question set"
        ) from None
    except IsADirectoryError:
        raise QuestionSetError(f"{str(path)!r} is a folder: give the path of a .jsonl question set") from None
    except UnicodeDecodeError as exc:
        raise QuestionSetError(f"{path} is not UTF-8 (byte {exc.start}): save it as UTF-8") from None
    except OSError as exc:
        raise QuestionSetError(f"cannot read {path} ({exc.strerror or exc})") from exc
    cases: list[EvalCase] = []
    errors: list[str] = []
    first_line: dict[str, int] = {}
    # split on "\n" only: str.splitlines() would also cut at U+2028 inside JSON strings
    for number, text in enumerate(raw.split("\n"), start=1):
        if not text.strip():
            continue
        try:
            case = parse_case(json.loads(text), number)
        except json.JSONDecodeError as exc:
            errors.append(f"line {number}: not valid JSON ({exc.msg}, column {exc.colno}): write one JSON object "
                          "per line")
            continue
        except ValueError as exc:
            errors.append(f"line {number}: {exc}")
            continue
        if case.id in first_line:
            errors.append(f"line {number}: id {case.id!r} was already used on line {first_line[case.id]}: "
                          "give every question its own id")
            continue
        first_line[case.id] = number
        cases.append(case)
    if errors:
        raise QuestionSetError(_error_list(str(path), errors))
    if not cases:
        raise QuestionSetError(f"{path} holds no question: write one JSON object per line")
    return QuestionSet(str(path), tuple(cases))


def gold_span(text: str, context: str | None) -> tuple[int, int] | None:
    """Where the gold passage ``context`` lies in its document's ``text`` (verbatim, its first
    occurrence), or None without a context or when it is not there: the one gold-passage lookup."""
    if not context:
        return None
    start = text.find(context)
    return (start, start + len(context)) if start >= 0 else None


def locate_passages(questions: QuestionSet, documents: Mapping[str, str]) -> dict[str, tuple[int, int]]:
    """The (start, end) of every gold ``context`` in its document, by case id.

    Also checks that each gold document is indexed and each answer occurs in it; all problems
    are reported at once in a ``QuestionSetError`` naming the lines.
    """
    spans: dict[str, tuple[int, int]] = {}
    errors: list[str] = []
    folded: dict[str, str] = {}  # normalised document texts, made once per document
    for case in questions.cases:
        where = f"line {case.line}"
        if case.doc is None:
            if case.context is not None:
                errors.append(f"{where}: has a context but no doc: name the document that holds it")
            continue
        text = documents.get(case.doc)
        if text is None:
            errors.append(f"{where}: doc {case.doc!r} is not in the index: correct the name (relative to the "
                          "documents folder), or index the folder that holds it with --docs")
            continue
        if case.context is not None:
            span = gold_span(text, case.context)
            if span is None:
                errors.append(f"{where}: context not found verbatim in {case.doc!r}: copy the passage exactly "
                              "from the document")
                continue
            spans[case.id] = span
        if case.doc not in folded:
            folded[case.doc] = normalise_text(text)
        for answer in case.answers:
            if normalise_text(answer) not in folded[case.doc]:
                errors.append(f"{where}: answer {answer!r} does not occur in {case.doc!r}: copy it from the document")
    if errors:
        raise QuestionSetError(_error_list(questions.source, errors))
    return spans
