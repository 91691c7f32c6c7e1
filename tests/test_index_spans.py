"""The lazy span sequences of an opened index, and what open computes from their rows with NumPy."""

from __future__ import annotations

import numpy as np
import pytest

from rag.chunk import chunk_document
from rag.index.spans import Chunks, Sentences, check_rows, sentence_languages, sentence_owners
from rag.types import Chunk, Document, Span

TEXTS = (
    "Erste Zeile hier. Zweiter Satz folgt.\n\nNeuer Absatz mit Text. Und noch einer am Ende.",
    "Short one. Another sentence here! A third? Yes, a fourth one too.\n\nParagraph two starts. It ends.",
    "Une phrase. Deux phrases.",
)


def _eager() -> tuple[list[Document], list[Chunk], list[Span]]:
    docs = [Document(id=f"d{i}.txt", text=t, sha256=str(i), lang=lang)
            for i, (t, lang) in enumerate(zip(TEXTS, ("de", None, "fr"), strict=True))]
    chunks: list[Chunk] = []
    sentences: list[Span] = []
    for doc in docs:
        c, s = chunk_document(doc, 60, 30, len(sentences))
        chunks.extend(c)
        sentences.extend(s)
    return docs, chunks, sentences


def _rows(spans: list[Chunk] | list[Span], docs: list[Document], chunk: bool) -> np.ndarray:
    pos = {d.id: i for i, d in enumerate(docs)}
    return np.array([[pos[s.doc], s.start, s.end, s.paragraph]
                     + ([s.first_sentence, s.last_sentence] if isinstance(s, Chunk) and chunk else [])
                     for s in spans], dtype=np.int64)


@pytest.fixture
def lazy() -> tuple[list[Document], list[Chunk], list[Span], Chunks, Sentences]:
    docs, chunks, sentences = _eager()
    ids, texts = tuple(d.id for d in docs), tuple(d.text for d in docs)
    return (docs, chunks, sentences, Chunks(_rows(chunks, docs, True), ids, texts),
            Sentences(_rows(sentences, docs, False), ids, texts))


def test_lazy_spans_read_as_the_eager_lists(lazy: tuple) -> None:
    docs, chunks, sentences, lazy_chunks, lazy_sentences = lazy
    assert len(chunks) > 3 and any(a.last_sentence > b.first_sentence for a, b in zip(chunks, chunks[1:]))  # overlap
    for eager, seq in ((chunks, lazy_chunks), (sentences, lazy_sentences)):
        assert len(seq) == len(eager)
        assert list(seq) == eager
        assert [seq[i] for i in range(len(eager))] == eager
        assert [seq[-i] for i in range(1, len(eager) + 1)] == [eager[-i] for i in range(1, len(eager) + 1)]
        assert seq[np.int64(1)] == eager[1]
        for part in (slice(None), slice(1, 3), slice(None, None, -1), slice(-2, None), slice(5, 1), slice(0, 99, 2)):
            assert seq[part] == eager[part]
        for i in (len(eager), -len(eager) - 1, 10**6):
            with pytest.raises(IndexError):
                seq[i]
        with pytest.raises(TypeError):
            seq["1"]
        assert list(reversed(seq)) == eager[::-1]
        assert eager[2] in seq and seq.index(eager[2]) == 2
    by_id = {d.id: d for d in docs}
    for s in [*lazy_chunks, *lazy_sentences]:
        assert s.text == by_id[s.doc].text[s.start : s.end] and s.text
    assert all(type(c) is Chunk for c in lazy_chunks) and all(type(s) is Span for s in lazy_sentences)


def test_spans_by_document_without_building_them(lazy: tuple) -> None:
    docs, chunks, sentences, lazy_chunks, lazy_sentences = lazy
    for eager, seq in ((chunks, lazy_chunks), (sentences, lazy_sentences)):
        groups = seq.by_document()
        assert [[int(i) for i in g] for g in groups] == [[i for i, s in enumerate(eager) if s.doc == d.id]
                                                          for d in docs]


def test_sentence_owner_is_the_first_chunk_holding_it(lazy: tuple) -> None:
    _, chunks, sentences, lazy_chunks, _ = lazy
    owners = sentence_owners(lazy_chunks.rows, len(sentences))
    want = [next((c for c, chunk in enumerate(chunks) if chunk.first_sentence <= s < chunk.last_sentence), 0)
            for s in range(len(sentences))]
    assert owners.tolist() == want
    # a sentence in no chunk gets 0; an overlap goes to the earlier chunk
    rows = np.array([[0, 0, 1, 1, 2, 5], [0, 0, 1, 1, 4, 6], [0, 0, 1, 1, 1, 2]], dtype=np.int64)
    assert sentence_owners(rows, 7).tolist() == [0, 2, 0, 0, 0, 1, 0]


def test_sentence_languages_follow_their_documents(lazy: tuple) -> None:
    docs, _, sentences, _, lazy_sentences = lazy
    langs = sentence_languages(lazy_sentences.rows, [d.lang for d in docs])
    by_id = {d.id: d.lang for d in docs}
    assert langs.tolist() == [by_id[s.doc] for s in sentences]


def test_check_rows_accepts_sound_rows_and_names_the_first_bad_one(lazy: tuple) -> None:
    docs, _, _, lazy_chunks, lazy_sentences = lazy
    lengths = [len(d.text) for d in docs]
    chunk_rows, sent_rows = lazy_chunks.rows, lazy_sentences.rows
    assert check_rows(chunk_rows, sent_rows, lengths) is None
    assert check_rows(np.zeros((0, 6), np.int64), np.zeros((0, 4), np.int64), []) is None

    def broken(rows: np.ndarray, at: tuple[int, int], value: int) -> np.ndarray:
        out = rows.copy()
        out[at] = value
        return out

    end_of = len(docs[0].text)
    cases = {
        "sentence 0 lies outside its document's text": (chunk_rows, broken(sent_rows, (0, 2), end_of + 1)),
        "sentence 1 lies outside its document's text": (chunk_rows, broken(sent_rows, (1, 1), sent_rows[1, 2] + 1)),
        "chunk 0 lies outside its document's text": (broken(chunk_rows, (0, 1), -1), sent_rows),
        "chunk 2 names a document that is not in the index": (broken(chunk_rows, (2, 0), len(docs)), sent_rows),
        "sentence 3 names a document that is not in the index": (chunk_rows, broken(sent_rows, (3, 0), -1)),
        "chunk 1 names sentences that are not in the index": (broken(chunk_rows, (1, 5), len(sent_rows) + 1),
                                                              sent_rows),
        "chunk 0 names sentences that are not in the index": (broken(chunk_rows, (0, 4), -1), sent_rows),
    }
    for message, (chunk_case, sent_case) in cases.items():
        assert check_rows(chunk_case, sent_case, lengths) == message
    assert "not (n, 6) integers" in (check_rows(chunk_rows[:, :4], sent_rows, lengths) or "")
    assert "not (n, 4) integers" in (check_rows(chunk_rows, sent_rows.astype(np.float64), lengths) or "")
    # a span may end exactly at its document's end
    assert check_rows(chunk_rows, broken(sent_rows, (0, 2), end_of), lengths) is None
