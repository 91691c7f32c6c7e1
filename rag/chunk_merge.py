"""Merging a paragraph's sentences into overlapping chunks (langchain-text-splitters), for ``rag.chunk``.

Its own module so that only builds import langchain (~0.3 s): opening an index and answering do not.
"""

from __future__ import annotations

from typing import cast

from langchain_text_splitters import RecursiveCharacterTextSplitter, TextSplitter


class SentenceMerger(TextSplitter):
    """langchain's merging of small pieces into overlapping chunks, fed with whole sentences."""

    def __init__(self, chunk_size: int, chunk_overlap: int) -> None:
        super().__init__(chunk_size=chunk_size, chunk_overlap=chunk_overlap, strip_whitespace=True)
        self._long = RecursiveCharacterTextSplitter(
            chunk_size=chunk_size,
            chunk_overlap=0,
            separators=["; ", ", ", " ", ""],
            keep_separator="end",
            strip_whitespace=False,
        )

    def split_pieces(self, pieces: list[str], start: int = 0) -> list[tuple[int, int]]:
        """``(start, end)`` of each chunk merged from consecutive ``pieces``, the first at ``start``.

        Offsets come from the pieces themselves, not from searching the chunk text, which
        finds the wrong place when a paragraph repeats itself.
        """
        small: list[str] = []
        pos = start
        for piece in pieces:
            parts = self._long.split_text(piece) if len(piece) > self._chunk_size else [piece]
            if "".join(parts) != piece:  # cannot happen (no overlap, no stripping); never misplace text
                raise AssertionError("long sentence split lost text")
            for part in parts:
                small.append(_Piece(part, pos))
                pos += len(part)
        self._spans: list[tuple[int, int]] = []
        self._merge_splits(small, "")
        return self._spans

    def _join_docs(self, docs: list[str], separator: str) -> str | None:
        text = super()._join_docs(docs, separator)
        if text is not None:
            joined = separator.join(docs)
            start = cast(_Piece, docs[0]).start + len(joined) - len(joined.lstrip())
            self._spans.append((start, start + len(text)))
        return text

    def split_text(self, text: str) -> list[str]:  # required by the base class
        return [text[a:b] for a, b in self.split_pieces([text])]


class _Piece(str):
    """A piece of text that knows where it starts in the document."""

    start: int

    def __new__(cls, text: str, start: int) -> _Piece:
        piece = super().__new__(cls, text)
        piece.start = start
        return piece
