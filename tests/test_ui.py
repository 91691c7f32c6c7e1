"""rag.ui: escaping, highlighting, answer views and the app's resource holder, with the fake encoder."""

from __future__ import annotations

import html
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import HOSTILE, MakeIndex, make_harbour, visible
from hypothesis import given
from hypothesis import strategies as st

from rag.encoders import Encoder, HashEncoder
from rag.errors import DocumentsError, QuestionError
from rag.index import background_sentences, current_build
from rag.load import load_documents
from rag.pipeline import Pipeline
from rag.settings import DEFAULT_MODEL, Settings
from rag.types import Answer, Document, Quote
from rag.ui import (
    AppConfig,
    ChatMessage,
    Engine,
    RebuildStatus,
    answer_view,
    escape_html,
    escape_label,
    highlight_html,
    history_for,
    passage_span,
    readable_time,
    text_block,
)

TAG = re.compile(r"<(/?)([a-z]+)")


# ---------------------------------------------------------------------------------- escaping


@given(st.text())
def test_escape_html_shows_any_text_as_itself(text: str) -> None:
    out = escape_html(text)
    assert "\n" not in out and "\r" not in out  # one line: Markdown cannot end the HTML block early
    assert {tag for _, tag in TAG.findall(out)} <= {"br"}
    bare = re.sub(r"&#\d+;", "", out.replace("<br>", ""))  # what is left besides our references
    assert not re.search(r"[<>&*_\[\]()`$:#\\|~!]", bare)
    assert visible(out) == text.replace("\r\n", "\n").replace("\r", "\n")


def test_escape_html_on_hostile_text() -> None:
    out = escape_html(HOSTILE)
    assert "<script" not in out and "<img" not in out and "**" not in out and "](" not in out
    assert "&#60;script&#62;" in out
    assert visible(out) == HOSTILE


def test_text_block_is_one_html_block() -> None:
    block = text_block("a\n\nb :smile:", "rag-question")
    assert block == '<div class="rag-question">a<br><br>b &#58;smile&#58;</div>'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[1] a_b.txt", r"\[1\] a\_b\.txt"),
        ("<b>x</b>", r"\<b\>x\</b\>"),
        ("**x** $y$ :red[z]", r"\*\*x\*\* \$y\$ \:red\[z\]"),
        ("two\nlines", "two lines"),
    ],
)
def test_escape_label(text: str, expected: str) -> None:
    assert escape_label(text) == expected


# ---------------------------------------------------------------------------------- highlighting


def test_highlight_marks_the_span_at_document_offsets() -> None:
    text = "First one. Second <b>two</b>. Third."
    start = text.index("Second")
    end = text.index(" Third")
    out = highlight_html(text, 0, len(text), [(start, end)])
    assert out.count("<mark>") == 1
    marked = re.search(r"<mark>(.*)</mark>", out)
    assert marked and html.unescape(marked.group(1)) == "Second <b>two</b>."
    assert visible(out) == text


def test_highlight_clips_and_merges_marks() -> None:
    text = "0123456789"
    assert highlight_html(text, 2, 8, [(0, 4), (3, 5), (7, 12)]) == "<mark>234</mark>56<mark>7</mark>"
    assert highlight_html(text, 2, 8, [(8, 10)]) == "234567"
    assert highlight_html(text, 2, 8) == "234567"


@pytest.mark.parametrize(
    ("iso", "shown"),
    [
        ("2026-11-29T03:11:26+00:00", "2026-11-29 03:11 UTC"),
        ("2026-11-29T04:11:26+01:00", "2026-11-29 03:11 UTC"),
        ("2026-11-29T03:11:26", "2026-11-29 03:11"),
        ("yesterday", "yesterday"),
    ],
)
def test_readable_time(iso: str, shown: str) -> None:
    assert readable_time(iso) == shown


# ---------------------------------------------------------------------------------- passages and views


def _doc(text: str, doc_id: str = "d.txt") -> Document:
    return Document(id=doc_id, text=text, sha256="0" * 64)


