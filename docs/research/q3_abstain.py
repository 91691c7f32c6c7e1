"""Q3: abstention calibration. Corpus = tune-half docs (A) or validate-half docs (B); all questions asked;
questions whose gold doc is outside the corpus should abstain. Writes results/q3.json"""
import json
import numpy as np
from data import *
from q1_retrieval import components

W = 0.35

def feats(R):
    st = R["starts"]
    c, Zc = components(R)
    bs = segmax(R["sc"], st); ubs = segmax(R["usc"], st)
    F = Zc["pc"] + Zc["bs_e5"] + W * (Zc["upc"] + Zc["bs_use"])
    top = np.argmax(F, 1); ar = np.arange(len(top))
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

def auc(pos, neg):
    # P(score_pos > score_neg); pos = unanswerable should have LOWER score, so pass (answerable, unanswerable)
    from scipy.stats import rankdata
    x = np.r_[pos, neg]; r = rankdata(x)
    return float((r[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))

def pr_at(ans, una, t):
    # abstain if score < t ; positive class = unanswerable
    tp = (una < t).sum(); fp = (ans < t).sum(); fn = (una >= t).sum()
    p = tp / max(tp + fp, 1); r = tp / max(tp + fn, 1)
    return dict(thr=float(t), precision=float(p), recall=float(r), f1=float(2 * p * r / max(p + r, 1e-9)),
                false_abstention=float(fp / len(ans)))

def best_f1(ans, una):
    cand = np.unique(np.r_[ans, una])
    best = max((pr_at(ans, una, t)["f1"], t) for t in cand[::max(1, len(cand) // 2000)])
    return best[1]

def far10(ans):
    return float(np.quantile(ans, 0.10))

def logreg(X, y, l2=1e-3, it=3000, lr=0.5):
    mu, sd = X.mean(0), X.std(0) + 1e-9
    Xs = (X - mu) / sd; w = np.zeros(X.shape[1]); b = 0.0
    for _ in range(it):
        p = 1 / (1 + np.exp(-(Xs @ w + b)))
        g = p - y
        w -= lr * (Xs.T @ g / len(y) + l2 * w); b -= lr * g.mean()
    return lambda Xn: ((Xn - mu) / sd) @ w + b, (w / sd, b - (mu / sd) @ w)

if __name__ == "__main__":
    data = {}  # (set, split) -> feats, answerable
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
    out = {"per_set": {}, "pooled": {}}
    # per-set AUC and thresholds (within each set and split)
    for (s, split), (f, a) in data.items():
        r = {}
        for fn in fnames:
            x = f[fn]; ans, una = x[a], x[~a]
            tf = best_f1(ans, una); t10 = far10(ans)
            r[fn] = dict(auc=auc(ans, una), bestF1=pr_at(ans, una, tf), far10=pr_at(ans, una, t10))
        out["per_set"][f"{s}|{split}"] = r
    # pooled: fit thresholds on split A of all 4 sets, evaluate on split B per set (and vice versa)
    for fit, ev in [("A", "B"), ("B", "A")]:
        res = {}
        for fn in fnames + list(LR_SETS):
            if fn in LR_SETS:
                cols = LR_SETS[fn]
                Xf = np.vstack([np.c_[tuple(data[(s, fit)][0][c] for c in cols)] for s in SETS])
                yf = np.r_[tuple(data[(s, fit)][1] for s in SETS)].astype(float)
                model, coef = logreg(Xf, yf)
                xf = model(Xf); get = lambda s, sp: model(np.c_[tuple(data[(s, sp)][0][c] for c in cols)])
            else:
                xf = np.r_[tuple(data[(s, fit)][0][fn] for s in SETS)]; yf = np.r_[tuple(data[(s, fit)][1] for s in SETS)]
                get = lambda s, sp, fn=fn: data[(s, sp)][0][fn]; coef = None
            yb = yf.astype(bool)
            tf = best_f1(xf[yb], xf[~yb]); t10 = far10(xf[yb])
            # per-set far10 thresholds to see the spread
            r = {"thr_bestF1": float(tf), "thr_far10": float(t10), "coef": None if coef is None else [list(map(float, coef[0])), float(coef[1])],
                 "fit_auc": auc(xf[yb], xf[~yb]), "eval": {}}
            for s in SETS:
                x = get(s, ev); a = data[(s, ev)][1]
                xs_fit = get(s, fit); a_fit = data[(s, fit)][1]
                r["eval"][s] = dict(auc=auc(x[a], x[~a]), at_bestF1=pr_at(x[a], x[~a], tf), at_far10=pr_at(x[a], x[~a], t10),
                                    own_far10_thr_fitsplit=far10(xs_fit[a_fit]),
                                    mean_ans=float(x[a].mean()), mean_una=float(x[~a].mean()))
            xe = np.r_[tuple(get(s, ev) for s in SETS)]; ae = np.r_[tuple(data[(s, ev)][1] for s in SETS)]
            r["eval_pooled"] = dict(auc=auc(xe[ae], xe[~ae]), at_bestF1=pr_at(xe[ae], xe[~ae], tf), at_far10=pr_at(xe[ae], xe[~ae], t10))
            res[fn] = r
        out["pooled"][f"fit{fit}_eval{ev}"] = res
    json.dump(out, open("results/q3.json", "w"), indent=1)
    print("done")
