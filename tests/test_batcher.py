"""Micro-batching of concurrent questions (rag.batcher) and the timed, concurrent fused encoder.

Correctness only: the same vectors as one question at a time, every caller gets its own rows,
errors reach every caller of the failed call and leave the batcher usable. Speed is measured
by bench/concurrency.py, never here.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from fakes import FakeEncoder

from rag.batcher import QueryBatcher
from rag.encoders import FusionEncoder, encode_query_timed

QUESTIONS = [f"question {i} about harbour number {i * 7} and otters {i % 3}" for i in range(24)]


class CountingEncoder(FakeEncoder):
    """Records the texts of every model call; fails a call that holds the text ``boom``."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__(delay=delay)
        self.calls: list[list[str]] = []
        self._calls_lock = threading.Lock()

    def _encode(self, model: Any, texts: list[str], is_query: bool) -> np.ndarray:
        with self._calls_lock:
            self.calls.append(list(texts))
        if "boom" in texts:
            raise RuntimeError("model failed on boom")
        return super()._encode(model, texts, is_query)


def _ask_together(encoder: Any, batches: Sequence[Sequence[str]]) -> list[Any]:
    """Each batch of texts encoded by its own thread, all released at once; results or exceptions."""
    start = threading.Barrier(len(batches))

    def one(texts: Sequence[str]) -> Any:
        start.wait()
        try:
            return encoder.encode_queries(texts)
        except Exception as exc:  # collected: the test checks who got what
            return exc

    with ThreadPoolExecutor(len(batches)) as pool:
        return list(pool.map(one, batches))


def test_concurrent_questions_get_the_vectors_of_one_at_a_time() -> None:
    alone = CountingEncoder()
    expected = [alone.encode_queries([q]) for q in QUESTIONS]
    shared = CountingEncoder(delay=0.05)  # slow enough that questions arrive while the model runs
    got = _ask_together(shared, [[q] for q in QUESTIONS])
    for want, have in zip(expected, got, strict=True):
        assert isinstance(have, np.ndarray) and have.shape == (1, shared.dim)
        np.testing.assert_array_equal(have, want)
    assert sorted(t for call in shared.calls for t in call) == sorted(QUESTIONS)  # each encoded exactly once
    assert len(shared.calls) < len(QUESTIONS)  # and they were batched: fewer model calls than questions
    assert max(len(call) for call in shared.calls) <= 32


def test_callers_with_several_texts_get_their_own_rows_in_order() -> None:
    shared = CountingEncoder(delay=0.02)
    batches = [QUESTIONS[i : i + 3] for i in range(0, 24, 3)]
    got = _ask_together(shared, batches)
    alone = CountingEncoder()
    for texts, have in zip(batches, got, strict=True):
        np.testing.assert_array_equal(have, alone.encode_queries(texts))


def _queue(pool: ThreadPoolExecutor, batcher: QueryBatcher, texts: list[str]) -> Any:
    """Submit one caller and wait until it is queued, so callers queue in a known order."""
    before = len(batcher._waiting)
    job = pool.submit(batcher.encode, texts)
    while len(batcher._waiting) == before:
        threading.Event().wait(0.001)
    return job


def test_a_failed_call_raises_in_every_caller_of_it_and_the_batcher_goes_on() -> None:
    calls: list[list[str]] = []
    release = threading.Event()

    def encode(texts: list[str]) -> np.ndarray:
        calls.append(texts)
        if len(calls) == 1:
            release.wait(5)  # hold the first call until the others are queued behind it
        if "boom" in texts:
            raise RuntimeError("model failed on boom")
        return np.array([[float(len(t))] for t in texts], dtype=np.float32)

    batcher = QueryBatcher(encode)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(batcher.encode, ["first"])
        while not calls:
            threading.Event().wait(0.001)
        queued = [_queue(pool, batcher, [t]) for t in ("a", "boom", "ccc")]  # in this order, behind the held call
        release.set()
        assert first.result().tolist() == [[5.0]]
        for job in queued:
            with pytest.raises(RuntimeError, match="model failed on boom"):
                job.result()
    assert calls[1] == ["a", "boom", "ccc"]  # the three were one call, so all three heard of the failure
    assert batcher.encode(["after"]).tolist() == [[5.0]]  # not stuck: the next caller leads again


