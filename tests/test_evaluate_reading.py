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


def test_chinese_and_japanese_count_character_by_character() -> None:
    """Written without spaces, a whole sentence would be one word: a near miss scored as nothing."""
    assert normalise("北京是首都。") == ["北", "京", "是", "首", "都"]
    assert normalise("東京タワーは333メートル") == ["東", "京", "タ", "ワ", "ー", "は", "333", "メ", "ー", "ト", "ル"]
    assert span_f1("中国的首都", "首都") == pytest.approx(2 * (2 / 5) * 1 / (2 / 5 + 1))
    assert span_f1("333メートル", "333") == pytest.approx(2 * (1 / 5) / (1 / 5 + 1))
