"""Stage 7, evaluate: question sets, metrics over ranks and strings, and a runner over a ``Pipeline``.

The metrics are pure functions (``gold_rank``, ``hit_at``, ``reciprocal_rank``,
``contains_answer``, ``citation_correct``, ``abstention_scores``, ``summarise``) so each can be
checked on hand-made values. ``evaluate`` asks every question through ``Pipeline.ask``, which
is what a user gets, timed, and ranks it again with ``retrieve`` for the full chunk ranking
(``Answer.sources`` stops at ``top_k``).

Definitions (docs/evaluation.md has the long form):

- ranks are 1-based; a document counts once, at its best chunk; items with equal scores are a
  tie and a gold item in a tie ranks after every non-gold item of the tie (pessimistic);
- ``doc_*`` metrics cover questions with a gold ``doc``, ``passage_*`` those with a ``context``;
- ``answer_accuracy`` and ``citation_accuracy`` cover answerable questions; an abstention
  counts as wrong;
- abstention is the positive class for ``abstain_precision`` and ``abstain_recall``.
"""

from __future__ import annotations

import copy
import json
import math
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from .answer import answer_sentences, calibration
from .encoders import Encoder
from .errors import QuestionError, QuestionSetError, RagError, SettingsError
from .pipeline import Pipeline
from .retrieve import retrieve
from .types import Citation

__all__ = [
    "ABSTENTION_METRICS",
    "ANSWER_METRICS",
    "LATENCY_METRICS",
    "RETRIEVAL_METRICS",
    "CaseResult",
    "EvalCase",
    "EvalReport",
    "QuestionSet",
    "abstention_scores",
    "check_limits",
    "citation_correct",
    "contains_answer",
    "doc_ranking",
    "evaluate",
    "gold_rank",
    "hit_at",
    "load_questions",
    "locate_passages",
    "normalise_text",
    "overlaps",
    "parse_case",
    "parse_limits",
    "percentile",
    "reciprocal_rank",
    "report_dict",
    "report_text",
    "summarise",
    "write_results",
]

DOC_KS = (1, 3, 5)
PASSAGE_KS = (1, 5)
MRR_K = 10
RETRIEVAL_METRICS = (
    *(f"doc_hit@{k}" for k in DOC_KS),
    f"doc_mrr@{MRR_K}",
    *(f"passage_hit@{k}" for k in PASSAGE_KS),
    f"passage_mrr@{MRR_K}",
)
ANSWER_METRICS = ("answer_accuracy", "citation_accuracy")
ABSTENTION_METRICS = ("abstain_precision", "abstain_recall", "false_abstention_rate")
LATENCY_METRICS = ("p50_ms", "p95_ms")
# What --min and --max may check: a fraction that should be high, or one that should be low.
HIGHER_IS_BETTER = (*RETRIEVAL_METRICS, *ANSWER_METRICS, "abstain_precision", "abstain_recall")
LOWER_IS_BETTER = ("false_abstention_rate", *LATENCY_METRICS, "build_s")
FRACTIONS = frozenset((*HIGHER_IS_BETTER, "false_abstention_rate"))
_MAX_LISTED_ERRORS = 5

Metrics = dict[str, float | None]


# ---------------------------------------------------------------------------------- cases


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
            start = text.find(case.context)
            if start < 0:
                errors.append(f"{where}: context not found verbatim in {case.doc!r}: copy the passage exactly "
                              "from the document")
                continue
            spans[case.id] = (start, start + len(case.context))
        if case.doc not in folded:
            folded[case.doc] = normalise_text(text)
        for answer in case.answers:
            if normalise_text(answer) not in folded[case.doc]:
                errors.append(f"{where}: answer {answer!r} does not occur in {case.doc!r}: copy it from the document")
    if errors:
        raise QuestionSetError(_error_list(questions.source, errors))
    return spans


# ---------------------------------------------------------------------------------- metrics


def gold_rank(relevant: Sequence[bool], scores: Sequence[float] | None = None) -> int | None:
    """The 1-based rank of the first relevant item of a ranking, or None when none is relevant.

    With ``scores`` (highest first), items of equal score are a tie, and the rank is the
    pessimistic one: relevant items of a tie come after its other items, so an order the
    scores do not decide earns no credit. Without scores, the positions are the ranking.
    """
    if scores is not None:
        if len(scores) != len(relevant):
            raise ValueError(f"{len(relevant)} items but {len(scores)} scores")
        if any(b > a for a, b in pairwise(scores)):
            raise ValueError("scores must be in ranking order, highest first")
    start = 0
    while start < len(relevant):
        end = start + 1
        if scores is not None:
            while end < len(relevant) and scores[end] == scores[start]:
                end += 1
        found = sum(1 for r in relevant[start:end] if r)
        if found:
            return start + 1 + (end - start - found)
        start = end
    return None


