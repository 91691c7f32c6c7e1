"""A long-document development set made from the reader's training pool (issue 28, point 1).

Each article of a SQuAD-style source (paragraphs sharing ``source`` and ``title``) becomes one
document: its distinct paragraphs in the order they first appear in the pool, a blank line apart.
Articles are held out ("dev") or left to reader training ("train") by a stable hash, and the dev
articles' questions are written in the project's question-set format (docs/evaluation.md), with
``context`` the answering paragraph, verbatim in the document.

The split is by article, and translations of one article go to the same side: the Spanish and
Italian sources are translations of the same SQuAD articles (a question id's part after the colon
is SQuAD's id), so a Spanish dev article whose Italian twin were trained on would leak its
paragraphs and questions across languages. Articles sharing a question id form a group; a group
is scored by the SHA-256 of its first member's source and title, and each source holds out its
lowest-scoring articles (``dev_fraction`` of them, at least ``min_dev_articles`` unless that is
more than half the source), together with
their whole groups. A held-out article under ``min_chars`` characters stays held out but is not
written: it is not a long document.

Writing a set to disk and reading its ``split.json`` back are in ``rag.evaluate.long_doc_set``,
re-exported here.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import unicodedata
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .long_doc_set import (
    DOCS_FOLDER,
    QUESTIONS_FILE,
    SEPARATOR,
    SPLIT_FILE,
    SetSummary,
    read_held_out,
    split_record,
    summarise_set,
    write_long_doc_set,
    write_paragraph_set,
)

__all__ = [
    "DEV_FRACTION",
    "DOCS_FOLDER",
    "LONG_DOC_SOURCES",
    "MIN_DEV_ARTICLES",
    "MIN_DOC_CHARS",
    "QUESTIONS_FILE",
    "SEPARATOR",
    "SPLIT_FILE",
    "ArticleKey",
    "LongDocBuild",
    "LongDocQuestion",
    "LongDocument",
    "SetSummary",
    "SourceSplit",
    "assign_split",
    "build_long_docs",
    "read_held_out",
    "read_pool",
    "safe_file_name",
    "split_record",
    "summarise_set",
    "write_long_doc_set",
    "write_paragraph_set",
]

# The pool's sources whose articles are long (30-50 paragraphs, 10,000+ characters joined), by language.
LONG_DOC_SOURCES: Mapping[str, str] = {
    "es": "squad-es-v2.0-dev-small",
    "it": "squad-it-test",
    "pt": "squad-v1.1-pt-sample",
}
DEV_FRACTION = 0.4
MIN_DEV_ARTICLES = 10
# A held-out article shorter than this is not a long document: it is left out of the set but stays
# held out (its translation may be in the set). One in the pool: the Italian "Commutazione di pacchetto",
# 8 paragraphs, 5,518 characters (its Spanish twin has 14,823).
MIN_DOC_CHARS = 10_000
_MAX_NAME = 80

ArticleKey = tuple[str, str]  # (source, title)


@dataclass(frozen=True)
class LongDocument:
    """One article as one text; ``starts[i]`` is where its i-th paragraph begins in ``text``."""

    name: str  # file name in the set's docs folder, the ``doc`` of its questions
    source: str
    lang: str
    title: str
    text: str
    starts: tuple[int, ...]
    split: str  # "dev" or "train"

    @property
    def key(self) -> ArticleKey:
        return (self.source, self.title)

    def paragraph_span(self, index: int) -> tuple[int, int]:
        start = self.starts[index]
        end = self.starts[index + 1] - len(SEPARATOR) if index + 1 < len(self.starts) else len(self.text)
        return start, end

    def paragraph(self, index: int) -> str:
        start, end = self.paragraph_span(index)
        return self.text[start:end]


@dataclass(frozen=True)
class LongDocQuestion:
    """One pool question, placed in its article's document."""

    id: str  # the pool's id
    question: str
    lang: str
    source: str
    title: str
    doc: str  # the article's document name (for unanswerable questions: the document it was written against)
    answers: tuple[str, ...]  # distinct non-blank answer texts, in the pool's order; () when unanswerable
    context: str | None  # the answering paragraph, verbatim in the document; None when unanswerable
    paragraph: int  # index of the paragraph the question was written on
    answerable: bool
    split: str

    def row(self) -> dict[str, Any]:
        """The question-set line (docs/evaluation.md); unanswerable ones are on-topic near misses by construction."""
        group = self.id.split(":", 1)[-1]  # SQuAD's id: the same question in another language shares it
        if not self.answerable:
            # doc is null so that doc_hit@k counts only questions with an answer; topic_doc (not read by
            # rag eval) names the article the question was written against
            return {"id": self.id, "question": self.question, "question_lang": self.lang, "doc": None,
                    "answers": [], "answerable": False, "near_miss": True, "group": group, "topic_doc": self.doc}
        return {"id": self.id, "question": self.question, "question_lang": self.lang, "doc": self.doc,
                "answers": list(self.answers), "context": self.context, "answerable": True, "group": group}


