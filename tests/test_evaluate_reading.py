"""Span scoring as XQuAD reports it (rag.evaluate.reading)."""

from __future__ import annotations

import pytest

from rag.evaluate.reading import exact, normalise, span_f1


def test_normalise_drops_case_punctuation_and_articles_of_each_language() -> None:
    assert normalise("The Eiffel Tower!") == ["eiffel", "tower"]
    assert normalise("die Verteidigung der Panthers") == ["verteidigung", "panthers"]
    assert normalise("«El río», dijo") == ["río", "dijo"]


def test_f1_and_exact_match() -> None:
    assert exact("the 308 points", "308 Points") == 1.0
    assert exact("308 points", "308") == 0.0
    assert exact("The Panthers", "panthers") == 1.0
    assert span_f1("308 points", "308") == pytest.approx(2 / 3)
    assert span_f1("nothing alike", "308") == 0.0
    assert span_f1("", "308") == 0.0
    assert span_f1("", "") == 1.0
