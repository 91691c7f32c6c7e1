"""Invariants checked on generated documents (hypothesis).

For texts in several scripts (Latin with accents, Cyrillic, Greek, CJK, Arabic, emoji) with
mixed whitespace (``\\r\\n``, ``\\r``, tabs, ``\\u00a0``, ``\\u202f``, ``\\u3000``), a BOM and a
date line, every sentence and chunk span equals its text, no text of the body falls
outside the sentences, every sentence is in a chunk, and every quoted answer sentence
equals ``source[start:end]`` of the file on disk.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rag.chunk import chunk_document
from rag.encoders import HashEncoder
from rag.errors import DocumentsError
from rag.index import build_index
from rag.load import load_documents, parse_document
from rag.pipeline import Pipeline
from rag.settings import Settings
from rag.types import Document, LoadResult

HASH = Settings(model="hash")
# CI runs a modest number; RAG_HYPOTHESIS_EXAMPLES=2000 searches harder (docs/reliability.md)
EXAMPLES = int(os.environ.get("RAG_HYPOTHESIS_EXAMPLES", "150"))
SCRIPTS = {
    "latin": "abcdefghijklmnopqrstuvwxyzàâäéèêëïîôöùûüçñßœæåøABCÉÀÖÑÇ",
    "cyrillic": "абвгдежзийклмнопрстуфхцчшщъыьэюяёАБВГДЖЗ",
    "greek": "αβγδεζηθικλμνξοπρστυφχψωάέήίόύώϊΐΑΒΓΔΩ",
    "cjk": "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年東京図書館",
    "arabic": "ابتثجحخدذرزسشصضطظعغفقكلمنهويءآأؤإئ",
    "digits": "0123456789",
}
EMOJI = ["🙂", "🎉", "👍🏽", "👨\u200d👩\u200d👧", "🇫🇷", "❤\ufe0f", "\U0001f9ea"]
SEPARATORS = [
    " ", "  ", "\t", "\u00a0", "\u202f", "\u3000", "\n", "\r\n", "\r", "\n\n", "\r\n\r\n", "\n \n\t\n",
    ". ", ".\r\n", "! ", "? ", "… ", "...", ". « ", " » ", " “", "” ", ", ", "; ", " (", ") ", "。", "、",
    "؟ ", "، ", "\u00a0?", ". ", ".\n\n", " - ", " — ", "'", "\"", "\u2028", "\x0c",
]

words = st.one_of(
    *[st.text(alphabet, min_size=1, max_size=12) for alphabet in SCRIPTS.values()],
    st.sampled_from(EMOJI),
    st.sampled_from(["M.", "Dr.", "z.B.", "U.S.", "3.5", "J.", "etc.", "p.", "1.", "e.g.", "example.com"]),
)
# a capital after a full stop starts a sentence: generate some
capitalised = words.map(lambda w: w[:1].upper() + w[1:])


@st.composite
def texts(draw: st.DrawFn) -> str:
    parts = []
    if draw(st.booleans()):
        parts.append(draw(st.sampled_from(["\ufeff", "date 2022-10\n", "\ufeffdate: 2021-03-05\r\n", "  \n"])))
    for _ in range(draw(st.integers(1, 60))):
        parts.append(draw(st.one_of(words, capitalised)))
        parts.append(draw(st.sampled_from(SEPARATORS)))
    return "".join(parts)


def _document(text: str, doc_id: str = "doc.txt") -> Document:
    try:
        return parse_document(doc_id, text.encode("utf-8"))
    except ValueError:  # empty after the metadata: load_documents skips it, nothing to check
        assume(False)
        raise


def check_spans(doc: Document, chunk_size: int, chunk_overlap: int) -> None:
    chunks, sentences = chunk_document(doc, chunk_size, chunk_overlap)
    text = doc.text
    assert sentences, "a non-empty body has at least one sentence"
    previous_end = doc.body_start
    for s in sentences:
        assert text[s.start : s.end] == s.text
        assert s.text.strip(), f"empty sentence at {s.start}"
        assert doc.body_start <= previous_end <= s.start < s.end <= len(text)
        # nothing of the body between two sentences but whitespace: no text is lost
        assert not text[previous_end : s.start].replace("\ufeff", "").strip(), text[previous_end : s.start]
        previous_end = s.end
    assert not text[previous_end:].strip()
    covered: set[int] = set()
    for c in chunks:
        assert text[c.start : c.end] == c.text
        assert c.text.strip()
        assert 0 <= c.first_sentence < c.last_sentence <= len(sentences)
        for sid in range(c.first_sentence, c.last_sentence):
            s = sentences[sid]
            assert s.start < c.end and c.start < s.end, "a chunk's sentences overlap it"
        covered.update(range(c.first_sentence, c.last_sentence))
    assert covered == set(range(len(sentences))), "every sentence belongs to a chunk"


@settings(max_examples=EXAMPLES, deadline=None, database=None)
@given(text=texts())
def test_spans_equal_their_text_with_default_chunking(text: str) -> None:
    check_spans(_document(text), HASH.chunk_size, HASH.chunk_overlap)


@settings(max_examples=EXAMPLES, deadline=None, database=None)
@given(text=texts(), size=st.integers(8, 300), overlap_share=st.floats(0, 0.9))
def test_spans_equal_their_text_with_small_chunks(text: str, size: int, overlap_share: float) -> None:
    """Chunks far smaller than sentences force the clause and word splitter to cut them."""
    check_spans(_document(text), size, int(size * overlap_share))


@settings(max_examples=EXAMPLES, deadline=None, database=None)
@given(text=texts(), script=st.sampled_from(sorted(SCRIPTS)))
def test_single_script_paragraphs(text: str, script: str) -> None:
    """Long runs of one script with CRLF paragraphs, as real files in that language look."""
    body = "\r\n\r\n".join(text.split("\n\n")) + "\r\n" + SCRIPTS[script] * 3
    check_spans(_document(body), 120, 30)


@pytest.mark.slow  # 4.7 s
@settings(max_examples=max(10, EXAMPLES // 5), deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(documents=st.lists(texts(), min_size=1, max_size=3), pick=st.lists(st.integers(0, 10_000), min_size=1,
                                                                           max_size=4))
def test_every_quoted_sentence_is_the_source_text_at_its_offsets(documents: list[str], pick: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "docs"
        folder.mkdir()
        for i, text in enumerate(documents):
            (folder / f"doc{i}.txt").write_bytes(text.encode("utf-8"))
        loaded = load_documents_or_skip(folder)
        build_index(loaded, Path(tmp) / "index", HASH, HashEncoder())
        pipeline = Pipeline.open(Path(tmp) / "index", HASH.with_(abstain_threshold=-1.0), HashEncoder())
        all_words = [w for d in loaded.documents for w in d.body.split()]
        question = " ".join(all_words[i % len(all_words)] for i in pick)
        assume(question.strip())
        answer = pipeline.ask(question)
        assert not answer.abstained and answer.sentences  # the threshold of -1 never abstains
        for quoted in [*answer.sentences, *answer.sources]:
            with open(folder / quoted.doc, encoding="utf-8", newline="") as handle:
                source = handle.read()
            assert source[quoted.start : quoted.end] == quoted.text


def load_documents_or_skip(folder: Path) -> LoadResult:
    try:
        loaded = load_documents(folder)
    except DocumentsError:  # every generated file was empty: nothing to ask
        assume(False)
        raise
    for doc in loaded.documents:
        with open(folder / doc.id, encoding="utf-8", newline="") as handle:
            assert handle.read() == doc.text, "the loaded text is the file, newlines untouched"
    return loaded
