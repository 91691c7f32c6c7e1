"""Q2: answer sentence selection accuracy. Writes results/q2.json
Paragraph score F = recommended fusion (see PARA_SCORE)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from common import norm
from data import SETS, load_set, z
from q1_retrieval import components

W_USE = float(os.environ.get("W_USE", 0.35))
W_BM = float(os.environ.get("W_BM", 0.0))


def para_score(R: dict[str, Any]) -> np.ndarray:
    _c, Z = components(R)
    F = Z["pc"] + Z["bs_e5"] + W_USE * (Z["upc"] + Z["bs_use"])
    if W_BM:
        F = F + W_BM * Z["bm_s"] * R["same"]
    return F


def hit(R: dict[str, Any], qi: int, sel: Sequence[int]) -> bool:
    q = R["Q"][qi]
    S = R["C"]["S"]
    txt = norm(" ".join(S[R["sids"][j]]["text"] for j in sel))
    return any(norm(a) in txt for a in q["answers"])


def select(score: np.ndarray, allowed: np.ndarray, d: float, maxn: int = 3) -> list[int]:
    s = np.where(allowed, score, -np.inf)
    order = np.argsort(-s)[:maxn]
    top = s[order[0]]
    return [j for j in order if np.isfinite(s[j]) and s[j] >= top - d]


def _contains_answer(R: dict[str, Any], i: int, pid: int) -> bool:
    text = norm(R["C"]["P"][R["pids"][pid]]["text"])
    return any(norm(a) in text for a in R["Q"][i]["answers"])


if __name__ == "__main__":
    out = {}
    for sname in SETS:
        R = load_set(sname)
        nq = len(R["Q"])
        F = para_score(R)
        zF = z(F)
        ranked = np.argsort(-F, 1)
        s2p = R["s2p"]
        zs, zu, zb = z(R["sc"]), z(R["usc"]), z(R["bs"])
        sameS = R["same"][:, s2p]
        methods = {
            # name: (sentence score matrix, candidate set: 'global'|'top1'|'top3'|'gold', margins)
            "e5_raw": (R["sc"], [0, 0.01, 0.02, 0.03, 0.05]),
            "e5_z": (zs, [0, 0.25, 0.5, 1.0]),
            "e5+use_z": (zs + W_USE * zu, [0, 0.25, 0.5, 1.0]),
            "e5+use+bm_z(same-lang)": (zs + W_USE * zu + 0.3 * zb * sameS, [0, 0.25, 0.5, 1.0]),
            "e5+bm_z(same-lang)": (zs + 0.3 * zb * sameS, [0, 0.25, 0.5, 1.0]),
            "e5+use_z+0.5para": (zs + W_USE * zu + 0.5 * zF[:, s2p], [0, 0.25, 0.5, 1.0]),
            "e5+use_z+1.0para": (zs + W_USE * zu + 1.0 * zF[:, s2p], [0, 0.25, 0.5, 1.0]),
            "e5+use+bm_z+0.5para": (zs + W_USE * zu + 0.3 * zb * sameS + 0.5 * zF[:, s2p], [0, 0.25, 0.5, 1.0]),
            "e5+use+bm_z+1.0para": (zs + W_USE * zu + 0.3 * zb * sameS + 1.0 * zF[:, s2p], [0, 0.25, 0.5, 1.0]),
        }
        res = {}
        halves = {"tune": R["tune"], "val": ~R["tune"]}
        # references
        p1 = ranked[:, 0]
        para_hit = np.array([_contains_answer(R, i, p1[i]) for i in range(nq)])
        res["ref_top1_paragraph_contains_answer"] = {h: [float(para_hit[m].mean()), 1.0] for h, m in halves.items()}
        res["ref_top1_paragraph_is_gold"] = {h: [float((p1 == R["gold"])[m].mean()), 0] for h, m in halves.items()}
        for mname, (Ssc, margins) in methods.items():
            for scope in ["global", "top1", "top3", "gold"]:
                if scope == "global":
                    allowed = np.ones_like(Ssc, bool)
                elif scope == "top1":
                    allowed = s2p[None, :] == p1[:, None]
                elif scope == "top3":
                    allowed = (s2p[None, :, None] == ranked[:, None, :3]).any(2)
                else:
                    allowed = s2p[None, :] == R["gold"][:, None]
                for d in margins:
                    hits, ns = np.zeros(nq, bool), np.zeros(nq)
                    for i in range(nq):
                        sel = select(Ssc[i], allowed[i], d)
                        hits[i] = hit(R, i, sel)
                        ns[i] = len(sel)
                    res[f"{mname}|{scope}|d={d}"] = {h: [float(hits[m].mean()), float(ns[m].mean())]
                                                     for h, m in halves.items()}
        out[sname] = res
        print(sname, "done", flush=True)
    with open(f"results/q2_wuse{W_USE}_wbm{W_BM}.json", "w") as fh:
        json.dump(out, fh, indent=1)