def test_max_texts_splits_between_callers_never_inside_one() -> None:
    sizes: list[int] = []
    release = threading.Event()

    def encode(texts: list[str]) -> np.ndarray:
        sizes.append(len(texts))
        if len(sizes) == 1:
            release.wait(5)
        return np.zeros((len(texts), 2), dtype=np.float32)

    batcher = QueryBatcher(encode, max_texts=4)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(batcher.encode, ["x"])
        while not sizes:
            threading.Event().wait(0.001)
        jobs = [_queue(pool, batcher, ["y"] * n) for n in (3, 2, 6)]
        release.set()
        assert [len(j.result()) for j in (first, *jobs)] == [1, 3, 2, 6]
    assert sizes == [1, 3, 2, 6]  # 3 + 2 > 4: two calls; 6 > 4 alone, not split


def test_the_encoder_returning_too_few_rows_is_an_error() -> None:
    batcher = QueryBatcher(lambda texts: np.zeros((1, 2), dtype=np.float32))
    with pytest.raises(RuntimeError, match="returned 1 vectors for 2 texts"):
        batcher.encode(["a", "b"])


def test_fused_questions_are_timed_per_member_and_equal_the_sequential_vectors() -> None:
    first, second = FakeEncoder(), FakeEncoder(dim=256)
    fused = FusionEncoder([(first, 1.0), (second, 0.5)])
    vectors, timings = encode_query_timed(fused, ["Who repaired the pier?", "When did otters return?"])
    scales = [s for _, s in fused.members]
    expected = np.hstack([FakeEncoder().encode_queries(["Who repaired the pier?", "When did otters return?"]) * s
                          for s in scales]).astype(np.float32)
    np.testing.assert_array_equal(vectors, expected)
    assert set(timings) == {"hash", "hash2"} and all(ms >= 0 for ms in timings.values())
    assert first.queries == second.queries == ["Who repaired the pier?", "When did otters return?"]


def test_an_error_in_a_fused_member_reaches_the_caller() -> None:
    failing = CountingEncoder()
    fused = FusionEncoder([(FakeEncoder(), 1.0), (failing, 0.5)])
    with pytest.raises(RuntimeError, match="model failed on boom"):
        fused.encode_queries(["boom"])
    assert fused.encode_queries(["fine"]).shape == (1, 512)


def test_a_single_encoder_is_timed_under_its_stage_name() -> None:
    vectors, timings = encode_query_timed(FakeEncoder(), ["one question"])
    assert vectors.shape == (1, 256) and list(timings) == ["hash"]


@pytest.mark.model
def test_real_models_batch_only_when_batched_rows_equal_single_rows(real_pipeline: Any) -> None:
    # e5 batches concurrent questions (bit-identical rows); USE does not (BLAS rounds a batch
    # differently), so a question's vector never depends on what was asked at the same moment
    questions = ["Who phoned the president of Azerbaijan?", "Qui a reçu un coup de téléphone ?",
                 "Wer hat Aliyev angerufen?", "¿Quién llamó a Aliyev?", "When was the call?", "What did Blinken offer?"]
    members = {m.stage: m for m, _ in real_pipeline.encoder.members}
    assert members["e5"].batcher.max_texts > 1 and members["use"].batcher.max_texts == 1
    e5 = members["e5"]
    alone = [e5.encode_queries([q]) for q in questions]
    np.testing.assert_array_equal(e5._run(questions, True, None), np.vstack(alone))  # one batch, same bits
    for want, have in zip(alone, _ask_together(e5, [[q] for q in questions]), strict=True):
        np.testing.assert_array_equal(have, want)
