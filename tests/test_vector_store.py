"""The Milvus store (Milvus Lite, a real engine in a local file) against the FAISS default."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from fakes import FAKE, FakeEncoder
from helpers import SEED_DOC, SEEDS, MakeIndex

from rag.cli import main
from rag.errors import IndexMismatchError, StoreError, StoreMismatchError
from rag.index import build_index, current_build, open_index
from rag.load import load_documents
from rag.pipeline import Pipeline
from rag.settings import Settings

pytestmark = pytest.mark.milvus
pytest.importorskip("pymilvus")

from rag.vector_store import MilvusCollections  # noqa: E402 - after the skip

QUESTIONS = [json.loads(line)["question"] for line in (SEEDS.parent / "evals" / "seed_questions.jsonl").open()]


@pytest.fixture(autouse=True)
def _inside_namespace(loopback_only: None) -> None:
    """Milvus Lite runs a server process of its own: kept inside the loopback-only namespace too."""


def milvus(tmp_path: Path, **changes: object) -> Settings:
    return FAKE.with_(store="milvus", milvus_uri=str(tmp_path / "milvus.db"), milvus_index="FLAT", **changes)


def rankings(index_dir: Path, settings: Settings) -> list[tuple[list[int], str | None, list[tuple[str, int, int]]]]:
    pipe = Pipeline.open(index_dir, settings, FakeEncoder())
    out = []
    for question in QUESTIONS:
        traced = pipe.ask_traced(question)
        out.append(([r.chunk for r in traced.retrieval.ranked], traced.answer.text,
                    [(c.doc, c.start, c.end) for c in traced.answer.sentences]))
    return out


def rows(settings: Settings, index_dir: Path) -> tuple[int, int]:
    manifest = open_index(index_dir).manifest
    collections = MilvusCollections(str(settings.milvus_uri), str(manifest.settings["milvus_collection"]))
    return collections.count("chunks"), collections.count("sentences")


@pytest.mark.slow  # 3.4 s
def test_flat_milvus_ranks_and_answers_as_faiss(tmp_path: Path, seeds_copy: Path, make_index: MakeIndex) -> None:
    make_index(seeds_copy, index="faiss")
    make_index(seeds_copy, index="milvus", settings=milvus(tmp_path))
    index = open_index(tmp_path / "milvus")
    assert index.manifest.settings["store"] == "milvus"
    assert index.manifest.settings["milvus_uri"] == str(tmp_path / "milvus.db")
    assert index.chunk_vectors is None and not (current_build(tmp_path / "milvus") / "chunks.faiss").exists()
    faiss_index = open_index(tmp_path / "faiss")
    assert faiss_index.chunk_vectors is not None
    rows_ = np.arange(len(faiss_index.chunks))
    np.testing.assert_allclose(index.chunk_store.vectors(rows_), faiss_index.chunk_vectors, atol=1e-6)
    assert rankings(tmp_path / "milvus", FAKE) == rankings(tmp_path / "faiss", FAKE)


@pytest.mark.slow  # 5.0 s (Milvus Lite starts)
def test_collections_released_since_the_build_are_loaded_on_open(tmp_path: Path, seeds_copy: Path,
                                                                 make_index: MakeIndex) -> None:
    settings = milvus(tmp_path)
    make_index(seeds_copy, settings=settings)
    before = rankings(tmp_path / "index", FAKE)
    prefix = str(open_index(tmp_path / "index").manifest.settings["milvus_collection"])
    collections = MilvusCollections(str(settings.milvus_uri), prefix)
    for kind in ("chunks", "sentences"):  # as after a restart of the server or of Milvus Lite
        collections.client.release_collection(collections.name(kind))
    assert rankings(tmp_path / "index", FAKE) == before


@pytest.mark.slow  # 3.8 s
def test_incremental_builds_insert_new_and_delete_changed_and_removed_documents(tmp_path: Path,
                                                                               seeds_copy: Path,
                                                                               make_index: MakeIndex) -> None:
    settings, index_dir = milvus(tmp_path), tmp_path / "index"
    first = build_index(load_documents(seeds_copy), index_dir, settings, FakeEncoder())
    assert rows(settings, index_dir) == (first.chunks, first.sentences)

    (seeds_copy / "new.txt").write_text("Une phrase sur Prague.\n\nEt une autre sur Genève.", encoding="utf-8")
    encoder = FakeEncoder()
    added = build_index(load_documents(seeds_copy), index_dir, FAKE, encoder)  # the store comes from the index
    assert (added.embedded_documents, added.reused_documents) == (1, 1)
    assert not any(p in encoder.passages for p in (SEED_DOC.read_text(encoding="utf-8"),))
    assert rows(settings, index_dir) == (added.chunks, added.sentences)

    (seeds_copy / "new.txt").write_text("Une seule phrase, changée, sur Bruxelles.", encoding="utf-8")
    changed = build_index(load_documents(seeds_copy), index_dir, FAKE, FakeEncoder())
    assert changed.embedded_documents == 1
    assert rows(settings, index_dir) == (changed.chunks, changed.sentences)  # the old version's rows are gone

    (seeds_copy / "new.txt").unlink()
    removed = build_index(load_documents(seeds_copy), index_dir, FAKE, FakeEncoder())
    assert removed.removed_documents == 1
    assert rows(settings, index_dir) == (first.chunks, first.sentences)
    assert rankings(index_dir, FAKE) == rankings(make_index(seeds_copy, index="faiss"), FAKE)


@pytest.mark.slow  # 4.7 s
def test_a_failed_build_keeps_the_previous_one_and_the_next_removes_its_rows(tmp_path: Path,
                                                                              seeds_copy: Path,
                                                                              make_index: MakeIndex) -> None:
    settings, index_dir = milvus(tmp_path), tmp_path / "index"
    first = build_index(load_documents(seeds_copy), index_dir, settings, FakeEncoder())
    before = rankings(index_dir, FAKE)
    (seeds_copy / "new.txt").write_text("Une phrase sur Prague.\n\nEt une autre sur Genève.", encoding="utf-8")
    with pytest.raises(RuntimeError, match="injected failure after bm25"):
        build_index(load_documents(seeds_copy), index_dir, FAKE, FakeEncoder(), _fail_after="bm25")
    assert rankings(index_dir, FAKE) == before  # the new rows are in Milvus, but not the build's
    assert rows(settings, index_dir)[0] > first.chunks
    (seeds_copy / "new.txt").unlink()
    make_index(seeds_copy, index=index_dir, full=True)
    assert rows(settings, index_dir) == (first.chunks, first.sentences)
    assert not (index_dir / "milvus-pending.json").exists()


def test_an_unreachable_milvus_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"cannot reach Milvus at 'http://127\.0\.0\.1:1' .*--milvus-uri"):
        build_index(load_documents(SEEDS), tmp_path / "index",
                    FAKE.with_(store="milvus", milvus_uri="http://127.0.0.1:1"), FakeEncoder())
    assert not (tmp_path / "index" / "CURRENT").exists()


def test_a_collection_of_another_model_or_dimension_is_refused(tmp_path: Path) -> None:
    settings = milvus(tmp_path, milvus_collection="shared")
    MilvusCollections(str(settings.milvus_uri), "shared").ensure("some-other-model", 8, "FLAT")
    with pytest.raises(StoreMismatchError, match=r"collection 'shared_chunks' holds vectors of model "
                                                 r"'some-other-model' \(8 dimensions\), not 'hash-bow-256' \(256\)"):
        build_index(load_documents(SEEDS), tmp_path / "index", settings, FakeEncoder())
    assert not (tmp_path / "index" / "CURRENT").exists()


def test_a_store_option_that_disagrees_with_the_index_is_refused(tmp_path: Path, seeds_copy: Path,
                                                                 make_index: MakeIndex) -> None:
    make_index(seeds_copy)
    with pytest.raises(StoreMismatchError, match=r"keeps its vectors in faiss, not milvus: rebuild it with "
                                                 r"`rag index --full --store milvus"):
        build_index(load_documents(seeds_copy), tmp_path / "index", milvus(tmp_path), FakeEncoder())
    with pytest.raises(IndexMismatchError, match=r"keeps its vectors in faiss, not milvus: leave out --store"):
        Pipeline.open(tmp_path / "index", milvus(tmp_path), FakeEncoder())
    make_index(seeds_copy, settings=milvus(tmp_path), full=True)
    assert open_index(tmp_path / "index").manifest.settings["store"] == "milvus"


def _cli(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], env={"RAG_SEEDS": "", "RAG_INDEX": "", "RAG_MODEL": ""})


@pytest.mark.ray  # one of the failures is an unreachable Ray cluster
def test_the_cli_builds_into_milvus_and_says_each_failure_in_one_line(tmp_path: Path, seeds_copy: Path) -> None:
    db, index_dir = tmp_path / "m.db", tmp_path / "index"
    built = _cli("index", "--seeds", seeds_copy, "--index", index_dir, "--model", "hash", "--store", "milvus",
                 "--milvus-uri", db, "--milvus-index", "FLAT")
    assert built.exit_code == 0, built.output
    asked = _cli("ask", "--seeds", seeds_copy, "--index", index_dir, "What did Blinken offer?", "--json")
    assert asked.exit_code == 0 and json.loads(asked.output)["sources"]
    failures = {
        "unreachable": ("index", "--seeds", seeds_copy, "--index", tmp_path / "other", "--model", "hash",
                        "--store", "milvus", "--milvus-uri", "http://127.0.0.1:1"),
        "store disagrees": ("ask", "--seeds", seeds_copy, "--index", index_dir, "--store", "faiss", "Blinken?"),
        "ray unreachable": ("index", "--seeds", seeds_copy, "--index", tmp_path / "r", "--model", "hash",
                            "--ray", "127.0.0.1:1"),
    }
    for name, args in failures.items():
        result = _cli(*args)
        assert result.exit_code == 2, (name, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, name


def _processes_under(folder: Path) -> list[int]:
    """Processes whose executable lies in ``folder``: the server copies its binary into its data folder."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/exe").startswith(str(folder)):
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


