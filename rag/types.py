"""Shared value types of the pipeline. No third-party imports here on purpose."""

from __future__ import annotations

from dataclasses import dataclass, field


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


def citation_label(quoted: Citation | Source) -> str:
    """``[1] doc.txt, 2022-10, paragraph 2, chars 743-1094``"""
    dated = f", {quoted.date}" if quoted.date else ""
    return f"[{quoted.number}] {quoted.doc}{dated}, paragraph {quoted.paragraph}, chars {quoted.start}-{quoted.end}"


@dataclass(frozen=True)
class Citation:
    """One quoted sentence of an answer with where it comes from."""

    number: int
    doc: str
    start: int
    end: int
    text: str
    paragraph: int
    date: str | None = None
    score: float = 0.0

    @property
    def label(self) -> str:
        return citation_label(self)


@dataclass(frozen=True)
class Source:
    """A retrieved passage shown as support (or as "possibly related" when abstaining)."""

    number: int
    doc: str
    start: int
    end: int
    text: str
    paragraph: int
    score: float
    date: str | None = None

    @property
    def label(self) -> str:
        return citation_label(self)


@dataclass(frozen=True)
class Answer:
    question: str
    abstained: bool
    confidence: float
    sentences: tuple[Citation, ...] = ()
    sources: tuple[Source, ...] = ()
    rewritten_question: str | None = None  # set when a follow-up used the conversation
    timings_ms: dict[str, float] = field(default_factory=dict, compare=False)

    @property
    def text(self) -> str | None:
        """The quoted sentences joined, or None when abstaining."""
        if self.abstained or not self.sentences:
            return None
        return " ".join(s.text for s in self.sentences)


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
