"""Shared value types of the pipeline. No third-party imports here on purpose."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Document:
    """One source file and its text.

    ``text`` is the document's text, which every offset in the project indexes and the index
    stores: for ``.txt`` and ``.md`` the whole file decoded as UTF-8 with newlines untouched
    (``open(path, encoding="utf-8", newline="").read()``), for PDF, HTML and DOCX the text
    extracted from it (``rag.formats``). ``body_start`` skips a leading byte-order mark,
    whitespace and a ``date YYYY-MM`` metadata prefix: nothing before it is ever quoted.
    ``pages`` holds the start offset of each page (PDF), ``sections`` the start offset and
    title of each heading; a span's page and section are those its start falls in.
    """

    id: str  # path relative to the documents folder, with "/" separators
    text: str
    sha256: str  # of the file's bytes
    body_start: int = 0
    date: str | None = None
    lang: str | None = None
    title: str | None = None
    kind: str = "text"  # "text", "markdown", "pdf", "html" or "docx"
    pages: tuple[int, ...] = ()
    sections: tuple[tuple[int, str], ...] = ()

    @property
    def body(self) -> str:
        return self.text[self.body_start :]

    @property
    def page_count(self) -> int:
        """Pages of a PDF; a document without pages counts as one."""
        return len(self.pages) or 1

    def page_at(self, offset: int) -> int | None:
        """The 1-based page holding ``offset``, or None for a document without pages."""
        if not self.pages:
            return None
        return max(1, bisect_right(self.pages, offset))

    def section_at(self, offset: int) -> str | None:
        """The title of the last heading at or before ``offset``, or None before the first one."""
        i = bisect_right([start for start, _ in self.sections], offset)
        return self.sections[i - 1][1] if i else None


@dataclass(frozen=True)
class SkippedFile:
    """A file that was not indexed, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class SourceFile:
    """A candidate file of the documents folder as it was when read: what the quick freshness check compares.

    ``bytes`` and ``mtime_ns`` are -1 when the file could not be stat'ed (a dangling symlink);
    ``sha256`` (of the bytes read) is None for a file that was skipped or not read.
    """

    path: str  # relative to the documents folder, "/" separators
    bytes: int
    mtime_ns: int
    sha256: str | None = None


@dataclass(frozen=True)
class LoadResult:
    documents: tuple[Document, ...]
    skipped: tuple[SkippedFile, ...] = ()
    # every candidate file, stat'ed before it was read, and when that scan started (time.time_ns())
    sources: tuple[SourceFile, ...] = ()
    scanned_ns: int = 0


@dataclass(frozen=True)
class Span:
    """A sentence or a chunk: ``doc.text[start:end] == text`` always holds."""

    doc: str
    start: int
    end: int
    text: str
    paragraph: int  # 1-based paragraph number within the document


@dataclass(frozen=True)
class Chunk(Span):
    first_sentence: int = 0  # global sentence ids [first_sentence, last_sentence)
    last_sentence: int = 0


def where_label(doc: str, page: int | None, section: str | None, date: str | None) -> str:
    """``report.pdf, p. 2, 2024-03``: the file, its page or else its section, and its date."""
    place = f"p. {page}" if page is not None else (f"§ {section}" if section else None)
    return ", ".join(part for part in (doc, place, date) if part)


@dataclass(frozen=True)
class Quote:
    """A quoted span with where it comes from: an answer sentence, or a retrieved passage (a source).

    ``doc.text[start:end] == text``. ``score`` is the sentence's or the passage's fused score;
    ``page`` (PDF, 1-based) and ``section`` (the heading above) are those ``start`` falls in.
    """

    number: int  # [n] in the answer
    doc: str
    start: int
    end: int
    text: str
    paragraph: int
    date: str | None = None
    score: float = 0.0
    page: int | None = None  # 1-based page of a PDF
    section: str | None = None  # the heading the sentence is under
    # answer sentences only: "answer" for the best sentence, shown first; "support" for one that
    # adds evidence (score is then the learned probability that the sentence is the answering one)
    role: str | None = None
    # answer sentences the reader read: its probability that this sentence answers, and the words
    # that answer (document characters, inside [start, end)) when it is sure enough of them
    reader: float | None = None
    span: tuple[int, int] | None = None

    @property
    def span_text(self) -> str | None:
        """The answering words, a substring of ``text`` (None without a span)."""
        return None if self.span is None else self.text[self.span[0] - self.start : self.span[1] - self.start]

    @property
    def label(self) -> str:
        """``[1] report.pdf, p. 2, 2024-03, paragraph 2, chars 743-1094``"""
        where = where_label(self.doc, self.page, self.section, self.date)
        return f"[{self.number}] {where}, paragraph {self.paragraph}, chars {self.start}-{self.end}"


# The two roles a quote plays, by their older names (still read by evaluation code).
Citation = Quote
Source = Quote


@dataclass(frozen=True)
class Answer:
    question: str
    abstained: bool
    confidence: float
    sentences: tuple[Quote, ...] = ()  # the quoted answer, best sentence first (empty when abstaining)
    sources: tuple[Quote, ...] = ()  # the best passages (possibly related ones when abstaining)
    rewritten_question: str | None = None  # set when a follow-up used the conversation
    timings_ms: dict[str, float] = field(default_factory=dict, compare=False)

    @property
    def text(self) -> str | None:
        """The quoted sentences joined, or None when abstaining."""
        if self.abstained or not self.sentences:
            return None
        return " ".join(s.text for s in self.sentences)

    def to_dict(self) -> dict[str, Any]:
        """The answer as JSON-ready data (what ``rag ask --json`` prints)."""
        return {
            "question": self.question,
            "answer": self.text,
            "abstained": self.abstained,
            # an abstention shows no figure: a confidence there reads as confidence in an answer
            "confidence": None if self.abstained else self.confidence,
            "rewritten_question": self.rewritten_question,
            "sentences": [
                {"role": c.role, "text": c.text, "doc": c.doc, "start": c.start, "end": c.end,
                 "paragraph": c.paragraph, "page": c.page, "section": c.section, "date": c.date,
                 "citation": c.label, "probability": c.score, "reader": c.reader,
                 "span": None if c.span is None else {
                     "text": c.span_text, "start": c.span[0], "end": c.span[1],
                     "sentence_start": c.span[0] - c.start, "sentence_end": c.span[1] - c.start}}
                for c in self.sentences
            ],
            "sources": [
                {"citation": s.label, "doc": s.doc, "start": s.start, "end": s.end, "paragraph": s.paragraph,
                 "page": s.page, "section": s.section, "date": s.date, "text": s.text, "score": s.score}
                for s in self.sources
            ],
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
        }


@dataclass(frozen=True)
class BuildReport:
    """What ``build_index`` did."""

    documents: int
    chunks: int
    sentences: int
    reused_documents: int
    embedded_documents: int
    removed_documents: int
    skipped: tuple[SkippedFile, ...]
    seconds: float
    path: str
    up_to_date: bool = False
    pages: int = 0  # PDF pages, plus one for each document without pages