@dataclass(frozen=True)
class SourceSplit:
    """How one source's articles were split."""

    source: str
    lang: str
    articles: int
    dev_titles: tuple[str, ...]  # held out, in pool order: what reader training must exclude
    short_titles: tuple[str, ...]  # held out but under min_chars, so not in the written set
    dev_answerable: int
    dev_unanswerable: int
    train_questions: int
    dropped: int  # answerable questions without a non-blank answer, on either side (left out of the set)

    def as_dict(self) -> dict[str, Any]:
        return {"lang": self.lang, "articles": self.articles, "dev_articles": len(self.dev_titles),
                "train_articles": self.articles - len(self.dev_titles), "dev_answerable": self.dev_answerable,
                "dev_unanswerable": self.dev_unanswerable, "train_questions": self.train_questions,
                "dropped_questions": self.dropped, "dev_titles": list(self.dev_titles),
                "short_titles": list(self.short_titles)}


@dataclass(frozen=True)
class LongDocBuild:
    """Every article of the given rows as a document, every question placed in it, and the split."""

    documents: tuple[LongDocument, ...]
    questions: tuple[LongDocQuestion, ...]
    # answerable pool questions whose answers are all blank: nothing to score them on, never written
    dropped: tuple[LongDocQuestion, ...]
    dev_fraction: float
    min_dev_articles: int
    min_chars: int
    splits: tuple[SourceSplit, ...]

    def langs(self) -> tuple[str, ...]:
        return tuple(sorted({d.lang for d in self.documents}))

    def set_documents(self, lang: str) -> tuple[LongDocument, ...]:
        """The documents of the ``lang`` set: its held-out articles of at least ``min_chars`` characters."""
        return tuple(d for d in self.documents if d.lang == lang and d.split == "dev" and len(d.text) >= self.min_chars)

    def set_questions(self, lang: str) -> tuple[LongDocQuestion, ...]:
        """The questions of the ``lang`` set, in pool order."""
        names = {d.name for d in self.set_documents(lang)}
        return tuple(q for q in self.questions if q.lang == lang and q.split == "dev" and q.doc in names)


@dataclass
class _Article:  # mutable while the pool is read; becomes a LongDocument
    source: str
    lang: str
    title: str
    paragraphs: list[str] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)  # paragraph text -> position


