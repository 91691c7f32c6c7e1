"""Chunk vectors derived from their sentences (rag/index/derive.py) and the builds that use them."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from fakes import FAKE, FakeEncoder
from helpers import MakeIndex

from rag.chunk import chunk_document
from rag.encoders import normalise
from rag.errors import SettingsError
from rag.index import build_index, current_build, index_status, open_index, read_manifest
from rag.index.derive import derive_chunk_vectors
from rag.load import load_documents
from rag.settings import Settings
from rag.types import Chunk, Span

DERIVED = FAKE.with_(chunk_vectors="derived")
PARTS = [{"id": "a", "dim": 3, "weight": 1.0}, {"id": "b", "dim": 2, "weight": 0.35}]


def _fused(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n fused rows as FusionEncoder lays them out, and each part's unit vectors."""
    a, b = normalise(rng.normal(size=(n, 3))), normalise(rng.normal(size=(n, 2)))
    return np.hstack([a * math.sqrt(1 / 1.35), b * math.sqrt(0.35 / 1.35)]), a, b


def _spans(lengths: list[int]) -> list[Span]:
    out, start = [], 0
    for n in lengths:
        out.append(Span("d", start, start + n, "x" * n, 1))
        start += n
    return out


def test_a_chunk_is_the_length_weighted_mean_of_its_sentences_per_part() -> None:
    fused, a, b = _fused(np.random.default_rng(0), 4)
    sentences = _spans([10, 30, 5, 40])
    chunks = [Chunk("d", 0, 45, "x" * 45, 1, 0, 3), Chunk("d", 40, 85, "x" * 45, 1, 2, 4),
              Chunk("d", 45, 85, "x" * 40, 1, 3, 4)]
    got = derive_chunk_vectors(chunks, sentences, fused, PARTS)
    w = np.array([10.0, 30.0, 5.0, 40.0])[:, None]
    for row, (lo, hi) in zip(got, [(0, 3), (2, 4), (3, 4)], strict=True):
        want_a = normalise((a[lo:hi] * w[lo:hi]).sum(axis=0))[0]
        want_b = normalise((b[lo:hi] * w[lo:hi]).sum(axis=0))[0]
        np.testing.assert_allclose(row[:3] / math.sqrt(1 / 1.35), want_a, atol=1e-6)
        np.testing.assert_allclose(row[3:] / math.sqrt(0.35 / 1.35), want_b, atol=1e-6)
    np.testing.assert_allclose(got[2], fused[3], atol=1e-6)  # one sentence: its own vector
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_rows_can_be_mapped_and_empty_chunks_are_refused() -> None:
    fused, _, _ = _fused(np.random.default_rng(1), 2)
    sentences = _spans([10, 20, 30])
    chunk = Chunk("d", 10, 60, "x" * 50, 1, 1, 3)
    row_of = np.array([-1, 0, 1])  # only sentences 1 and 2 were encoded
    got = derive_chunk_vectors([chunk], sentences, fused, PARTS, row_of)
    np.testing.assert_allclose(got, derive_chunk_vectors([chunk], sentences, np.vstack([fused[:1], fused]), PARTS))
    with pytest.raises(ValueError, match="holds no sentence"):
        derive_chunk_vectors([Chunk("d", 0, 10, "x" * 10, 1, 1, 1)], sentences, fused, PARTS)
    with pytest.raises(ValueError, match="parts add up to 5 dimensions, its vectors have 4"):
        derive_chunk_vectors([chunk], sentences, fused[:, :4], PARTS, row_of)


def test_a_derived_build_embeds_sentences_only(make_index: MakeIndex, seeds_copy: Path) -> None:
    encoder = FakeEncoder()
    index_dir = make_index(seeds_copy, settings=DERIVED, encoder=encoder)
    chunks, sentences = chunk_document(load_documents(seeds_copy).documents[0], DERIVED.chunk_size,
                                       DERIVED.chunk_overlap)
    whole = {c.text for c in chunks} - {s.text for s in sentences}
    assert whole and not whole & set(encoder.passages)  # no chunk was embedded as a whole
    assert {s.text for s in sentences} <= set(encoder.passages)
    index = open_index(index_dir, DERIVED)
    stored = index.chunk_store.vectors(np.arange(len(index.chunks)))
    sentence_vectors = index.sentence_store.vectors(np.arange(len(index.sentences)))
    parts = [{"id": p.id, "dim": p.dim, "weight": p.weight} for p in index.manifest.model.parts]
    np.testing.assert_allclose(stored, derive_chunk_vectors(index.chunks, index.sentences, sentence_vectors, parts),
                               atol=1e-6)


def test_encoded_and_derived_builds_never_mix(make_index: MakeIndex, seeds_copy: Path) -> None:
    index_dir = make_index(seeds_copy)
    assert index_status(index_dir, load_documents(seeds_copy), DERIVED) == "stale"
    (seeds_copy / "phare.txt").write_text("Le phare de Cordouan date de 1611.", encoding="utf-8")
    report = build_index(load_documents(seeds_copy), index_dir, DERIVED, FakeEncoder())
    assert (report.embedded_documents, report.reused_documents) == (2, 0)  # nothing reused across kinds
    assert read_manifest(current_build(index_dir)).build_key()["chunk_vectors"] == "derived"


def test_a_manifest_from_before_the_setting_means_encoded(make_index: MakeIndex, seeds_copy: Path) -> None:
    manifest = read_manifest(current_build(make_index(seeds_copy)))
    older = dataclasses.replace(manifest, settings={k: v for k, v in manifest.settings.items()
                                                    if k != "chunk_vectors"})
    assert older.build_key() == manifest.build_key() and older.build_key()["chunk_vectors"] == "encoded"


def test_chunk_vectors_setting_is_validated() -> None:
    with pytest.raises(SettingsError, match=r"^chunk_vectors must be one of encoded, derived, not 'both'$"):
        Settings(chunk_vectors="both")


def test_milvus_rows_of_the_two_kinds_have_other_keys() -> None:
    from rag.index.milvus import version_key

    encoded = version_key("a.txt", "abc", FAKE.to_dict(), 3)
    assert version_key("a.txt", "abc", DERIVED.to_dict(), 3) != encoded
    older = {k: v for k, v in FAKE.to_dict().items() if k != "chunk_vectors"}
    assert version_key("a.txt", "abc", older, 3) == encoded  # existing collections keep their keys
