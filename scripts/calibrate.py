"""Calibrate the abstention threshold on the XQuAD development sets.

For each set, the documents are split in two halves (even and odd positions in name order);
an index is built over one half and every question of the set is asked: questions whose
document is in the other half have no answer in the index and should abstain. The rows that
`rag eval --out` writes carry `abstain_score` (the value compared with the threshold); this
script pools them and prints, for a sweep of thresholds, abstention precision and recall and
the false-abstention rate on answerable questions, and the largest threshold that keeps false
abstention at or under the target (3 % by default).

    python scripts/calibrate.py [--bench ../shared/bench] [--model e5+use] [--halves even,odd]
                                [--sets xquad-en-de,...] [--target 0.03] [--work bench/results/calibration]
                                [--from-index bench/results/index/<hash>.e5+use ...]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from rag.evaluate.metrics import largest_threshold

REPO = Path(__file__).resolve().parent.parent


def split_set(set_dir: Path, half: str, out: Path) -> tuple[Path, Path]:
    """A docs folder with one half of the documents and a question file marking the rest unanswerable."""
    docs = sorted(p.name for p in (set_dir / "docs").glob("*.txt"))
    keep = {d for i, d in enumerate(docs) if (i % 2 == 0) == (half == "even")}
    docs_out = out / f"docs-{half}"
    if not docs_out.exists():
        docs_out.mkdir(parents=True)
        for name in keep:
            shutil.copyfile(set_dir / "docs" / name, docs_out / name)
    questions = out / f"{set_dir.name}-{half}.jsonl"
    with open(set_dir / "questions.jsonl", encoding="utf-8") as src, open(questions, "w", encoding="utf-8") as dst:
        for line in src:
            row = json.loads(line)
            if row["doc"] not in keep:
                row.update(doc=None, answers=[], answerable=False)
                row.pop("context", None)
            dst.write(json.dumps(row, ensure_ascii=False) + "\n")
    return docs_out, questions


def _same_documents(index: Path, docs: Path, model: str) -> bool:
    """Does the index at ``index`` hold exactly the documents of ``docs``, built for ``model``?"""
    from rag.errors import RagError
    from rag.index import index_status
    from rag.load import load_documents
    from rag.settings import Settings

    try:
        return index_status(index, load_documents(docs), Settings(model=model)) == "ok"
    except RagError:
        return False


def sweep(rows: list[dict], target: float) -> dict:
    score = np.array([r["abstain_score"] for r in rows], dtype=float)
    answerable = np.array([r["answerable"] for r in rows], dtype=bool)
    table = []
    for t in np.round(np.arange(0.04, 0.1301, 0.005), 3):
        abstain = score < t
        tp = int((abstain & ~answerable).sum())
        fp = int((abstain & answerable).sum())
        fn = int((~abstain & ~answerable).sum())
        table.append({
            "threshold": float(t),
            "abstain_precision": tp / max(tp + fp, 1),
            "abstain_recall": tp / max(tp + fn, 1),
            "false_abstention_rate": fp / max(int(answerable.sum()), 1),
        })
    chosen = largest_threshold({"all": score[answerable].tolist()}, target, [row["threshold"] for row in table])
    return {"n": len(rows), "answerable": int(answerable.sum()), "table": table,
            "chosen": next((row for row in table if row["threshold"] == chosen), None)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--bench", type=Path, default=REPO.parent / "shared" / "bench")
    parser.add_argument("--model", default="e5+use")
    parser.add_argument("--sets", default="xquad-en-de,xquad-en-es,xquad-de-de,xquad-es-es")
    parser.add_argument("--halves", default="even,odd")
    parser.add_argument("--target", type=float, default=0.03)
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "results" / "calibration")
    parser.add_argument("--reuse-rows", action="store_true",
                        help="Pool the rows files of an earlier run instead of asking the questions again.")
    parser.add_argument("--from-index", type=Path, action="append", default=[],
                        help="A full index of the same documents and model (e.g. from scripts/xquad_eval.sh) to "
                             "start each half from: the incremental build then reuses its vectors and only "
                             "drops the other half. Repeatable (one per document language).")
    args = parser.parse_args()
    rows: list[dict] = []
    per_set = {}
    for name in args.sets.split(","):
        set_dir = args.bench / name
        for half in args.halves.split(","):
            # sets over the same documents share the split folder and its index
            key = "de" if name.endswith("-de") else "es" if name.endswith("-es") else name
            work = args.work / key
            work.mkdir(parents=True, exist_ok=True)
            docs, questions = split_set(set_dir, half, work)
            index = work / f"index-{half}-{args.model}"
            if not index.exists():
                for source in args.from_index:
                    if _same_documents(source, set_dir / "docs", args.model):
                        shutil.copytree(source, index)
                        break
            out = work / f"{name}-{half}.rows.jsonl"
            cmd = [sys.executable, "-m", "rag.cli", "eval", str(questions), "--docs", str(docs),
                   "--index", str(index), "--model", args.model,
                   "--json", "--out", str(out)]
            if not (args.reuse_rows and out.exists()):
                print("$", " ".join(cmd), file=sys.stderr)
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            set_rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
            per_set[f"{name}/{half}"] = sweep(set_rows, args.target)
            rows.extend(set_rows)
    result = {"model": args.model, "target_false_abstention": args.target, "pooled": sweep(rows, args.target),
              "per_set": per_set}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
