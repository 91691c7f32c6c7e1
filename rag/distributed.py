"""Stage 3, embed, on a Ray cluster: Ray Data over an actor pool, behind the ``Encoder`` protocol.

``RayEncoder.encode_passages`` sends the texts through ``Dataset.map_batches`` with a pool of
stateful actors (``ActorPoolStrategy``): each actor loads the model once, on one thread (two
single-thread workers beat one of two threads by 1.2x on these machines, rag.pool), and
encodes batches of 32 texts. Rows come back tagged with their position, so the result is in
input order whatever node encoded them. Because it is an ``Encoder``, ``build_index`` keeps
its one code path: incremental builds embed only new or changed documents, and a failure
leaves the previous build current. The sentences' latent terms (``encode_terms``, models with
e5) are made on the cluster too: inside ``terms_alongside(texts)`` (as ``build_index`` calls
it) in the same pass as the vectors, by the same actors, started once; outside it by a pass of
their own. Questions are encoded in this process.

A killed actor is restarted and its batch retried by Ray (``retries``, default unlimited);
with ``retries=0`` the build fails with one line instead.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .encoders import BATCH, TERMS, Encoder, WrappingEncoder, create_encoder, terms_encoder
from .errors import ClusterError, ModelError

# Ray token authentication is on by default and Ray reports usage statistics unless told not
# to: both are set for every process that starts or joins a cluster from here (setdefault, so
# a cluster that uses tokens keeps working with RAY_AUTH_MODE=token and its RAY_AUTH_TOKEN).
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
# Actors load the model before the first batch (e5+use: about 1.5 s each); waiting for the
# whole pool spreads the batches over every node instead of giving them to the first actor up.
WAIT_FOR_ACTORS_S = 600


def ray_environment() -> None:
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)


class _Embed:
    """A Ray Data actor: loads the encoder once, then encodes batches of ``{"i", "text", "terms"}``
    rows: their vectors (``what="vectors"``), their latent terms (``what="terms"``), or both
    (``what="both"``: the vectors of every row, the terms of the rows whose ``terms`` is set)."""

    def __init__(self, spec: str, threads: int, what: str = "vectors", terms_pass: str = "one") -> None:
        import ray

        self.encoder = create_encoder(spec, threads, terms_pass)
        self.what = what
        self.terms = terms_encoder(self.encoder) if what != "vectors" else None
        if what != "vectors" and self.terms is None:
            raise ModelError(f"the model {spec!r} makes no latent terms")
        self.node = ray.get_runtime_context().get_node_id()
        self.pid = os.getpid()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(t) for t in batch["text"]]
        n = len(batch["i"])
        rows: dict[str, np.ndarray] = {}
        wanted = np.flatnonzero(batch["terms"]) if self.what == "both" else np.arange(n)
        asked = [texts[j] for j in wanted]
        # "both": the terms from the vectors' pass where the model makes them so (one pass per text)
        terms = self.terms
        with terms.terms_alongside(asked) if terms is not None and self.what == "both" else contextlib.nullcontext():
            if self.what != "terms":
                rows["vector"] = np.asarray(self.encoder.encode_passages(texts), dtype=np.float32)
            if terms is not None:
                ids, weights = np.zeros((n, TERMS), dtype=np.uint16), np.zeros((n, TERMS), dtype=np.float16)
                if len(wanted):
                    ids[wanted], weights[wanted] = terms.encode_terms(asked)
                rows["ids"], rows["weights"] = ids, weights
        return {"i": batch["i"], **rows, "node": np.array([self.node] * n),
                "pid": np.full(n, self.pid, dtype=np.int64), "model": np.array([self.encoder.model_id] * n)}


def _probe(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds on an address nobody listens on (ray.init would retry for minutes)."""
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"bad Ray address {address!r}: write HOST:PORT (e.g. 127.0.0.1:6379), ray://HOST:10001 "
                           "or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ClusterError(
            f"cannot reach the Ray cluster at {address!r} ({exc.strerror or exc}): start it with `ray start --head`, "
            "or pass the head node's address to --ray"
        ) from None


@contextlib.contextmanager
def ray_session(address: str) -> Iterator[Any]:
    """Joined to the cluster at ``address`` for the block; leaves it if it joined it."""
    ray_environment()
    try:
        import ray
    except ImportError as exc:
        raise ClusterError('builds on Ray need Ray Data: pip install -e ".[ray]"') from exc
    if ray.is_initialized():
        yield ray
        return
    if address != "auto":
        _probe(address)
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR,
                 runtime_env={"py_modules": [str(Path(__file__).resolve().parent)]})  # this very rag, on every node
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterError(
            f"cannot join the Ray cluster at {address!r} ({' '.join(str(exc).split())[:200]}): start it with "
            "`ray start --head`, or pass the head node's address to --ray"
        ) from None
    try:
        yield ray
    finally:
        ray.shutdown()


