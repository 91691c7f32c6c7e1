"""Stage 5, retrieve: what a question reads from the index is computed once, when it is opened."""

from __future__ import annotations

import numpy as np

from rag.index import Part
from rag.pipeline import Pipeline
from rag.retrieve import retrieve


def test_open_computes_the_sentence_owners_languages_and_layout(fake_pipeline: Pipeline) -> None:
    index = fake_pipeline.index
    # the first chunk holding each sentence, checked against a scan of the chunks
    for sid in range(len(index.sentences)):
        first = next(c for c, chunk in enumerate(index.chunks) if chunk.first_sentence <= sid < chunk.last_sentence)
        assert index.sentence_chunk[sid] == first
    assert index.languages == {d.lang for d in index.documents.values() if d.lang}
    assert list(index.sentence_lang) == [index.documents[s.doc].lang for s in index.sentences]
    assert index.parts == (Part(0, 256, 1.0, 1.0),)


def test_retrieve_leaves_the_index_as_it_was_opened(fake_pipeline: Pipeline) -> None:
    index = fake_pipeline.index
    before = dict(vars(index))
    question = "Qu'a proposé Antony Blinken pour la délimitation des frontières ?"
    vector = fake_pipeline.encoder.encode_queries([question])[0]
    result = retrieve(index, vector, question, fake_pipeline.settings)
    assert result.ranked and result.lexical  # a French question over a French document: BM25 applies
    assert vars(index).keys() == before.keys()
    assert all(vars(index)[k] is v for k, v in before.items())
    assert isinstance(index.sentence_chunk, np.ndarray)