def test_passage_span_prefers_the_retrieved_passage_then_the_paragraph() -> None:
    text = "One. Two.\n\nThree. Four."
    c = Quote(1, "d.txt", text.index("Four"), len(text), "Four.", 2)
    inside = Quote(1, "d.txt", text.index("Three"), len(text), "Three. Four.", 2, score=1.0)
    elsewhere = Quote(2, "d.txt", 0, 9, "One. Two.", 1, score=2.0)
    other_doc = Quote(3, "e.txt", 0, len(text), text, 1, score=3.0)
    assert passage_span(c, [elsewhere, other_doc, inside], _doc(text)) == (inside.start, inside.end)
    assert passage_span(c, [elsewhere], _doc(text)) == (text.index("Three"), len(text))
    assert passage_span(c, [], None) == (c.start, c.end)


def test_answer_view_quotes_cites_and_highlights(fake_pipeline: Pipeline) -> None:
    answer = fake_pipeline.ask("délimitation des frontières ouverture des lignes de transport")
    assert not answer.abstained
    view = answer_view(answer, fake_pipeline.index)
    assert not view.abstained and view.heading == "Sources"
    assert "délimitation des frontières" in visible(view.html)
    assert len(view.passages) == len(answer.sentences)
    for citation, passage in zip(answer.sentences, view.passages):
        assert f"[{citation.number}]" in visible(view.html)
        assert passage.label.startswith(rf"\[{citation.number}\] 000\_5af0c40136177a6e\.txt")
        assert "2022\\-10" in passage.label and f"paragraph {citation.paragraph}" in passage.label
        marked = re.findall(r"<mark>(.*?)</mark>", passage.html)
        assert [html.unescape(m) for m in marked] == [citation.text]
        assert citation.text in visible(passage.html)


def test_answer_view_abstains_plainly_with_related_passages(tmp_path: Path) -> None:
    engine = Engine(AppConfig(make_harbour(tmp_path / "seeds"), tmp_path / "index", "hash"))
    engine.start()
    answer, view = engine.ask("Quantum chromodynamics gluon confinement?")
    assert answer.abstained and answer.sources
    assert view.abstained and view.heading == "Possibly related passages"
    assert visible(view.html) == "I found no answer to this question in the documents. These passages may be related:"
    assert len(view.passages) == len(answer.sources)
    assert all("<mark>" not in p.html for p in view.passages)
    assert answer.sources[0].text in visible(view.passages[0].html)
    assert "confidence" not in visible(view.caption)  # no figure that reads as confidence in an answer


def test_answer_view_does_not_highlight_a_quote_the_source_does_not_hold(fake_pipeline: Pipeline) -> None:
    doc = next(iter(fake_pipeline.index.documents.values()))
    forged = Quote(1, doc.id, 0, 10, "not there", 1, doc.date)
    view = answer_view(Answer("q", False, 0.9, sentences=(forged,)), fake_pipeline.index)
    assert "<mark>" not in view.passages[0].html
    assert "not there" in visible(view.passages[0].html)


def test_answer_view_marks_the_words_that_answer_inside_the_quote(fake_pipeline: Pipeline) -> None:
    doc = next(iter(fake_pipeline.index.documents.values()))
    s = fake_pipeline.index.sentences[0]
    words = s.text.split()[1]
    at = s.start + s.text.index(words)
    quoted = Quote(1, s.doc, s.start, s.end, s.text, s.paragraph, doc.date, role="answer", reader=0.9,
                   span=(at, at + len(words)))
    assert quoted.span_text == words
    view = answer_view(Answer("q", False, 0.9, sentences=(quoted,)), fake_pipeline.index)
    assert f'<mark class="rag-span">{html.escape(words)}</mark>' in view.html
    assert visible(view.html).startswith(f"«{s.text}»")  # the quote itself is unchanged
    plain = answer_view(Answer("q", False, 0.9, sentences=(replace(quoted, span=None),)), fake_pipeline.index)
    assert "rag-span" not in plain.html


def test_answer_view_says_when_a_follow_up_used_the_conversation(fake_pipeline: Pipeline) -> None:
    answer = Answer("And Aliyev?", True, 0.1, rewritten_question="What did Blinken offer? And Aliyev?")
    view = answer_view(answer, fake_pipeline.index)
    assert "read as a follow-up: «What did Blinken offer? And Aliyev?»" in visible(view.caption)


