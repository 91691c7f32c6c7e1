"""Sentences read in their chunk's pass (rag/index/in_chunk.py) and the builds that use them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from fakes import FAKE, FakeTermsEncoder
from helpers import MakeIndex

from rag.chunk import chunk_document
from rag.encoders import WrappingEncoder, normalise
from rag.errors import SettingsError
from rag.index import current_build, read_manifest
from rag.index.folder import TERM_IDS, settings_for
from rag.index.in_chunk import chunk_reader, plan_pieces
from rag.load import load_documents
from rag.local_encoders import ReadInChunks
from rag.types import Chunk, Span

IN_CHUNK = FAKE.with_(sentence_vectors="in-chunk", chunk_size=120, chunk_overlap=40)


def _doc(text: str, tmp_path: Path) -> tuple[list[Chunk], list[Span]]:
    (tmp_path / "d.txt").write_text(text, encoding="utf-8")
    return chunk_document(load_documents(tmp_path).documents[0], 120, 40)


class ChunkReader(FakeTermsEncoder):
    """The fake encoder, reading sentences in chunks: a piece's vector is the hash of "in: " + its
    text (so a test tells it from the same sentence encoded alone) and its terms its words'."""

    reads_in_chunks = True

    def __init__(self) -> None:
        super().__init__()
        self.read: list[list[str]] = []
        self._hashed = FakeTermsEncoder()  # what it reads is not recorded as encoded alone

    def encode_in_chunks(self, chunk_texts: Sequence[str], chunks: Sequence[Sequence[str]],
                         want: Sequence[Sequence[bool]], terms: bool,
                         progress: Callable[[int], None] | None = None) -> ReadInChunks:
        self.read.extend(list(c) for c in chunks)
        flat = [p for c in chunks for p in c]
        flags = [w for f in want for w in f]
        pieces = self._hashed.encode_passages([f"in: {p}" for p in flat]) * np.asarray(flags, np.float32)[:, None]
        ids, weights = self._hashed.encode_terms(flat)
        ids[~np.asarray(flags, dtype=bool)] = 0
        weights[~np.asarray(flags, dtype=bool)] = 0
        if progress:
            progress(len(chunks))
        return ReadInChunks(self._hashed.encode_passages(list(chunk_texts)), pieces, ids if terms else None,
                            weights if terms else None)


def test_a_chunk_is_its_sentences_and_each_is_read_once_in_the_first_chunk_that_holds_it(tmp_path: Path) -> None:
    text = ("The first sentence is here. The second one follows it. A third comes next here. "
            "The fourth is last of all. Then a fifth ends the story.")
    chunks, sentences = _doc(text, tmp_path)
    assert len(chunks) >= 2 and any(c.first_sentence < p.last_sentence for p, c in zip(chunks, chunks[1:]))
    plan = plan_pieces(chunks, sentences, set(range(len(sentences))))
    for chunk, pieces in zip(chunks, plan.pieces, strict=True):
        assert " ".join(pieces) == chunk.text  # sentences joined by the single spaces between them
    assert sorted(plan.row_of) == list(range(len(sentences)))  # every sentence read, once
    flat = [p for c in plan.pieces for p in c]
    flags = [w for f in plan.want for w in f]
    for sid, row in plan.row_of.items():
        assert flat[row] == sentences[sid].text and flags[row]
    assert sum(flags) == len(sentences)  # the overlap's sentences are not read twice
    first = next(i for i, c in enumerate(chunks) if c.first_sentence <= 1 < c.last_sentence)
    assert plan.row_of[1] < sum(len(p) for p in plan.pieces[: first + 1])  # in the first chunk holding it


def test_only_wanted_sentences_are_read_and_text_outside_whole_sentences_is_a_piece() -> None:
    sentences = [Span("d", 0, 10, "Aaaa aaaa.", 1), Span("d", 11, 21, "Bbbb bbbb.", 1),
                 Span("d", 22, 32, "Cccc cccc.", 1)]
    text = "Aaaa aaaa. Bbbb bbbb. Cccc cccc."
    # a chunk that starts inside the first sentence (one cut because it is too long) holds it in part
    chunk = Chunk("d", 5, 32, text[5:32], 1, 0, 3)
    plan = plan_pieces([chunk], sentences, {0, 2})
    assert plan.pieces == [["aaaa.", "Bbbb bbbb.", "Cccc cccc."]]
    assert plan.want == [[False, False, True]]  # sentence 0 is not whole here, sentence 1 not wanted
    assert plan.row_of == {2: 2}


