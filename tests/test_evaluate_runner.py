"""rag.evaluate.runner: a tiny set asked end to end through a pipeline with the fake encoder."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from fakes import FAKE, FakeEncoder
from helpers import SEED_QUESTIONS, TINY_QUESTIONS, MakeIndex, write_lines

from rag.errors import QuestionSetError
from rag.evaluate import evaluate, load_questions
from rag.pipeline import Pipeline, Traced

# ------------------------------------------------------------------------------ runner


def test_evaluate_a_tiny_set_end_to_end(tiny: tuple[Path, Path], make_index: MakeIndex) -> None:
    docs, questions = tiny
    index_dir = make_index(docs)
    encoder = FakeEncoder()
    pipeline = Pipeline.open(index_dir, FAKE, encoder)
    report = evaluate(pipeline, load_questions(questions), build_s=0.5)

    assert [r.id for r in report.results] == ["t1", "t2", "t3", "t4"]
    m = report.metrics
    assert (m["doc_hit@1"], m["passage_hit@1"], m["answer_accuracy"], m["citation_accuracy"]) == (1, 1, 1, 1)
    assert m["first_sentence_accuracy"] == 1
    assert (m["abstain_precision"], m["abstain_recall"], m["false_abstention_rate"]) == (1, 1, 0)
    assert m["build_s"] == 0.5
    t1 = report.results[0]
    assert t1.answer is not None and "Mira Castellan" in t1.answer
    assert t1.citations == (("lighthouse.txt", 0, 76),)
    assert t1.best_sentence_score is not None and t1.candidate_correct is True
    assert t1.abstain_score is not None and t1.abstain_score >= report.abstain_threshold
    assert t1.top_docs[0] == "lighthouse.txt" and t1.latency_ms > 0
    assert t1.first_sentence_correct is True and report.results[3].first_sentence_correct is None
    # the pipeline's, per row
    stages = {"encode", "encode.hash", "lexical", "search", "fuse", "read", "decide", "answer", "total"}
    assert stages <= set(t1.timings_ms)
    assert report.results[3].near_miss is None and report.results[3].group is None
    assert report.results[2].has_context is False and report.results[2].passage_rank is None
    assert report.results[3].abstained and report.results[3].answer_correct is None
    # one untimed warm-up question, then one model call per question: ranking reuses the answer's vector
    assert encoder.queries == [TINY_QUESTIONS[0]["question"]] + [q["question"] for q in TINY_QUESTIONS]


def test_first_sentence_accuracy_reads_the_order_of_the_answer_sentences(tiny: tuple[Path, Path],
                                                                          make_index: MakeIndex) -> None:
    docs, questions = tiny
    index_dir = make_index(docs)

    class SupportFirst(Pipeline):
        """Shows another sentence of the index before the answering one (the answer's words stay in it)."""

        def ask_traced(self, question: str, history: Sequence[str] = (), top_k: int | None = None) -> Traced:
            traced = super().ask_traced(question, history=history, top_k=top_k)
            if traced.answer.abstained:
                return traced
            other = next(s for s in self.index.sentences if s.doc != traced.answer.sentences[0].doc)
            lead = replace(traced.answer.sentences[0], doc=other.doc, start=other.start, end=other.end,
                           text=other.text)
            return replace(traced, answer=replace(traced.answer, sentences=(lead, *traced.answer.sentences)))

    pipeline = SupportFirst.open(index_dir, FAKE, FakeEncoder())
    report = evaluate(pipeline, load_questions(questions))
    m = report.metrics
    assert (m["answer_accuracy"], m["citation_accuracy"], m["first_sentence_accuracy"]) == (1, 1, 0)
    assert [r.first_sentence_correct for r in report.results] == [False, False, False, None]


def test_near_miss_and_group_reach_the_rows_and_the_recalls(tmp_path: Path, fake_pipeline: Pipeline) -> None:
    path = write_lines(tmp_path / "q.jsonl", [
        {"id": "n", "question": "What did Aliyev eat in Geneva?", "question_lang": "en", "doc": None,
         "answers": [], "near_miss": True, "group": "g1"},
        {"id": "o", "question": "Xylophone zebra quantum?", "question_lang": "en", "doc": None, "answers": [],
         "near_miss": False, "group": "g2"},
    ])
    report = evaluate(fake_pipeline, load_questions(path))
    rows = {r.id: r for r in report.results}
    assert (rows["n"].near_miss, rows["n"].group, rows["o"].near_miss, rows["o"].group) == (True, "g1", False, "g2")
    m = report.metrics
    assert m["abstain_recall_near_miss"] == float(rows["n"].abstained)
    assert m["abstain_recall_off_topic"] == float(rows["o"].abstained)
    assert report.by_lang["en"]["abstain_recall_off_topic"] == m["abstain_recall_off_topic"]


def test_follow_up_questions_are_asked_with_their_history(tmp_path: Path, fake_pipeline: Pipeline) -> None:
    asked: list[tuple[str, tuple[str, ...]]] = []
    answers: list[Traced] = []

    class Recording(Pipeline):
        def ask_traced(self, question: str, history: Sequence[str] = (), top_k: int | None = None) -> Traced:
            asked.append((question, tuple(history)))
            answers.append(super().ask_traced(question, history=history, top_k=top_k))
            return answers[-1]

    pipeline = Recording(fake_pipeline.index, fake_pipeline.encoder, fake_pipeline.settings)
    path = write_lines(tmp_path / "q.jsonl", [
        {"id": "f", "question": "And what did Aliyev ask for?", "question_lang": "en",
         "doc": "000_5af0c40136177a6e.txt", "answers": [], "history": ["What did Blinken offer?"]},
    ])
    report = evaluate(pipeline, load_questions(path))
    assert asked[-1] == ("And what did Aliyev ask for?", ("What did Blinken offer?",))
    assert len(asked) == 2  # the warm-up and the timed question: each asked once
    row, traced = report.results[0], answers[-1]
    assert row.abstained == traced.answer.abstained and row.rewritten_question == traced.answer.rewritten_question
    # the ranks are those of the retrieval the answer came from
    ranked_docs = [pipeline.index.chunks[r.chunk].doc for r in traced.retrieval.ranked]
    assert row.top_docs == tuple(dict.fromkeys(ranked_docs))[:5]


def test_a_question_the_pipeline_refuses_names_its_line(tmp_path: Path, fake_pipeline: Pipeline) -> None:
    long: dict[str, object] = {"id": "long", "question": "why " * 600, "question_lang": "en", "doc": None,
                               "answers": []}
    path = write_lines(tmp_path / "q.jsonl", [long])
    with pytest.raises(QuestionSetError, match=r"q.jsonl line 1: the question is 2,400 characters long"):
        evaluate(fake_pipeline, load_questions(path))


def test_right_words_from_the_wrong_document_count_for_the_answer_not_the_citation(tmp_path: Path,
                                                                                   make_index: MakeIndex) -> None:
    # the gold document says it plainly; a guide repeats the answer in words closer to the question
    index_dir = make_index({
        "river.txt": "The Quorrel river rises in the Ostheim hills and flows north for 212 kilometres."
                     "\n\nSalmon come back every October.\n",
        "guide.txt": "A tourist guide to the Quorrel valley.\n\nVisitors ask when the salmon return "
                     "to the Quorrel to spawn: every October.\n",
    })
    path = write_lines(tmp_path / "q.jsonl", [
        {"id": "x", "question": "When does the salmon return to the Quorrel to spawn?", "question_lang": "en",
         "doc": "river.txt", "answers": ["October"], "context": "Salmon come back every October."},
    ])
    report = evaluate(Pipeline.open(index_dir, FAKE, FakeEncoder()), load_questions(path))
    row, m = report.results[0], report.metrics
    assert row.citations[0][0] == "guide.txt" and row.doc_rank == 2
    assert row.passage_rank is not None and row.passage_rank > 1
    assert (row.answer_correct, row.citation_correct) == (True, False)
    assert (m["doc_hit@1"], m["doc_hit@3"], m["answer_accuracy"], m["citation_accuracy"]) == (0.0, 1.0, 1.0, 0.0)


@pytest.mark.model
def test_seed_questions_with_the_default_model(real_pipeline: Pipeline) -> None:
    questions = load_questions(SEED_QUESTIONS)
    report = evaluate(real_pipeline, questions)
    assert report.n == len(questions.cases) and set(report.by_lang) == {"en", "fr", "de", "es"}
    for r in report.results:
        assert r.abstained == (r.answer is None)
        assert r.best_sentence_score is not None and r.latency_ms > 0
        # the row's abstain_score is the value the answer was refused or given on
        assert r.abstained == (r.abstain_score is not None and r.abstain_score < report.abstain_threshold)
        if r.answerable:  # the reader read every answered question: its words in the first quote are scored
            assert r.span_f1 is not None and 0.0 <= r.span_f1 <= 1.0 and r.span_exact in (0.0, 1.0)
            if r.abstained:
                assert (r.span_f1, r.span_shown) == (0.0, False)
            if r.span is not None and r.answer is not None:
                assert r.span in r.answer
        else:
            assert r.span_f1 is None
    assert report.metrics["span_f1"] is not None and report.metrics["span_shown"] is not None
