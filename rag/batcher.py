"""Micro-batching of questions: the questions of concurrent callers encoded in one model call.

Chat sessions of one process (Streamlit threads) share one encoder. Without batching, each
question waits for the encoder lock and the model runs once per question; with it, whoever
finds the model idle encodes its question at once (no added delay when alone), and the
questions that arrive meanwhile are encoded together in the next call, led by the first of
them. One call on n short questions costs far less than n calls (e5 spreads the batch over
its threads, USE streams its weights once): bench/concurrency.py measures the throughput.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np


class _Request:
    __slots__ = ("done", "error", "lead", "result", "texts", "wake")

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.lead = False  # this caller runs the next model call (for itself and those waiting)
        self.done = False
        self.result: np.ndarray | None = None
        self.error: BaseException | None = None
        self.wake = threading.Event()


class QueryBatcher:
    """Encodes the texts of concurrent ``encode`` calls together; each caller gets its own rows.

    ``encode_batch(texts)`` must return one row per text and treat rows independently, so a
    question's vector does not depend on what it was batched with. An exception in a model
    call is raised in every caller whose texts were in it. At most ``max_texts`` texts go into
    one call, except that a single caller's texts are never split.
    """

    def __init__(self, encode_batch: Callable[[list[str]], np.ndarray], max_texts: int = 32) -> None:
        self._encode_batch = encode_batch
        self.max_texts = max_texts
        self._lock = threading.Lock()
        self._waiting: list[_Request] = []
        self._busy = False

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        request = _Request(list(texts))
        with self._lock:
            self._waiting.append(request)
            if not self._busy:
                self._busy = request.lead = True
        if not request.lead:
            request.wake.wait()  # woken once: either answered, or made the leader of the next call
        if not request.done:
            self._lead()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def _lead(self) -> None:
        with self._lock:  # the leader is always first in line: it joined, or was woken, at the head
            batch: list[_Request] = []
            size = 0
            while self._waiting and (not batch or size + len(self._waiting[0].texts) <= self.max_texts):
                size += len(self._waiting[0].texts)
                batch.append(self._waiting.pop(0))
        try:
            vectors = self._encode_batch([t for r in batch for t in r.texts])
            if len(vectors) != size:
                raise RuntimeError(f"the encoder returned {len(vectors)} vectors for {size} texts")
        except BaseException as exc:  # every caller of the batch hears of it, then the leader re-raises
            for r in batch:
                r.error = exc
        else:
            row = 0
            for r in batch:
                r.result = vectors[row : row + len(r.texts)]
                row += len(r.texts)
        finally:
            for r in batch:
                r.done = True
            with self._lock:
                successor = self._waiting[0] if self._waiting else None
                if successor is None:
                    self._busy = False
                else:
                    successor.lead = True
            if successor is not None:
                successor.wake.set()
            for r in batch[1:]:
                r.wake.set()