class RayEncoder(WrappingEncoder):
    """An ``Encoder`` whose passages are encoded by a Ray Data actor pool on a cluster.

    ``actors`` defaults to one per CPU of the cluster (``threads`` CPUs each). After each call,
    ``last_nodes`` counts the texts each node encoded and ``last_pids`` the actor processes.
    ``encode_terms`` is offered by ``rag.encoders.terms_encoder`` only for models with e5.
    """

    def __init__(self, spec: str, address: str, local: Encoder, actors: int | None = None, threads: int = 1,
                 batch: int = BATCH, retries: int = -1, terms_pass: str = "one") -> None:
        if (actors is not None and actors < 1) or threads < 1 or batch < 1:
            raise ClusterError(f"actors ({actors}), threads ({threads}) and batch ({batch}) must be at least 1")
        self.spec, self.address, self.local = spec, address, local
        super().__init__(local)
        self.actors, self.threads, self.batch, self.retries = actors, threads, batch, retries
        self.terms_pass = terms_pass
        self.last_nodes: Counter[str] = Counter()
        self.last_pids: set[int] = set()
        self._alongside: dict[str, tuple[np.ndarray, np.ndarray] | None] | None = None

    def encode_passages(self, texts: Sequence[str], progress: Callable[[int], None] | None = None) -> np.ndarray:
        texts = list(texts)
        out = {"vector": np.zeros((len(texts), self.dim), dtype=np.float32)}
        alongside = self._alongside
        wanted = np.fromiter((alongside is not None and t in alongside for t in texts), bool, len(texts))
        if alongside is None or not wanted.any():
            self._on_cluster(texts, "vectors", out, progress)
            return out["vector"]
        out["ids"] = np.zeros((len(texts), TERMS), dtype=np.uint16)
        out["weights"] = np.zeros((len(texts), TERMS), dtype=np.float16)
        self._on_cluster(texts, "both", out, progress, wanted)
        for j in np.flatnonzero(wanted):
            alongside[texts[j]] = (out["ids"][j], out["weights"][j])
        return out["vector"]

    def encode_terms(self, texts: Sequence[str], progress: Callable[[int], None] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """The texts' latent terms (``rag.encoders.E5Encoder.encode_terms``), made by the cluster's actors:
        those of an earlier pass in ``terms_alongside``, or a pass of their own."""
        texts = list(texts)
        if terms_encoder(self.local) is None:
            raise ModelError(f"the model {self.spec!r} makes no latent terms")
        made = [None if self._alongside is None else self._alongside.get(t) for t in texts]
        if texts and all(m is not None for m in made):
            if progress is not None:
                progress(len(texts))
            return (np.stack([m[0] for m in made if m is not None]),
                    np.stack([m[1] for m in made if m is not None]))
        out = {"ids": np.zeros((len(texts), TERMS), dtype=np.uint16),
               "weights": np.zeros((len(texts), TERMS), dtype=np.float16)}
        self._on_cluster(texts, "terms", out, progress)
        return out["ids"], out["weights"]

    @contextlib.contextmanager
    def terms_alongside(self, texts: Sequence[str]) -> Iterator[RayEncoder]:
        """Inside the block, ``encode_passages`` makes the latent terms of any of ``texts`` it encodes in
        the same pass (the same actors, loaded once), and ``encode_terms`` of them returns those; the
        cluster is joined once for the block."""
        self._alongside = dict.fromkeys(texts)
        try:
            with ray_session(self.address) if texts else contextlib.nullcontext():
                yield self
        finally:
            self._alongside = None

    def _on_cluster(self, texts: list[str], what: str, out: dict[str, np.ndarray],
                    progress: Callable[[int], None] | None, wanted: np.ndarray | None = None) -> None:
        if not texts:
            return
        with ray_session(self.address) as ray:
            try:
                self._run(ray, texts, what, out, progress, wanted)
            except ClusterError:
                raise
            except ray.exceptions.RayError as exc:
                first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
                raise ClusterError(
                    f"the build failed on the Ray cluster at {self.address!r} ({type(exc).__name__}: {first.strip()}); "
                    "the previous index is still in use: run `rag index` again"
                ) from None

    def _run(self, ray: Any, texts: list[str], what: str, out: dict[str, np.ndarray],
             progress: Callable[[int], None] | None, wanted: np.ndarray | None = None) -> None:
        import ray.data

        context = ray.data.DataContext.get_current()
        context.wait_for_min_actors_s = WAIT_FOR_ACTORS_S
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        actors = self.actors or max(1, int(ray.cluster_resources().get("CPU", 1)) // self.threads)
        flags = [False] * len(texts) if wanted is None else wanted.tolist()
        items = [{"i": i, "text": t, "terms": f} for i, (t, f) in enumerate(zip(texts, flags, strict=True))]
        blocks = max(1, math.ceil(len(items) / self.batch))
        dataset = ray.data.from_items(items, override_num_blocks=blocks)
        embedded = dataset.map_batches(
            _Embed, fn_constructor_args=(self.spec, self.threads, what, self.terms_pass), batch_size=self.batch,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=2),
            num_cpus=self.threads, max_restarts=self.retries, max_task_retries=self.retries,
        )
        filled = np.zeros(len(texts), dtype=bool)
        nodes: Counter[str] = Counter()
        pids: set[int] = set()
        for batch in embedded.iter_batches(batch_size=None, batch_format="numpy"):
            models = set(batch["model"].tolist())
            if models != {self.model_id}:
                raise ClusterError(f"a Ray actor loaded {sorted(models)} where {self.model_id!r} was expected: "
                                   "install the same model packages on every node")
            rows = batch["i"].astype(np.int64)
            for column, array in out.items():
                array[rows] = batch[column]
            filled[rows] = True
            nodes.update(batch["node"].tolist())
            pids.update(int(p) for p in batch["pid"])
            if progress is not None:
                progress(len(rows))
        if not filled.all():
            raise ClusterError(f"the Ray cluster returned {int(filled.sum())} of {len(texts)} rows of {what}: "
                               "run `rag index` again")
        self.last_nodes, self.last_pids = nodes, pids


def ray_encoder(spec: str, address: str, threads: int = 2, actors: int | None = None,
                terms_pass: str = "one") -> RayEncoder:
    """The ``RayEncoder`` for a model spec, encoding questions here on ``threads`` threads."""
    return RayEncoder(spec, address, create_encoder(spec, threads, terms_pass), actors=actors, terms_pass=terms_pass)
