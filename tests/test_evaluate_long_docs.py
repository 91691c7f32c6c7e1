"""The long-document development set (rag.evaluate.long_docs) on a small hand-made pool, and once on the real pool."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT

from rag.evaluate import load_questions, locate_passages
from rag.evaluate.long_docs import (
    LONG_DOC_SOURCES,
    assign_split,
    build_long_docs,
    read_held_out,
    read_pool,
    safe_file_name,
    write_long_doc_set,
    write_paragraph_set,
)

POOL = ROOT.parent / "shared" / "train" / "qa-pool.jsonl.gz"

P1 = "Los normandos fueron un pueblo de Normandía en los siglos X y XI."
P2 = "Su duque más famoso fue Guillermo el Conquistador, que invadió Inglaterra en 1066."
P3 = "La lengua normanda era un dialecto del francés antiguo."
Q1 = "Il ducato di Normandia nacque nel X secolo."


def _row(source: str, title: str, context: str, qid: str, question: str, answers: list[str] | None,
         lang: str = "es") -> dict[str, Any]:
    """A pool row; ``answers=None`` makes an unanswerable one."""
    found = [{"text": a, "start": context.find(a) if a else -1} for a in answers or []]
    return {"id": f"{source}:{qid}", "source": source, "lang": lang, "title": title, "context": context,
            "question": question, "answers": found, "answerable": answers is not None}


def _pool() -> list[dict[str, Any]]:
    # P1 comes back after P2 (as three paragraphs of the Italian file do): order is first appearance
    return [
        _row("es-src", "Normandos", P1, "q1", "¿Cuándo vivieron los normandos?", ["siglos X y XI", "X y XI"]),
        _row("es-src", "Normandos", P2, "q2", "¿Quién invadió Inglaterra?", ["Guillermo el Conquistador"]),
        _row("es-src", "Normandos", P1, "q3", "¿De dónde eran los normandos?", ["Normandía", " Normandía "]),
        _row("es-src", "Normandos", P3, "q4", "¿Qué rey francés coronó a Guillermo?", None),
        _row("es-src", "Normandos", P3, "q5", "¿Qué lengua hablaban?", ["", "dialecto del francés antiguo", ""]),
        _row("es-src", "Otro tema", "Un párrafo de otro artículo, sin relación.", "q6", "¿Qué es?", ["párrafo"]),
        _row("it-src", "Normanni", Q1, "q1", "Quando nacque il ducato?", ["X secolo"], lang="it"),
    ]


def _many(source: str, lang: str, n: int, prefix: str = "a") -> list[dict[str, Any]]:
    """``n`` articles of two paragraphs; article i of two sources called with the same ``prefix`` share
    their questions' SQuAD ids (the part after the colon): translations of one article."""
    rows = []
    for i in range(n):
        for j in range(2):
            context = f"Article {i} of {source}, paragraph {j}: the answer is answer{i}x{j}."
            rows.append(_row(source, f"{source} title {i}", context, f"{prefix}{i}p{j}", f"Question {i}/{j}?",
                             [f"answer{i}x{j}"], lang=lang))
    return rows


def test_paragraphs_kept_in_order_of_first_appearance_and_joined_by_blank_lines() -> None:
    build = build_long_docs(_pool(), dev_fraction=1.0, min_chars=0)  # the tiny pool: every article held out
    docs = {d.key: d for d in build.documents}
    assert docs["es-src", "Normandos"].text == f"{P1}\n\n{P2}\n\n{P3}"
    assert docs["es-src", "Normandos"].starts == (0, len(P1) + 2, len(P1) + len(P2) + 4)
    assert docs["it-src", "Normanni"].text == Q1
    assert len(build.documents) == 3


