"""Q3: abstention calibration. Corpus = tune-half docs (A) or validate-half docs (B); all questions asked;
questions whose gold doc is outside the corpus should abstain. Writes results/q3.json"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
from data import SETS, load_set, segmax
from q1_retrieval import components

W = 0.35

# (set, split) -> (feature name -> one score per question, which questions are answerable)
Data = dict[tuple[str, str], tuple[dict[str, np.ndarray], np.ndarray]]
Scores = Callable[[str, str], np.ndarray]  # (set, split) -> one score per question


def feats(R: dict[str, Any]) -> dict[str, np.ndarray]:
    st = R["starts"]
    _c, Zc = components(R)
    bs = segmax(R["sc"], st)
    F = Zc["pc"] + Zc["bs_e5"] + W * (Zc["upc"] + Zc["bs_use"])
    top = np.argmax(F, 1)
    ar = np.arange(len(top))
    concat = (R["pc"] + W * R["upc"] + segmax(R["sc"] + W * R["usc"], st)) / (1 + W)
    srt = np.sort(R["pc"], 1)
    f = {
        "e5_best_sent_cos": R["sc"].max(1),
        "e5_best_para_cos": R["pc"].max(1),
        "e5_para+sent_raw_max/2": ((R["pc"] + bs) / 2).max(1),
        "use_best_sent_cos": R["usc"].max(1),
        "use_best_para_cos": R["upc"].max(1),
        "concat_w0.35_max": concat.max(1),
        "e5_sent_cos_of_fused_top": bs[ar, top],
        "e5_para_margin_top1-top2": srt[:, -1] - srt[:, -2],
        "fused_z_top1": F.max(1),
        "fused_z_margin": np.sort(F, 1)[:, -1] - np.sort(F, 1)[:, -2],
        "e5_sent_cos_minus_corpus_mean": R["sc"].max(1) - R["sc"].mean(1),
    }
    return f


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    # P(score_pos > score_neg); pos = unanswerable should have LOWER score, so pass (answerable, unanswerable)
    from scipy.stats import rankdata
    x = np.r_[pos, neg]
    r = rankdata(x)
    return float((r[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def pr_at(ans: np.ndarray, una: np.ndarray, t: float) -> dict[str, float]:
    # abstain if score < t ; positive class = unanswerable
    tp = (una < t).sum()
    fp = (ans < t).sum()
    fn = (una >= t).sum()
    p = tp / max(tp + fp, 1)
    r = tp / max(tp + fn, 1)
    return dict(thr=float(t), precision=float(p), recall=float(r), f1=float(2 * p * r / max(p + r, 1e-9)),
                false_abstention=float(fp / len(ans)))


def best_f1(ans: np.ndarray, una: np.ndarray) -> float:
    cand = np.unique(np.r_[ans, una])
    best = max((pr_at(ans, una, t)["f1"], t) for t in cand[::max(1, len(cand) // 2000)])
    return best[1]


def far10(ans: np.ndarray) -> float:
    return float(np.quantile(ans, 0.10))


def logreg(X: np.ndarray, y: np.ndarray, l2: float = 1e-3, it: int = 3000, lr: float = 0.5
           ) -> tuple[Callable[[np.ndarray], np.ndarray], tuple[np.ndarray, float]]:
    mu, sd = X.mean(0), X.std(0) + 1e-9
    Xs = (X - mu) / sd
    w = np.zeros(X.shape[1])
    b = 0.0
    for _ in range(it):
        p = 1 / (1 + np.exp(-(Xs @ w + b)))
        g = p - y
        w -= lr * (Xs.T @ g / len(y) + l2 * w)
        b -= lr * g.mean()
    return lambda Xn: ((Xn - mu) / sd) @ w + b, (w / sd, b - (mu / sd) @ w)


def columns(data: Data, s: str, split: str, cols: list[str]) -> np.ndarray:
    return np.c_[tuple(data[(s, split)][0][c] for c in cols)]


def feature_scores(data: Data, fn: str) -> Scores:
    def get(s: str, sp: str) -> np.ndarray:
        return data[(s, sp)][0][fn]
    return get


def model_scores(data: Data, model: Callable[[np.ndarray], np.ndarray], cols: list[str]) -> Scores:
    def get(s: str, sp: str) -> np.ndarray:
        return model(columns(data, s, sp, cols))
    return get


if __name__ == "__main__":
    data: Data = {}
    for s in SETS:
        for split, keep_even in [("A", True), ("B", False)]:
            docs = {i for i in range(48) if (i % 2 == 0) == keep_even}
            R = load_set(s, docs)
            f = feats(R)
            ansb = np.isin(R["qdoc"], sorted(docs))
            data[(s, split)] = (f, ansb)
        print(s, "loaded", flush=True)
    fnames = list(data[(SETS[0], "A")][0].keys())
    LR_SETS = {"LR(best_sent,best_para,use_sent)": ["e5_best_sent_cos", "e5_best_para_cos", "use_best_sent_cos"],
               "LR(best_sent,margin)": ["e5_best_sent_cos", "e5_para_margin_top1-top2"],
               "LR(best_sent,fused_z_top1)": ["e5_best_sent_cos", "fused_z_top1"]}
    out: dict[str, dict[str, Any]] = {"per_set": {}, "pooled": {}}
    # per-set AUC and thresholds (within each set and split)
    for (s, split), (f, a) in data.items():
        per_feature = {}
        for fn in fnames:
            x = f[fn]
            ans, una = x[a], x[~a]
            tf = best_f1(ans, una)
            t10 = far10(ans)
            per_feature[fn] = dict(auc=auc(ans, una), bestF1=pr_at(ans, una, tf), far10=pr_at(ans, una, t10))
        out["per_set"][f"{s}|{split}"] = per_feature
    # pooled: fit thresholds on split A of all 4 sets, evaluate on split B per set (and vice versa)
    for fit, ev in [("A", "B"), ("B", "A")]:
        res = {}
        for fn in fnames + list(LR_SETS):
            coef: tuple[np.ndarray, float] | None = None
            get: Scores
            if fn in LR_SETS:
                cols = LR_SETS[fn]
                Xf = np.vstack([columns(data, s, fit, cols) for s in SETS])
                yf = np.r_[tuple(data[(s, fit)][1] for s in SETS)].astype(float)
                model, coef = logreg(Xf, yf)
                xf = model(Xf)
                get = model_scores(data, model, cols)
            else:
                xf = np.r_[tuple(data[(s, fit)][0][fn] for s in SETS)]
                yf = np.r_[tuple(data[(s, fit)][1] for s in SETS)]
                get = feature_scores(data, fn)
            yb = yf.astype(bool)
            tf = best_f1(xf[yb], xf[~yb])
            t10 = far10(xf[yb])
            # per-set far10 thresholds to see the spread
            r: dict[str, Any] = {"thr_bestF1": float(tf), "thr_far10": float(t10),
                 "coef": None if coef is None else [list(map(float, coef[0])), float(coef[1])],
                 "fit_auc": auc(xf[yb], xf[~yb]), "eval": {}}
            for s in SETS:
                x = get(s, ev)
                a = data[(s, ev)][1]
                xs_fit = get(s, fit)
                a_fit = data[(s, fit)][1]
                r["eval"][s] = dict(auc=auc(x[a], x[~a]), at_bestF1=pr_at(x[a], x[~a], tf),
                                    at_far10=pr_at(x[a], x[~a], t10),
                                    own_far10_thr_fitsplit=far10(xs_fit[a_fit]),
                                    mean_ans=float(x[a].mean()), mean_una=float(x[~a].mean()))
            xe = np.r_[tuple(get(s, ev) for s in SETS)]
            ae = np.r_[tuple(data[(s, ev)][1] for s in SETS)]
            r["eval_pooled"] = dict(auc=auc(xe[ae], xe[~ae]), at_bestF1=pr_at(xe[ae], xe[~ae], tf),
                                    at_far10=pr_at(xe[ae], xe[~ae], t10))
            res[fn] = r
        out["pooled"][f"fit{fit}_eval{ev}"] = res
    with open("results/q3.json", "w") as fh:
        json.dump(out, fh, indent=1)
    print("done")
