"""The spans of an opened index, built on demand from their int rows.

Opening a 100k-chunk index used to build ~456k ``Span`` and ~100k ``Chunk`` objects and their
texts (seconds); a question reads a few hundred of them. ``Sentences`` and ``Chunks`` are
read-only sequences over the stored rows (columns doc, start, end, paragraph, and for chunks
first and last sentence) that build one ``Span`` or ``Chunk`` per ``__getitem__``.
``check_rows`` validates the rows at open, vectorised; what the index needs from all of them at
once (each sentence's language, each sentence's first chunk) is computed with NumPy here too.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar, overload

import numpy as np

from ..types import Chunk, Span

# The columns of the stored rows, named once: sentences have the first four, chunks all six
# (first and last sentence, exclusive, of the chunk).
DOC, START, END, PARAGRAPH, FIRST, LAST = range(6)
SENTENCE_COLUMNS = PARAGRAPH + 1
CHUNK_COLUMNS = LAST + 1
S = TypeVar("S", bound=Span)


@dataclass(frozen=True, eq=False)
class SpanRows(Sequence[S]):
    """Spans over an int64 array of rows; ``ids[d]`` and ``texts[d]`` are document ``d``'s.

    Indexing, negative indexes, slices (a list), ``len`` and iteration behave as a list's.
    Equality is identity: compare ``list(...)`` to compare contents.
    """

    rows: np.ndarray
    ids: tuple[str, ...]
    texts: tuple[str, ...]

    def _make(self, row: list[int]) -> S:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, i: int) -> S: ...

    @overload
    def __getitem__(self, i: slice) -> list[S]: ...

    def __getitem__(self, i: int | slice) -> S | list[S]:
        if isinstance(i, slice):
            return [self._make(row) for row in self.rows[i].tolist()]
        n = len(self.rows)
        i = operator.index(i)  # NumPy integers too; anything else raises TypeError, as a list does
        if not -n <= i < n:
            raise IndexError(f"span index {i} out of range ({n} spans)")
        return self._make(self.rows[i].tolist())

    def __iter__(self) -> Iterator[S]:
        make = self._make
        for row in self.rows.tolist():
            yield make(row)

    def doc_positions(self) -> np.ndarray:
        """Each span's document position (into ``ids``), without building any span."""
        return self.rows[:, DOC]

    def by_document(self) -> list[np.ndarray]:
        """For each document position, the indexes of its spans in order, without building any span."""
        docs = self.doc_positions()
        order = np.argsort(docs, kind="stable")
        bounds = np.searchsorted(docs[order], np.arange(len(self.ids) + 1))
        return [order[bounds[d] : bounds[d + 1]] for d in range(len(self.ids))]


@dataclass(frozen=True, eq=False)
class Sentences(SpanRows[Span]):
    """``Span`` rows: columns doc, start, end, paragraph."""

    def _make(self, row: list[int]) -> Span:
        d, start, end, para = row
        return Span(self.ids[d], start, end, self.texts[d][start:end], para)


@dataclass(frozen=True, eq=False)
class Chunks(SpanRows[Chunk]):
    """``Chunk`` rows: columns doc, start, end, paragraph, first sentence, last sentence (exclusive)."""

    def _make(self, row: list[int]) -> Chunk:
        d, start, end, para, first, last = row
        return Chunk(self.ids[d], start, end, self.texts[d][start:end], para, first, last)


def check_rows(chunk_rows: np.ndarray, sent_rows: np.ndarray, text_lengths: Sequence[int]) -> str | None:
    """What is wrong with the stored span rows, or None: shapes, document indexes, offsets, sentence ranges.

    Every span must lie inside its document's text (0 <= start <= end <= len(text)) and every
    chunk's sentences [first, last) inside the sentences.
    """
    for rows, width, name in ((chunk_rows, CHUNK_COLUMNS, "chunks"), (sent_rows, SENTENCE_COLUMNS, "sentences")):
        if rows.ndim != 2 or rows.shape[1] != width or not np.issubdtype(rows.dtype, np.integer):
            return f"{name}.npy has shape {rows.shape} and type {rows.dtype}, not (n, {width}) integers"
    lengths = np.asarray(text_lengths, dtype=np.int64)
    for rows, name in ((chunk_rows, "chunk"), (sent_rows, "sentence")):
        doc, start, end = rows[:, DOC], rows[:, START], rows[:, END]
        bad_doc = (doc < 0) | (doc >= len(lengths))
        if bad_doc.any():
            return f"{name} {int(np.flatnonzero(bad_doc)[0])} names a document that is not in the index"
        bad = (start < 0) | (start > end) | (end > lengths[doc])
        if bad.any():
            return f"{name} {int(np.flatnonzero(bad)[0])} lies outside its document's text"
    first, last = chunk_rows[:, FIRST], chunk_rows[:, LAST]
    bad = (first < 0) | (first > last) | (last > len(sent_rows))
    if bad.any():
        return f"chunk {int(np.flatnonzero(bad)[0])} names sentences that are not in the index"
    return None


def sentence_owners(chunk_rows: np.ndarray, n_sentences: int) -> np.ndarray:
    """For each sentence, the first chunk whose [first, last) holds it (0 when none does).

    ``chunk_rows`` must have passed ``check_rows``.
    """
    first, last = chunk_rows[:, FIRST], chunk_rows[:, LAST]
    sizes = last - first
    total = int(sizes.sum())
    chunk = np.repeat(np.arange(len(chunk_rows), dtype=np.int64), sizes)
    # sentence ids: each chunk's first, plus 0, 1, ... within the chunk
    offsets = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    sentence = np.repeat(first, sizes) + offsets
    owner = np.full(n_sentences, len(chunk_rows), dtype=np.int64)
    np.minimum.at(owner, sentence, chunk)
    owner[owner == len(chunk_rows)] = 0
    return owner


def sentence_languages(sent_rows: np.ndarray, langs: Sequence[str | None]) -> np.ndarray:
    """Each sentence's document language (an object array; None where unknown)."""
    by_doc = np.empty(len(langs), dtype=object)
    by_doc[:] = list(langs)
    return by_doc[sent_rows[:, DOC]]
