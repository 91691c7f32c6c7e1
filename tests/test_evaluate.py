"""Evaluation: each metric on tiny hand-made cases with known values, the question-set format, the runner."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from conftest import FAKE, ROOT, SEEDS

from rag.encoders import HashEncoder
from rag.errors import QuestionSetError, SettingsError
from rag.evaluate import (
    CaseResult,
    EvalCase,
    EvalReport,
    QuestionSet,
    abstention_scores,
    check_limits,
    citation_correct,
    contains_answer,
    doc_ranking,
    evaluate,
    gold_rank,
    hit_at,
    load_questions,
    locate_passages,
    normalise_text,
    overlaps,
    parse_limits,
    percentile,
    reciprocal_rank,
    report_dict,
    report_text,
    summarise,
    write_results,
)
from rag.index import build_index
from rag.load import load_documents
from rag.pipeline import Pipeline
from rag.types import Citation

SEED_QUESTIONS = ROOT / "evals" / "seed_questions.jsonl"

# ------------------------------------------------------------------------------ ranks


def test_gold_rank_is_the_first_relevant_position() -> None:
    assert gold_rank([True, False, False]) == 1
    assert gold_rank([False, False, True, True]) == 3
    assert gold_rank([False, False]) is None


def test_gold_rank_of_an_empty_ranking_is_none() -> None:
    assert gold_rank([]) is None
    assert gold_rank([], []) is None


def test_ties_rank_the_gold_item_after_the_rest_of_its_tie() -> None:
    # positions 2 and 3 tie at 0.5: the gold one counts as 3rd whatever order retrieval left them in
    assert gold_rank([False, True, False], [0.9, 0.5, 0.5]) == 3
    assert gold_rank([False, False, True], [0.9, 0.5, 0.5]) == 3
    # all tied, two of three relevant: the first relevant is 2nd at worst
    assert gold_rank([True, True, False], [1.0, 1.0, 1.0]) == 2
    # an untied gold item keeps its position
    assert gold_rank([False, True, False], [0.9, 0.7, 0.5]) == 2


def test_gold_rank_refuses_scores_out_of_order_or_count() -> None:
    with pytest.raises(ValueError, match="highest first"):
        gold_rank([True, False], [0.1, 0.2])
    with pytest.raises(ValueError, match="2 items but 1 scores"):
        gold_rank([True, False], [0.1])


def test_documents_count_once_at_their_best_chunk() -> None:
    chunks = [("a", 3.0), ("a", 2.0), ("b", 1.0), ("a", 0.5), ("c", 0.4)]
    docs = doc_ranking(chunks)
    assert docs == [("a", 3.0), ("b", 1.0), ("c", 0.4)]
    assert gold_rank([d == "c" for d, _ in docs], [s for _, s in docs]) == 3
    assert doc_ranking([]) == []


def test_duplicate_chunks_do_not_break_a_document_tie() -> None:
    docs = doc_ranking([("a", 2.0), ("b", 2.0), ("b", 1.0)])
    assert docs == [("a", 2.0), ("b", 2.0)]
    assert gold_rank([d == "a" for d, _ in docs], [s for _, s in docs]) == 2


def test_hit_at_k_and_reciprocal_rank() -> None:
    assert hit_at(1, 1) == 1.0
    assert hit_at(3, 3) == 1.0
    assert hit_at(4, 3) == 0.0
    assert hit_at(None, 5) == 0.0
    assert reciprocal_rank(2, 10) == 0.5
    assert reciprocal_rank(10, 10) == 0.1
    assert reciprocal_rank(11, 10) == 0.0
    assert reciprocal_rank(None, 10) == 0.0


def test_overlap_needs_a_shared_character() -> None:
    assert overlaps((0, 5), (4, 9))
    assert overlaps((2, 3), (0, 10))
    assert not overlaps((0, 5), (5, 9))
    assert not overlaps((6, 9), (0, 5))


# ------------------------------------------------------------------------------ answers


def test_answer_match_ignores_case_accents_and_whitespace() -> None:
    assert normalise_text("  Genève\u00a0 ÉTÉ\n") == "geneve ete"
    assert contains_answer("Les ministres se sont réunis à GENEVE.", ["Genève"])
    assert contains_answer("plus de 3\u00a0900 citoyens", ["3 900"])
    assert contains_answer("x", ["nope", "X"])
    assert not contains_answer("Les ministres se sont réunis à Prague.", ["Genève"])
    assert not contains_answer(None, ["Genève"])
    assert not contains_answer("anything", [])


DOCS = {"a.txt": "Alpha is one. Beta is two.", "b.txt": "Beta is two."}


def test_citation_must_quote_the_gold_document_at_its_span() -> None:
    right = Citation(1, "a.txt", 14, 26, "Beta is two.", 1)
    assert citation_correct([right], ["two"], "a.txt", DOCS)
    # same sentence, other document
    assert not citation_correct([Citation(1, "b.txt", 0, 12, "Beta is two.", 1)], ["two"], "a.txt", DOCS)
    # a span that does not hold the quoted text
    assert not citation_correct([Citation(1, "a.txt", 0, 12, "Beta is two.", 1)], ["two"], "a.txt", DOCS)
    # the cited sentence does not hold the answer
    assert not citation_correct([Citation(1, "a.txt", 0, 13, "Alpha is one.", 1)], ["two"], "a.txt", DOCS)
    # a second sentence holding the answer is enough; no gold document: any document will do
    wrong = Citation(1, "a.txt", 0, 13, "Alpha is one.", 1)
    assert citation_correct([wrong, right], ["two"], "a.txt", DOCS)
    assert citation_correct([Citation(1, "b.txt", 0, 12, "Beta is two.", 1)], ["two"], None, DOCS)
    assert not citation_correct([], ["two"], "a.txt", DOCS)


def test_abstention_precision_recall_and_false_abstentions() -> None:
    scores = abstention_scores(
        abstained=[True, True, False, False, True],
        answerable=[False, True, True, False, False],
    )
    assert scores == pytest.approx(
        {"abstain_precision": 2 / 3, "abstain_recall": 2 / 3, "false_abstention_rate": 1 / 2}
    )


def test_abstention_scores_are_none_without_a_denominator() -> None:
    assert abstention_scores([False, False], [True, True]) == {
        "abstain_precision": None, "abstain_recall": None, "false_abstention_rate": 0.0,
    }
    assert abstention_scores([], []) == {
        "abstain_precision": None, "abstain_recall": None, "false_abstention_rate": None,
    }


def test_percentile_interpolates_like_numpy() -> None:
    values = [40.0, 10.0, 30.0, 20.0]
    for q in (0, 50, 95, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
    assert percentile([7.0], 95) == 7.0
    assert percentile([], 50) is None


# ------------------------------------------------------------------------------ summary


def _result(**kw: object) -> CaseResult:
    base: dict[str, object] = {"id": "q", "question_lang": "en", "answerable": True, "abstained": False}
    base.update(kw)
    return CaseResult(**base)  # type: ignore[arg-type]


HAND_MADE = [
    _result(id="1", gold_doc="a", has_context=True, doc_rank=1, passage_rank=2, answer_correct=True,
            citation_correct=True, latency_ms=10.0),
    _result(id="2", gold_doc="a", has_context=True, doc_rank=4, passage_rank=None, answer_correct=True,
            citation_correct=False, latency_ms=20.0),
    _result(id="3", gold_doc="b", doc_rank=None, abstained=True, answer_correct=False, citation_correct=False,
            latency_ms=30.0, question_lang="fr"),
    _result(id="4", answerable=False, abstained=True, latency_ms=40.0, question_lang="fr"),
]


def test_summarise_hand_made_results() -> None:
    m = summarise(HAND_MADE)
    assert m["n"] == 4
    assert m["doc_hit@1"] == pytest.approx(1 / 3)
    assert m["doc_hit@3"] == pytest.approx(1 / 3)
    assert m["doc_hit@5"] == pytest.approx(2 / 3)
    assert m["doc_mrr@10"] == pytest.approx((1 + 1 / 4 + 0) / 3)
    assert m["passage_hit@1"] == 0.0
    assert m["passage_hit@5"] == 0.5
    assert m["passage_mrr@10"] == pytest.approx(0.25)
    assert m["answer_accuracy"] == pytest.approx(2 / 3)
    assert m["citation_accuracy"] == pytest.approx(1 / 3)
    assert m["abstain_precision"] == 0.5
    assert m["abstain_recall"] == 1.0
    assert m["false_abstention_rate"] == pytest.approx(1 / 3)
    assert m["p50_ms"] == 25.0
    assert m["p95_ms"] == pytest.approx(38.5)


def test_metrics_without_qualifying_questions_are_none() -> None:
    m = summarise([_result(answerable=False, abstained=False)])
    assert m["doc_hit@1"] is None and m["passage_mrr@10"] is None
    assert m["answer_accuracy"] is None and m["citation_accuracy"] is None
    assert m["abstain_recall"] == 0.0 and m["abstain_precision"] is None


def _report(results: Sequence[CaseResult] = HAND_MADE, build_s: float | None = 1.25) -> EvalReport:
    return EvalReport(source="q.jsonl", model="hash", abstain_threshold=0.25, results=tuple(results), build_s=build_s)


def test_report_breaks_metrics_down_by_question_language() -> None:
    report = _report()
    assert list(report.by_lang) == ["en", "fr"]  # most questions first, then by name
    assert report.by_lang["en"]["answer_accuracy"] == 1.0
    assert report.by_lang["fr"]["abstain_precision"] == 0.5
    data = report_dict(report)
    assert data["n"] == 4 and data["build_s"] == 1.2
    assert data["retrieval"]["doc_mrr@10"] == pytest.approx(0.4167)
    assert set(data["answers"]) == {"answer_accuracy", "citation_accuracy"}
    assert set(data["abstention"]) == {"abstain_precision", "abstain_recall", "false_abstention_rate"}
    assert set(data["latency"]) == {"p50_ms", "p95_ms"}
    assert data["by_lang"]["fr"]["n"] == 2
    assert data["by_lang"]["fr"]["retrieval"]["passage_hit@1"] is None
    json.dumps(data)  # serialisable as it is


def test_report_text_is_a_table_with_a_column_per_language() -> None:
    text = report_text(_report())
    header = next(line for line in text.splitlines() if line.strip().startswith("all"))
    assert header.split() == ["all", "en", "fr"]
    row = next(line for line in text.splitlines() if line.startswith("answer_accuracy"))
    assert row.split() == ["answer_accuracy", "0.667", "1.000", "0.000"]
    assert "index built in 1.2 s" in text


# ------------------------------------------------------------------------------ limits


def test_limits_parse_and_check() -> None:
    limits = parse_limits(["passage_hit@1=0.9", "answer_accuracy = 0.5"], ["p95_ms=35"])
    assert limits == {"passage_hit@1": ("min", 0.9), "answer_accuracy": ("min", 0.5), "p95_ms": ("max", 35.0)}
    failures = check_limits(_report(), limits)
    assert failures == ["passage_hit@1 = 0 < 0.9 (--min)", "p95_ms = 38.5 > 35 (--max)"]
    assert check_limits(_report(), parse_limits(["doc_hit@5=0.6667"])) == []  # compared as shown, rounded


def test_a_limit_on_an_unmeasured_metric_fails() -> None:
    report = _report([_result(answerable=False, abstained=True)])
    assert check_limits(report, parse_limits(["passage_hit@1=0.1"])) == [
        "passage_hit@1 was not measured (no question it applies to), so --min passage_hit@1=0.1 cannot hold"
    ]


@pytest.mark.parametrize(
    ("minimums", "maximums", "message"),
    [
        (["recall=0.9"], [], r"unknown --min key 'recall': use one of doc_hit@1, .*abstain_recall$"),
        (["false_abstention_rate=0.1"], [], r"better when lower: use --max false_abstention_rate=0.1"),
        ([], ["answer_accuracy=0.1"], r"better when higher: use --min answer_accuracy=0.1"),
        (["passage_hit@1"], [], r"--min needs KEY=VALUE, e.g. --min passage_hit@1=0.9"),
        (["passage_hit@1=high"], [], r"--min passage_hit@1 needs a number, not 'high'"),
        (["passage_hit@1=90"], [], r"is a fraction: give a value between 0 and 1, not 90"),
    ],
)
def test_bad_limits_name_the_fix(minimums: list[str], maximums: list[str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        parse_limits(minimums, maximums)


# ------------------------------------------------------------------------------ format


def _write(path: Path, lines: Sequence[object]) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    return path


GOOD = {"id": "q1", "question": "Who?", "question_lang": "en", "doc": "a.txt", "answers": ["Ann"]}


def test_load_questions_reads_every_field(tmp_path: Path) -> None:
    path = _write(tmp_path / "q.jsonl", [
        {**GOOD, "context": "Ann came.", "history": ["Before?"]},
        "",
        {"id": 7, "question": "Why?", "question_lang": "fr", "doc": None, "answers": []},
    ])
    qs = load_questions(path)
    assert qs.source == str(path)
    assert qs.cases == (
        EvalCase("q1", "Who?", "en", "a.txt", ("Ann",), "Ann came.", True, ("Before?",), line=1),
        EvalCase("7", "Why?", "fr", None, (), None, False, (), line=3),
    )


def test_the_seed_question_set_is_valid() -> None:
    qs = load_questions(SEED_QUESTIONS)
    assert len(qs.cases) == 63
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
        (GOOD, r"line 2: id 'q1' was already used on line 1: give every question its own id"),
    ],
)
def test_bad_lines_are_reported_with_their_number(tmp_path: Path, line: object, message: str) -> None:
    path = _write(tmp_path / "q.jsonl", [GOOD, line])
    with pytest.raises(QuestionSetError, match=message):
        load_questions(path)


def test_all_bad_lines_are_reported_at_once(tmp_path: Path) -> None:
    path = _write(tmp_path / "q.jsonl", [GOOD, *["{"] * 7])
    with pytest.raises(QuestionSetError, match=r"has 7 bad lines: line 2: .*; line 6: [^;]*; and 2 more$"):
        load_questions(path)


def test_empty_and_missing_question_files(tmp_path: Path) -> None:
    with pytest.raises(QuestionSetError, match="holds no question: write one JSON object per line"):
        load_questions(_write(tmp_path / "empty.jsonl", [""]))
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


# ------------------------------------------------------------------------------ runner

TINY_DOCS = {
    "lighthouse.txt": "The lighthouse of Varnholm was built in 1887 by the engineer Mira Castellan.\n\n"
                      "Its lamp burns whale oil and can be seen from forty kilometres away.\n",
    "river.txt": "The Quorrel river rises in the Ostheim hills and flows north for 212 kilometres.\n\n"
                 "Salmon return to the Quorrel every October to spawn.\n",
    "bakery.txt": "The bakery on Linden Square sells rye bread baked in a wood oven.\n\n"
                  "Its owner, Tomas Brandl, opens the shop at five every morning.\n",
}
TINY_QUESTIONS = [
    {"id": "t1", "question": "Who built the lighthouse of Varnholm in 1887?", "question_lang": "en",
     "doc": "lighthouse.txt", "answers": ["Mira Castellan"],
     "context": "The lighthouse of Varnholm was built in 1887 by the engineer Mira Castellan."},
    {"id": "t2", "question": "When does the salmon return to the Quorrel to spawn?", "question_lang": "en",
     "doc": "river.txt", "answers": ["October"], "context": "Salmon return to the Quorrel every October to spawn."},
    {"id": "t3", "question": "Who opens the bakery shop at five every morning?", "question_lang": "fr",
     "doc": "bakery.txt", "answers": ["Tomas Brandl"]},
    {"id": "t4", "question": "Xylophone zebra quantum?", "question_lang": "fr", "doc": None, "answers": []},
]


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, Path]:
    """A folder of three small documents and a question set about them."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in TINY_DOCS.items():
        (docs / name).write_text(text, encoding="utf-8")
    return docs, _write(tmp_path / "questions.jsonl", TINY_QUESTIONS)


