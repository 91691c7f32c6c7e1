"""The question path: the real default model on the seed, abstention, question validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import FAKE
from helpers import SEED_DOC, SEEDS

from rag.encoders import HashEncoder
from rag.errors import IndexMismatchError, QuestionError
from rag.pipeline import Pipeline, clean_question, ensure_index
from rag.types import Answer


def source_text(seeds: Path, doc: str) -> str:
    with open(seeds / doc, encoding="utf-8", newline="") as handle:
        return handle.read()


def assert_citations_verify(answer: Answer, seeds: Path = SEEDS) -> None:
    """Every quoted sentence and every source is the exact text at its offsets in the file."""
    for c in answer.sentences:
        assert source_text(seeds, c.doc)[c.start : c.end] == c.text, c.label
    for s in answer.sources:
        assert source_text(seeds, s.doc)[s.start : s.end] == s.text, s.label
    if not answer.abstained:
        assert answer.text == " ".join(c.text for c in answer.sentences)


# ------------------------------------------------------------------------------- real model


@pytest.mark.model
def test_what_did_blinken_offer(real_pipeline: Pipeline) -> None:
    answer = real_pipeline.ask("What did Blinken offer?")
    assert not answer.abstained, answer
    # the answer quotes that sentence (first, or as one of at most two supports)
    quoted = [c for c in answer.sentences if "délimitation des frontières" in c.text]
    assert quoted, [c.text for c in answer.sentences]
    top = quoted[0]
    assert top.doc == SEED_DOC.name and top.date == "2022-10"
    with open(SEED_DOC, encoding="utf-8", newline="") as handle:
        assert handle.read()[top.start : top.end] == top.text
    assert_citations_verify(answer)
    # confidence is now the learned probability that the quoted sentences hold the answer, not a
    # distance to the abstention threshold: it may be low on an answered question
    assert 0.0 < answer.confidence < 1.0
    assert [c.role for c in answer.sentences] == ["answer"] + ["support"] * (len(answer.sentences) - 1)


# Every seed question asked in another language than the document's, with the word its answer must quote.
OTHER_LANGUAGES = {
    "Qu'a proposé Antony Blinken ?": "Blinken",
    "Was hat Blinken angeboten?": "délimitation",
    "¿Qué ofreció Blinken?": "délimitation",
    "Combien de citoyens azerbaïdjanais sont portés disparus ?": "3 900",
    "Wie viele aserbaidschanische Bürger werden vermisst?": "3 900",
    "¿Cuántos ciudadanos azerbaiyanos están desaparecidos?": "3 900",
    "Wer hat Ilham Aliyev angerufen?": "Blinken",
}
# Measured 5 of 7 at 31bb10e: the German and Spanish "what did Blinken offer" abstain (specificity
# 0.074 against the 0.08 threshold), a known miss that the seed evaluation counts too.
OTHER_LANGUAGES_FLOOR = 5


@pytest.mark.model
def test_questions_in_other_languages(real_pipeline: Pipeline) -> None:
    answered = {}
    for question, expected in OTHER_LANGUAGES.items():
        answer = real_pipeline.ask(question)
        assert_citations_verify(answer)
        answered[question] = not answer.abstained and any(expected in c.text for c in answer.sentences)
    assert sum(answered.values()) >= OTHER_LANGUAGES_FLOOR, answered


@pytest.mark.model
def test_off_topic_question_abstains(real_pipeline: Pipeline) -> None:
    answer = real_pipeline.ask("What is the capital of Peru?")
    assert answer.abstained
    assert answer.text is None and answer.sentences == ()
    assert answer.confidence < 0.5
    assert answer.sources  # still shown, as "possibly related"
    assert_citations_verify(answer)


# ------------------------------------------------------------------------------- questions


@pytest.mark.parametrize("question", ["", "   ", "\n\t \u00a0", "\x00\x07"])
def test_empty_question_is_refused(fake_pipeline: Pipeline, question: str) -> None:
    with pytest.raises(QuestionError, match=r"^the question is empty: type a question about the documents$"):
        fake_pipeline.ask(question)


def test_over_long_question_is_refused(fake_pipeline: Pipeline) -> None:
    with pytest.raises(QuestionError, match=r"^the question is 2,001 characters long; the limit is 2,000: "
                                            r"ask a shorter question$"):
        fake_pipeline.ask("x" * 2001)
    fake_pipeline.ask("Blinken " * 250)  # exactly 2,000 is allowed
    short = Pipeline(fake_pipeline.index, fake_pipeline.encoder, FAKE.with_(max_question_chars=10))
    with pytest.raises(QuestionError, match="the limit is 10:"):
        short.ask("Who called Aliyev?")


def test_question_is_cleaned_before_use(fake_pipeline: Pipeline) -> None:
    assert clean_question("  Qui\ta  appelé\x00 Aliyev ?\n", FAKE) == "Qui a appelé Aliyev ?"
    assert clean_question("Cafe\u0301 ?", FAKE) == "Café ?"  # NFC, like the documents' text
    answer = fake_pipeline.ask("  Qu'a proposé\tAntony Blinken pour la délimitation des frontières ?\x07 ")
    assert answer.question == "Qu'a proposé Antony Blinken pour la délimitation des frontières ?"


def test_fake_pipeline_answers_with_verifiable_citations(fake_pipeline: Pipeline, seeds_copy: Path) -> None:
    answer = fake_pipeline.ask("Qu'a proposé Antony Blinken pour la délimitation des frontières ?")
    assert not answer.abstained and answer.text is not None
    assert "délimitation des frontières" in answer.text
    assert [c.number for c in answer.sentences] == list(range(1, len(answer.sentences) + 1))
    assert answer.sentences[0].label.startswith(f"[1] {SEED_DOC.name}, 2022-10, paragraph 2, chars ")
    assert_citations_verify(answer, seeds_copy)
    assert set(answer.timings_ms) >= {"encode", "search", "answer", "total"}


def test_top_k_limits_sources(fake_pipeline: Pipeline) -> None:
    assert len(fake_pipeline.ask("Blinken", top_k=2).sources) == 2
    assert len(fake_pipeline.ask("Blinken", top_k=1).sources) == 1
    assert [s.number for s in fake_pipeline.ask("Blinken").sources] == list(range(1, 6))


# ------------------------------------------------------------------------------- ensure_index


def test_ensure_index_builds_when_missing_or_changed(tmp_path: Path, seeds_copy: Path) -> None:
    index_dir = tmp_path / "index"
    first = ensure_index(seeds_copy, index_dir, FAKE, HashEncoder())
    assert first is not None and first.embedded_documents == 1
    assert ensure_index(seeds_copy, index_dir, FAKE, HashEncoder()) is None  # up to date: nothing done

    with open(seeds_copy / SEED_DOC.name, "a", encoding="utf-8") as handle:
        handle.write("\n\nLe phare de Cordouan a été construit en 1611.\n")
    again = ensure_index(seeds_copy, index_dir, FAKE, HashEncoder())
    assert again is not None and again.embedded_documents == 1

    answer = Pipeline.open(index_dir, FAKE, HashEncoder()).ask("Quand le phare de Cordouan a-t-il été construit ?")
    assert not answer.abstained and answer.text is not None and "1611" in answer.text
    assert_citations_verify(answer, seeds_copy)


def test_ensure_index_never_replaces_another_models_index(tmp_path: Path, seeds_copy: Path) -> None:
    index_dir = tmp_path / "index"
    ensure_index(seeds_copy, index_dir, FAKE, HashEncoder())
    with pytest.raises(IndexMismatchError, match=r"built with model 'hash', not 'e5': rebuild it with "
                                                 r"`rag index --full --model e5"):
        ensure_index(seeds_copy, index_dir, FAKE.with_(model="e5"))
    assert Pipeline.open(index_dir, FAKE, HashEncoder()).index.model == "hash"
