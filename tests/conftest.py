"""Shared fixtures: a fast fake encoder for most tests, the real default model once per session."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rag.encoders import HashEncoder, create_encoder
from rag.index import build_index
from rag.load import load_documents
from rag.pipeline import Pipeline
from rag.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
SEED_DOC = SEEDS / "000_5af0c40136177a6e.txt"
SHARED_BENCH = ROOT.parent / "shared" / "bench"
FAKE = Settings(model="hash")


@pytest.fixture
def fake_settings() -> Settings:
    """Settings for the deterministic hashing encoder (instant, lexical)."""
    return FAKE


@pytest.fixture
def fake_encoder() -> HashEncoder:
    return HashEncoder()


@pytest.fixture
def seeds_copy(tmp_path: Path) -> Path:
    """A private copy of seeds/ that a test may change."""
    target = tmp_path / "seeds"
    shutil.copytree(SEEDS, target)
    return target


@pytest.fixture
def fake_pipeline(tmp_path: Path, seeds_copy: Path) -> Pipeline:
    index_dir = tmp_path / "index"
    build_index(load_documents(seeds_copy), index_dir, FAKE, HashEncoder())
    return Pipeline.open(index_dir, FAKE, HashEncoder())


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
