"""The shipped reader's judgement on hand-made cases in English, French, German and Spanish.

Each case: a question, the sentence that answers it, and a sentence about the same people and
things that does not (a same-topic distractor). The answering sentence must get the higher
probability; asked a question that neither sentence answers (a near miss), the reader must give
both a low probability. Written before the reader was trained; never tuned on.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.model.export import ensure_model
from rag.reader import Reader
from rag.settings import Paths

pytestmark = pytest.mark.model

# (question, answering sentence, same-topic distractor, a question neither answers)
CASES = {
    "en": [
        ("When did the bridge open to traffic?",
         "The bridge opened to traffic in May 1937, after four years of construction.",
         "The bridge was designed by Joseph Strauss, who had built more than 400 bridges.",
         "How much did the bridge's lighting cost?"),
        ("Who founded the company?",
         "The company was founded by Anna Berg, a chemist from Uppsala, in 1921.",
         "The company sells its products in more than forty countries.",
         "How many employees does the company have in Brazil?"),
    ],
    "fr": [
        ("Où le traité a-t-il été signé ?",
         "Le traité a été signé à Lisbonne le 13 décembre 2007 par les chefs d'État.",
         "Le traité modifie les règles de vote au sein du Conseil.",
         "Combien de pages compte la version anglaise du traité ?"),
        ("Qui a remporté l'élection ?",
         "Marie Dubois a remporté l'élection avec 54 % des voix au second tour.",
         "L'élection s'est déroulée dans un climat tendu, selon les observateurs.",
         "Quel âge a le maire sortant ?"),
    ],
    "de": [
        ("Wie hoch ist der Turm?",
         "Der Turm ist 368 Meter hoch und damit das höchste Bauwerk der Stadt.",
         "Der Turm wurde zwischen 1965 und 1969 errichtet.",
         "Wer hat den Turm im Jahr 2010 gekauft?"),
        ("Wofür erhielt sie den Preis?",
         "Sie erhielt den Preis für ihre Arbeiten zur Struktur von Proteinen.",
         "Der Preis wird seit 1901 jedes Jahr in Stockholm verliehen.",
         "Wie viele Kinder hat sie?"),
    ],
    "es": [
        ("¿Cuántos habitantes tiene la ciudad?",
         "La ciudad tiene unos 850.000 habitantes según el censo de 2020.",
         "La ciudad fue fundada por los romanos en el siglo I antes de Cristo.",
         "¿Quién diseñó el escudo de la ciudad?"),
        ("¿Qué ofreció el gobierno a los agricultores?",
         "El gobierno ofreció a los agricultores ayudas de 200 euros por hectárea.",
         "Los agricultores protestaron durante tres semanas frente al ministerio.",
         "¿Cuándo dimitió el ministro de Agricultura?"),
    ],
}


@pytest.fixture(scope="module")
def reader() -> Reader:
    return Reader(ensure_model(Paths.from_env().cache).path)


@pytest.mark.parametrize("lang", sorted(CASES))
def test_the_answering_sentence_outranks_a_same_topic_distractor(reader: Reader, lang: str) -> None:
    for question, answer, distractor, _ in CASES[lang]:
        said = reader.read(question, [distractor, answer], ["", ""])
        assert said[1].prob > said[0].prob, (question, said)
        assert said[1].prob > 0.5, (question, said[1])


# The first reader (2026-12-05, 45 min of training) missed the German case (a built-in-year sentence
# 0.58 for a bought-in-year question), marked as a known miss; the reader trained further gets it.
@pytest.mark.parametrize("lang", sorted(CASES))
def test_a_near_miss_gets_a_low_probability(reader: Reader, lang: str) -> None:
    for _, answer, distractor, unanswered in CASES[lang]:
        said = reader.read(unanswered, [answer, distractor], ["", ""])
        assert max(r.prob for r in said) < 0.5, (unanswered, said)


def test_the_span_is_the_words_that_answer(reader: Reader) -> None:
    question, answer = CASES["en"][0][:2]
    [reading] = reader.read(question, [answer], [""])
    assert reading.span is not None
    words = answer[reading.span[0] : reading.span[1]]
    assert "1937" in words and words == words.strip()


def test_the_shipped_weights_are_checked(tmp_path: Path) -> None:
    from rag.reader import reader_record

    record = reader_record()
    assert record["layers"] >= 1 and len(record["sha256"]) == 64


def test_the_pipeline_reads_the_best_sentences_and_shows_what_the_reader_said(real_index: Path) -> None:
    from rag.pipeline import Pipeline
    from rag.settings import Settings

    pipe = Pipeline.open(real_index, Settings(reader=True))
    traced = pipe.ask_traced("What did Blinken offer?")
    answer = traced.answer
    assert not answer.abstained and answer.timings_ms["read"] > 0
    stage_reads = len(traced.decision.readings)
    assert 1 <= stage_reads <= 12
    assert all(s.reader is not None and 0 <= s.reader <= 1 for s in answer.sentences)
    for s in answer.sentences:  # a span is always inside its quote
        if s.span is not None:
            assert s.start <= s.span[0] < s.span[1] <= s.end and s.span_text and s.span_text in s.text
    # the reader off: the scorer alone, nothing read, nothing shown of it
    off = Pipeline.open(real_index, Settings(reader=False)).ask_traced("What did Blinken offer?")
    assert off.decision.readings == {} and off.answer.timings_ms["read"] == 0
    assert all(s.reader is None and s.span is None for s in off.answer.sentences)
