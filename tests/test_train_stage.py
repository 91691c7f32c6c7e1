"""The reader stage's fit (rag.train.stage): the split of a set with real unanswerable questions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.train.stage import real_halves


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