def doc_ranking(ranked: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
    """Distinct documents in the order of their chunks' ranking, each scored by its best chunk."""
    seen: set[str] = set()
    out = []
    for doc, score in ranked:
        if doc not in seen:
            seen.add(doc)
            out.append((doc, score))
    return out


def hit_at(rank: int | None, k: int) -> float:
    return 1.0 if rank is not None and rank <= k else 0.0


def reciprocal_rank(rank: int | None, k: int) -> float:
    """1/rank when the gold item is in the top ``k``, else 0 (the term of MRR@k)."""
    return 1.0 / rank if rank is not None and rank <= k else 0.0


def overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Do two half-open character spans share at least one character?"""
    return a[0] < b[1] and b[0] < a[1]


def normalise_text(text: str) -> str:
    """Case-folded, accents removed, whitespace runs (any kind) made one space."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(bare.casefold().split())


def contains_answer(text: str | None, answers: Iterable[str]) -> bool:
    """Does ``text`` contain one of the gold ``answers``, ignoring case, accents and whitespace?"""
    if not text:
        return False
    folded = normalise_text(text)
    return any(normalise_text(a) in folded for a in answers if normalise_text(a))


def citation_correct(
    citations: Sequence[Citation], answers: Iterable[str], gold_doc: str | None, documents: Mapping[str, str]
) -> bool:
    """Is a quoted sentence holding a gold answer cited to the gold document, with a span that quotes it exactly?"""
    answers = tuple(answers)
    for c in citations:
        if not contains_answer(c.text, answers):
            continue
        right_doc = gold_doc is None or c.doc == gold_doc
        if right_doc and c.doc in documents and documents[c.doc][c.start : c.end] == c.text:
            return True
    return False


def _mean(values: Iterable[float]) -> float | None:
    items = list(values)
    return sum(items) / len(items) if items else None


def abstention_scores(abstained: Sequence[bool], answerable: Sequence[bool]) -> Metrics:
    """Abstention as the positive class: precision and recall on unanswerable questions, and the
    false-abstention rate on answerable ones. None where the denominator is empty."""
    if len(abstained) != len(answerable):
        raise ValueError(f"{len(abstained)} abstentions but {len(answerable)} answerable flags")
    pairs = list(zip(abstained, answerable, strict=True))
    right = sum(1 for a, ok in pairs if a and not ok)
    n_abstained = sum(1 for a, _ in pairs if a)
    n_unanswerable = sum(1 for _, ok in pairs if not ok)
    n_answerable = len(pairs) - n_unanswerable
    return {
        "abstain_precision": right / n_abstained if n_abstained else None,
        "abstain_recall": right / n_unanswerable if n_unanswerable else None,
        "false_abstention_rate": (n_abstained - right) / n_answerable if n_answerable else None,
    }


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100), interpolating linearly between closest ranks (NumPy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


# ---------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class CaseResult:
    """What happened to one question: the row written by ``--out``."""

    id: str
    question_lang: str
    answerable: bool
    abstained: bool
    question: str = ""
    line: int = 0
    gold_doc: str | None = None
    has_context: bool = False
    doc_rank: int | None = None  # rank of the gold document among distinct documents
    passage_rank: int | None = None  # rank of the first chunk overlapping the gold passage
    answer: str | None = None  # what the user sees; None when abstaining
    answer_correct: bool | None = None  # None for unanswerable questions
    citation_correct: bool | None = None
    confidence: float = 0.0
    # For calibrating abstention without asking again: the value make_answer compares with
    # the threshold, the raw cosine of the best answer sentence, and the sentences that would
    # be shown without the threshold.
    abstain_score: float | None = None
    best_sentence_score: float | None = None
    candidate_answer: str | None = None
    candidate_correct: bool | None = None
    rewritten_question: str | None = None
    citations: tuple[tuple[str, int, int], ...] = ()
    top_docs: tuple[str, ...] = ()
    latency_ms: float = 0.0


def summarise(results: Sequence[CaseResult]) -> Metrics:
    """Every metric over ``results`` (None where no question qualifies), plus ``n``."""
    with_doc = [r for r in results if r.gold_doc is not None]
    with_context = [r for r in results if r.has_context]
    answerable = [r for r in results if r.answerable]
    out: Metrics = {"n": float(len(results))}
    for k in DOC_KS:
        out[f"doc_hit@{k}"] = _mean(hit_at(r.doc_rank, k) for r in with_doc)
    out[f"doc_mrr@{MRR_K}"] = _mean(reciprocal_rank(r.doc_rank, MRR_K) for r in with_doc)
    for k in PASSAGE_KS:
        out[f"passage_hit@{k}"] = _mean(hit_at(r.passage_rank, k) for r in with_context)
    out[f"passage_mrr@{MRR_K}"] = _mean(reciprocal_rank(r.passage_rank, MRR_K) for r in with_context)
    out["answer_accuracy"] = _mean(float(r.answer_correct is True) for r in answerable)
    out["citation_accuracy"] = _mean(float(r.citation_correct is True) for r in answerable)
    out.update(abstention_scores([r.abstained for r in results], [r.answerable for r in results]))
    latencies = [r.latency_ms for r in results]
    out["p50_ms"] = percentile(latencies, 50)
    out["p95_ms"] = percentile(latencies, 95)
    return out


@dataclass(frozen=True)
class EvalReport:
    source: str
    model: str
    abstain_threshold: float
    results: tuple[CaseResult, ...]
    build_s: float | None = None  # None: the index was not built by this run
    index: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.results)

    @property
    def metrics(self) -> Metrics:
        return {**summarise(self.results), "build_s": self.build_s}

    @property
    def by_lang(self) -> dict[str, Metrics]:
        """Metrics per question language, the most frequent first."""
        groups: dict[str, list[CaseResult]] = {}
        for r in self.results:
            groups.setdefault(r.question_lang, []).append(r)
        ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        return {lang: summarise(rows) for lang, rows in ordered}


