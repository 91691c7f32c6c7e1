"""Q1's table from results/q1.json: ``python3 summarize_q1.py [filter] [rows]``, best mean tune R@1 first."""

from __future__ import annotations

import json
import sys

SETS = ["en-de", "en-es", "de-de", "es-es"]


def cell(x: list[float]) -> str:
    return "/".join(f"{100*a:.1f}" for a in x) + f" ({100*sum(x)/4:.1f})"


with open("results/q1.json") as fh:
    d = json.load(fh)
names = [k for k in d["en-de"] if not k.startswith("_")]
pat = sys.argv[1] if len(sys.argv) > 1 else ""
rows = []
for n in names:
    if pat and pat not in n:
        continue
    t = [d[s][n]["tune"][0] for s in SETS]
    v = [d[s][n]["val"][0] for s in SETS]
    rows.append((sum(t) / 4, n, t, v, [d[s][n]["tune"][1] for s in SETS], [d[s][n]["val"][1] for s in SETS]))
rows.sort(reverse=True)
lim = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
print("| variant | R@1 tune en-de/en-es/de-de/es-es (mean) | R@1 val (mean) | R@5 tune mean | R@5 val mean |\n"
      "|---|---|---|---|---|")
for _mean, n, t, v, t5, v5 in rows[:lim]:
    print(f"| {n} | {cell(t)} | {cell(v)} | {100*sum(t5)/4:.1f} | {100*sum(v5)/4:.1f} |")