def test_history_for_keeps_the_questions_in_order() -> None:
    messages = [ChatMessage("user", "first"), ChatMessage("assistant", "an error"),
                ChatMessage("user", "  "), ChatMessage("user", "second")]
    assert history_for(messages) == ["first", "second"]
    assert messages[1].is_error and not messages[0].is_error


# ---------------------------------------------------------------------------------- config and engine


def test_config_from_env_resolves_relative_paths(tmp_path: Path) -> None:
    config = AppConfig.from_env({"RAG_SEEDS": "docs", "RAG_INDEX": "/abs/idx"}, base=tmp_path)
    assert config == AppConfig(tmp_path / "docs", Path("/abs/idx"), None)
    assert AppConfig.from_env({}, base=tmp_path) == AppConfig(tmp_path / "seeds", tmp_path / "index", None)
    assert AppConfig.from_env({"RAG_MODEL": "hash"}, base=tmp_path).model == "hash"


def test_config_uses_the_model_of_the_existing_index(tmp_path: Path, seeds_copy: Path) -> None:
    config = AppConfig(seeds_copy, tmp_path / "index")
    assert config.settings().model == DEFAULT_MODEL
    Engine(AppConfig(seeds_copy, tmp_path / "index", "hash")).start()
    assert config.settings().model == "hash"


def test_engine_builds_once_then_answers(tmp_path: Path) -> None:
    seeds = make_harbour(tmp_path / "seeds")
    engine = Engine(AppConfig(seeds, tmp_path / "index", "hash"))
    assert not engine.ready
    calls: list[tuple[int, int]] = []
    report = engine.start(lambda done, total: calls.append((done, total)))
    assert report is not None and report.documents == 2 and engine.ready
    assert calls[0][0] == 0 and calls[-1][0] == calls[-1][1] > 0
    assert engine.start() is None  # already loaded: nothing is rebuilt or reopened
    answer, view = engine.ask("What did the council offer?")
    assert answer.text and "offered a grant" in answer.text
    assert "offered a grant" in visible(view.html)
    facts = engine.facts()
    assert (facts.documents, facts.chunks, facts.sentences, facts.model) == (2, report.chunks, report.sentences, "hash")
    assert facts.built_at == engine.pipeline.index.built_at


def test_engine_start_reuses_an_up_to_date_index_and_updates_a_stale_one(tmp_path: Path) -> None:
    seeds = make_harbour(tmp_path / "seeds")
    Engine(AppConfig(seeds, tmp_path / "index", "hash")).start()
    first = current_build(tmp_path / "index").name
    assert Engine(AppConfig(seeds, tmp_path / "index", "hash")).start() is None
    assert current_build(tmp_path / "index").name == first
    (seeds / "new.txt").write_text("The museum of Port Nelle opened in 1990.", encoding="utf-8")
    report = Engine(AppConfig(seeds, tmp_path / "index", "hash")).start()
    assert report is not None and report.documents == 3
    assert current_build(tmp_path / "index").name != first


def test_engine_passes_history_and_top_k(tmp_path: Path) -> None:
    engine = Engine(AppConfig(make_harbour(tmp_path / "seeds"), tmp_path / "index", "hash"))
    engine.start()
    answer, _ = engine.ask("quantum gluon", history=["What did the council offer?"], top_k=1)
    assert answer.rewritten_question == "What did the council offer? quantum gluon"
    assert len(answer.sources) == 1


def test_engine_rebuild_answers_from_the_old_index_until_the_new_one_is_in_place(tmp_path: Path) -> None:
    seeds = make_harbour(tmp_path / "seeds")
    engine = Engine(AppConfig(seeds, tmp_path / "index", "hash"))
    engine.start()
    old = engine.pipeline.index.path
    (seeds / "new.txt").write_text("The museum of Port Nelle opened in 1990.", encoding="utf-8")
    during: list[tuple[Path, bool]] = []

    def progress(done: int, total: int) -> None:
        answer, _ = engine.ask("When did the museum open?")
        during.append((engine.pipeline.index.path, "museum" in (answer.text or "")))

    report = engine.rebuild(progress)
    assert report.documents == 3 and report.embedded_documents == 3  # a full rebuild
    assert during and all(path == old and not found for path, found in during)
    assert engine.pipeline.index.path != old
    answer, _ = engine.ask("When did the museum open?")
    assert answer.text == "The museum of Port Nelle opened in 1990."
    assert engine.facts().documents == 3