def test_a_build_reads_sentences_in_their_chunks(make_index: MakeIndex) -> None:
    text = ("Blinken offered help with the border. Aliyev thanked him for it. The talks were in Prague. "
            "A long sentence without an end that runs on and on past the size of any chunk we make here, "
            "with many words, and yet more words, and still more words after those")
    encoder = ChunkReader()
    root = make_index({"a.txt": text}, settings=IN_CHUNK, encoder=encoder)
    build = current_build(root)
    manifest = read_manifest(build)
    assert manifest.settings["sentence_vectors"] == manifest.build_key()["sentence_vectors"] == "in-chunk"
    vectors = np.load(build / "sentence_vectors.npy")
    doc = load_documents(root.parent / "docs").documents[0]
    chunks, sentences = chunk_document(doc, IN_CHUNK.chunk_size, IN_CHUNK.chunk_overlap)
    plan = plan_pieces(chunks, sentences, set(range(len(sentences))))
    long = [i for i in range(len(sentences)) if i not in plan.row_of]
    assert long and len(plan.row_of) == 3  # the long sentence is no chunk's whole: encoded alone
    hashed = FakeTermsEncoder()
    for sid, sentence in enumerate(sentences):
        alone = sid in long
        want = hashed.encode_passages([sentence.text if alone else f"in: {sentence.text}"])[0]
        np.testing.assert_allclose(vectors[sid], normalise(want[None])[0], atol=1e-6)
        assert (sentence.text in encoder.passages) == alone  # only the long one is encoded alone
    chunk_vectors = np.load(build / "chunk_vectors.npy")
    np.testing.assert_allclose(chunk_vectors, hashed.encode_passages([c.text for c in chunks]), atol=1e-6)
    assert not any(c.text in encoder.passages for c in chunks)  # the chunks are read, not encoded apart
    ids = np.load(build / TERM_IDS)
    np.testing.assert_array_equal(ids, hashed.encode_terms([s.text for s in sentences])[0])
    assert settings_for(root).sentence_vectors == "in-chunk"  # asking keeps the index's recipe


def test_models_that_cannot_read_in_chunks_name_the_fix(make_index: MakeIndex) -> None:
    with pytest.raises(SettingsError, match="--sentence-vectors alone"):
        make_index({"a.txt": "One sentence. Two sentences."}, settings=IN_CHUNK, encoder=FakeTermsEncoder())
    reader = ChunkReader()

    class Pool(WrappingEncoder):
        pass

    class Cluster(WrappingEncoder):
        embeds_remotely = True

    assert chunk_reader(Pool(reader)) is reader  # a pool's model reads in this process
    with pytest.raises(SettingsError, match=r"Ray cluster.*--sentence-vectors alone"):
        chunk_reader(Cluster(reader))
    with pytest.raises(SettingsError, match="chunk_vectors encoded"):
        FAKE.with_(sentence_vectors="in-chunk", chunk_vectors="derived")
    with pytest.raises(SettingsError, match="sentence_vectors must be one of"):
        FAKE.with_(sentence_vectors="sometimes")


def test_an_index_from_before_the_setting_counts_as_alone(make_index: MakeIndex) -> None:
    import json

    root = make_index({"a.txt": "One sentence. Two sentences."})
    path = current_build(root) / "manifest.json"
    data = json.loads(path.read_text())
    del data["settings"]["sentence_vectors"]
    path.write_text(json.dumps(data))
    assert read_manifest(current_build(root)).build_key()["sentence_vectors"] == "alone"



def test_a_fused_model_reads_in_chunks_with_its_first_member_and_encodes_alone_with_the_others() -> None:
    from fakes import FakeEncoder

    from rag.encoders import FusionEncoder

    first, other = ChunkReader(), FakeEncoder()
    fused = FusionEncoder([(first, 1.0), (other, 0.35)])
    assert fused.reads_in_chunks and not FusionEncoder([(other, 1.0), (first, 0.35)]).reads_in_chunks
    chunks = [["One here.", "Two there."], ["Three."]]
    read = fused.encode_in_chunks(["One here. Two there.", "Three."], chunks, [[True, False], [True]], True)
    a, b = np.sqrt(1 / 1.35), np.sqrt(0.35 / 1.35)
    hashed = FakeTermsEncoder()
    np.testing.assert_allclose(read.chunk_vectors[:, first.dim:] / b,
                               hashed.encode_passages(["One here. Two there.", "Three."]), atol=1e-6)
    np.testing.assert_allclose(read.piece_vectors[[0, 2], : first.dim] / a,
                               hashed.encode_passages(["in: One here.", "in: Three."]), atol=1e-6)
    np.testing.assert_allclose(read.piece_vectors[[0, 2], first.dim :] / b,
                               hashed.encode_passages(["One here.", "Three."]), atol=1e-6)
    assert not read.piece_vectors[1].any()  # not wanted
    assert other.passages == ["One here. Two there.", "Three.", "One here.", "Three."]