@pytest.fixture(scope="module")
def milvus_server(tmp_path_factory: pytest.TempPathFactory, loopback_only: None) -> Iterator[str]:
    """The standalone server of PyPI's `milvus` package (2.3.5) on 127.0.0.1:19530, in the namespace."""
    pytest.importorskip("milvus")
    data = tmp_path_factory.mktemp("milvus-server")
    log = open(data.parent / "milvus-server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-c", "import sys, milvus; sys.argv[0] = 'milvus-server'; milvus.main()",
                             "--data", str(data)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for _ in range(180):
            try:
                socket.create_connection(("127.0.0.1", 19530), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"milvus-server exited ({proc.returncode}); see {log.name}")
                time.sleep(1)
        else:
            pytest.fail(f"milvus-server did not listen within 180 s; see {log.name}")
        yield "http://127.0.0.1:19530"
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
        for pid in _processes_under(data):  # the server binary outlives its launcher
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.wait()
        log.close()


@pytest.mark.slow  # 194 s, the server's start 7 s more (2026-12-05, 2 cores)
def test_a_standalone_milvus_server_builds_updates_and_answers_as_faiss(milvus_server: str, tmp_path: Path,
                                                                        seeds_copy: Path,
                                                                        make_index: MakeIndex) -> None:
    settings = FAKE.with_(store="milvus", milvus_uri=milvus_server, milvus_index="HNSW")
    make_index(seeds_copy, settings=settings)
    (seeds_copy / "new.txt").write_text("Une phrase sur Prague.\n\nEt une autre sur Genève.", encoding="utf-8")
    report = build_index(load_documents(seeds_copy), tmp_path / "index", FAKE, FakeEncoder())
    assert report.embedded_documents == 1
    assert rows(settings, tmp_path / "index") == (report.chunks, report.sentences)
    faiss_dir = make_index(seeds_copy, index="faiss")
    assert [r[1:] for r in rankings(tmp_path / "index", FAKE)] == [r[1:] for r in rankings(faiss_dir, FAKE)]
