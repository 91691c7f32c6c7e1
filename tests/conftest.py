"""Shared fixtures: a fast fake encoder for most tests, the real default model once per session."""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rag.encoders import TERMS, HashEncoder, create_encoder
from rag.index import build_index
from rag.load import load_documents
from rag.pipeline import Pipeline
from rag.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
SEED_DOC = SEEDS / "000_5af0c40136177a6e.txt"
SHARED_BENCH = ROOT.parent / "shared" / "bench"
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


@pytest.fixture
def fake_settings() -> Settings:
    """Settings for the deterministic hashing encoder (instant, lexical)."""
    return FAKE


@pytest.fixture
def fake_encoder() -> FakeEncoder:
    return FakeEncoder()


@pytest.fixture
def seeds_copy(tmp_path: Path) -> Path:
    """A private copy of seeds/ that a test may change."""
    target = tmp_path / "seeds"
    shutil.copytree(SEEDS, target)
    return target


@pytest.fixture
def fake_pipeline(tmp_path: Path, seeds_copy: Path) -> Pipeline:
    index_dir = tmp_path / "index"
    build_index(load_documents(seeds_copy), index_dir, FAKE, FakeEncoder())
    return Pipeline.open(index_dir, FAKE, FakeEncoder())


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, Path]:
    """A folder of three small documents and a question set about them (helpers.TINY_DOCS, TINY_QUESTIONS)."""
    from helpers import TINY_DOCS, TINY_QUESTIONS, write_lines

    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in TINY_DOCS.items():
        (docs / name).write_text(text, encoding="utf-8")
    return docs, write_lines(tmp_path / "questions.jsonl", TINY_QUESTIONS)


@pytest.fixture(scope="session")
def real_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seeds indexed once per test session with the default model."""
    index_dir = tmp_path_factory.mktemp("real") / "index"
    settings = Settings()
    build_index(load_documents(SEEDS), index_dir, settings, create_encoder(settings.model, settings.threads))
    return index_dir


@pytest.fixture(scope="session")
def real_pipeline(real_index: Path) -> Pipeline:
    return Pipeline.open(real_index, Settings())


@pytest.fixture(scope="session")
def loopback_only() -> None:
    """Engines (Ray, Milvus) probe outside hosts and listen on every interface: only inside ``unshare -n``.

    scripts/test.sh runs pytest in a network namespace that has nothing but loopback; a test
    that starts an engine anywhere else fails here, before the engine starts.
    """
    import socket

    interfaces = sorted(name for _, name in socket.if_nameindex())
    if interfaces != ["lo"]:
        pytest.fail(f"this test starts a network engine and must run inside a loopback-only namespace "
                    f"(interfaces here: {', '.join(interfaces)}): run `bash scripts/test.sh`, or "
                    "`unshare -n sh -c 'ip link set lo up; exec python -m pytest ...'` as root")
