"""Chunk vectors derived from their sentences' vectors (``Settings.chunk_vectors = "derived"``).

Chunks are whole sentences, so embedding the sentences and then the chunks embeds every token
twice per model (three times where chunks overlap). Derived, a chunk's vector is, per member
model of the encoder, the normalised mean of its sentences' unit vectors weighted by their
length in characters (a stand-in for the models' mean pooling over tokens), scaled back into
the fused layout (``rag.encoders.FusionEncoder``): each model's cosine stays readable and one
inner product is still the weighted mean of the cosines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..types import Chunk, Span


def part_scales(parts: Sequence[dict[str, Any]]) -> list[tuple[int, float]]:
    """(dimension, scale) of each member model, as ``encoder_parts`` describes them."""
    total = sum(float(p["weight"]) for p in parts)
    return [(int(p["dim"]), math.sqrt(float(p["weight"]) / total)) for p in parts]


def derive_chunk_vectors(chunks: Sequence[Chunk], sentences: Sequence[Span], sentence_vectors: np.ndarray,
                         parts: Sequence[dict[str, Any]], row_of: np.ndarray | None = None) -> np.ndarray:
    """The vectors of ``chunks`` from those of their sentences (global ids ``first_sentence``..``last_sentence``).

    ``sentence_vectors`` are rows in the fused layout ``parts`` (``encoder_parts(encoder)``): row
    ``row_of[i]`` is sentence ``sentences[i]`` (row ``i`` without ``row_of``); only the rows of the
    chunks' sentences are read.
    """
    dim = sentence_vectors.shape[1]
    out = np.zeros((len(chunks), dim), dtype=np.float32)
    if not chunks:
        return out
    # a sparse (chunks x sentences) matrix of length weights, as index lists for np.add.reduceat
    rows: list[int] = []
    weights: list[int] = []
    starts: list[int] = []
    for chunk in chunks:
        if chunk.last_sentence <= chunk.first_sentence:
            raise ValueError(f"chunk {chunk.doc}:{chunk.start} holds no sentence: its vector cannot be derived")
        starts.append(len(rows))
        for sid in range(chunk.first_sentence, chunk.last_sentence):
            rows.append(sid)
            weights.append(len(sentences[sid].text))
    ids = np.asarray(rows, dtype=np.int64)
    picked = sentence_vectors[ids if row_of is None else row_of[ids]]
    w = np.asarray(weights, dtype=np.float32)[:, None]
    col = 0
    for part_dim, scale in part_scales(parts):
        block = picked[:, col : col + part_dim] * w  # the common scale cancels in the normalisation
        sums = np.add.reduceat(block, np.asarray(starts, dtype=np.int64), axis=0)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        out[:, col : col + part_dim] = sums / np.maximum(norms, 1e-12) * scale
        col += part_dim
    if col != dim:
        raise ValueError(f"the encoder's parts add up to {col} dimensions, its vectors have {dim}")
    return out