def test_engine_rebuilds_in_the_background(tmp_path: Path) -> None:
    seeds = make_harbour(tmp_path / "seeds")
    engine = Engine(AppConfig(seeds, tmp_path / "index", "hash"))
    engine.start()
    assert engine.rebuild_status() == RebuildStatus()
    (seeds / "new.txt").write_text("The museum of Port Nelle opened in 1990.", encoding="utf-8")
    started = engine.start_rebuild()
    assert started.number == 1 and started.running
    status = engine.rebuild_status(wait=60)
    assert not status.running and status.error is None
    assert status.report is not None and status.report.documents == 3
    background = len(set(background_sentences([d.lang for d in load_documents(seeds).documents])))
    assert (status.done, status.total) == (status.report.chunks + status.report.sentences + background,) * 2
    assert engine.ask("When did the museum open?")[0].text == "The museum of Port Nelle opened in 1990."
    assert engine.start_rebuild().number == 2
    assert engine.rebuild_status(wait=60).number == 2


def test_a_failed_background_rebuild_keeps_the_old_index(tmp_path: Path) -> None:
    seeds = make_harbour(tmp_path / "seeds")
    engine = Engine(AppConfig(seeds, tmp_path / "index", "hash"))
    engine.start()
    before = engine.pipeline.index.path
    shutil.rmtree(seeds)
    engine.start_rebuild()
    status = engine.rebuild_status(wait=60)
    assert not status.running and status.report is None
    assert status.error is not None and "does not exist" in status.error
    assert engine.pipeline.index.path == before
    assert "1887" in (engine.ask("When did the harbour open?")[0].text or "")


def test_engine_follows_a_build_made_by_another_process(tmp_path: Path, make_index: MakeIndex) -> None:
    seeds = make_harbour(tmp_path / "seeds")
    engine = Engine(AppConfig(seeds, tmp_path / "index", "hash"))
    engine.start()
    shutil.copy(seeds / "harbour.txt", seeds / "copy.txt")
    make_index(seeds, index=tmp_path / "index", settings=engine.settings, encoder=engine.encoder)
    assert engine.facts().documents == 3


def test_engine_keeps_answering_when_the_index_on_disk_is_replaced_by_another_model(tmp_path: Path,
                                                                                    make_index: MakeIndex) -> None:
    seeds = make_harbour(tmp_path / "seeds")
    engine = Engine(AppConfig(seeds, tmp_path / "index", "hash"))
    engine.start()
    before = engine.pipeline.index.path
    other = Settings(model="hash-other")
    make_index(seeds, index=tmp_path / "index", settings=other, encoder=HashEncoder(), full=True)
    assert engine.pipeline.index.path == before
    assert "1887" in (engine.ask("When did the harbour open?")[0].text or "")
    (tmp_path / "index" / "CURRENT").unlink()
    assert engine.facts().documents == 2


def test_engine_loads_the_model_once(tmp_path: Path) -> None:
    made: list[str] = []

    def factory(settings: Settings) -> Encoder:
        made.append(settings.model)
        return HashEncoder()

    engine = Engine(AppConfig(make_harbour(tmp_path / "seeds"), tmp_path / "index", "hash"), factory)
    engine.start()
    engine.ask("What did the council offer?")
    engine.rebuild()
    engine.ask("What did the council offer?")
    assert made == ["hash"]


def test_engine_errors_are_library_errors(tmp_path: Path) -> None:
    engine = Engine(AppConfig(tmp_path / "missing", tmp_path / "index", "hash"))
    with pytest.raises(DocumentsError, match="does not exist"):
        engine.start()
    assert not engine.ready
    engine = Engine(AppConfig(make_harbour(tmp_path / "seeds"), tmp_path / "index", "hash"))
    engine.start()
    with pytest.raises(QuestionError, match="empty"):
        engine.ask("   ")