def read_pool(path: str | os.PathLike[str], sources: Collection[str]) -> Iterator[dict[str, Any]]:
    """The rows of a ``qa-pool.jsonl.gz`` (or plain ``.jsonl``) whose ``source`` is one of ``sources``, in order."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path} line {number}: not valid JSON ({exc.msg}): the pool is one JSON object "
                                 "per line") from None
            if isinstance(row, dict) and row.get("source") in sources:
                yield row


def _field(row: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = row.get(key)
    if not isinstance(value, kind) or (isinstance(value, str) and not value.strip()):
        raise ValueError(f"{where}: {key!r} must be a non-empty {kind.__name__}, not {value!r}")
    return value


def _answers(row: Mapping[str, Any], context: str, where: str) -> tuple[str, ...]:
    raw = row.get("answers")
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise ValueError(f"{where}: 'answers' must be a list, not {raw!r}")
    texts: list[str] = []
    for answer in raw:
        if not isinstance(answer, Mapping) or not isinstance(answer.get("text"), str):
            raise ValueError(f"{where}: each answer must be {{'text': ..., 'start': ...}}, not {answer!r}")
        text, start = answer["text"], answer.get("start")
        # The Spanish and Italian translations hold blank answers at start -1 (alignment failures):
        # not an answer, dropped; a question left with none is dropped too
        if not text.strip():
            continue
        if not isinstance(start, int) or context[start : start + len(text)] != text:
            raise ValueError(f"{where}: answer {text!r} is not at {start!r} in its context")
        text = text.strip()  # a few are padded with spaces; answers are matched ignoring them
        if text not in texts:
            texts.append(text)
    return tuple(texts)


def safe_file_name(title: str) -> str:
    """An ASCII file name stem for a title ("Sky _ (Reino Unido)" -> "sky-reino-unido")."""
    folded = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii").lower()
    stem = re.sub(r"[^a-z0-9]+", "-", folded).strip("-")[:_MAX_NAME].rstrip("-")
    # a title with no Latin letter (Japanese, Arabic) still needs a stable name
    return stem or "article-" + hashlib.sha256(title.encode("utf-8")).hexdigest()[:12]


def _score(key: ArticleKey) -> int:
    # SHA-256, not hash(): the split must be the same in every process and on every machine
    return int.from_bytes(hashlib.sha256(f"{key[0]}\n{key[1]}".encode()).digest()[:8], "big")


def _groups(question_ids: Mapping[ArticleKey, list[str]]) -> dict[ArticleKey, ArticleKey]:
    """Each article's group (its smallest member): articles sharing a SQuAD question id are translations."""
    parent = {key: key for key in question_ids}

    def root(key: ArticleKey) -> ArticleKey:
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    seen: dict[str, ArticleKey] = {}
    for key in parent:
        for qid in question_ids[key]:
            squad_id = qid.split(":", 1)[-1]
            other = seen.setdefault(squad_id, key)
            a, b = root(key), root(other)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return {key: root(key) for key in parent}


