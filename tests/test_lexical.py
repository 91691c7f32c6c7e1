"""rag.lexical: the BM25 tokenizer and the BM25 helpers (the whole lexical path is tested through Pipeline)."""

from __future__ import annotations

import numpy as np

from rag.lexical import bm25_scores, build_bm25, tokenize, top_k


def test_top_k_picks_the_same_k_as_a_full_sort() -> None:
    rng = np.random.default_rng(1)
    for n, k in ((1000, 5), (50, 49), (7, 7), (3, 10), (0, 4)):
        scores = rng.standard_normal(n)
        assert set(top_k(scores, k).tolist()) == set(np.argsort(-scores)[:k].tolist())


def test_tokenize_folds_case_and_accents_and_drops_one_letter_words() -> None:
    assert tokenize("L'Été à Genève, 3 élèves") == ["ete", "geneve", "3", "eleves"]
    assert tokenize("") == []


def test_bm25_scores_the_rows_that_share_words() -> None:
    texts = ["Genève accueille le sommet.", "Prague est une ville.", ""]
    scores = bm25_scores(build_bm25(texts), tokenize("sommet de Genève"))
    assert scores.shape == (3,) and scores.dtype == np.float64
    assert scores[0] > 0 and scores[1] == 0 and scores[2] == 0