def test_every_context_is_the_paragraph_at_its_recorded_start() -> None:
    build = build_long_docs(_pool(), dev_fraction=1.0, min_chars=0)  # the tiny pool: every article held out
    docs = {(d.lang, d.name): d for d in build.documents}
    answerable = [q for q in build.questions if q.answerable]
    assert len(answerable) == 6
    for q in answerable:
        doc = docs[q.lang, q.doc]
        start, end = doc.paragraph_span(q.paragraph)
        assert q.context is not None and doc.text[start:end] == q.context
        assert doc.text.find(q.context) == start  # where the project's loader (str.find) will look
        assert all(answer in q.context for answer in q.answers)
    assert {q.id: q.paragraph for q in answerable}["es-src:q3"] == 0  # P1 again, not a new paragraph


def test_blank_answers_are_dropped_padded_ones_stripped_and_a_question_left_with_none_is_left_out() -> None:
    rows = [*_pool(), _row("es-src", "Normandos", P2, "q7", "¿Qué pasó en 1066?", ["", ""])]
    build = build_long_docs(rows, min_chars=0)
    by_id = {q.id: q for q in build.questions}
    assert by_id["es-src:q5"].answers == ("dialecto del francés antiguo",)
    assert by_id["es-src:q1"].answers == ("siglos X y XI", "X y XI")
    assert by_id["es-src:q3"].answers == ("Normandía",)  # a padded copy of an answer is the same answer
    assert "es-src:q7" not in by_id
    assert [q.id for q in build.dropped] == ["es-src:q7"]


def test_an_answer_not_at_its_start_is_refused() -> None:
    rows = _pool()
    rows[1]["answers"][0]["start"] += 1
    with pytest.raises(ValueError, match=r"pool row 2 .*'Guillermo el Conquistador' is not at"):
        build_long_docs(rows)


def test_unanswerable_rows_are_near_misses_without_doc_or_context() -> None:
    build = build_long_docs(_pool(), dev_fraction=1.0, min_chars=0)  # the tiny pool: every article held out
    row = next(q for q in build.questions if q.id == "es-src:q4").row()
    assert row["answerable"] is False and row["doc"] is None and row["answers"] == []
    assert row["near_miss"] is True and "context" not in row
    assert row["topic_doc"] == "normandos.txt"
    answered = next(q for q in build.questions if q.id == "es-src:q2").row()
    assert answered["doc"] == "normandos.txt" and answered["context"] == P2 and "near_miss" not in answered


def test_split_is_by_article_deterministic_and_independent_of_row_order() -> None:
    rows = _many("es-src", "es", 30) + _many("it-src", "it", 30)
    first = build_long_docs(rows, min_dev_articles=0, min_chars=0)
    shuffled = rows[:]
    random.Random(3).shuffle(shuffled)
    second = build_long_docs(shuffled, min_dev_articles=0, min_chars=0)
    sides = {d.key: d.split for d in first.documents}
    assert sides == {d.key: d.split for d in second.documents}
    assert {d.split for d in first.documents} == {"dev", "train"}
    per_article: dict[tuple[str, str], set[str]] = defaultdict(set)
    for q in first.questions:
        per_article[q.source, q.title].add(q.split)
        assert q.split == sides[q.source, q.title]
    assert all(len(s) == 1 for s in per_article.values())


def test_each_source_holds_out_its_fraction_and_at_least_the_minimum_up_to_half() -> None:
    rows = _many("es-src", "es", 20, prefix="e") + _many("it-src", "it", 30, prefix="i")
    for min_dev, want in [(0, {"es-src": 8, "it-src": 12}), (10, {"es-src": 10, "it-src": 12}),
                          (25, {"es-src": 10, "it-src": 15})]:
        build = build_long_docs(rows, min_dev_articles=min_dev, min_chars=0)
        assert {s.source: len(s.dev_titles) for s in build.splits} == want, min_dev


def test_translations_of_one_article_are_on_the_same_side() -> None:
    # it-src article i shares SQuAD ids (the part after the colon) with es-src article i
    rows = _many("es-src", "es", 25) + _many("it-src", "it", 25)
    build = build_long_docs(rows, min_dev_articles=0, min_chars=0)
    sides = {(d.source, d.title.rsplit(" ", 1)[-1]): d.split for d in build.documents}
    assert all(sides["es-src", str(i)] == sides["it-src", str(i)] for i in range(25))
    # unlinked (other ids), the two sources are split independently and disagree somewhere
    for row in rows:
        if row["source"] == "it-src":
            row["id"] += "-it"
    unlinked = build_long_docs(rows, min_dev_articles=0, min_chars=0)
    sides = {(d.source, d.title.rsplit(" ", 1)[-1]): d.split for d in unlinked.documents}
    assert any(sides["es-src", str(i)] != sides["it-src", str(i)] for i in range(25))


