"""Stage 6, answer: the abstention threshold is looked up by canonical model spec, for every alias."""

from __future__ import annotations

from dataclasses import replace

import pytest

from rag.answer import CALIBRATION, calibration, make_answer
from rag.pipeline import Pipeline
from rag.retrieve import retrieve
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


def test_default_abstains_exactly_where_e5_use_does(fake_pipeline: Pipeline) -> None:
    """``--model default`` once fell back to the uncalibrated threshold (0.1) instead of e5+use's (0.08)."""
    question = "Qu'a proposé Antony Blinken pour la délimitation des frontières ?"
    vector = fake_pipeline.encoder.encode_queries([question])[0]
    found = retrieve(fake_pipeline.index, vector, question, fake_pipeline.settings)
    threshold = CALIBRATION["e5+use"][0]
    for specificity in (threshold - 0.005, threshold + 0.005, threshold + 0.015):
        between = replace(found, specificity=specificity)
        want = make_answer(fake_pipeline.index, between, Settings(model="e5+use"), question)
        got = make_answer(fake_pipeline.index, between, Settings(model="default"), question)
        assert got == want
        assert got.abstained == (specificity < threshold)


def test_an_explicit_threshold_overrides_the_calibrated_one() -> None:
    assert calibration(Settings(model="default", abstain_threshold=0.5))[0] == 0.5