# ---------------------------------------------------------------------------------- runner


class _ReuseQueryVectors:
    """An encoder that returns again the vectors of the queries it encoded since ``forget``.

    The ranking pass re-encodes the text the answer pass has just encoded; this keeps it at one
    model call per question. Timed calls come right after ``forget``, so they are never cached.
    """

    def __init__(self, inner: Encoder) -> None:
        self.inner = inner
        self._recent: dict[str, np.ndarray] = {}

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def dim(self) -> int:
        return self.inner.dim

    def forget(self) -> None:
        self._recent.clear()

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if len(texts) == 1 and texts[0] in self._recent:
            return self._recent[texts[0]][None, :]
        vectors = self.inner.encode_queries(texts)
        if len(texts) == 1:
            self._recent[texts[0]] = vectors[0]
        return vectors

    def encode_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self.inner.encode_passages(texts)


def _run_case(pipe: Pipeline, memo: _ReuseQueryVectors, case: EvalCase, passage: tuple[int, int] | None,
              documents: Mapping[str, str], source: str) -> CaseResult:
    memo.forget()
    try:
        started = time.perf_counter()
        answer = pipe.ask(case.question, history=case.history)
        latency_ms = (time.perf_counter() - started) * 1000
    except QuestionError as exc:
        raise QuestionSetError(f"{source} line {case.line}: {exc}") from exc
    index, settings = pipe.index, pipe.settings
    # rank with the text the answer came from: the follow-up rewrite when Pipeline.ask used one
    text = answer.rewritten_question or answer.question
    retrieval = retrieve(index, memo.encode_queries([text])[0], text, settings)
    chunks = [(index.chunks[r.chunk], r.score) for r in retrieval.ranked]
    scores = [s for _, s in chunks]
    docs = doc_ranking([(c.doc, s) for c, s in chunks])
    doc_rank = gold_rank([d == case.doc for d, _ in docs], [s for _, s in docs]) if case.doc else None
    passage_rank = None
    if passage is not None:
        hits = [c.doc == case.doc and overlaps((c.start, c.end), passage) for c, _ in chunks]
        passage_rank = gold_rank(hits, scores)
    # the sentences make_answer shows unless it abstains; the best is the one of highest score
    picked = answer_sentences(index, retrieval, settings)
    candidate = " ".join(index.sentences[s].text for s, _ in picked) or None
    best = retrieval.sentence_cosine.get(max(picked, key=lambda p: p[1])[0]) if picked else None
    shown = answer.text
    return CaseResult(
        id=case.id, question_lang=case.question_lang, answerable=case.answerable, abstained=answer.abstained,
        question=case.question, line=case.line, gold_doc=case.doc, has_context=passage is not None,
        doc_rank=doc_rank, passage_rank=passage_rank, answer=shown,
        answer_correct=contains_answer(shown, case.answers) if case.answerable else None,
        citation_correct=(citation_correct(answer.sentences, case.answers, case.doc, documents)
                          if case.answerable else None),
        confidence=answer.confidence,
        abstain_score=round(retrieval.specificity, 6),
        best_sentence_score=None if best is None else round(best, 6),
        candidate_answer=candidate,
        candidate_correct=contains_answer(candidate, case.answers) if case.answerable else None,
        rewritten_question=answer.rewritten_question,
        citations=tuple((c.doc, c.start, c.end) for c in answer.sentences),
        top_docs=tuple(d for d, _ in docs[:5]),
        latency_ms=round(latency_ms, 3),
    )