def test_assign_split_refuses_a_fraction_outside_0_1() -> None:
    with pytest.raises(ValueError, match=r"dev_fraction \(1.5\) must be above 0 and at most 1"):
        assign_split({("s", "t"): ["s:1"]}, dev_fraction=1.5)


def test_safe_file_names() -> None:
    assert safe_file_name("Sky _ (Reino Unido)") == "sky-reino-unido"
    assert safe_file_name("1973: Crisis del petróleo") == "1973-crisis-del-petroleo"
    assert safe_file_name("東京").startswith("article-")
    rows = [_row("es-src", "Año", "Uno.", "x1", "¿?", ["Uno"]), _row("es-src", "Ano", "Dos.", "x2", "¿?", ["Dos"])]
    assert [d.name for d in build_long_docs(rows, min_chars=0).documents] == ["ano.txt", "ano-2.txt"]


def _documents(folder: Path) -> dict[str, str]:
    return {p.name: p.read_bytes().decode("utf-8") for p in (folder / "docs").iterdir()}


def test_written_set_loads_with_the_question_loader_and_its_contexts_are_found(tmp_path: Path) -> None:
    build = build_long_docs(_pool(), dev_fraction=1.0, min_chars=0)  # all 3 articles held out
    summary = write_long_doc_set(tmp_path / "long-es", build, "es", {"pool": "hand-made"})
    questions = load_questions(tmp_path / "long-es" / "questions.jsonl")
    documents = _documents(tmp_path / "long-es")
    assert sorted(documents) == ["normandos.txt", "otro-tema.txt"]
    spans = locate_passages(questions, documents)
    assert spans["es-src:q2"] == (len(P1) + 2, len(P1) + 2 + len(P2))
    assert [c.id for c in questions.cases] == ["es-src:q1", "es-src:q2", "es-src:q3", "es-src:q4", "es-src:q5",
                                               "es-src:q6"]
    unanswerable = [c for c in questions.cases if not c.answerable]
    assert [(c.id, c.doc, c.near_miss) for c in unanswerable] == [("es-src:q4", None, True)]
    assert (summary.documents, summary.answerable, summary.unanswerable) == (2, 5, 1)
    # the split names every source's held-out articles, the Italian one too: training must skip them all
    assert read_held_out(tmp_path / "long-es" / "split.json") == {
        ("es-src", "Normandos"), ("es-src", "Otro tema"), ("it-src", "Normanni")}
    split = json.loads((tmp_path / "long-es" / "split.json").read_text(encoding="utf-8"))
    assert split["set"] == {"lang": "es", "sources": ["es-src"], "documents": 2, "answerable": 5, "unanswerable": 1}


def test_the_paragraph_set_asks_the_same_questions_of_one_document_per_paragraph(tmp_path: Path) -> None:
    build = build_long_docs(_pool(), dev_fraction=1.0, min_chars=0)
    write_long_doc_set(tmp_path / "long-es", build, "es")
    counts = write_paragraph_set(tmp_path / "long-es", tmp_path / "para-es")
    documents = _documents(tmp_path / "para-es")
    assert sorted(documents) == ["normandos--p000.txt", "normandos--p001.txt", "normandos--p002.txt",
                                 "otro-tema--p000.txt"]
    assert [documents[f"normandos--p00{i}.txt"] for i in range(3)] == [P1, P2, P3]
    assert counts == {"documents": 4, "questions": 6}
    long_cases = load_questions(tmp_path / "long-es" / "questions.jsonl").cases
    questions = load_questions(tmp_path / "para-es" / "questions.jsonl")
    assert [(c.id, c.question, c.answers, c.context) for c in questions.cases] == [
        (c.id, c.question, c.answers, c.context) for c in long_cases]
    by_id = {c.id: c.doc for c in questions.cases}
    assert (by_id["es-src:q2"], by_id["es-src:q3"], by_id["es-src:q4"]) == ("normandos--p001.txt",
                                                                           "normandos--p000.txt", None)
    assert locate_passages(questions, documents)["es-src:q2"] == (0, len(P2))  # the whole document now


