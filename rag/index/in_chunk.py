"""Sentences read in their chunk's pass (``Settings.sentence_vectors = "in-chunk"``).

Chunks are whole sentences, so embedding the chunks and, apart, their sentences runs every
token through the model twice. Read in its chunk, a sentence's vector is the mean of its own
tokens' states in the pass that makes the chunk's vector ("late pooling"), and its latent
terms come from the same states: one pass per chunk makes the chunk's vector and its sentences'
vectors and terms. A sentence that no chunk holds whole (one cut because it is longer than a
chunk) is encoded alone, as before. A sentence in two chunks (the overlap) is read in the
first.

The chunk is given to the model as its pieces (``plan_pieces``): its sentences, and any text
between them that is not whitespace; each piece is tokenised on its own, so a sentence's tokens
are known exactly (the whitespace between sentences is the word-start mark each piece begins
with anyway).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import SettingsError
from ..types import Chunk, Span

if TYPE_CHECKING:
    from ..local_encoders import ReadInChunks


@dataclass(frozen=True)
class PiecePlan:
    """Each chunk as its pieces, which pieces to read, and which piece reads which sentence."""

    pieces: list[list[str]]
    want: list[list[bool]]
    row_of: dict[int, int]  # global sentence id -> row among all pieces, chunk by chunk

    @property
    def piece_count(self) -> int:
        return sum(len(p) for p in self.pieces)


def plan_pieces(chunks: Sequence[Chunk], sentences: Sequence[Span], wanted: set[int]) -> PiecePlan:
    """Split ``chunks`` into pieces; the sentences in ``wanted`` (global ids) are read in the first
    chunk that holds them whole."""
    pieces: list[list[str]] = []
    want: list[list[bool]] = []
    row_of: dict[int, int] = {}
    row = 0
    for chunk in chunks:
        parts: list[str] = []
        flags: list[bool] = []
        cursor = chunk.start
        for sid in range(chunk.first_sentence, chunk.last_sentence):
            sentence = sentences[sid]
            if sentence.start < cursor or sentence.end > chunk.end:
                continue  # not whole in this chunk: its text there goes with the gaps
            gap = chunk.text[cursor - chunk.start : sentence.start - chunk.start].strip()
            if gap:
                parts.append(gap)
                flags.append(False)
            read = sid in wanted and sid not in row_of
            if read:
                row_of[sid] = row + len(parts)
            parts.append(sentence.text)
            flags.append(read)
            cursor = sentence.end
        tail = chunk.text[cursor - chunk.start :].strip()
        if tail or not parts:
            parts.append(tail)
            flags.append(False)
        pieces.append(parts)
        want.append(flags)
        row += len(parts)
    return PiecePlan(pieces, want, row_of)


def chunk_reader(encoder: Any) -> Any:
    """The encoder itself, or the one it wraps, that reads sentences in their chunks
    (``encode_in_chunks``); raises ``SettingsError`` naming the fix when there is none."""
    seen = encoder
    while seen is not None and not getattr(seen, "embeds_remotely", False):
        if getattr(seen, "reads_in_chunks", False):
            return seen  # a pool's model, read in this process (on Settings.threads)
        seen = getattr(seen, "wrapped", None)
    if seen is not None:
        raise SettingsError("sentences are read in their chunks in this process, not on a Ray cluster: "
                            "rag index --sentence-vectors alone --ray ...")
    raise SettingsError(
        f"the model {getattr(encoder, 'model_id', encoder)!r} cannot read sentences in their chunks (only e5 with "
        "the one-pass engine can): rag index --sentence-vectors alone (rag eval: --set sentence_vectors=alone)")


def gather_sentences(plan: PiecePlan, read: ReadInChunks, todo: Sequence[int], alone: Sequence[int],
                     alone_vectors: np.ndarray, alone_terms: tuple[np.ndarray, np.ndarray] | None
                     ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """The vectors (and terms) of the sentences ``todo``, in that order: read in their chunks, or
    (``alone``) encoded on their own."""
    at_alone = {sid: k for k, sid in enumerate(alone)}
    vectors = np.empty((len(todo), read.piece_vectors.shape[1]), dtype=np.float32)
    in_chunk = [k for k, sid in enumerate(todo) if sid in plan.row_of]
    rows = [plan.row_of[todo[k]] for k in in_chunk]
    by_alone = [k for k, sid in enumerate(todo) if sid not in plan.row_of]
    from_alone = [at_alone[todo[k]] for k in by_alone]
    vectors[in_chunk] = read.piece_vectors[rows]
    vectors[by_alone] = alone_vectors[from_alone]
    if alone_terms is None or read.term_ids is None or read.term_weights is None:
        return vectors, None
    ids = np.zeros((len(todo), alone_terms[0].shape[1]), dtype=np.uint16)
    weights = np.zeros((len(todo), alone_terms[1].shape[1]), dtype=np.float16)
    ids[in_chunk], weights[in_chunk] = read.term_ids[rows], read.term_weights[rows]
    ids[by_alone], weights[by_alone] = alone_terms[0][from_alone], alone_terms[1][from_alone]
    return vectors, (ids, weights)
