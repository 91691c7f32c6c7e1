"""The fakes of the tests: settings for the hashing encoder and a fake encoder that records its calls.

Not a test module and not conftest: test modules import these (``from fakes import FAKE, FakeEncoder``;
tests/ is on sys.path), conftest builds its fixtures on them.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rag.encoders import TERMS, HashEncoder
from rag.settings import Settings

FAKE = Settings(model="hash")


class FakeEncoder(HashEncoder):
    """The one fake encoder of the tests: the library's hashing encoder (instant, deterministic, lexical).

    It remembers every passage and question it was given; ``delay`` (seconds per batch) makes it
    slow enough for a build to be caught in progress; ``model_id`` and ``dim`` make it pose as
    another model.
    """

    def __init__(self, delay: float = 0.0, model_id: str | None = None, dim: int | None = None) -> None:
        super().__init__()
        self.delay = delay
        if model_id is not None:
            self.model_id = model_id
        if dim is not None:
            self._dim = dim
        self.passages: list[str] = []
        self.queries: list[str] = []

    def _encode(self, model: Any, texts: list[str], is_query: bool) -> np.ndarray:
        if self.delay:
            time.sleep(self.delay)
        return super()._encode(model, texts, is_query)

    def encode_passages(self, texts: Sequence[str], progress: Callable[[int], None] | None = None) -> np.ndarray:
        self.passages.extend(texts)
        return super().encode_passages(texts, progress)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        self.queries.extend(texts)
        return super().encode_queries(texts)


class FakeTermsEncoder(FakeEncoder):
    """``FakeEncoder`` with latent terms: each lower-cased word is a term (hashed), weights equal.

    Like e5's, its rows are (ids, weights) of ``TERMS`` columns, unit length, padded with 0."""

    def encode_terms(self, texts: Sequence[str], progress: Callable[[int], None] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        ids = np.zeros((len(texts), TERMS), dtype=np.uint16)
        weights = np.zeros((len(texts), TERMS), dtype=np.float16)
        for i, text in enumerate(texts):
            words = sorted({w.strip(".,;:?!\"'()").lower() for w in text.split()} - {""})[:TERMS]
            for j, w in enumerate(words):
                ids[i, j] = int.from_bytes(hashlib.sha1(w.encode()).digest()[:2], "little") % 16384
                weights[i, j] = 1.0 / np.sqrt(len(words))
        if progress:
            progress(len(texts))
        return ids, weights
