"""The reader stage's fit (rag.train.stage): the split of a set with real unanswerable questions, the
ablation's groups and table, and reading each candidate once across an ablation's variants."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rag.features import SENTENCE_FEATURES, SentenceFeatures, question_cues
from rag.reader import Reading
from rag.scorer import RERANK_FEATURES, STAGE_FEATURES
from rag.train import stage
from rag.train.cases import Case
from rag.train.stage import STAGE_GROUPS, ablation_table, auc, real_halves


def _write(folder: Path, rows: list[dict[str, object]]) -> Path:
    folder.mkdir()
    path = folder / "questions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_real_halves_split_by_article_and_group_the_tuning_half_by_article(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = []
    for a in range(10):
        rows.append({"id": f"a{a}", "question": "q?", "doc": f"art{a}.txt", "answers": ["x"], "context": "x"})
        rows.append({"id": f"u{a}", "question": "q?", "doc": None, "answers": [], "answerable": False,
                     "topic_doc": f"art{a}.txt"})
    tune, test = real_halves(_write(tmp_path / "long-xx", rows))
    tuned = [json.loads(x) for x in tune.read_text(encoding="utf-8").splitlines()]
    tested = [json.loads(x) for x in test.read_text(encoding="utf-8").splitlines()]
    article = lambda q: q["doc"] or q["topic_doc"]  # noqa: E731
    assert len(tuned) + len(tested) == len(rows) and len(tuned) == len(tested) == 10
    assert not {article(q) for q in tuned} & {article(q) for q in tested}  # an article lies in one half only
    assert all(q["group"] == f"long-xx/{article(q)}" for q in tuned)  # the folds keep an article together
    assert all("group" not in q for q in tested)  # the test half is the set's own rows
    before = tune.read_text(encoding="utf-8"), test.read_text(encoding="utf-8")
    real_halves(tmp_path / "long-xx" / "questions.jsonl")  # a stable split: the same halves again
    assert (tune.read_text(encoding="utf-8"), test.read_text(encoding="utf-8")) == before


def test_a_question_without_its_article_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "set", [{"id": "u1", "question": "q?", "doc": None, "answers": [], "answerable": False}])
    with pytest.raises(ValueError, match="u1 names no article"):
        real_halves(path)


def test_the_ablation_groups_name_every_piece_of_the_stages_evidence_once() -> None:
    grouped = [name for names in STAGE_GROUPS.values() for name in names]
    assert len(grouped) == len(set(grouped))
    assert set(grouped) == set(RERANK_FEATURES + STAGE_FEATURES)


def _figures(answers: float, near: float, off: float, ece: float, seed: float, auc: float) -> dict:
    xquad = {"answerable": {"n": 10, "answer_accuracy": answers, "candidate_first_accuracy": 0.7,
                            "abstain_recall": None, "ece": ece},
             "masked": {"n": 10, "abstain_recall": near}, "offdoc": {"n": 10, "abstain_recall": off},
             "auc": {"near_miss": auc, "off_topic": 0.9}}
    seeds = {"answerable": {"n": 10, "answer_accuracy": 0.9, "candidate_first_accuracy": 0.8,
                            "abstain_recall": seed, "ece": 0.05},
             "masked": {"n": 0, "abstain_recall": None}, "offdoc": {"n": 0, "abstain_recall": None},
             "auc": {"near_miss": 0.6, "off_topic": None}}
    return {"threshold": 0.1, "out_of_fold": {"xquad-a": xquad, "seed-tune": seeds}}


def test_the_ablation_table_gives_each_variants_mean_and_its_largest_fall() -> None:
    report = {"all": _figures(0.8, 0.3, 0.5, 0.04, 0.4, 0.8), "without x": _figures(0.7, 0.2, 0.6, 0.09, 0.5, 0.7)}
    rows = ablation_table(report, "all").splitlines()
    assert rows[2].split(" | ")[1:] == ["0.750 (+0.000)", "0.700 (+0.000)", "0.900 (+0.000)", "0.1",
                                        "0.850 (+0.000)", "0.350 (+0.000)", "0.500 (+0.000)", "0.050 |"]
    # near-miss AUC: (0.7 + 0.6) / 2, falling 0.1 on xquad-a; answers: (0.7 + 0.9) / 2, falling 0.1 on xquad-a;
    # near-miss recall: the seed's unanswerable ones count with the near misses, (0.2 + 0.5) / 2, falling 0.1
    # on xquad-a though rising on the seeds; off topic: xquad-a only, rising
    assert rows[3].split(" | ")[1:] == ["0.750 (+0.000)", "0.650 (+0.100)", "0.900 (+0.000)", "0.1",
                                        "0.800 (+0.100)", "0.350 (+0.100)", "0.600 (-0.100)", "0.090 |"]


def test_auc_counts_the_pairs_a_positive_wins_and_ties_as_half() -> None:
    assert auc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert auc([0.1], [0.9]) == 0.0
    assert auc([0.5, 0.9], [0.5, 0.1]) == 0.875  # 4 pairs: 0.5-0.5 ties, the other three won
    assert auc([0.5], []) is None


class _CountingReader:
    precision = auto_precision = "fp32"

    def __init__(self) -> None:
        self.record = {"sha256": "abc"}
        self.read_sentences: list[str] = []

    def read(self, question: str, sentences: list[str], contexts: list[str]) -> list[Reading]:
        self.read_sentences += sentences
        return [Reading(0.5, float(len(s)), None, 0.0) for s in sentences]


def test_an_ablations_candidates_are_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stage, "context_of", lambda index, sentence: "")
    sf = SentenceFeatures((10, 11, 12), np.zeros((3, len(SENTENCE_FEATURES))), question_cues("Who?"), 0.0)
    case = Case("s", "q1", "en", "g", "answerable", True, sf, ["a", "bb", "ccc"], np.zeros(3, bool), np.zeros(3, bool),
                "Who?")
    reader, seen = _CountingReader(), dict[tuple[str, str, int], Reading]()
    first = stage._read_set([case], [np.array([3.0, 2.0, 1.0])], reader, 2, None, seen)  # type: ignore[arg-type]
    again = stage._read_set([case], [np.array([1.0, 2.0, 3.0])], reader, 2, None, seen)  # type: ignore[arg-type]
    assert first == [{"top": [0, 1], "logits": [1.0, 2.0], "spans": [0.0, 0.0], "scores": [0.0, 0.0]}]
    assert again == [{"top": [2, 1], "logits": [3.0, 2.0], "spans": [0.0, 0.0], "scores": [0.0, 0.0]}]
    assert reader.read_sentences == ["a", "bb", "ccc"]  # "bb", read for the first, is not read again


def test_what_an_earlier_run_read_is_not_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stage, "context_of", lambda index, sentence: "")
    monkeypatch.setattr(stage, "open_index", lambda folder: None)
    sf = SentenceFeatures((10, 11, 12), np.zeros((3, len(SENTENCE_FEATURES))), question_cues("Who?"), 0.0)
    case = Case("s", "q1", "en", "g", "answerable", True, sf, ["a", "bb", "ccc"], np.zeros(3, bool), np.zeros(3, bool),
                "Who?")
    first = _CountingReader()
    stage.read_cases([case], {0: np.array([3.0, 2.0, 1.0])}, first, 2, {"s": tmp_path}, tmp_path)  # type: ignore[arg-type]
    later, seen = _CountingReader(), dict[tuple[str, str, int], Reading]()
    cached = stage.read_cases([case], {0: np.array([3.0, 2.0, 1.0])}, later, 2, {"s": tmp_path}, tmp_path, seen)  # type: ignore[arg-type]
    assert later.read_sentences == [] and cached[0].top == [0, 1]  # from the disk cache
    moved = stage.read_cases([case], {0: np.array([1.0, 2.0, 3.0])}, later, 2, {"s": tmp_path}, tmp_path, seen)  # type: ignore[arg-type]
    assert later.read_sentences == ["ccc"]  # the new candidate only
    assert moved[0].top == [2, 1] and list(moved[0].out.logits) == [3.0, 2.0]
