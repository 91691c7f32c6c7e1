"""rag.scorer: the logistic models, answer features and the choice of sentences, on hand-made cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rag.errors import ScorerError
from rag.features import COLUMN, SENTENCE_FEATURES, SentenceFeatures, question_cues
from rag.scorer import (
    ANSWER_FEATURES,
    NO_RUNNER_UP,
    NOT_BESIDE_READER,
    READER_FEATURES,
    SCORER,
    SCORER_NO_TERMS,
    STAGE,
    STAGE_FEATURES,
    Logistic,
    ReadOut,
    ScorerModel,
    answer_features,
    bundled_model,
    bundled_stage,
    choose,
    reader_features,
    stage_row,
)


def only(names: tuple[str, ...], feature: str, weight: float = 1.0, bias: float = 0.0) -> Logistic:
    """A model that reads one feature, unscaled."""
    w = np.zeros(len(names))
    w[names.index(feature)] = weight
    return Logistic(names, np.zeros(len(names)), np.ones(len(names)), w, bias)


def features(fused: list[float]) -> SentenceFeatures:
    x = np.zeros((len(fused), len(SENTENCE_FEATURES)))
    x[:, COLUMN["fused"]] = fused
    return SentenceFeatures(tuple(range(100, 100 + len(fused))), x, question_cues("Who?"), 0.1)


def model(threshold: float = 0.5, support_min: float = 0.5) -> ScorerModel:
    # confidence reads the best sentence's logit; answerability its share among the candidates
    return ScorerModel(only(SENTENCE_FEATURES, "fused"), only(ANSWER_FEATURES, "best_logit"),
                       only(ANSWER_FEATURES, "best_share", weight=4.0, bias=-2.0), threshold, support_min,
                       {"models": ["e5+use"]})


def test_logistic_is_a_standardised_sigmoid_and_round_trips_through_json() -> None:
    m = Logistic(("a", "b"), np.array([1.0, 0.0]), np.array([2.0, 1.0]), np.array([1.0, -1.0]), 0.5)
    x = np.array([[3.0, 1.0], [1.0, 0.0]])
    assert m.logit(x) == pytest.approx([1.0 - 1.0 + 0.5, 0.5])
    assert m.prob(x) == pytest.approx(1 / (1 + np.exp(-0.5)))
    again = Logistic.from_dict(json.loads(json.dumps(m.to_dict())))
    assert again.logit(x) == pytest.approx(m.logit(x))


def test_the_best_sentence_comes_first_whatever_its_position() -> None:
    choice = choose(features([-3.0, 2.0, -1.0]), ["a first one", "the answer here", "a third one"], model())
    assert choice.sentences[0] == 101
    assert choice.confidence == pytest.approx(1 / (1 + np.exp(-2.0)))
    assert not choice.abstain


def test_supports_must_be_likely_themselves() -> None:
    texts = ["the lamp burned whale oil", "keepers lit it at dusk", "gulls nested on the tower", "ships passed"]
    choice = choose(features([3.0, 1.0, 0.5, -2.0]), texts, model(support_min=0.06))
    # softmax shares 0.817, 0.111, 0.067, 0.006: two supports clear 0.06, the fourth does not
    assert choice.sentences == (100, 101, 102)
    assert choice.probs == pytest.approx([0.817, 0.111, 0.067], abs=1e-3)
    assert choose(features([3.0, 1.0, 0.5, -2.0]), texts, model(support_min=0.1)).sentences == (100, 101)
    assert choose(features([3.0, 1.0, 0.5]), texts[:3], model(support_min=0.9)).sentences == (100,)
    assert len(choose(features([3.0, 2.0, 1.5, 1.0]), texts, model(support_min=0.01), 2).sentences) == 2


def test_a_support_that_repeats_a_quoted_sentence_is_skipped() -> None:
    texts = ["Blinken offered help with the border.", "Blinken offered help with the border!",
             "Aliyev thanked him."]
    choice = choose(features([3.0, 2.5, 2.0]), texts, model(support_min=0.15))  # shares 0.51, 0.31, 0.19
    assert choice.sentences == (100, 102)


def test_abstains_below_the_threshold_and_on_no_candidates() -> None:
    # shares 0.77 and 0.82 give answerability sigmoid(4 * share - 2) = 0.74 and 0.79
    close = choose(features([0.2, -1.0]), ["a b c d", "e f g h"], model(threshold=0.76))
    clear = choose(features([0.5, -1.0]), ["a b c d", "e f g h"], model(threshold=0.76))
    assert close.answerable == pytest.approx(1 / (1 + np.exp(-(4 / (1 + np.exp(-1.2)) - 2))))
    assert close.abstain and not clear.abstain
    assert close.confidence == pytest.approx(1 / (1 + np.exp(-0.2)))  # the answer model's, not the threshold's
    empty = choose(features([]), [], model())
    assert empty.abstain and empty.sentences == ()


def test_answer_features_margin_and_lone_candidate() -> None:
    sf = features([1.0, 4.0, 2.0])
    sf.x[1, COLUMN["type_when"]] = 1.0
    sf.x[1, COLUMN["lex_prefix"]] = 0.5
    row = dict(zip(ANSWER_FEATURES, answer_features(sf, np.array([1.0, 4.0, 2.0])), strict=True))
    assert row["best_logit"] == 4.0 and row["margin"] == 2.0
    assert row["best_share"] == pytest.approx(np.exp(4) / (np.exp(1) + np.exp(4) + np.exp(2)))
    assert row["type_match"] == 1.0 and row["coverage"] == 0.5 and row["top_chunk_fused"] == 4.0
    assert row["specificity"] == pytest.approx(0.1)
    # evidence anywhere among the candidates, not only in the best one
    sf.x[2, COLUMN["terms"]], sf.x[1, COLUMN["terms"]] = 0.4, 0.3
    sf.x[0, COLUMN["lex_name"]] = 1.0
    sf.x[0, COLUMN["type_number"]] = -1.0
    row = dict(zip(ANSWER_FEATURES, answer_features(sf, np.array([1.0, 4.0, 2.0])), strict=True))
    assert row["best_terms"] == pytest.approx(0.3) and row["terms_max"] == pytest.approx(0.4)
    assert row["names_found"] == 1.0 and row["type_found"] == 1.0
    lone = dict(zip(ANSWER_FEATURES, answer_features(features([1.0]), np.array([1.0])), strict=True))
    assert lone["margin"] == NO_RUNNER_UP


@pytest.mark.parametrize(("name", "terms"), [(SCORER, True), (SCORER_NO_TERMS, False)])
def test_the_bundled_models_match_the_features_this_version_computes(name: str, terms: bool) -> None:
    bundled = bundled_model(name)
    assert bundled.sentence.names == SENTENCE_FEATURES and bundled.answer.names == ANSWER_FEATURES
    assert 0.0 < bundled.threshold < 1.0 and 0.0 < bundled.support_min < 1.0
    assert "e5+use" in bundled.info["models"] and bundled.info["latent_terms"] is terms
    weight = dict(zip(SENTENCE_FEATURES, bundled.sentence.weights, strict=True))
    # trained without latent terms, their columns (always 0 there) carry no weight
    assert bool(weight["terms"] != 0.0) is terms and bool(weight["terms_gap"] != 0.0) is terms


def test_weights_for_other_features_are_refused(tmp_path, monkeypatch) -> None:
    data = bundled_model().to_dict()
    data["sentence"]["names"] = ["something_else"] * len(SENTENCE_FEATURES)
    target = tmp_path / "scorer-old.json"
    target.write_text(json.dumps(data), encoding="utf-8")
    import rag.scorer

    class Files:
        def __truediv__(self, name: str):
            return tmp_path if name == "data" else self

    monkeypatch.setattr(rag.scorer.resources, "files", lambda _pkg: Files())
    with pytest.raises(ScorerError, match=r"retrain it with `python scripts/train_scorer\.py`"):
        bundled_model.__wrapped__("scorer-old.json")


def test_the_stage_row_keeps_the_answer_features_beside_the_reader_and_adds_the_readers() -> None:
    answer = np.arange(len(ANSWER_FEATURES), dtype=np.float64)
    read = ReadOut(np.array([2.0, -1.0]), np.array([0.6, 0.1]), np.array([5.0, 1.0]))
    row = dict(zip(STAGE_FEATURES, stage_row(answer, read, np.array([0.5, 1.5])), strict=True))
    assert NOT_BESIDE_READER and not set(NOT_BESIDE_READER) & set(row)
    assert all(row[n] == ANSWER_FEATURES.index(n) for n in STAGE_FEATURES if n in ANSWER_FEATURES)
    reader = dict(zip(READER_FEATURES, reader_features(read, np.array([0.5, 1.5])), strict=True))
    assert all(row[n] == v for n, v in reader.items())
    assert row["reader_first"] == -1.0  # the reranked first (logit 1.5) is the second read


def test_the_shipped_stage_is_fit_on_the_stage_features_and_a_stage_fit_on_others_is_refused(tmp_path) -> None:
    shipped = bundled_stage()
    assert shipped.answer.names == shipped.abstain.names == STAGE_FEATURES
    data = shipped.to_dict()
    data["answer"]["names"] = data["abstain"]["names"] = list(ANSWER_FEATURES + READER_FEATURES)
    (tmp_path / STAGE).write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ScorerError, match=r"refit it with `python -m rag\.train\.stage --write`"):
        bundled_stage.__wrapped__(str(tmp_path))
