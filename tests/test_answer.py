"""Stage 6, answer: the shape of an answer (best sentence first, supports, no repeats) and which
threshold applies, for every model alias; on the fake encoder."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace

import numpy as np
import pytest
from fakes import FAKE, FakeTermsEncoder
from helpers import MakeIndex

from rag.answer import (
    CALIBRATION,
    UNCALIBRATED,
    abstain_threshold,
    calibration,
    choice_of,
    has_terms,
    learned,
    make_answer,
)
from rag.encoders import HashEncoder
from rag.errors import SettingsError
from rag.evaluate import normalise_text
from rag.features import sentence_features
from rag.pipeline import Pipeline
from rag.retrieve import retrieve
from rag.scorer import SCORER, SCORER_NO_TERMS, bundled_model
from rag.settings import MODEL_ALIASES, Settings, canonical_model

ALIASES = {**MODEL_ALIASES, "e5+use:0.35": "e5+use", " e5 ": "e5", "e5+use:0.350": "e5+use"}


def test_the_calibration_table_is_keyed_by_canonical_specs_only() -> None:
    assert all(canonical_model(spec) == spec for spec in CALIBRATION)


@pytest.mark.parametrize(("alias", "canonical"), ALIASES.items())
def test_every_alias_gets_the_calibrated_threshold_of_its_canonical_spec(alias: str, canonical: str) -> None:
    settings = Settings(model=alias)
    assert settings.model == canonical
    assert canonical in CALIBRATION
    assert calibration(settings) == CALIBRATION[canonical]


def test_default_abstains_by_e5_uses_learned_model(fake_pipeline: Pipeline) -> None:
    """``--model default`` once fell back to the uncalibrated threshold (0.1) instead of e5+use's.

    e5+use abstains by its learned answer model (its features include the specificity), so
    ``default`` must too: across specificities from well below to well above every threshold, each
    abstention is the learned model's decision, and somewhere that decision differs both from
    e5+use's calibrated specificity rule and from the uncalibrated one. (Comparing ``default`` with
    ``e5+use`` could not fail: both are the same settings once the alias is resolved. Four fixed
    specificities could not fail either when the specificity rule decided in the learned model's
    place: they fell where both rules agree.)"""
    index = fake_pipeline.index
    question = "Qu'a proposé Antony Blinken pour la délimitation des frontières ?"
    found = retrieve(index, fake_pipeline.encoder.encode_queries([question])[0], question, fake_pipeline.settings)
    default = Settings(model="default")
    assert learned(default) and abstain_threshold(default) == bundled_model(SCORER).threshold
    assert not has_terms(index, found)  # the hashing encoder makes no latent terms: the scorer without them
    threshold = abstain_threshold(default, terms=False)
    assert threshold == bundled_model(SCORER_NO_TERMS).threshold
    rules = {"e5+use's specificity rule": CALIBRATION["e5+use"][0], "the uncalibrated rule": UNCALIBRATED[0]}
    differs = dict.fromkeys(rules, False)
    seen = set()
    for specificity in np.arange(-0.3, 0.5, 0.01):
        between = replace(found, background=max(found.sentence_cosine.values()) - specificity)
        got = make_answer(index, between, default, question)
        chosen = choice_of(index, between, default)
        assert got.abstained == (chosen.answerable < threshold), (between.specificity, chosen.answerable)
        for rule, cut in rules.items():
            differs[rule] |= got.abstained != (between.specificity < cut)
        seen.add(chosen.answerable)
    assert len(seen) > 1  # the specificity is one of the answer model's features
    assert all(differs.values()), differs  # the learned decision is neither specificity rule


def test_an_explicit_threshold_overrides_the_calibrated_one() -> None:
    assert calibration(Settings(model="default", abstain_threshold=0.5))[0] == 0.5


REPEATED = "The keeper lit the lamp of the lighthouse at dusk every evening."


@pytest.fixture
def pipeline(make_index: MakeIndex) -> Pipeline:
    # web pages repeat sentences (menus, disclaimers): the repeat must be quoted once only
    index_dir = make_index({
        "a.txt": f"{REPEATED} The lamp burned whale oil until 1850.\n\n"
                 "Ships passed the rocks safely in winter. The keeper wrote in a logbook every night.\n",
        "b.txt": f"{REPEATED} Gulls nested on the tower of the lighthouse.\n",
        "c.txt": f"{REPEATED}\n\n{REPEATED} The lamp of the lighthouse was electric after 1920.\n",
    })
    # no threshold: these tests are about the shape of an answer, not about abstaining
    return Pipeline.open(index_dir, FAKE.with_(abstain_threshold=-1.0), HashEncoder())


QUESTIONS = ["When did the keeper light the lamp of the lighthouse?", "What did the lamp burn?",
             "Where did gulls nest?", "Who wrote in a logbook?", "the lamp of the lighthouse"]


@pytest.mark.parametrize("question", QUESTIONS)
def test_an_answer_never_quotes_the_same_text_twice(pipeline: Pipeline, question: str) -> None:
    answer = pipeline.ask(question)
    assert not answer.abstained and answer.sentences
    texts = [normalise_text(c.text) for c in answer.sentences]
    assert len(texts) == len(set(texts)), texts
    assert len(answer.sentences) <= pipeline.settings.max_answer_sentences


@pytest.mark.parametrize("question", QUESTIONS)
def test_the_best_sentence_comes_first_and_is_the_only_answer_role(pipeline: Pipeline, question: str) -> None:
    index, settings = pipeline.index, pipeline.settings
    retrieval = retrieve(index, HashEncoder().encode_queries([question])[0], question, settings)
    answer = make_answer(index, retrieval, settings)
    assert [c.role for c in answer.sentences] == ["answer"] + ["support"] * (len(answer.sentences) - 1)
    assert [c.number for c in answer.sentences] == list(range(1, len(answer.sentences) + 1))
    # the first sentence is the candidate the learned model scores highest, whatever its place in the text
    # (the scorer trained without latent terms: the hashing encoder makes none)
    sf = sentence_features(index, retrieval, settings.answer_chunks)
    best = sf.sentences[int(np.argmax(bundled_model(SCORER_NO_TERMS).sentence.logit(sf.x)))]
    assert (answer.sentences[0].doc, answer.sentences[0].start) == (index.sentences[best].doc,
                                                                     index.sentences[best].start)
    probs = [c.score for c in answer.sentences]
    assert probs == sorted(probs, reverse=True)
    assert all(p >= bundled_model(SCORER_NO_TERMS).support_min for p in probs[1:])


def test_a_threshold_above_every_confidence_abstains_with_related_passages(pipeline: Pipeline) -> None:
    strict = Pipeline(pipeline.index, pipeline.encoder, pipeline.settings.with_(abstain_threshold=2.0))
    answer = strict.ask(QUESTIONS[0])
    assert answer.abstained and answer.sentences == () and answer.text is None and answer.sources


def test_confidence_is_the_learned_probability_for_the_trained_model(pipeline: Pipeline) -> None:
    # the hash encoder is not what the answer model was trained on: it keeps the specificity rule
    index, settings = pipeline.index, pipeline.settings
    retrieval = retrieve(index, HashEncoder().encode_queries([QUESTIONS[1]])[0], QUESTIONS[1], settings)
    fallback = choice_of(index, retrieval, settings)
    learned = choice_of(index, retrieval, settings.with_(model="e5+use"))
    assert learned.sentences == fallback.sentences
    assert 0.0 < learned.confidence < 1.0 and 0.0 < fallback.confidence < 1.0
    assert learned.confidence != fallback.confidence


def test_support_min_setting_overrides_the_learned_one(pipeline: Pipeline) -> None:
    alone = Pipeline(pipeline.index, pipeline.encoder, pipeline.settings.with_(support_min=1.0))
    every = Pipeline(pipeline.index, pipeline.encoder, pipeline.settings.with_(support_min=0.0))
    for question in QUESTIONS:
        assert len(alone.ask(question).sentences) == 1
        assert len(every.ask(question).sentences) == 3  # every candidate qualifies; near-repeats are not quoted
        assert every.ask(question).sentences[0] == alone.ask(question).sentences[0]


def test_support_min_must_be_a_probability() -> None:
    with pytest.raises(SettingsError, match=r"support_min must be between 0 and 1"):
        Settings(support_min=1.5)


@pytest.mark.parametrize("terms", [True, False])
def test_latent_terms_setting_decides_the_index_the_question_and_the_scorer(make_index: MakeIndex,
                                                                           terms: bool) -> None:
    settings = FAKE.with_(latent_terms=terms)
    index_dir = make_index({"a.txt": f"{REPEATED} The lamp burned whale oil until 1850.\n"}, settings=settings,
                           encoder=FakeTermsEncoder())
    pipe = Pipeline.open(index_dir, settings, FakeTermsEncoder())
    traced = pipe.ask_traced("What did the lamp burn?")
    assert (pipe.index.sentence_terms is not None) is terms
    assert (traced.retrieval.query_terms is not None) is terms
    assert has_terms(pipe.index, traced.retrieval) is terms
    assert ("encode.terms" in traced.answer.timings_ms) is terms
    # the answer is chosen by the scorer trained with latent terms exactly when it has them
    index, retrieval = pipe.index, traced.retrieval
    sf = sentence_features(index, retrieval, settings.answer_chunks)
    model = bundled_model(SCORER if terms else SCORER_NO_TERMS)
    best = sf.sentences[int(np.argmax(model.sentence.logit(sf.x)))]
    assert (traced.answer.sentences[0].doc, traced.answer.sentences[0].start) == (
        index.sentences[best].doc, index.sentences[best].start)
    learned = settings.with_(model="e5+use")
    assert abstain_threshold(learned, terms) == model.threshold
    assert abstain_threshold(learned) == model.threshold  # by default, the settings' choice
    assert abstain_threshold(Settings()) == bundled_model(SCORER).threshold  # the default asks for terms
    # an index built with the other choice is stale: the build key holds the setting
    assert pipe.index.manifest.build_key()["latent_terms"] is terms


def test_latent_terms_must_be_true_or_false() -> None:
    with pytest.raises(SettingsError, match="latent_terms must be true or false"):
        Settings(latent_terms="yes")  # type: ignore[arg-type]
    assert Settings().with_overrides(["latent_terms=false"]).latent_terms is False


class InPassTermsEncoder(FakeTermsEncoder):
    """Latent terms made in the vectors' own pass, as the PyTorch e5 makes them: a build names the
    sentences (``terms_alongside``), a question's are read after its pass (``query_terms``)."""

    terms_in_pass = True

    def __init__(self) -> None:
        super().__init__()
        self.alongside: list[list[str]] = []
        self.asked_terms: list[str] = []
        self.question_terms: list[str] = []

    @contextlib.contextmanager
    def terms_alongside(self, texts: Sequence[str]) -> Iterator[None]:
        self.alongside.append(list(texts))
        yield

    def encode_terms(self, texts: Sequence[str], progress: Callable[[int], None] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        self.asked_terms.extend(texts)
        return super().encode_terms(texts, progress)

    def query_terms(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        assert list(texts) == self.queries[-len(texts):], "a question's terms are read after its vector's pass"
        self.question_terms.extend(texts)
        return FakeTermsEncoder.encode_terms(self, texts)


def test_terms_made_in_the_vectors_pass_are_named_before_it_and_read_after_it(make_index: MakeIndex) -> None:
    encoder = InPassTermsEncoder()
    index_dir = make_index({"a.txt": f"{REPEATED} The lamp burned whale oil until 1850.\n"}, encoder=encoder)
    assert len(encoder.alongside) == 1 and encoder.alongside[0] == encoder.asked_terms  # the sentences, named first
    assert set(encoder.asked_terms) <= set(encoder.passages)
    traced = Pipeline.open(index_dir, FAKE, encoder).ask_traced("What did the lamp burn?")
    assert encoder.question_terms == ["What did the lamp burn?"]
    assert traced.retrieval.query_terms is not None and "encode.terms" in traced.answer.timings_ms


def test_the_pytorch_e5_with_use_is_scored_as_e5_with_use() -> None:
    # the same e5 run in PyTorch, its terms from its own pass: e5+use's scorer reads its answers
    assert learned(Settings(model="e5-torch+use")) and learned(Settings(model="e5-torch+use:0.35"))
    assert not learned(Settings(model="e5-torch+use:0.5")) and not learned(Settings(model="e5"))
