"""The reader's training data: groups of (question, candidate sentence) rows from the QA pool.

Each question becomes one group of ``GROUP`` rows, read together by the listwise loss:

- answerable: the answering sentence (with its span) against other sentences of its
  paragraph and the most question-like sentence of another paragraph of the same article
  (the hard negatives a retriever brings);
- near miss: the same question over its paragraph with the answering sentence deleted, the
  sentences most like the question kept: every row negative (the documents do not say);
- unanswerable (SQuAD 2.0-style, Spanish): the paragraph's sentences most like the question;
- cross-lingual: the Spanish, Italian and Portuguese sets translate SQuAD, so a question may be
  swapped for the same question in another of these languages (the paragraph stays).

Sentences are cut with the product's own splitter (``rag.chunk.sentence_bounds``) so the reader
sees what the pipeline will give it. Articles are held out whole (``Split``); languages are
sampled to the same number of questions each.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..chunk import sentence_bounds
from ..features import fold

GROUP = 4  # rows per question


@dataclass(frozen=True)
class Row:
    sentence: str
    context: str  # the end of the sentence before it in its paragraph ("" for the first)
    label: bool  # the sentence answers the question
    span: tuple[int, int] | None  # the answer's characters within the sentence, when it lies inside


@dataclass(frozen=True)
class Group:
    question: str
    lang: str  # the paragraph's language
    kind: str  # "answerable", "near-miss", "unanswerable"
    article: tuple[str, str]  # (source, title)
    rows: tuple[Row, ...]
    answer: str  # the first gold answer ("" when there is none)


@dataclass(frozen=True)
class Record:
    id: str
    source: str
    lang: str
    title: str
    context: str
    question: str
    answers: tuple[tuple[str, int], ...]


def read_pool(path: str | Path) -> list[Record]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [Record(r["id"], r["source"], r["lang"], r["title"], r["context"], r["question"],
                       tuple((a["text"], int(a["start"])) for a in r["answers"]))
                for r in map(json.loads, handle)]


def held_out_by_hash(article: tuple[str, str], share: int) -> bool:
    """One article in ``share`` is held out for the figures training prints (a stable hash of source and title)."""
    digest = hashlib.sha256(f"{article[0]}\x00{article[1]}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % share == 0


def _grams(text: str) -> set[str]:
    folded = " ".join(fold(text).split())
    return {folded[i : i + 3] for i in range(max(1, len(folded) - 2))}


def _likeness(question: set[str], text: str) -> int:
    return len(question & _grams(text))


def _sentences(text: str) -> list[tuple[int, int]]:
    return list(sentence_bounds(text, 0, len(text)))


def _rows(text: str, bounds: list[tuple[int, int]], picks: Iterable[int], answer: int | None = None,
          span: tuple[int, int] | None = None) -> list[Row]:
    out = []
    for i in picks:
        s, e = bounds[i]
        context = text[bounds[i - 1][0] : bounds[i - 1][1]] if i > 0 else ""
        hit = i == answer
        out.append(Row(text[s:e], context, hit, span if hit else None))
    return out


def _answerable(rec: Record, others: list[Record], rng: random.Random, question: str) -> Iterator[Group]:
    bounds = _sentences(rec.context)
    text, start = rec.answers[0]
    at = next((i for i, (s, e) in enumerate(bounds) if s <= start < e), None)
    if at is None:
        return
    s, e = bounds[at]
    span = (start - s, start - s + len(text)) if start + len(text) <= e else None
    rest = [i for i in range(len(bounds)) if i != at]
    rng.shuffle(rest)
    rows = _rows(rec.context, bounds, [at], at, span) + _rows(rec.context, bounds, rest[:2])
    q = _grams(question)
    if others:  # the most question-like sentence of another paragraph of the article
        other = rng.choice(others)
        ob = _sentences(other.context)
        best = max(range(len(ob)), key=lambda i: _likeness(q, other.context[ob[i][0] : ob[i][1]]))
        rows += _rows(other.context, ob, [best])
    article = (rec.source, rec.title)
    if len(rows) >= 2:
        yield Group(question, rec.lang, "answerable", article, tuple(rows[:GROUP]), text)
    # near miss: the answering sentence deleted from the paragraph
    kept = [b for i, b in enumerate(bounds) if i != at]
    if kept and rng.random() < 0.35:
        deleted = " ".join(rec.context[a:b] for a, b in kept)
        db = _sentences(deleted)
        order = sorted(range(len(db)), key=lambda i: -_likeness(q, deleted[db[i][0] : db[i][1]]))
        yield Group(question, rec.lang, "near-miss", article, tuple(_rows(deleted, db, order[:GROUP])), text)


def _unanswerable(rec: Record, question: str) -> Group | None:
    bounds = _sentences(rec.context)
    q = _grams(question)
    order = sorted(range(len(bounds)), key=lambda i: -_likeness(q, rec.context[bounds[i][0] : bounds[i][1]]))
    rows = _rows(rec.context, bounds, order[:GROUP])
    return Group(question, rec.lang, "unanswerable", (rec.source, rec.title), tuple(rows), "") if rows else None


def make_groups(records: list[Record], per_language: int, seed: int = 0, cross_lingual: float = 0.3,
                unanswerable_share: float = 0.35) -> list[Group]:
    """Groups from ``records``, at most ``per_language`` questions of each language (answerable and
    unanswerable ones; the latter at most ``unanswerable_share`` of a language's questions)."""
    rng = random.Random(seed)
    by_article: dict[tuple[str, str], list[Record]] = defaultdict(list)
    translations: dict[str, list[Record]] = defaultdict(list)
    for rec in records:
        by_article[(rec.source, rec.title)].append(rec)
        if rec.lang in ("es", "it", "pt"):
            translations[rec.id.split(":", 1)[1]].append(rec)
    by_lang: dict[str, list[Record]] = defaultdict(list)
    for rec in records:
        by_lang[rec.lang].append(rec)
    groups: list[Group] = []
    for lang in sorted(by_lang):
        pool = by_lang[lang][:]
        rng.shuffle(pool)
        answerable = [r for r in pool if r.answers]
        unanswerable = [r for r in pool if not r.answers][: int(per_language * unanswerable_share)]
        for rec in answerable[: per_language - len(unanswerable)] + unanswerable:
            question = rec.question
            others_lang = [r for r in translations.get(rec.id.split(":", 1)[-1], ()) if r.lang != rec.lang]
            if others_lang and rng.random() < cross_lingual:
                question = rng.choice(others_lang).question
            if rec.answers:
                paragraphs = [r for r in by_article[(rec.source, rec.title)] if r.context != rec.context]
                unique = list({r.context: r for r in paragraphs}.values())
                groups.extend(_answerable(rec, unique, rng, question))
            elif (g := _unanswerable(rec, question)) is not None:
                groups.append(g)
    rng.shuffle(groups)
    return groups
