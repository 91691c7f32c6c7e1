"""Shared value types of the pipeline. No third-party imports here on purpose."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Document:
    """One source file, exactly as read from disk.

    ``text`` is the whole file decoded as UTF-8 with newlines untouched, so every offset
    in the project indexes ``open(path, encoding="utf-8", newline="").read()``.
    ``body_start`` skips a leading byte-order mark, whitespace and a ``date YYYY-MM``
    metadata prefix: nothing before it is ever quoted.
    """

    id: str  # path relative to the documents folder, with "/" separators
    text: str
    sha256: str
    body_start: int = 0
    date: str | None = None
    lang: str | None = None

    @property
    def body(self) -> str:
        return self.text[self.body_start :]


@dataclass(frozen=True)
class SkippedFile:
    """A file that was not indexed, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class LoadResult:
    documents: tuple[Document, ...]
    skipped: tuple[SkippedFile, ...] = ()


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


@dataclass(frozen=True)
class Quote:
    """A quoted span with where it comes from: an answer sentence, or a retrieved passage (a source).

    ``doc.text[start:end] == text``. ``score`` is the sentence's or the passage's fused score.
    """

    number: int  # [n] in the answer
    doc: str
    start: int
    end: int
    text: str
    paragraph: int
    date: str | None = None
    score: float = 0.0

    @property
    def label(self) -> str:
        """``[1] doc.txt, 2022-10, paragraph 2, chars 743-1094``"""
        dated = f", {self.date}" if self.date else ""
        return f"[{self.number}] {self.doc}{dated}, paragraph {self.paragraph}, chars {self.start}-{self.end}"


# The two roles a quote plays, by their older names (still read by evaluation code).
Citation = Quote
Source = Quote


@dataclass(frozen=True)
class Answer:
    question: str
    abstained: bool
    confidence: float
    sentences: tuple[Quote, ...] = ()  # the quoted answer, in document order (empty when abstaining)
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
            "confidence": self.confidence,
            "rewritten_question": self.rewritten_question,
            "sentences": [
                {"text": c.text, "doc": c.doc, "start": c.start, "end": c.end, "paragraph": c.paragraph,
                 "date": c.date, "citation": c.label}
                for c in self.sentences
            ],
            "sources": [
                {"citation": s.label, "doc": s.doc, "start": s.start, "end": s.end, "paragraph": s.paragraph,
                 "date": s.date, "text": s.text, "score": s.score}
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