def test_a_paragraph_set_refuses_a_context_that_is_no_paragraph(tmp_path: Path) -> None:
    write_long_doc_set(tmp_path / "long-es", build_long_docs(_pool(), dev_fraction=1.0, min_chars=0), "es")
    path = tmp_path / "long-es" / "questions.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    rows[1]["context"] = P2[:20]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(ValueError, match=r"es-src:q2 is not a paragraph of normandos\.txt"):
        write_paragraph_set(tmp_path / "long-es", tmp_path / "para-es")
    assert not (tmp_path / "para-es").exists()


def test_a_held_out_article_too_short_stays_held_out_but_is_not_written(tmp_path: Path) -> None:
    build = build_long_docs(_pool(), dev_fraction=1.0, min_chars=100)  # "Otro tema" is 42 characters, "Normandos" 206
    write_long_doc_set(tmp_path / "long-es", build, "es")
    assert sorted(_documents(tmp_path / "long-es")) == ["normandos.txt"]
    assert {c.doc for c in load_questions(tmp_path / "long-es" / "questions.jsonl").cases} == {"normandos.txt", None}
    assert ("es-src", "Otro tema") in read_held_out(tmp_path / "long-es" / "split.json")
    assert next(s for s in build.splits if s.source == "es-src").short_titles == ("Otro tema",)


def test_writing_again_replaces_the_set_and_leaves_no_temporary_folder(tmp_path: Path) -> None:
    rows = _pool()
    write_long_doc_set(tmp_path / "long-es", build_long_docs(rows, min_chars=0), "es")
    rows[0]["question"] = "¿En qué siglos vivieron los normandos?"
    write_long_doc_set(tmp_path / "long-es", build_long_docs(rows, min_chars=0), "es")
    assert [p.name for p in tmp_path.iterdir()] == ["long-es"]
    first = load_questions(tmp_path / "long-es" / "questions.jsonl").cases[0]
    assert first.question == "¿En qué siglos vivieron los normandos?"


def test_a_language_without_held_out_articles_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no held-out article of 0\+ characters in language 'pt'"):
        write_long_doc_set(tmp_path / "long-pt", build_long_docs(_pool(), min_chars=0), "pt")
    assert not (tmp_path / "long-pt").exists()


def test_real_pool_holds_out_long_articles_in_every_language_and_leaves_some_to_train() -> None:
    if not POOL.exists():
        pytest.skip(f"{POOL} is absent (the shared training pool is not on this machine)")
    build = build_long_docs(read_pool(POOL, set(LONG_DOC_SOURCES.values())))
    for lang, source in LONG_DOC_SOURCES.items():
        split = next(s for s in build.splits if s.source == source)
        articles = len({d.title for d in build.documents if d.source == source})
        # ten held out where the source has twenty or more; half of a smaller one (Portuguese: 10)
        assert len(split.dev_titles) >= min(10, articles // 2), (lang, split.dev_titles)
        assert articles - len(split.dev_titles) >= articles // 3, (lang, "too little left to train on")
        docs = build.set_documents(lang)
        assert len(docs) >= min(10, articles // 2) - 1, lang
        assert all(len(d.text) > 10_000 for d in docs), [(d.title, len(d.text)) for d in docs if len(d.text) <= 10_000]
        assert build.set_questions(lang), lang
    # no SQuAD question is on both sides through its translation
    sides: dict[str, set[str]] = defaultdict(set)
    for q in build.questions:
        sides[q.id.split(":", 1)[1]].add(q.split)
    assert all(len(s) == 1 for s in sides.values())
