"""Split the seed question set into a tuning half and a test half, once, by group.

    python evals/split_seed.py            # writes evals/seed_tune.jsonl and evals/seed_test.jsonl
    python evals/split_seed.py --check    # writes nothing; fails if the files on disk differ

Every paraphrase or translation of a question shares a ``group``; a whole group goes to one
half, so no question is tuned on through a rewording of a test question. The groups are
shuffled with a fixed seed, then placed largest first on the half that keeps the counts per
(language, kind) cell closest to half of the full set, kind being answerable, near_miss
(on-topic unanswerable) or off_topic. The output keeps the order of the full file. It prints
the counts per half, language and kind.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
FULL = HERE / "seed_questions.jsonl"
HALVES = {"tune": HERE / "seed_tune.jsonl", "test": HERE / "seed_test.jsonl"}
SEED = 20221010  # the date of the phone call; fixed so that the split is the same on every run
KINDS = ("answerable", "near_miss", "off_topic")
LANGS = ("en", "fr", "de", "es")


def kind(row: dict) -> str:
    if row["answerable"]:
        return "answerable"
    return "near_miss" if row["near_miss"] else "off_topic"


def _cost(counts: dict[str, Counter], cells: Counter, half: str, target: dict) -> float:
    """Squared distance of every cell of both halves from its half-share, with ``cells`` placed on ``half``."""
    after = {h: counts[h] + cells if h == half else counts[h] for h in counts}
    return sum((after[h][c] - target[c]) ** 2 for c in target for h in counts)


def split(rows: list[dict], seed: int = SEED) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[row["group"]].append(row)
    names = sorted(groups)
    random.Random(seed).shuffle(names)
    # largest groups first (stable on the shuffled order): they are the hardest to balance
    names.sort(key=lambda g: -len(groups[g]))
    target = {cell: n / 2 for cell, n in Counter((r["question_lang"], kind(r)) for r in rows).items()}
    counts: dict[str, Counter] = {half: Counter() for half in HALVES}
    placed: dict[str, str] = {}
    for name in names:
        cells = Counter((r["question_lang"], kind(r)) for r in groups[name])

        half = min(HALVES, key=lambda h: (_cost(counts, cells, h, target), sum(counts[h].values())))
        counts[half].update(cells)
        placed[name] = half
    return {half: [r for r in rows if placed[r["group"]] == half] for half in HALVES}


def table(halves: dict[str, list[dict]]) -> str:
    lines = [f"{'half':<6}{'lang':<6}" + "".join(f"{k:>12}" for k in KINDS) + f"{'total':>8}"]
    for half, rows in halves.items():
        c = Counter((r["question_lang"], kind(r)) for r in rows)
        for lang in LANGS:
            lines.append(f"{half:<6}{lang:<6}" + "".join(f"{c[lang, k]:>12}" for k in KINDS)
                         + f"{sum(c[lang, k] for k in KINDS):>8}")
        lines.append(f"{half:<6}{'all':<6}" + "".join(f"{sum(c[lang, k] for lang in LANGS):>12}" for k in KINDS)
                     + f"{len(rows):>8}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; fail if the halves on disk differ")
    args = parser.parse_args()
    lines = [line for line in FULL.read_text(encoding="utf-8").split("\n") if line.strip()]
    rows = [json.loads(line) for line in lines]
    missing = [r["id"] for r in rows if "group" not in r or (not r["answerable"] and "near_miss" not in r)]
    if missing:
        print(f"{FULL.name}: every question needs a group, every unanswerable one near_miss: {missing}",
              file=sys.stderr)
        return 1
    halves = split(rows)
    text = {line_row["id"]: line for line_row, line in zip(rows, lines, strict=True)}
    status = 0
    for half, path in HALVES.items():
        body = "".join(text[r["id"]] + "\n" for r in halves[half])
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != body:
                print(f"{path.name} differs from the split of {FULL.name}: run python evals/split_seed.py",
                      file=sys.stderr)
                status = 1
        else:
            path.write_text(body, encoding="utf-8")
    groups = {half: len({r["group"] for r in rows}) for half, rows in halves.items()}
    print(table(halves))
    print("groups: " + ", ".join(f"{half} {n}" for half, n in groups.items()))
    return status


if __name__ == "__main__":
    sys.exit(main())
