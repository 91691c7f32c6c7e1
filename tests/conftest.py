"""Shared fixtures: a fast fake encoder for most tests, the real default model once per session."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import pytest
from fakes import FAKE, FakeEncoder
from helpers import SEEDS, TINY_DOCS, TINY_QUESTIONS, MakeIndex, write_docs, write_lines

from rag.encoders import Encoder, create_encoder
from rag.index import build_index
from rag.load import load_documents
from rag.pipeline import Pipeline
from rag.settings import Settings


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
def make_index(tmp_path: Path) -> MakeIndex:
    """The index factory of the tests: documents in, the index folder out.

    ``docs`` is a folder, or {file name: text} written to ``tmp_path/docs``; ``index`` a name under
    ``tmp_path`` or a path. The settings default to ``FAKE`` and the encoder to a fresh ``FakeEncoder``
    (pass one to inspect it afterwards). A test whose subject is the build itself (its report, an
    injected failure, its progress) calls ``build_index`` instead.
    """

    def make(docs: Mapping[str, str] | Path, *, index: str | Path = "index", settings: Settings = FAKE,
             encoder: Encoder | None = None, full: bool = False) -> Path:
        folder = docs if isinstance(docs, Path) else write_docs(tmp_path / "docs", docs)
        index_dir = tmp_path / index if isinstance(index, str) else index
        build_index(load_documents(folder), index_dir, settings, encoder or FakeEncoder(), full=full)
        return index_dir

    return make


@pytest.fixture
def fake_pipeline(make_index: MakeIndex, seeds_copy: Path) -> Pipeline:
    return Pipeline.open(make_index(seeds_copy), FAKE, FakeEncoder())


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, Path]:
    """A folder of three small documents and a question set about them (helpers.TINY_DOCS, TINY_QUESTIONS)."""
    return write_docs(tmp_path / "docs", TINY_DOCS), write_lines(tmp_path / "questions.jsonl", TINY_QUESTIONS)


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
