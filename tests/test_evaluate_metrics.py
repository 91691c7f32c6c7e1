"""rag.evaluate.metrics: each metric on tiny hand-made cases with known values."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import HAND_MADE, case_result

from rag.evaluate.metrics import (
    abstention_scores,
    citation_correct,
    contains_answer,
    doc_ranking,
    expected_calibration_error,
    gold_rank,
    hit_at,
    normalise_text,
    outcome_confidence,
    outcome_correct,
    overlaps,
    percentile,
    reciprocal_rank,
    reliability,
    reliability_table,
    stage_percentiles,
    summarise,
)
from rag.types import Quote

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
    right = Quote(1, "a.txt", 14, 26, "Beta is two.", 1)
    assert citation_correct([right], ["two"], "a.txt", DOCS)
    # same sentence, other document
    assert not citation_correct([Quote(1, "b.txt", 0, 12, "Beta is two.", 1)], ["two"], "a.txt", DOCS)
    # a span that does not hold the quoted text
    assert not citation_correct([Quote(1, "a.txt", 0, 12, "Beta is two.", 1)], ["two"], "a.txt", DOCS)
    # the cited sentence does not hold the answer
    assert not citation_correct([Quote(1, "a.txt", 0, 13, "Alpha is one.", 1)], ["two"], "a.txt", DOCS)
    # a second sentence holding the answer is enough; no gold document: any document will do
    wrong = Quote(1, "a.txt", 0, 13, "Alpha is one.", 1)
    assert citation_correct([wrong, right], ["two"], "a.txt", DOCS)
    assert citation_correct([Quote(1, "b.txt", 0, 12, "Beta is two.", 1)], ["two"], None, DOCS)
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
    m = summarise([case_result(answerable=False, abstained=False)])
    assert m["doc_hit@1"] is None and m["passage_mrr@10"] is None
    assert m["answer_accuracy"] is None and m["citation_accuracy"] is None
    assert m["abstain_recall"] == 0.0 and m["abstain_precision"] is None


# ------------------------------------------------------------------------------ first sentence, near misses


def test_first_sentence_accuracy_and_abstention_recall_by_kind() -> None:
    rows = [
        case_result(id="1", answer_correct=True, first_sentence_correct=True),
        case_result(id="2", answer_correct=True, first_sentence_correct=False),  # the answer is in the 2nd sentence
        case_result(id="3", abstained=True, answer_correct=False, first_sentence_correct=False),
        case_result(id="4", answerable=False, abstained=True, near_miss=True),
        case_result(id="5", answerable=False, abstained=False, near_miss=True),
        case_result(id="6", answerable=False, abstained=False, near_miss=True),
        case_result(id="7", answerable=False, abstained=True, near_miss=False),
        case_result(id="8", answerable=False, abstained=False),  # not said: counted in abstain_recall only
    ]
    m = summarise(rows)
    assert m["answer_accuracy"] == pytest.approx(2 / 3)
    assert m["first_sentence_accuracy"] == pytest.approx(1 / 3)
    assert m["abstain_recall"] == pytest.approx(2 / 5)
    assert m["abstain_recall_near_miss"] == pytest.approx(1 / 3)
    assert m["abstain_recall_off_topic"] == 1.0
    assert summarise(rows[:3])["abstain_recall_near_miss"] is None


def test_the_words_that_answer_are_scored_over_the_questions_the_reader_read() -> None:
    rows = [
        case_result(span="1891", span_f1=1.0, span_exact=1.0, span_shown=True),
        case_result(span="in 1891 to", span_f1=0.5, span_exact=0.0, span_shown=False),
        case_result(abstained=True, span_f1=0.0, span_exact=0.0, span_shown=False),  # abstained: scores 0
        case_result(),  # not read (no reader): not counted
        case_result(answerable=False, abstained=True),
    ]
    m = summarise(rows)
    assert m["span_f1"] == pytest.approx(0.5) and m["span_exact_match"] == pytest.approx(1 / 3)
    assert m["span_shown"] == pytest.approx(1 / 3) and m["span_f1_when_shown"] == 1.0
    without = summarise(rows[3:])
    assert without["span_f1"] is None and without["span_shown"] is None and without["span_f1_when_shown"] is None


# ------------------------------------------------------------------------------ calibration


def test_reliability_table_bins_confidences_by_tenths() -> None:
    table = reliability_table([0.05, 0.15, 0.95, 1.0, 0.92, 0.5], [False, True, True, True, False, True])
    assert [(b.low, b.high) for b in table[:2]] == [(0.0, 0.1), (0.1, 0.2)] and table[-1].high == 1.0
    assert [b.count for b in table] == [1, 1, 0, 0, 0, 1, 0, 0, 0, 3]  # 1.0 falls in the last bin
    assert table[9].mean_confidence == pytest.approx((0.95 + 1.0 + 0.92) / 3)
    assert table[9].accuracy == pytest.approx(2 / 3)
    assert table[2].mean_confidence is None and table[2].accuracy is None
    expected = (0.05 + 0.85 + 0.5 + 3 * abs(2 / 3 - 2.87 / 3)) / 6
    assert expected_calibration_error(table) == pytest.approx(expected)


def test_ece_is_zero_when_confidence_matches_accuracy_and_none_without_outcomes() -> None:
    assert expected_calibration_error(reliability_table([0.25] * 4, [True, False, False, False])) == pytest.approx(0)
    assert expected_calibration_error(reliability_table([0.95] * 2, [False, False])) == pytest.approx(0.95)
    assert expected_calibration_error(reliability_table([], [])) is None
    assert len(reliability_table([0.3], [True], bins=4)) == 4


def test_reliability_table_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="outside"):
        reliability_table([1.2], [True])
    with pytest.raises(ValueError, match="2 confidences but 1 outcomes"):
        reliability_table([0.1, 0.2], [True])
    with pytest.raises(ValueError, match="at least 1"):
        reliability_table([0.1], [True], bins=0)


def test_an_outcome_is_right_when_answered_right_or_rightly_abstained() -> None:
    cases = [  # (row, confidence in the outcome shown, outcome right)
        (case_result(confidence=0.8, answer_correct=True), 0.8, True),
        (case_result(confidence=0.8, answer_correct=False), 0.8, False),
        (case_result(confidence=0.3, abstained=True, answer_correct=False), 0.7, False),  # a false abstention
        (case_result(confidence=0.2, answerable=False, abstained=True), 0.8, True),
        (case_result(confidence=0.6, answerable=False, abstained=False), 0.6, False),
    ]
    for row, confidence, right in cases:
        assert (outcome_confidence(row), outcome_correct(row)) == (pytest.approx(confidence), right)
    rows = [row for row, _, _ in cases]
    assert [b.count for b in reliability(rows)] == [0, 0, 0, 0, 0, 0, 1, 1, 3, 0]
    assert summarise(rows)["ece"] == expected_calibration_error(reliability(rows))


def test_stage_percentiles_follow_the_pipeline_keys() -> None:
    rows = [case_result(timings_ms={"encode": float(ms), "search": 1.0}) for ms in (10, 20, 30, 40)]
    rows.append(case_result(timings_ms={}))  # a row without timings adds nothing
    stages = stage_percentiles(rows)
    assert list(stages) == ["encode", "search"]
    assert stages["encode"] == {"p50_ms": 25.0, "p95_ms": pytest.approx(38.5)}
    assert stage_percentiles([]) == {}