def evaluate(
    pipeline: Pipeline,
    questions: QuestionSet,
    *,
    build_s: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> EvalReport:
    """Ask every question of ``questions`` and measure retrieval, answers, citations, abstention and latency.

    The question set is checked against the index first (gold documents, passages and answers
    must be in it). One untimed warm-up question comes before the timed ones, so latencies
    are those of a loaded model. ``progress(done, total)`` is called after each question.
    """
    documents = {doc_id: doc.text for doc_id, doc in pipeline.index.documents.items()}
    passages = locate_passages(questions, documents)
    memo = _ReuseQueryVectors(pipeline.encoder)
    pipe = copy.copy(pipeline)  # the caller's pipeline (or subclass), with the vector-reusing encoder
    pipe.encoder = memo
    total = len(questions.cases)
    if progress:
        progress(0, total)
    _run_case(pipe, memo, questions.cases[0], None, documents, questions.source)  # warm-up, not kept
    results = []
    for done, case in enumerate(questions.cases, start=1):
        results.append(_run_case(pipe, memo, case, passages.get(case.id), documents, questions.source))
        if progress:
            progress(done, total)
    return EvalReport(
        source=questions.source,
        model=pipeline.settings.model,
        abstain_threshold=calibration(pipeline.settings)[0],
        results=tuple(results),
        build_s=None if build_s is None else round(build_s, 3),
        index=str(pipeline.index.path),
        settings=pipeline.settings.to_dict(),
    )


# ---------------------------------------------------------------------------------- limits


def parse_limits(minimums: Iterable[str] = (), maximums: Iterable[str] = ()) -> dict[str, tuple[str, float]]:
    """``KEY=VALUE`` bounds from ``--min`` and ``--max``, as {key: ("min" | "max", value)}."""
    out: dict[str, tuple[str, float]] = {}
    for kind, specs, known, other in (("min", minimums, HIGHER_IS_BETTER, "max"),
                                      ("max", maximums, LOWER_IS_BETTER, "min")):
        for spec in specs:
            key, sep, raw = spec.partition("=")
            key = key.strip()
            if not sep or not key:
                example = "passage_hit@1=0.9" if kind == "min" else "p95_ms=500"
                raise SettingsError(f"--{kind} needs KEY=VALUE, e.g. --{kind} {example}, not {spec!r}")
            if key not in known:
                if key in (HIGHER_IS_BETTER if kind == "max" else LOWER_IS_BETTER):
                    raise SettingsError(f"{key} is better when {'higher' if kind == 'max' else 'lower'}: "
                                        f"use --{other} {key}={raw.strip()}")
                raise SettingsError(f"unknown --{kind} key {key!r}: use one of {', '.join(known)}")
            try:
                value = float(raw)
            except ValueError:
                raise SettingsError(f"--{kind} {key} needs a number, not {raw.strip()!r}") from None
            if key in FRACTIONS and not 0.0 <= value <= 1.0:
                raise SettingsError(f"--{kind} {key} is a fraction: give a value between 0 and 1, not {raw.strip()}")
            out[key] = (kind, value)
    return out


def check_limits(report: EvalReport, limits: Mapping[str, tuple[str, float]]) -> list[str]:
    """One line per bound the report does not meet; [] when all hold."""
    metrics = report.metrics
    failures = []
    for key, (kind, bound) in limits.items():
        value = metrics.get(key)
        if value is None:
            failures.append(f"{key} was not measured (no question it applies to), so --{kind} {key}={bound:g} "
                            "cannot hold")
            continue
        shown = round(value, _digits(key))  # compare what the report shows
        if (kind == "min" and shown < bound) or (kind == "max" and shown > bound):
            sign = "<" if kind == "min" else ">"
            failures.append(f"{key} = {shown:g} {sign} {bound:g} (--{kind})")
    return failures


# ---------------------------------------------------------------------------------- output


def _digits(key: str) -> int:
    return 1 if key.endswith(("_ms", "_s")) else 4


def _rounded(value: float | None, key: str) -> float | None:
    return None if value is None else round(value, _digits(key))


def _counts(results: Sequence[CaseResult]) -> dict[str, int]:
    return {
        "answerable": sum(1 for r in results if r.answerable),
        "unanswerable": sum(1 for r in results if not r.answerable),
        "with_doc": sum(1 for r in results if r.gold_doc is not None),
        "with_context": sum(1 for r in results if r.has_context),
    }


def _grouped(metrics: Metrics) -> dict[str, Any]:
    return {
        "retrieval": {k: _rounded(metrics[k], k) for k in RETRIEVAL_METRICS},
        "answers": {k: _rounded(metrics[k], k) for k in ANSWER_METRICS},
        "abstention": {k: _rounded(metrics[k], k) for k in ABSTENTION_METRICS},
        "latency": {k: _rounded(metrics[k], k) for k in LATENCY_METRICS},
    }


def report_dict(report: EvalReport) -> dict[str, Any]:
    """The report as one JSON-ready object: ``n``, metric groups, ``build_s`` and ``by_lang``."""
    by_lang = {}
    for lang, metrics in report.by_lang.items():
        rows = [r for r in report.results if r.question_lang == lang]
        by_lang[lang] = {"n": len(rows), "counts": _counts(rows), **_grouped(metrics)}
    return {
        "n": report.n,
        "questions": report.source,
        "model": report.model,
        "index": report.index,
        "abstain_threshold": report.abstain_threshold,
        "counts": _counts(report.results),
        **_grouped(report.metrics),
        "build_s": _rounded(report.build_s, "build_s"),
        "by_lang": by_lang,
        "settings": report.settings,
    }


def _cell(value: float | None, key: str) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if key.endswith("_ms") else f"{value:.3f}"


def report_text(report: EvalReport) -> str:
    """A readable table: one row per metric, one column for all questions and one per question language."""
    counts = _counts(report.results)
    built = ("index not rebuilt by this run" if report.build_s is None
             else f"index built in {report.build_s:.1f} s")
    lines = [
        f"{report.n} questions from {report.source} ({counts['answerable']} answerable, "
        f"{counts['unanswerable']} unanswerable)",
        f"model {report.model}, abstains below {report.abstain_threshold:g}; {built}",
        "",
    ]
    by_lang = report.by_lang
    columns = [("all", report.metrics), *by_lang.items()]
    width = max(len(k) for k in (*RETRIEVAL_METRICS, *ABSTENTION_METRICS)) + 2
    lines.append("".ljust(width) + "".join(name.rjust(8) for name, _ in columns))
    lines.append("n".ljust(width) + "".join(f"{int(m['n'] or 0):>8}" for _, m in columns))
    for group in (RETRIEVAL_METRICS, ANSWER_METRICS, ABSTENTION_METRICS, LATENCY_METRICS):
        lines.append("")
        for key in group:
            lines.append(key.ljust(width) + "".join(_cell(m[key], key).rjust(8) for _, m in columns))
    if any(m[k] is None for _, m in columns for k in (*RETRIEVAL_METRICS, *ANSWER_METRICS, *ABSTENTION_METRICS)):
        lines.append("")
        lines.append("-: no question of that column counts for the metric (docs/evaluation.md says which do)")
    return "\n".join(lines)


def write_results(report: EvalReport, path: str | Path) -> None:
    """One JSON line per question (ranks, answer, abstention, confidence, raw score, latency)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as out:
            for result in report.results:
                out.write(json.dumps(asdict(result), ensure_ascii=False) + "\n")
    except OSError as exc:
        raise RagError(f"cannot write {path} ({exc.strerror or exc}): choose a writable --out file") from exc
