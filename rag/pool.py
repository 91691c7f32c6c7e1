"""Stage 3, embed, in parallel: passages encoded by worker processes of one thread each.

On these 2-core machines two single-thread processes encode 1.2x as much text per second as
one process of two threads when the machine is quiet, 1.5x when it is shared (bench/run.py,
docs/scaling.md): an OpenMP encoder waits at every barrier for its slower thread. The
workers are plain subprocesses (``python -m rag.pool SPEC THREADS TERMS_PASS``) speaking a small framed
protocol over their pipes, not ``multiprocessing``: spawn would re-import the caller's main
module, which under Streamlit is the app itself. Vectors travel as raw float32 bytes, texts
as JSON; nothing is pickled.

Frames are a 4-byte big-endian length and a body whose first byte says what it holds:
``H`` + JSON header (after the model loaded), ``V`` + float32 rows, ``T`` + latent terms (uint16
ids, then float16 weights, ``TERMS`` per text), ``B`` + both (the rows, then the terms; zero
terms where not asked), ``E`` + an error message. A request is a JSON list of texts (their
vectors), ``{"terms": [texts]}`` (their latent terms) or ``{"passages": [texts], "terms":
[flags]}`` (the vectors, and the terms of the flagged texts, from the same pass where the model
makes them so: ``terms_alongside``); an empty frame asks the worker to exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from .encoders import (
    BATCH,
    TERMS,
    Encoder,
    HashEncoder,
    WrappingEncoder,
    create_encoder,
    encode_passages,
    terms_encoder,
)
from .errors import ModelError

# Starting the workers costs ~1.5 s (e5+use, both loading at once); below ~50k characters
# (~12k tokens, ~7 s of encoding) that is more than the pool saves.
MIN_POOL_CHARS = 50_000
_LEN = struct.Struct(">I")


def _write_frame(out: IO[bytes], body: bytes) -> None:
    out.write(_LEN.pack(len(body)))
    out.write(body)
    out.flush()


def _read_exact(stream: IO[bytes], n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        part = stream.read(n - len(data))
        if not part:
            raise EOFError("stream closed")
        data += part
    return bytes(data)


def _read_frame(stream: IO[bytes]) -> bytes:
    (size,) = _LEN.unpack(_read_exact(stream, _LEN.size))
    return _read_exact(stream, size)


def _term_rows(body: bytes, n: int) -> tuple[np.ndarray, np.ndarray]:
    half = n * TERMS * 2  # uint16 ids, then float16 weights: 2 bytes each
    return (np.frombuffer(body[:half], dtype=np.uint16).reshape(n, TERMS),
            np.frombuffer(body[half:], dtype=np.float16).reshape(n, TERMS))


def _terms_bytes(ids: np.ndarray, weights: np.ndarray) -> bytes:
    return (np.ascontiguousarray(ids, dtype=np.uint16).tobytes()
            + np.ascontiguousarray(weights, dtype=np.float16).tobytes())


class _Worker:
    """One encoding subprocess and the pipe ends that talk to it."""

    def __init__(self, spec: str, threads: int, terms_pass: str = "one") -> None:
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), OMP_WAIT_POLICY="PASSIVE")
        # the worker imports this very package, installed or not
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        # stderr goes to a file, not a pipe: nobody has to drain it, and a crash can quote it
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the worker; close() closes it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rag.pool", spec, str(threads), terms_pass],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, env=env,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin: IO[bytes] = self.proc.stdin
        self.stdout: IO[bytes] = self.proc.stdout
        self.dim = 0
        self.closed = False

    def handshake(self) -> dict[str, Any]:
        header = json.loads(self._receive(b"H"))
        self.dim = int(header["dim"])
        return dict(header)

    def encode(self, texts: list[str]) -> np.ndarray:
        # ASCII JSON: lone surrogates survive the trip as escapes
        with contextlib.suppress(OSError):  # a dead worker's pipe: _receive reports why it died
            _write_frame(self.stdin, json.dumps(texts).encode("ascii"))
        body = self._receive(b"V")
        rows = np.frombuffer(body, dtype=np.float32)
        return rows.reshape(len(texts), self.dim)

    def terms(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        with contextlib.suppress(OSError):
            _write_frame(self.stdin, json.dumps({"terms": texts}).encode("ascii"))
        return _term_rows(self._receive(b"T"), len(texts))

    def both(self, texts: list[str], wanted: list[bool]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The texts' vectors, and the latent terms of those ``wanted`` (zero rows elsewhere)."""
        with contextlib.suppress(OSError):
            _write_frame(self.stdin, json.dumps({"passages": texts, "terms": wanted}).encode("ascii"))
        body = self._receive(b"B")
        cut = len(texts) * self.dim * 4
        ids, weights = _term_rows(body[cut:], len(texts))
        return np.frombuffer(body[:cut], dtype=np.float32).reshape(len(texts), self.dim), ids, weights

    def _receive(self, kind: bytes) -> bytes:
        try:
            body = _read_frame(self.stdout)
        except EOFError:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)  # let it finish writing stderr
            raise ModelError(
                f"an encoding worker stopped unexpectedly (exit status {self.proc.returncode}): "
                f"{self.stderr_tail() or 'no message'}"
            ) from None
        if body[:1] == b"E":
            raise ModelError(body[1:].decode("utf-8", "replace"))
        if body[:1] != kind:
            raise ModelError(f"an encoding worker answered {body[:1]!r} where {kind!r} was expected")
        return body[1:]

    def stderr_tail(self, chars: int = 600) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode("utf-8", "replace").strip()[-chars:]

    def close(self, kill: bool = False) -> None:
        """Ask the worker to exit (or kill it, when it may be busy); safe to call twice."""
        if self.closed:
            return
        self.closed = True
        exited = False
        if not kill:
            try:
                _write_frame(self.stdin, b"")
                self.stdin.close()
                self.proc.wait(timeout=10)
                exited = True
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass  # gone already, or stuck: killed below
        if not exited:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.stdin, self.stdout, self.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.close()


