"""Stage 5, retrieve: helpers of the scoring path (the whole path is tested through Pipeline)."""

from __future__ import annotations

import numpy as np

from rag.retrieve import _top


def test_top_picks_the_same_k_as_a_full_sort() -> None:
    rng = np.random.default_rng(1)
    for n, k in ((1000, 5), (50, 49), (7, 7), (3, 10), (0, 4)):
        scores = rng.standard_normal(n)
        assert set(_top(scores, k).tolist()) == set(np.argsort(-scores)[:k].tolist())
