"""app.py driven by Streamlit's AppTest (no browser), on temporary documents and the fake encoder."""

from __future__ import annotations

import html
import re
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import streamlit as st
from helpers import HOSTILE, ROOT, make_harbour, visible  # tests/ is on sys.path (no __init__.py)
from streamlit.testing.v1 import AppTest

import rag.index.build
from rag.index import current_build
from rag.pipeline import Pipeline
from rag.types import Answer

APP = ROOT / "app.py"
TIMEOUT = 120


@pytest.fixture
def seeds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The app pointed at a fresh documents folder and index with the hashing encoder."""
    folder = make_harbour(tmp_path / "seeds")
    monkeypatch.setenv("RAG_SEEDS", str(folder))
    monkeypatch.setenv("RAG_INDEX", str(tmp_path / "index"))
    monkeypatch.setenv("RAG_MODEL", "hash")
    st.cache_resource.clear()
    yield folder
    st.cache_resource.clear()


def start() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def ask(at: AppTest, question: str) -> AppTest:
    at.chat_input[0].set_value(question).run()
    assert not at.exception, at.exception
    return at


def shown(element_list: object) -> list[str]:
    """The visible text of a list of markdown elements."""
    return [visible(m.value) for m in element_list]  # type: ignore[attr-defined]


def test_chat_round_trip_with_citation(seeds: Path) -> None:
    at = start()
    facts = at.sidebar.markdown[0].value
    assert "Documents: 2" in facts and "Model: hash" in facts and "Built at:" in facts
    ask(at, "What did the council offer?")
    user, reply = at.chat_message
    assert user.name == "user" and shown(user.markdown) == ["What did the council offer?"]
    assert reply.name == "assistant"
    quoted = reply.markdown[0].value
    assert "«The council offered a grant to repair the pier.»" in visible(quoted)
    assert "<strong>[" in quoted
    labels = [e.label for e in reply.expander]
    assert labels and all(re.match(r"\\\[\d\\\] harbour\\\.txt · 2023\\-05 · paragraph 2$", lab) for lab in labels)
    # one source per quoted sentence, with that sentence highlighted inside its passage
    quotes = re.findall(r"«(.*?)»\xa0\[(\d)\]", visible(quoted))
    assert "The council offered a grant to repair the pier." in [q for q, _ in quotes]
    assert len(reply.expander) == len(quotes)
    for (quote, number), expander in zip(quotes, reply.expander):
        passage = expander.markdown[0].value
        assert expander.label.startswith(rf"\[{number}\]")
        assert [html.unescape(m) for m in re.findall(r"<mark>(.*?)</mark>", passage)] == [quote]
        assert "paragraph 2 · characters" in visible(passage)
    # history is kept for the session: a second question adds to it
    ask(at, "When did the harbour open?")
    assert [m.name for m in at.chat_message] == ["user", "assistant", "user", "assistant"]
    assert "opened in 1887" in visible(at.chat_message[3].markdown[0].value)


def test_abstention_says_so_and_lists_related_passages(seeds: Path) -> None:
    at = ask(start(), "Quantum chromodynamics gluon confinement?")
    reply = at.chat_message[-1]
    texts = shown(reply.markdown)
    assert texts[0].startswith("I found no answer to this question in the documents.")
    assert "**Possibly related passages**" in [m.value for m in reply.markdown]
    assert len(reply.expander) >= 2
    assert all("<mark>" not in e.markdown[0].value for e in reply.expander)


def test_hostile_document_text_is_shown_escaped(seeds: Path) -> None:
    at = ask(start(), "What does the zebra report say about zebras? <b>**now**</b>")
    everything = [m.value for m in at.markdown if m.value not in ("**Sources**", "**Possibly related passages**")]
    assert not any(re.search(r"<(script|img|b)\b", v) or "**" in v or "](" in v for v in everything)
    reply = at.chat_message[-1]
    assert HOSTILE in visible(reply.markdown[0].value)
    assert shown(at.chat_message[0].markdown) == ["What does the zebra report say about zebras? <b>**now**</b>"]
    label = reply.expander[0].label
    assert label.startswith(r"\[1\] \*zebra\*\_\[x\]\(y\)\.md")
    assert HOSTILE in visible(reply.expander[0].markdown[0].value)


def test_follow_up_passes_the_earlier_questions(seeds: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    real_ask = Pipeline.ask

    def spy(self: Pipeline, question: str, history: Sequence[str] = (), top_k: int | None = None) -> Answer:
        seen.append(list(history))
        return real_ask(self, question, history=history, top_k=top_k)

    monkeypatch.setattr(Pipeline, "ask", spy)
    at = ask(start(), "What did the council offer?")
    ask(at, "Quantum gluons?")
    assert seen == [[], ["What did the council offer?"]]
    caption = visible(at.chat_message[-1].caption[0].value)
    assert "read as a follow-up: «What did the council offer? Quantum gluons?»" in caption


def test_model_and_index_load_once(seeds: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    real_open = Pipeline.open.__func__  # type: ignore[attr-defined]

    def counting_open(cls: type[Pipeline], *args: Any, **kwargs: Any) -> Pipeline:
        opened.append(str(args[0]))
        return real_open(cls, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "open", classmethod(counting_open))
    at = ask(start(), "What did the council offer?")
    ask(at, "When did the harbour open?")
    second = ask(start(), "When did the harbour open?")  # another chat of the same process
    assert len(opened) == 1
    assert "opened in 1887" in visible(second.chat_message[-1].markdown[0].value)


def test_sidebar_top_k_examples_and_clear(seeds: Path) -> None:
    (seeds / "broken.txt").write_bytes(b"\x00\x01binary")
    at = start()
    assert any(c.value.startswith(r"Skipped broken\.txt\: binary file") for c in at.sidebar.caption)
    at.sidebar.slider(key="top_k").set_value(1).run()
    at.sidebar.button(key="example-0").click().run()
    assert not at.exception
    user, reply = at.chat_message
    assert shown(user.markdown) == ["What did Blinken offer?"]
    assert len(reply.expander) <= 1
    at.sidebar.button(key="clear").click().run()
    assert len(at.chat_message) == 0


def test_rebuild_from_the_sidebar_keeps_answering_from_the_old_index(
    seeds: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = start()
    index = seeds.parent / "index"
    before = current_build(index).name
    (seeds / "museum.txt").write_text("The museum of Port Nelle opened in 1990.", encoding="utf-8")
    gate = threading.Event()
    real_encode = rag.index.build.encode_passages

    def held(*args: Any, **kwargs: Any) -> np.ndarray:
        assert gate.wait(TIMEOUT), "the test never let the rebuild go on"
        return real_encode(*args, **kwargs)

    monkeypatch.setattr(rag.index.build, "encode_passages", held)
    at.sidebar.button(key="rebuild").click().run()
    assert not at.exception
    assert at.sidebar.button(key="rebuild").disabled
    assert any("until the new one is in place" in c.value for c in at.sidebar.caption)
    # mid-build: the old index answers, and knows nothing of the new document
    ask(at, "When did the harbour open?")
    assert "opened in 1887" in visible(at.chat_message[-1].markdown[0].value)
    ask(at, "When did the museum open?")
    assert "1990" not in visible(at.chat_message[-1].markdown[0].value)
    assert current_build(index).name == before

    gate.set()
    deadline = time.monotonic() + TIMEOUT
    while not at.sidebar.success and time.monotonic() < deadline:
        time.sleep(0.2)
        at.run()
    assert at.sidebar.success[0].value.startswith("Index rebuilt: 3 documents")
    assert not at.sidebar.button(key="rebuild").disabled
    assert current_build(index).name != before
    assert "Documents: 3" in at.sidebar.markdown[0].value
    ask(at, "When did the museum open?")
    assert "«The museum of Port Nelle opened in 1990.»" in visible(at.chat_message[-1].markdown[0].value)


def test_library_errors_become_messages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_SEEDS", str(tmp_path / "nowhere"))
    monkeypatch.setenv("RAG_INDEX", str(tmp_path / "index"))
    monkeypatch.setenv("RAG_MODEL", "hash")
    st.cache_resource.clear()
    at = start()
    assert len(at.error) == 1 and "does not exist" in at.error[0].value
    ask(at, "What did the council offer?")
    assert "No index is loaded" in at.chat_message[-1].error[0].value
    st.cache_resource.clear()


def test_question_errors_become_messages(seeds: Path) -> None:
    at = ask(start(), "x" * 3000)
    reply = at.chat_message[-1]
    assert reply.error and "ask a shorter question" in reply.error[0].value


def test_the_local_app_shows_no_deploy_button() -> None:
    import tomllib

    # toolbarMode "developer" shows a "Deploy" button (seen with headless Chromium); "minimal" shows
    # only what the app itself sets: a local tool has nothing to deploy
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["client"]["toolbarMode"] == "minimal"
    assert config["server"]["address"] == "127.0.0.1" and config["browser"]["gatherUsageStats"] is False
