"""A long-document set on disk: ``docs/*.txt``, ``questions.jsonl`` and ``split.json``, written
atomically from a ``LongDocBuild`` (``rag.evaluate.long_docs``), and the held-out titles read back.

``split.json`` in every written set lists the held-out titles of every source: the articles any
reader training must exclude (``read_held_out``).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # long_docs re-exports this module's names, so it cannot be imported from here at run time
    from .long_docs import ArticleKey, LongDocBuild

SPLIT_FILE = "split.json"
QUESTIONS_FILE = "questions.jsonl"
DOCS_FOLDER = "docs"
SEPARATOR = "\n\n"  # between paragraphs: a blank line, which the chunker reads as a paragraph break


@dataclass(frozen=True)
class SetSummary:
    """What one written (or writable) language set holds."""

    lang: str
    sources: tuple[str, ...]
    articles: int  # of the language, both sides
    held_out: int  # articles held out of reader training
    documents: int  # the held-out articles of at least min_chars characters, one document each
    median_chars: int
    max_chars: int
    answerable: int
    unanswerable: int
    dropped: int  # questions of its documents left out for want of a non-blank answer


def summarise_set(build: LongDocBuild, lang: str) -> SetSummary:
    """The counts of the dev set of one language."""
    docs = [d for d in build.documents if d.lang == lang]
    written = build.set_documents(lang)
    dev = build.set_questions(lang)
    sizes = [len(d.text) for d in written] or [0]
    sources = tuple(sorted({d.source for d in docs}))
    names = {d.name for d in written}
    return SetSummary(lang=lang, sources=sources, articles=len(docs), held_out=sum(d.split == "dev" for d in docs),
                      documents=len(written), median_chars=int(statistics.median(sizes)), max_chars=max(sizes),
                      answerable=sum(q.answerable for q in dev), unanswerable=sum(not q.answerable for q in dev),
                      dropped=sum(q.doc in names for q in build.dropped if q.lang == lang))


def split_record(build: LongDocBuild, provenance: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``split.json`` object: the rule, and per source the held-out titles and the counts."""
    return {
        "rule": ("by article; articles sharing a SQuAD question id (translations) form one group, scored by the "
                 "SHA-256 of its smallest (source, title); each source holds out its lowest-scoring "
                 "round(dev_fraction * articles) articles, at least min_dev_articles, with their whole groups; "
                 "reader training must exclude every dev_titles article; the sets hold those of at least "
                 "min_chars characters (short_titles are held out but not written)"),
        "dev_fraction": build.dev_fraction,
        "min_dev_articles": build.min_dev_articles,
        "min_chars": build.min_chars,
        **({"provenance": dict(provenance)} if provenance else {}),
        "sources": {s.source: s.as_dict() for s in build.splits},
    }


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def write_long_doc_set(folder: str | os.PathLike[str], build: LongDocBuild, lang: str,
                       provenance: Mapping[str, Any] | None = None) -> SetSummary:
    """Write the dev set of ``lang``: ``docs/*.txt``, ``questions.jsonl`` and ``split.json`` (every source's split).

    Written into a temporary folder beside ``folder`` and renamed into place, so that a reader
    never sees half a set; an existing set there is replaced.
    """
    folder = Path(folder)
    summary = summarise_set(build, lang)
    if not summary.documents:
        raise ValueError(f"no held-out article of {build.min_chars}+ characters in language {lang!r} "
                         f"({summary.articles} articles, {summary.held_out} held out): give rows of one of "
                         f"{', '.join(build.langs()) or 'no language'}, or a lower min_chars")
    record = {"set": {"lang": lang, "sources": list(summary.sources), "documents": summary.documents,
                      "answerable": summary.answerable, "unanswerable": summary.unanswerable},
              **split_record(build, provenance)}
    _write_set(folder, {doc.name: doc.text for doc in build.set_documents(lang)},
               [q.row() for q in build.set_questions(lang)], record)
    return summary


def write_paragraph_set(long_set: str | os.PathLike[str], folder: str | os.PathLike[str]) -> dict[str, int]:
    """The same questions over the short paragraphs (issue 28, point 3): every paragraph of every
    document of the written set ``long_set`` becomes a document of its own (``<doc>--p<NNN>.txt``),
    and each answerable question names the paragraph that holds its ``context``; unanswerable ones
    are copied as they are. Returns the counts written.
    """
    long_set, folder = Path(long_set), Path(folder)
    texts: dict[str, str] = {}
    where: dict[tuple[str, str], str] = {}  # (long document, paragraph text) -> paragraph document
    for path in sorted((long_set / DOCS_FOLDER).glob("*.txt")):
        for i, paragraph in enumerate(path.read_text(encoding="utf-8").split(SEPARATOR)):
            name = f"{path.stem}--p{i:03d}.txt"
            texts[name] = paragraph
            where.setdefault((path.name, paragraph), name)
    rows = []
    for line in (long_set / QUESTIONS_FILE).read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row.get("context") is not None:
            found = where.get((row["doc"], row["context"]))
            if found is None:
                raise ValueError(f"{long_set}: the context of {row['id']} is not a paragraph of {row['doc']}: "
                                 "write the long set again with scripts/long_docs.py")
            row = {**row, "doc": found}
        rows.append(row)
    record = json.loads((long_set / SPLIT_FILE).read_text(encoding="utf-8"))
    record["set"] = {**record.get("set", {}), "documents": len(texts), "paragraphs_of": long_set.name}
    _write_set(folder, texts, rows, record)
    return {"documents": len(texts), "questions": len(rows)}


def _write_set(folder: Path, documents: Mapping[str, str], rows: list[dict[str, Any]], record: dict[str, Any]) -> None:
    """Write a set into a temporary folder beside ``folder`` and rename it into place, so that a
    reader never sees half a set; an existing set there is replaced."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        (staging / DOCS_FOLDER).mkdir()
        for name, text in documents.items():
            _write(staging / DOCS_FOLDER / name, text.encode("utf-8"))
        lines = [json.dumps(row, ensure_ascii=False) for row in rows]
        _write(staging / QUESTIONS_FILE, ("\n".join(lines) + "\n").encode("utf-8"))
        _write(staging / SPLIT_FILE, (json.dumps(record, ensure_ascii=False, indent=1) + "\n").encode("utf-8"))
        old = None
        if folder.exists():
            # rename, not delete, first: the old set stays whole until the new one is in place
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
            os.replace(folder, old / folder.name)
        os.replace(staging, folder)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def read_held_out(path: str | os.PathLike[str]) -> frozenset[ArticleKey]:
    """The ``(source, title)`` of every held-out article in a ``split.json``: what reader training must skip."""
    record = json.loads(Path(path).read_text(encoding="utf-8"))
    try:
        return frozenset((source, title) for source, entry in record["sources"].items()
                         for title in entry["dev_titles"])
    except (KeyError, TypeError, AttributeError):
        raise ValueError(f"{path} is not a split.json written by write_long_doc_set: no sources/dev_titles") from None
