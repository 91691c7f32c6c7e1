"""Load cached embeddings + BM25 + langid into per-set arrays."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Collection, Sequence
from typing import Any

# the thread counts must be set before numpy loads its BLAS
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")

import numpy as np
from common import DOCLANG, SETS, key, load_corpus, load_questions

TOK = re.compile(r"(?u)\b\w\w+\b")


def tokenize(t: str) -> list[str]:
    return TOK.findall(t.lower())


@functools.lru_cache(None)
def corpus(lang: str) -> dict[str, Any]:
    files, P, S = load_corpus(lang)
    pt = [p["text"] for p in P]
    st = [s["text"] for s in S]
    d: dict[str, Any] = dict(files=[os.path.basename(f) for f in files], P=P, S=S,
                             e5P=np.load(key("e5", "psg", pt)), e5S=np.load(key("e5", "psg", st)),
                             uP=np.load(key("use", "psg", pt)), uS=np.load(key("use", "psg", st)))
    d["spid"] = np.array([s["pid"] for s in S])
    d["pdoc"] = np.array([p["doc_idx"] for p in P])
    d["starts"] = np.r_[0, np.flatnonzero(np.diff(d["spid"])) + 1]
    assert len(d["starts"]) == len(P)
    d["ptok"] = [tokenize(t) for t in pt]
    d["stok"] = [tokenize(t) for t in st]
    import py3langid
    d["plang"] = [None] * len(P)
    for di, f in enumerate(files):
        with open(f, encoding="utf-8", newline="") as fh:
            txt = fh.read()
        lg = py3langid.classify(txt)[0]
        for i, p in enumerate(P):
            if p["doc_idx"] == di:
                d["plang"][i] = lg
    return d


@functools.lru_cache(None)
def qemb() -> tuple[dict[str, int], np.ndarray, np.ndarray]:
    qs = sorted({q["question"] for s in SETS for q in load_questions(s)})
    idx = {q: i for i, q in enumerate(qs)}
    return idx, np.load(key("e5", "qry", qs)), np.load(key("use", "qry", qs))


class BM25:
    """plain Okapi BM25 (k1=1.5,b=0.75, lucene idf) via bm25s, restricted to a subset of units."""

    def __init__(self, toks: Sequence[list[str]]) -> None:
        import bm25s
        self.r = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
        self.r.index(toks, show_progress=False)
        self.vocab = self.r.vocab_dict

    def scores(self, qtok: Sequence[str]) -> np.ndarray | None:
        qt = [t for t in qtok if t in self.vocab]
        if not qt:
            return None
        return self.r.get_scores(qt)


def load_set(setname: str, doc_subset: Collection[int] | None = None) -> dict[str, Any]:
    """doc_subset: set of doc indices forming the corpus (None = all). Returns dict of score matrices."""
    lang = DOCLANG[setname]
    C = corpus(lang)
    Q = load_questions(setname)
    idx, QE, QU = qemb()
    qi = np.array([idx[q["question"]] for q in Q])
    qe, qu = QE[qi], QU[qi]
    pmask = np.ones(len(C["P"]), bool) if doc_subset is None else np.isin(C["pdoc"], sorted(doc_subset))
    pids = np.flatnonzero(pmask)
    smask = pmask[C["spid"]]
    sids = np.flatnonzero(smask)
    # gold paragraph
    ptext = {C["P"][i]["text"]: i for i in range(len(C["P"]))}
    gold = np.array([ptext[q["context"]] for q in Q])
    fname2idx = {f: i for i, f in enumerate(C["files"])}
    qdoc = np.array([fname2idx[q["doc"]] for q in Q])
    R: dict[str, Any] = dict(set=setname, Q=Q, C=C, pids=pids, sids=sids, gold_pid=gold, qdoc=qdoc)
    R["pc"] = qe @ C["e5P"][pids].T
    R["sc"] = qe @ C["e5S"][sids].T
    R["upc"] = qu @ C["uP"][pids].T
    R["usc"] = qu @ C["uS"][sids].T
    # local sentence->paragraph index
    loc = {p: i for i, p in enumerate(pids)}
    R["s2p"] = np.array([loc[p] for p in C["spid"][sids]])
    R["starts"] = np.r_[0, np.flatnonzero(np.diff(R["s2p"])) + 1]
    R["gold"] = np.array([loc.get(g, -1) for g in gold])
    # BM25
    bp = BM25([C["ptok"][i] for i in pids])
    bs = BM25([C["stok"][i] for i in sids])
    qtoks = [tokenize(q["question"]) for q in Q]
    nP, nS = len(pids), len(sids)
    R["bp"] = np.zeros((len(Q), nP), np.float32)
    R["bs"] = np.zeros((len(Q), nS), np.float32)
    R["vfrac"] = np.zeros(len(Q))
    for i, t in enumerate(qtoks):
        a = bp.scores(t)
        b = bs.scores(t)
        if a is not None:
            R["bp"][i] = a
        if b is not None:
            R["bs"][i] = b
        R["vfrac"][i] = (sum(1 for x in t if x in bp.vocab) / len(t)) if t else 0.0
    import py3langid
    qlang = [py3langid.classify(q["question"])[0] for q in Q]
    plang = [C["plang"][i] for i in pids]
    R["qlang"] = qlang
    R["same"] = np.array([[ql == pl for pl in plang] for ql in qlang])  # nq x nP
    # half split: docs sorted by name, even index = tune
    R["tune"] = (qdoc % 2 == 0)
    return R


def segmax(X: np.ndarray, starts: np.ndarray) -> np.ndarray:
    return np.maximum.reduceat(X, starts, axis=1)


def z(X: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    if mask is None:
        m = X.mean(1, keepdims=True)
        s = X.std(1, keepdims=True) + 1e-9
        return (X - m) / s
    Xm = np.where(mask, X, np.nan)
    m = np.nanmean(Xm, 1, keepdims=True)
    s = np.nanstd(Xm, 1, keepdims=True) + 1e-9
    return np.where(mask, (X - m) / s, -1e9)