class CountingEncoder(HashEncoder):
    def __init__(self) -> None:
        super().__init__()
        self.queries: list[str] = []

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        self.queries.extend(texts)
        return super().encode_queries(texts)


def test_evaluate_a_tiny_set_end_to_end(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    docs, questions = tiny
    build_index(load_documents(docs), tmp_path / "index", FAKE, HashEncoder())
    encoder = CountingEncoder()
    pipeline = Pipeline.open(tmp_path / "index", FAKE, encoder)
    report = evaluate(pipeline, load_questions(questions), build_s=0.5)

    assert [r.id for r in report.results] == ["t1", "t2", "t3", "t4"]
    m = report.metrics
    assert (m["doc_hit@1"], m["passage_hit@1"], m["answer_accuracy"], m["citation_accuracy"]) == (1, 1, 1, 1)
    assert (m["abstain_precision"], m["abstain_recall"], m["false_abstention_rate"]) == (1, 1, 0)
    assert m["build_s"] == 0.5
    t1 = report.results[0]
    assert t1.answer is not None and "Mira Castellan" in t1.answer
    assert t1.citations == (("lighthouse.txt", 0, 76),)
    assert t1.best_sentence_score is not None and t1.candidate_correct is True
    assert t1.abstain_score is not None and t1.abstain_score >= report.abstain_threshold
    assert t1.top_docs[0] == "lighthouse.txt" and t1.latency_ms > 0
    assert report.results[2].has_context is False and report.results[2].passage_rank is None
    assert report.results[3].abstained and report.results[3].answer_correct is None
    # one untimed warm-up question, then one model call per question: ranking reuses the answer's vector
    assert encoder.queries == [TINY_QUESTIONS[0]["question"]] + [q["question"] for q in TINY_QUESTIONS]


def test_follow_up_questions_are_asked_with_their_history(tmp_path: Path, fake_pipeline: Pipeline) -> None:
    asked: list[tuple[str, tuple[str, ...]]] = []

    class Recording(Pipeline):
        def ask(self, question, history=(), top_k=None):  # type: ignore[no-untyped-def]
            asked.append((question, tuple(history)))
            return super().ask(question, history=history, top_k=top_k)

    pipeline = Recording(fake_pipeline.index, fake_pipeline.encoder, fake_pipeline.settings)
    path = _write(tmp_path / "q.jsonl", [
        {"id": "f", "question": "And what did Aliyev ask for?", "question_lang": "en",
         "doc": "000_5af0c40136177a6e.txt", "answers": [], "history": ["What did Blinken offer?"]},
    ])
    report = evaluate(pipeline, load_questions(path))
    assert asked[-1] == ("And what did Aliyev ask for?", ("What did Blinken offer?",))
    assert len(asked) == 2  # the warm-up and the timed question
    assert report.results[0].doc_rank == 1


def test_a_question_the_pipeline_refuses_names_its_line(tmp_path: Path, fake_pipeline: Pipeline) -> None:
    long = {"id": "long", "question": "why " * 600, "question_lang": "en", "doc": None, "answers": []}
    path = _write(tmp_path / "q.jsonl", [long])
    with pytest.raises(QuestionSetError, match=r"q.jsonl line 1: the question is 2,400 characters long"):
        evaluate(fake_pipeline, load_questions(path))


def test_write_results_one_json_line_per_question(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "rows.jsonl"
    write_results(_report(), out)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["1", "2", "3", "4"]
    assert {"doc_rank", "passage_rank", "answer", "abstained", "confidence", "abstain_score", "best_sentence_score",
            "candidate_correct", "latency_ms"} <= set(rows[0])


@pytest.mark.model
def test_seed_questions_with_the_default_model(real_pipeline: Pipeline) -> None:
    report = evaluate(real_pipeline, load_questions(SEED_QUESTIONS))
    m = report.metrics
    assert report.n == 63 and set(report.by_lang) == {"en", "fr", "de", "es"}
    assert m["doc_hit@1"] == 1.0  # the seed folder holds one document
    for r in report.results:
        assert r.abstained == (r.answer is None)
        assert r.best_sentence_score is not None and r.latency_ms > 0
        # the row's abstain_score is the value the answer was refused or given on
        assert r.abstained == (r.abstain_score is not None and r.abstain_score < report.abstain_threshold)
    # every quoted sentence is cited at its exact span (citations hold by construction)
    assert m["citation_accuracy"] == m["answer_accuracy"]
