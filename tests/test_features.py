"""rag.features: question cues, lexical evidence and the candidate rows, on hand-made cases."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from fakes import FAKE, FakeTermsEncoder
from helpers import MakeIndex

from rag.encoders import HashEncoder
from rag.features import (
    COLUMN,
    SENTENCE_FEATURES,
    SENTENCE_GROUPS,
    _lexical,
    candidate_sentences,
    question_cues,
    sentence_features,
)
from rag.index import open_index
from rag.retrieve import retrieve


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        ("How many points did the Panthers give up?", "number"),
        ("Combien de personnes sont portées disparues ?", "number"),
        ("Wie viele Bürger werden vermisst?", "number"),
        ("¿Cuántos ciudadanos faltan?", "number"),
        ("When did the talks take place?", "when"),
        ("Quand la rencontre a-t-elle eu lieu ?", "when"),
        ("In welchem Jahr wurde sie gegründet?", "when"),
        ("¿En qué año se fundó?", "when"),
        ("Who phoned the president?", "who"),
        ("Qui a téléphoné au président ?", "who"),
        ("Wer hat Aliyev angerufen?", "who"),
        ("¿Quién llamó al presidente?", "who"),
        ("Where was the mass grave found?", "where"),
        ("¿Dónde se encontró la fosa?", "where"),
    ],
)
def test_question_type_cues_in_four_languages(question: str, kind: str) -> None:
    assert question_cues(question).kinds == {kind}


def test_a_question_without_a_type_word_has_no_type() -> None:
    assert question_cues("What did Blinken offer?").kinds == frozenset()


def test_content_words_drop_question_words_and_keep_names_and_numbers() -> None:
    cues = question_cues("How many of the 17 prisoners did Azerbaijan return?")
    assert {"prisoners", "azerbaijan", "return", "17"} <= set(cues.content)
    assert "many" not in cues.content and "how" not in cues.content
    assert cues.numbers == {"17"} and cues.names == {"azerbaijan"}


def test_cognates_and_numbers_match_across_languages() -> None:
    cues = question_cues("Who expressed condolences for the 17 prisoners?")
    prefix, ngram, number, _novelty, _date, _num, has_name, _names = _lexical(
        cues, "Antony Blinken a exprimé ses condoléances pour les 17 prisonniers.")
    assert prefix == pytest.approx(3 / 4)  # condo-, 17, priso- match; "expressed" does not ("exprime")
    assert number == 1.0 and ngram > 0.4
    assert has_name  # "Antony Blinken" is a name the question does not hold: a who-answer
    unrelated = _lexical(cues, "Le temps était beau ce jour-là.")
    assert unrelated[0] == 0.0 and unrelated[1] < 0.1 and unrelated[2] == 0.0 and not unrelated[6]


def test_sentence_cues_for_dates_and_numbers() -> None:
    cues = question_cues("When was it signed?")
    assert _lexical(cues, "It was signed in March.")[4]
    assert _lexical(cues, "Es wurde 1992 unterzeichnet.")[4]
    assert not _lexical(cues, "It was signed by both.")[4]
    assert _lexical(cues, "Trois cents, soit 300 personnes.")[5]


@pytest.fixture
def small_index(make_index: MakeIndex):
    index_dir = make_index({
        "a.txt": "The lighthouse keeper lit the lamp at dusk. The lamp burned oil from whales.\n\n"
                 "Ships passed the rocks safely. The keeper wrote in a logbook every night.\n",
        # the same sentence again in another file: it must be a candidate once only
        "b.txt": "The lamp burned oil from whales. Gulls nested on the tower.\n",
    })
    return open_index(index_dir, FAKE)


def _retrieval(index, question: str):
    return retrieve(index, HashEncoder().encode_queries([question])[0], question, FAKE)


def test_candidates_never_repeat_a_sentence_text(small_index) -> None:
    retrieval = _retrieval(small_index, "What did the lamp burn?")
    cands = candidate_sentences(small_index, retrieval, chunks=10)
    texts = [small_index.sentences[s].text for s, _ in cands]
    assert texts.count("The lamp burned oil from whales.") == 1
    assert len(texts) == len(set(texts))
    ranks = [r for _, r in cands]
    assert ranks == sorted(ranks) and ranks[0] == 0


def test_feature_rows_and_masking(small_index) -> None:
    retrieval = _retrieval(small_index, "What did the lamp burn?")
    sf = sentence_features(small_index, retrieval, chunks=10)
    assert sf.x.shape == (len(sf.sentences), len(SENTENCE_FEATURES))
    assert np.isfinite(sf.x).all()
    assert sf.x[:, COLUMN["fused_gap"]].max() == 0.0 and sf.x[:, COLUMN["e5_gap"]].max() == 0.0
    best = sf.sentences[int(np.argmax(sf.x[:, COLUMN["fused"]]))]
    assert "lamp" in small_index.sentences[best].text
    # masking every sentence that mentions the lamp leaves none of them among the candidates
    lamp = {i for i, s in enumerate(small_index.sentences) if "lamp" in s.text}
    masked = sentence_features(small_index, retrieval, chunks=10, exclude=lamp)
    assert masked.sentences and not lamp & set(masked.sentences)
    assert masked.specificity <= sf.specificity


def _terms_index(make_index: MakeIndex, text: str) -> tuple[Any, FakeTermsEncoder]:
    """An index of one document ``text`` with latent terms (``FakeTermsEncoder``: a term per word)."""
    encoder = FakeTermsEncoder()
    return open_index(make_index({"a.txt": text}, encoder=encoder), FAKE), encoder


def test_latent_terms_are_stored_per_sentence_and_compared_with_the_question(make_index: MakeIndex) -> None:
    index, encoder = _terms_index(make_index, "Aliyev thanked Blinken for the call. The weather in Baku was mild.\n\n"
                                            "Geneva hosted the ministers.\n")
    assert index.sentence_terms is not None
    assert index.sentence_terms[0].shape == index.sentence_terms[1].shape == (len(index.sentences), 64)
    question = "Whom did Aliyev thank for the call?"
    ids, weights = encoder.encode_terms([question])
    retrieval = replace(_retrieval(index, question), query_terms=(ids[0], weights[0]))
    sf = sentence_features(index, retrieval, chunks=10)
    terms = dict(zip((index.sentences[s].text for s in sf.sentences), sf.x[:, COLUMN["terms"]], strict=True))
    # 7 question terms; 4 shared ("aliyev", "for", "the", "call") with a sentence of 6: cosine 4 / sqrt(7 x 6)
    assert terms["Aliyev thanked Blinken for the call."] == pytest.approx(4 / np.sqrt(7 * 6), abs=2e-3)
    assert terms["Geneva hosted the ministers."] == pytest.approx(1 / np.sqrt(7 * 4), abs=2e-3)
    assert max(terms, key=terms.__getitem__) == "Aliyev thanked Blinken for the call."
    assert sf.x[:, COLUMN["terms_gap"]].max() == 0.0
    # the question names Aliyev: found in one sentence only
    names = dict(zip((index.sentences[s].text for s in sf.sentences), sf.x[:, COLUMN["lex_name"]], strict=True))
    assert names["Aliyev thanked Blinken for the call."] == 1.0 and names["Geneva hosted the ministers."] == 0.0
    # without the question's terms (or an index without terms) the columns are 0, never a guess
    plain = sentence_features(index, _retrieval(index, question), chunks=10)
    assert not plain.x[:, COLUMN["terms"]].any()


def test_term_focus_weighs_the_question_terms_that_few_candidates_hold(make_index: MakeIndex) -> None:
    index, encoder = _terms_index(make_index, "Blinken and Aliyev met to talk by phone. Washington offered help with "
                                            "the border. Aliyev thanked Blinken by letter to Washington.\n")
    question = "What help was offered to Aliyev by Blinken?"
    ids, weights = encoder.encode_terms([question])
    retrieval = replace(_retrieval(index, question), query_terms=(ids[0], weights[0]))
    sf = sentence_features(index, retrieval, chunks=10)
    texts = [index.sentences[s].text for s in sf.sentences]
    assert len(texts) == 3
    plain = dict(zip(texts, sf.x[:, COLUMN["terms"]], strict=True))
    focus = dict(zip(texts, sf.x[:, COLUMN["terms_focus"]], strict=True))
    # plain cosine: the sentences about the two men share 4 of the 8 question words and win
    assert max(plain, key=plain.__getitem__) == "Aliyev thanked Blinken by letter to Washington."
    assert plain["Washington offered help with the border."] == pytest.approx(2 / np.sqrt(8 * 6), abs=2e-3)
    # weighted by rarity among the 3 candidates, log(4 / (df + 0.5)): "blinken", "aliyev", "to", "by" are in
    # 2 of them, "offered" and "help" in 1 only, "what" and "was" in none (they count in the question's norm)
    idf = {0: np.log(4 / 0.5), 1: np.log(4 / 1.5), 2: np.log(4 / 2.5)}
    norm = np.sqrt(2 * idf[0] ** 2 + 2 * idf[1] ** 2 + 4 * idf[2] ** 2)  # the question's 8 words, weights equal
    assert focus["Washington offered help with the border."] == pytest.approx(2 * idf[1] / np.sqrt(6) / norm, abs=2e-3)
    assert focus["Blinken and Aliyev met to talk by phone."] == pytest.approx(4 * idf[2] / np.sqrt(8) / norm,
                                                                              abs=2e-3)
    assert max(focus, key=focus.__getitem__) == "Washington offered help with the border."
    assert sf.x[:, COLUMN["terms_focus_gap"]].max() == 0.0
    # without the question's terms the columns are 0
    none = sentence_features(index, _retrieval(index, question), chunks=10)
    assert not none.x[:, [COLUMN["terms_focus"], COLUMN["terms_focus_gap"]]].any()


def test_a_question_without_names_misses_no_name(small_index) -> None:
    sf = sentence_features(small_index, _retrieval(small_index, "what did the lamp burn?"), chunks=10)
    assert (sf.x[:, COLUMN["lex_name"]] == 1.0).all()
    assert small_index.sentence_terms is None  # the hashing encoder makes no latent terms


def test_feature_groups_name_every_feature_once_in_column_order() -> None:
    names = [name for group in SENTENCE_GROUPS.values() for name in group]
    assert len(names) == len(set(names)) and all(SENTENCE_GROUPS.values())
    assert tuple(names) == SENTENCE_FEATURES
    assert {name: i for i, name in enumerate(SENTENCE_FEATURES)} == COLUMN


def test_every_feature_column_is_written_by_name() -> None:
    """A feature added to a group but never written would stay 0 in every row: each name must be
    assigned in rag/features.py as ``x[..., col["name"]]``, and nothing else assigned by number."""
    import inspect

    import rag.features

    source = inspect.getsource(rag.features.sentence_features)
    written = set(re.findall(r'x\[[^\]]*col\["(\w+)"\]\]\s*(?:,[^=\n]*)?=', source))
    written |= set(re.findall(r', x\[i, col\["(\w+)"\]\] =', source))
    assert written == set(SENTENCE_FEATURES), set(SENTENCE_FEATURES) ^ written
    assert not re.search(r"x\[[^\]]*\b\d+\]\s*=", source)  # no column written by number
