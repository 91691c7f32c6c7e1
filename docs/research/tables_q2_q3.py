"""The tables of REPORT.md from Q2's and Q3's results: results/q2_table.md and results/q3_table.md."""

from __future__ import annotations

import json

S = ["en-de", "en-es", "de-de", "es-es"]


def cell(x: list[float]) -> str:
    return "/".join(f"{100*a:.1f}" for a in x) + f" ({100*sum(x)/4:.1f})"


def prf(x: dict[str, float]) -> str:
    return f"{x['precision']:.2f}/{x['recall']:.2f}/{x['false_abstention']:.2f}"


with open("results/q2_wuse0.35_wbm0.3.json") as fh:
    d = json.load(fh)
with open("results/q2_table.md", "w") as o:
    o.write("| method \\| scope \\| margin d | acc tune en-de/en-es/de-de/es-es (mean) | acc val (mean) "
            "| mean #sentences |\n|---|---|---|---|\n")
    for k in d["en-de"]:
        t = [d[s][k]["tune"][0] for s in S]
        v = [d[s][k]["val"][0] for s in S]
        n = sum(d[s][k][h][1] for s in S for h in ["tune", "val"]) / 8
        o.write(f"| {k} | {cell(t)} | {cell(v)} | {n:.2f} |\n")
with open("results/q3.json") as fh:
    d = json.load(fh)
with open("results/q3_table.md", "w") as o:
    for fe in ["fitA_evalB", "fitB_evalA"]:
        o.write(f"\n**{fe}** (thresholds fitted on pooled 4 sets of split {fe[3]}, evaluated on split {fe[-1]}; "
                "abstain if feature < thr; P/R = precision/recall of abstention, FAR = false-abstention rate on "
                "answerable)\n\n")
        o.write("| feature | thr bestF1 | thr FAR10 | pooled eval AUC | eval P/R/FAR @bestF1 thr "
                "| eval P/R/FAR @FAR10 thr | per-set AUC en-de/en-es/de-de/es-es | per-set FAR @pooled FAR10 thr "
                "| per-set own FAR10 thr |\n|---|---|---|---|---|---|---|---|---|\n")
        for fn, r in sorted(d["pooled"][fe].items(), key=lambda x: -x[1]["eval_pooled"]["auc"]):
            e = r["eval_pooled"]
            o.write(f"| {fn} | {r['thr_bestF1']:.3f} | {r['thr_far10']:.3f} | {e['auc']:.3f} "
                    f"| {prf(e['at_bestF1'])} | {prf(e['at_far10'])} | "
                    + "/".join(f"{r['eval'][s]['auc']:.3f}" for s in S) + " | "
                    + "/".join(f"{r['eval'][s]['at_far10']['false_abstention']:.2f}" for s in S)
                    + " | " + "/".join(f"{r['eval'][s]['own_far10_thr_fitsplit']:.3f}" for s in S) + " |\n")
        coefs = {k: v["coef"] for k, v in d["pooled"][fe].items() if v["coef"]}
        o.write("\nLR coefficients (raw-feature scale, [w], b): " + json.dumps(coefs) + "\n")
