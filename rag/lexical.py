"""Lexical search: the BM25 tokenizer, and building, saving, loading and scoring BM25 indexes.

One tokenizer for documents and questions, so a build and a question always agree on what a
word is. The indexes are bm25s's own files (no pickle).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np

EMPTY = "\u2205"  # the token of a text without any: bm25s needs at least one per document


def tokenize(text: str) -> list[str]:
    """Lexical tokens: lower-cased, accents removed, words of two characters or more."""
    folded = unicodedata.normalize("NFKD", text.lower())
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    return [t for t in re.findall(r"\w+", folded) if len(t) > 1 or t.isdigit()]


def build_bm25(texts: Sequence[str]) -> Any:
    """A BM25 index over ``texts`` (row i scores ``texts[i]``)."""
    import bm25s

    retriever = bm25s.BM25()
    retriever.index([tokenize(t) or [EMPTY] for t in texts], show_progress=False)
    return retriever


def save_bm25(retriever: Any, folder: str) -> None:
    retriever.save(folder, show_progress=False)


def load_bm25(folder: str) -> Any:
    import bm25s

    # memory-mapped (bm25s's mmap): a question reads the columns of its few words, not the matrix
    return bm25s.BM25.load(folder, show_progress=False, mmap=True)


def bm25_scores(retriever: Any, tokens: list[str]) -> np.ndarray:
    """The BM25 score of every row for the question ``tokens`` (from ``tokenize``)."""
    return np.asarray(retriever.get_scores(tokens), dtype=np.float64)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores, in no particular order: linear time, not a full sort."""
    if k >= len(scores):
        return np.arange(len(scores))
    return np.argpartition(-scores, k - 1)[:k]
