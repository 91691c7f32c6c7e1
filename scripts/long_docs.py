"""Write the long-document development sets (issue 28, point 1) from the reader's training pool.

    python scripts/long_docs.py [--pool PATH] [--out DIR] [--langs es,it,pt] [--paragraphs]

One set per language under ``--out`` (``long-es``, ...): ``docs/*.txt`` (one document per held-out
article), ``questions.jsonl`` (the project's question-set format, with ``context``) and
``split.json`` (every source's held-out titles: what reader training must exclude). The split is
always made over all of rag.evaluate.long_docs.LONG_DOC_SOURCES, whatever ``--langs`` says, so
that it is one split. Prints a table of what each set holds. ``--paragraphs`` also writes
``para-es``, ...: the same questions over the same text cut into one document per paragraph.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rag.evaluate.long_docs import (
    LONG_DOC_SOURCES,
    build_long_docs,
    read_pool,
    write_long_doc_set,
    write_paragraph_set,
)
from rag.files import sha256_file

ROOT = Path(__file__).resolve().parent.parent
POOL = ROOT.parent / "shared" / "train" / "qa-pool.jsonl.gz"
OUT = ROOT / "bench" / "results" / "long-docs"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", type=Path, default=POOL, help=f"the training pool (default {POOL})")
    parser.add_argument("--out", type=Path, default=OUT, help=f"folder of the sets (default {OUT})")
    parser.add_argument("--langs", default=",".join(LONG_DOC_SOURCES),
                        help=f"comma-separated, of {', '.join(LONG_DOC_SOURCES)} (default all)")
    parser.add_argument("--paragraphs", action="store_true",
                        help="also write para-<lang>: the same questions, one document per paragraph")
    args = parser.parse_args(argv)
    langs = [lang.strip() for lang in args.langs.split(",") if lang.strip()]
    unknown = [lang for lang in langs if lang not in LONG_DOC_SOURCES]
    if unknown or not langs:
        parser.error(f"--langs: {', '.join(unknown) or 'none given'}: choose from {', '.join(LONG_DOC_SOURCES)}")
    if not args.pool.is_file():
        parser.error(f"--pool: {args.pool} does not exist: give the path of qa-pool.jsonl.gz")
    try:
        build = build_long_docs(read_pool(args.pool, set(LONG_DOC_SOURCES.values())))
        provenance = {"pool": args.pool.name, "pool_sha256": sha256_file(args.pool), "made_by": "scripts/long_docs.py"}
        summaries = [write_long_doc_set(args.out / f"long-{lang}", build, lang, provenance) for lang in langs]
        paragraph_sets = {lang: write_paragraph_set(args.out / f"long-{lang}", args.out / f"para-{lang}")
                          for lang in langs if args.paragraphs}
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("| set | source | articles | held out | documents | median chars | max chars | answerable | unanswerable "
          "| dropped |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in summaries:
        print(f"| long-{s.lang} | {', '.join(s.sources)} | {s.articles} | {s.held_out} | {s.documents} | "
              f"{s.median_chars:,} | {s.max_chars:,} | {s.answerable:,} | {s.unanswerable:,} | {s.dropped} |")
    for lang, counts in paragraph_sets.items():
        print(f"para-{lang}: {counts['questions']:,} questions over {counts['documents']:,} one-paragraph documents")
    print(f"written under {args.out}; held out of reader training: each set's split.json (dev_titles)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