class PooledEncoder(WrappingEncoder):
    """An encoder whose ``encode_passages`` runs in ``processes`` worker processes for long inputs.

    Questions and short inputs (fewer than ``min_chars`` characters) are encoded in this process by
    ``local``. The workers start for each long call and exit at its end, so nothing lingers
    between index builds; inside ``with encoder.workers():`` they stay up across calls. Rows
    come back in input order and equal the in-process encoder's (same spec) up to float rounding.
    """

    def __init__(self, spec: str, local: Encoder, processes: int = 2, threads: int = 1,
                 min_chars: int = MIN_POOL_CHARS, batch: int = BATCH, terms_pass: str = "one") -> None:
        if processes < 1 or threads < 1:
            raise ModelError(f"processes ({processes}) and threads ({threads}) must be at least 1")
        self.spec, self.local = spec, local
        super().__init__(local)
        self.processes, self.threads, self.min_chars, self.batch = processes, threads, min_chars, batch
        self.terms_pass = terms_pass
        self._open: list[_Worker] | None = None
        self._alongside: dict[str, tuple[np.ndarray, np.ndarray] | None] | None = None  # terms_alongside's
        self._lock = threading.Lock()  # one pooled call at a time; questions never wait for it

    def encode_passages(self, texts: Sequence[str], progress: Callable[[int], None] | None = None) -> np.ndarray:
        texts = list(texts)
        if self._open is None and (self.processes < 2 or len(texts) < 2 or sum(map(len, texts)) < self.min_chars):
            return encode_passages(self.local, texts, progress)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # rows go straight into their place: collecting batches and concatenating them held every
        # vector twice at the end of a build (2 GB more at 100k chunks)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        alongside = self._alongside

        def fetch(worker: _Worker, start: int, batch: list[str]) -> None:
            wanted = [alongside is not None and t in alongside for t in batch]
            if not any(wanted):
                out[start : start + len(batch)] = worker.encode(batch)
                return
            out[start : start + len(batch)], ids, weights = worker.both(batch, wanted)
            assert alongside is not None
            for j, text in enumerate(batch):
                if wanted[j]:
                    alongside[text] = (ids[j], weights[j])

        self._run_pooled(texts, fetch, progress)
        return out

    @contextlib.contextmanager
    def terms_alongside(self, texts: Sequence[str], keep_workers: bool = True) -> Iterator[PooledEncoder]:
        """Inside the block, ``encode_passages`` makes the latent terms of any of ``texts`` with their
        vectors, in the worker that encodes them (in its vectors' pass where the model makes them
        so), and ``encode_terms`` of them returns those; with ``keep_workers`` the workers stay up
        for the block. Inputs too small for the pool are encoded here, the same way."""
        local = terms_encoder(self.local)
        self._alongside = dict.fromkeys(texts)
        try:
            with contextlib.ExitStack() as stack:
                if local is not None and hasattr(local, "terms_alongside"):
                    stack.enter_context(local.terms_alongside(texts))
                if keep_workers:
                    stack.enter_context(self.workers())
                yield self
        finally:
            self._alongside = None

    def encode_terms(self, texts: Sequence[str], progress: Callable[[int], None] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Latent terms of long inputs in the workers, like ``encode_passages`` (models with e5 only:
        ``rag.encoders.terms_encoder`` offers the pool only then)."""
        texts = list(texts)
        local = terms_encoder(self.local)
        if local is None:
            raise ModelError(f"the model {self.spec!r} makes no latent terms")
        made = [None if self._alongside is None else self._alongside.get(t) for t in texts]
        if texts and all(m is not None for m in made):  # made with their vectors, in the workers
            if progress is not None:
                progress(len(texts))
            return (np.stack([m[0] for m in made if m is not None]), np.stack([m[1] for m in made if m is not None]))
        if self._open is None and (self.processes < 2 or len(texts) < 2 or sum(map(len, texts)) < self.min_chars):
            return local.encode_terms(texts, progress)
        ids = np.zeros((len(texts), TERMS), dtype=np.uint16)
        weights = np.zeros((len(texts), TERMS), dtype=np.float16)

        def fetch(worker: _Worker, start: int, batch: list[str]) -> None:
            ids[start : start + len(batch)], weights[start : start + len(batch)] = worker.terms(batch)

        self._run_pooled(texts, fetch, progress)
        return ids, weights

    def _run_pooled(self, texts: list[str], fetch: Callable[[_Worker, int, list[str]], None],
                    progress: Callable[[int], None] | None) -> None:
        with self._lock:
            if self._open is not None:
                self._serve(self._open, texts, fetch, progress)
                return
            workers = self._start()
            try:
                self._serve(workers, texts, fetch, progress)
            finally:
                _close_all(workers)

    @contextlib.contextmanager
    def workers(self) -> Iterator[PooledEncoder]:
        """Keep the workers up (models loaded) for every ``encode_passages`` call inside the block."""
        with self._lock:
            self._open = self._start()
        try:
            yield self
        finally:
            with self._lock:
                workers, self._open = self._open or [], None
                _close_all(workers)

    def _start(self) -> list[_Worker]:
        workers = [_Worker(self.spec, self.threads, self.terms_pass) for _ in range(self.processes)]
        try:  # they load their models at the same time; the headers are read one after the other
            for worker in workers:
                header = worker.handshake()
                if header.get("id") != self.model_id or worker.dim != self.dim:
                    raise ModelError(
                        f"an encoding worker loaded {header.get('id')!r} ({worker.dim} dimensions) where "
                        f"{self.model_id!r} ({self.dim}) was expected"
                    )
        except BaseException:
            _close_all(workers, kill=True)
            raise
        return workers

    def _serve(self, workers: list[_Worker], texts: list[str], fetch: Callable[[_Worker, int, list[str]], None],
               progress: Callable[[int], None] | None) -> None:
        """Hand the batches of ``texts`` to the workers; ``fetch`` asks one and stores its rows."""
        batches = [texts[i : i + self.batch] for i in range(0, len(texts), self.batch)]
        filled = [False] * len(batches)
        events: queue.Queue[tuple[str, Any]] = queue.Queue()
        next_batch = iter(range(len(batches)))
        take = threading.Lock()
        stop = threading.Event()

        def serve(worker: _Worker) -> None:
            try:
                while not stop.is_set():
                    with take:
                        i = next(next_batch, None)
                    if i is None:
                        break
                    fetch(worker, i * self.batch, batches[i])
                    filled[i] = True
                    events.put(("done", len(batches[i])))
            except BaseException as exc:  # handed to the caller's thread, which raises it
                events.put(("error", exc))
            finally:
                events.put(("exit", None))

        servers = [threading.Thread(target=serve, args=(w,), daemon=True) for w in workers]
        for server in servers:
            server.start()
        running, error = len(servers), None
        try:
            while running:
                kind, value = events.get()
                if kind == "exit":
                    running -= 1
                elif kind == "error":
                    error = error or value
                    stop.set()
                elif progress is not None:
                    progress(value)
        except BaseException:  # e.g. Ctrl-C in the progress callback: stop the workers where they are
            stop.set()
            _close_all(workers, kill=True)
            raise
        if error is not None:  # the other worker may be mid-batch: kill, and never reuse either
            if workers is self._open:
                self._open = None
            _close_all(workers, kill=True)
            raise error
        if not all(filled):  # pragma: no cover - every way to stop early raises above
            raise ModelError(f"the encoding workers returned {sum(filled)} of {len(batches)} batches")


def pooled_encoder(spec: str, threads: int = 2, processes: int = 2, terms_pass: str = "one") -> Encoder:
    """The encoder of ``spec``, with long ``encode_passages`` calls (index builds) run in ``processes`` workers.

    Each worker runs ``threads // processes`` threads. With ``processes`` 1, for the hashing
    encoder (faster than starting a worker), or for a model whose e5 runs in PyTorch (its
    matrix products keep every core busy in one process, and its latent terms come from the
    vectors' own pass only there), the plain in-process encoder.
    """
    encoder = create_encoder(spec, threads, terms_pass)
    one_process = getattr(terms_encoder(encoder), "one_process", False)
    if processes > 1 and not isinstance(encoder, HashEncoder) and not one_process:
        return PooledEncoder(spec, encoder, processes=processes, threads=max(1, threads // processes),
                             terms_pass=terms_pass)
    return encoder


def _close_all(workers: Sequence[_Worker], kill: bool = False) -> None:
    for worker in workers:
        worker.close(kill)


def _terms_of(encoder: Encoder, spec: str) -> Any:
    terms = terms_encoder(encoder)
    if terms is None:
        raise ModelError(f"the model {spec!r} makes no latent terms")
    return terms


def _both(encoder: Encoder, spec: str, texts: list[str], wanted: list[bool]) -> bytes:
    terms = _terms_of(encoder, spec)
    asked = [t for t, w in zip(texts, wanted, strict=True) if w]
    with terms.terms_alongside(asked):
        vectors = encoder.encode_passages(texts)
        made_ids, made_weights = terms.encode_terms(asked)
    ids, weights = np.zeros((len(texts), TERMS), dtype=np.uint16), np.zeros((len(texts), TERMS), dtype=np.float16)
    ids[np.asarray(wanted, dtype=bool)], weights[np.asarray(wanted, dtype=bool)] = made_ids, made_weights
    return np.ascontiguousarray(vectors, dtype=np.float32).tobytes() + _terms_bytes(ids, weights)


def worker_main(argv: Sequence[str]) -> int:
    """``python -m rag.pool SPEC THREADS [TERMS_PASS]``: load the model, then encode requests until an empty one."""
    spec, threads, terms_pass = argv[0], int(argv[1]), (argv[2] if len(argv) > 2 else "one")
    stdin, out = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the frames
    try:
        encoder = create_encoder(spec, threads, terms_pass)
        encoder.encode_passages(["warm up"])  # load now, so the header means "ready"
        header = {"id": encoder.model_id, "dim": encoder.dim, "pid": os.getpid()}
    except Exception as exc:
        _write_frame(out, b"E" + str(exc).encode("utf-8", "replace"))
        return 1
    _write_frame(out, b"H" + json.dumps(header).encode("utf-8"))
    while True:
        try:
            request = _read_frame(stdin)
        except EOFError:  # the parent went away
            return 0
        if not request:
            return 0
        try:
            texts = json.loads(request.decode("utf-8"))
            if isinstance(texts, dict) and "passages" in texts:  # vectors and terms, one pass where it can
                reply = b"B" + _both(encoder, spec, texts["passages"], texts["terms"])
            elif isinstance(texts, dict):  # {"terms": [...]}
                reply = b"T" + _terms_bytes(*_terms_of(encoder, spec).encode_terms(texts["terms"]))
            else:
                reply = b"V" + np.ascontiguousarray(encoder.encode_passages(texts), dtype=np.float32).tobytes()
        except Exception as exc:
            _write_frame(out, b"E" + f"encoding failed in a worker: {exc}".encode("utf-8", "replace"))
            return 1
        _write_frame(out, reply)


if __name__ == "__main__":
    raise SystemExit(worker_main(sys.argv[1:]))