def assign_split(articles: Mapping[ArticleKey, Iterable[str]], dev_fraction: float = DEV_FRACTION,
                 min_dev_articles: int = MIN_DEV_ARTICLES) -> dict[ArticleKey, str]:
    """``"dev"`` or ``"train"`` for each ``(source, title)``, given its question ids; deterministic.

    Each source holds out its ``round(dev_fraction * n)`` lowest-scoring articles (at least
    ``min_dev_articles`` or half of them, whichever is fewer), and with each its whole translation
    group; the union over sources does not depend on their order.
    """
    if not 0 < dev_fraction <= 1:
        raise ValueError(f"dev_fraction ({dev_fraction}) must be above 0 and at most 1")
    if min_dev_articles < 0:
        raise ValueError(f"min_dev_articles ({min_dev_articles}) must be 0 or more")
    ids = {key: list(qids) for key, qids in articles.items()}
    group = _groups(ids)
    by_source: dict[str, list[ArticleKey]] = {}
    for key in ids:
        by_source.setdefault(key[0], []).append(key)
    dev_groups: set[ArticleKey] = set()
    for keys in by_source.values():
        # the minimum never takes more than half a source: a small one (Portuguese, 10 articles)
        # keeps half its articles for training
        quota = min(len(keys), max(int(dev_fraction * len(keys) + 0.5), min(min_dev_articles, len(keys) // 2)))
        ranked = sorted(keys, key=lambda k: (_score(group[k]), group[k], k))
        dev_groups.update(group[k] for k in ranked[:quota])
    return {key: "dev" if group[key] in dev_groups else "train" for key in ids}


def build_long_docs(rows: Iterable[Mapping[str, Any]], dev_fraction: float = DEV_FRACTION,
                    min_dev_articles: int = MIN_DEV_ARTICLES, min_chars: int = MIN_DOC_CHARS) -> LongDocBuild:
    """Group pool rows into article documents, split the articles, and place every question.

    Raises ``ValueError`` naming the row when a row lacks a field or an answer is not where its
    ``start`` says.
    """
    articles: dict[ArticleKey, _Article] = {}
    pending: list[tuple[ArticleKey, int, Mapping[str, Any], tuple[str, ...]]] = []
    for number, row in enumerate(rows, start=1):
        where = f"pool row {number} ({row.get('id')!r})"
        _field(row, "id", str, where)
        source = _field(row, "source", str, where)
        lang = _field(row, "lang", str, where)
        title = _field(row, "title", str, where)
        context = _field(row, "context", str, where)
        _field(row, "question", str, where)
        answerable = row.get("answerable")
        if not isinstance(answerable, bool):
            raise ValueError(f"{where}: 'answerable' must be true or false, not {answerable!r}")
        answers = _answers(row, context, where)
        if not answerable and row.get("answers"):
            raise ValueError(f"{where}: unanswerable but has answers: empty them, or set 'answerable' to true")
        key = (source, title)
        article = articles.setdefault(key, _Article(source, lang, title))
        if article.lang != lang:
            raise ValueError(f"{where}: lang {lang!r} differs from {article.lang!r} of the same article")
        if context not in article.index:
            article.index[context] = len(article.paragraphs)
            article.paragraphs.append(context)
        pending.append((key, article.index[context], row, answers))

    question_ids: dict[ArticleKey, list[str]] = {key: [] for key in articles}
    for key, _, row, _ in pending:
        question_ids[key].append(row["id"])
    split = assign_split(question_ids, dev_fraction, min_dev_articles)

    documents: dict[ArticleKey, LongDocument] = {}
    taken: set[tuple[str, str]] = set()  # (lang, name): names are unique within a language's set
    for key, article in articles.items():
        stem = safe_file_name(article.title)
        name, n = f"{stem}.txt", 1
        while (article.lang, name) in taken:
            n += 1
            name = f"{stem}-{n}.txt"
        taken.add((article.lang, name))
        starts, offset = [], 0
        for paragraph in article.paragraphs:
            starts.append(offset)
            offset += len(paragraph) + len(SEPARATOR)
        documents[key] = LongDocument(name, article.source, article.lang, article.title,
                                      SEPARATOR.join(article.paragraphs), tuple(starts), split[key])

    questions: list[LongDocQuestion] = []
    dropped: list[LongDocQuestion] = []
    for key, index, row, answers in pending:
        doc = documents[key]
        answerable = row["answerable"]
        if answerable and not answers:
            dropped.append(LongDocQuestion(row["id"], row["question"], doc.lang, doc.source, doc.title, doc.name,
                                           (), None, index, True, doc.split))
            continue
        context = doc.paragraph(index) if answerable else None
        assert context is None or context == articles[key].paragraphs[index]  # the span invariant, by construction
        questions.append(LongDocQuestion(row["id"], row["question"], doc.lang, doc.source, doc.title, doc.name,
                                         answers, context, index, answerable, doc.split))
    splits = _source_splits(tuple(documents.values()), questions, dropped, min_chars)
    return LongDocBuild(tuple(documents.values()), tuple(questions), tuple(dropped), dev_fraction,
                        min_dev_articles, min_chars, splits)


def _source_splits(documents: tuple[LongDocument, ...], questions: list[LongDocQuestion],
                   dropped: list[LongDocQuestion], min_chars: int) -> tuple[SourceSplit, ...]:
    out = []
    for source in sorted({d.source for d in documents}):
        docs = [d for d in documents if d.source == source]
        kept = [q for q in questions if q.source == source]
        dev = [q for q in kept if q.split == "dev"]
        out.append(SourceSplit(
            source=source, lang=docs[0].lang, articles=len(docs),
            dev_titles=tuple(d.title for d in docs if d.split == "dev"),
            short_titles=tuple(d.title for d in docs if d.split == "dev" and len(d.text) < min_chars),
            dev_answerable=sum(q.answerable for q in dev), dev_unanswerable=sum(not q.answerable for q in dev),
            train_questions=len(kept) - len(dev),
            dropped=sum(1 for q in dropped if q.source == source),
        ))
    return tuple(out)
