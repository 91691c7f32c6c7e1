"""Q1: paragraph retrieval R@1/R@5 for scoring variants, per set and half. Writes results/q1.json"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from data import SETS, load_set, segmax, z


def recall(F: np.ndarray, gold: np.ndarray, mask: np.ndarray, k: int) -> float:
    top = np.argsort(-F[mask], axis=1)[:, :k]
    return float((top == gold[mask, None]).any(1).mean())


def components(R: dict[str, Any], cand: np.ndarray | None = None
               ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """cand: boolean nq x nP candidate mask (z computed over candidates only) or None (all)."""
    st = R["starts"]
    c = {}
    c["pc"], c["upc"] = R["pc"], R["upc"]
    c["bs_e5"] = segmax(R["sc"], st)
    c["bs_use"] = segmax(R["usc"], st)
    c["bm_p"] = R["bp"]
    c["bm_s"] = segmax(R["bs"], st)
    Z = {k: z(v, cand) for k, v in c.items()}
    return c, Z


def variants(R: dict[str, Any], cand: np.ndarray | None = None
             ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    c, Z = components(R, cand)
    V = {}
    V["a_e5_para"] = c["pc"]
    V["b_e5_bestsent"] = c["bs_e5"]
    V["c_raw_e5_p+s"] = c["pc"] + c["bs_e5"]
    V["c_z_e5_p+s"] = Z["pc"] + Z["bs_e5"]
    for w in [0.2, 0.35, 0.5, 0.75, 1.0]:
        V[f"d_z_w{w}"] = Z["pc"] + Z["bs_e5"] + w * (Z["upc"] + Z["bs_use"])
        V[f"d_raw_w{w}"] = c["pc"] + c["bs_e5"] + w * (c["upc"] + c["bs_use"])
        # e: concatenated vectors [e5, sqrt(w) use]/sqrt(1+w): paragraph index + sentence index (best sentence jointly)
        V[f"e_concat_w{w}"] = (c["pc"] + w * c["upc"] + segmax(R["sc"] + w * R["usc"], R["starts"])) / (1 + w)
        V[f"e_concat_paraonly_w{w}"] = c["pc"] + w * c["upc"]
    # USE only for reference
    V["ref_use_p+s_z"] = Z["upc"] + Z["bs_use"]
    return V, c, Z


def bm25_variants(R: dict[str, Any], base: np.ndarray, Z: dict[str, np.ndarray],
                  cand: np.ndarray | None = None) -> dict[str, np.ndarray]:
    V = {}
    same = R["same"]  # nq x nP: question lang == doc lang (py3langid)
    vf = R["vfrac"][:, None]
    for src, B in [("p", Z["bm_p"]), ("s", Z["bm_s"]), ("ps", 0.5 * (Z["bm_p"] + Z["bm_s"]))]:
        for w in [0.1, 0.2, 0.3, 0.5, 0.75]:
            V[f"bm{src}_w{w}_always"] = base + w * B
            V[f"bm{src}_w{w}_langid"] = base + w * B * same
            V[f"bm{src}_w{w}_soft"] = base + w * B * vf
            V[f"bm{src}_w{w}_soft2"] = base + w * B * vf ** 2
    return V


if __name__ == "__main__":
    out: dict[str, dict[str, Any]] = {}
    for s in SETS:
        R = load_set(s)
        g = R["gold"]
        halves = {"tune": R["tune"], "val": ~R["tune"]}
        res: dict[str, Any] = {}
        # all-paragraph z
        V, c, Z = variants(R)
        for base_name in ["d_z_w0.35", "d_z_w0.5", "c_z_e5_p+s"]:
            for k, v in bm25_variants(R, V[base_name], Z).items():
                V[f"{base_name}+{k}"] = v
        # top-N candidate z (N=50 by e5 paragraph cosine, as FAISS would return)
        for N in [20, 50]:
            top = np.argsort(-R["pc"], 1)[:, :N]
            cand = np.zeros_like(R["pc"], bool)
            np.put_along_axis(cand, top, True, 1)
            Vn, _cn, Zn = variants(R, cand)
            for k in ["c_z_e5_p+s", "d_z_w0.2", "d_z_w0.35", "d_z_w0.5", "d_z_w0.75"]:
                V[f"top{N}:{k}"] = Vn[k]
            for k, v in bm25_variants(R, Vn["d_z_w0.35"], Zn).items():
                V[f"top{N}:d_z_w0.35+{k}"] = v
            # also candidates = top-N by concat score (w=0.35)
        for name, F in V.items():
            res[name] = {h: [recall(F, g, m, 1), recall(F, g, m, 5)] for h, m in halves.items()}
        out[s] = res
        # language id / vocab frac diagnostics
        out[s]["_diag"] = dict(qlang_counts={lang: R["qlang"].count(lang) for lang in set(R["qlang"])},
                               plang=sorted(set(R["C"]["plang"])), vfrac_mean=float(R["vfrac"].mean()),
                               vfrac_median=float(np.median(R["vfrac"])))
        print(s, "done", flush=True)
    os.makedirs("results", exist_ok=True)
    with open("results/q1.json", "w") as fh:
        json.dump(out, fh, indent=1)
