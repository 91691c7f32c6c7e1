"""Building an index: chunk, embed what changed, compute the abstention background, write atomically.

``build_index`` re-embeds only documents that are new or changed since the build in use
(unless ``full``); ``rag.index.fresh.index_status`` says whether a build is needed at all. The
background is the mean embedding of bundled generic sentences (rag/data/background.tsv) in
the documents' languages: the baseline the answer stage measures a question's best sentence
against before it answers.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..chunk import SPLITTER_VERSION, chunk_document
from ..encoders import TERMS, Encoder, encode_passages, encoder_parts, terms_encoder
from ..errors import IndexCorruptError, IndexMismatchError, IndexMissingError
from ..settings import Settings
from ..types import BuildReport, Chunk, LoadResult, Span
from . import milvus
from .derive import derive_chunk_vectors
from .fresh import record_sources, same_documents
from .manifest import (
    FORMAT_VERSION,
    Counts,
    DocumentEntry,
    Manifest,
    ModelInfo,
    ModelPart,
    check_compatible,
    read_manifest,
)
from .milvus import check_store, store_of
from .store import (
    EXACT_SEARCH_BYTES,
    Index,
    VectorHandover,
    build_lock,
    clean_leftovers,
    current_build,
    open_index,
    write_build,
)

Progress = Callable[[int, int], None]  # (passages embedded so far, total to embed)


def background_sentences(languages: Sequence[str | None]) -> list[str]:
    """The bundled generic sentences in the documents' languages, in proportion to their documents.

    All of them when no document language is among the bundled ones.
    """
    by_lang: dict[str, list[str]] = {}
    with (resources.files("rag") / "data" / "background.tsv").open(encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("#") or "\t" not in line:
                continue
            lang, text = line.rstrip("\n").split("\t", 1)
            by_lang.setdefault(lang, []).append(text)
    counts = Counter(lang for lang in languages if lang in by_lang)
    if not counts:
        return [t for texts in by_lang.values() for t in texts]
    return [t for lang, n in sorted(counts.items()) for t in by_lang[lang] * n]


def background_centroid(texts: Sequence[str], vectors: np.ndarray) -> np.ndarray:
    """Mean embedding of generic text in the documents' languages: the baseline for abstention.

    ``texts`` are ``background_sentences(...)`` (repeats weight a language by its documents);
    ``vectors`` are the embeddings of ``sorted(set(texts))``, in that order.
    """
    unique = sorted(set(texts))
    weights = Counter(texts)
    mean = sum(vectors[i] * weights[t] for i, t in enumerate(unique)) / len(texts)
    return np.asarray(mean, dtype=np.float32)


def build_index(
    loaded: LoadResult,
    root: str | os.PathLike[str],
    settings: Settings,
    encoder: Encoder,
    *,
    full: bool = False,
    progress: Progress | None = None,
    _fail_after: str | None = None,
) -> BuildReport:
    """Build (or bring up to date) the index at ``root`` from ``loaded`` documents.

    Only documents that are new or changed since the build in use are embedded, unless
    ``full``. The new build replaces the old one atomically; on any error the old one stays.
    ``_fail_after`` names a file after which to raise (tests inject crashes with it).
    """
    started = time.perf_counter()
    root = Path(root)
    with build_lock(root):
        clean_leftovers(root)
        try:
            before: Manifest | None = read_manifest(current_build(root))
        except (IndexMissingError, IndexCorruptError):
            before = None
        if before is not None and not full:
            check_store(before, settings, root, building=True)  # switching stores takes --full
        store = settings.store or (store_of(before) if before is not None else "faiss")
        settings = settings.with_(store=store)
        if store == "milvus":
            settings = milvus.resolve(settings, root, encoder.model_id, before)
        previous = None
        if not full:
            try:
                previous = open_index(root, settings=settings, verify=True, encoder=encoder)
            except (IndexMissingError, IndexCorruptError, IndexMismatchError):
                previous = None
            if previous is not None and not check_compatible(previous.manifest, settings, root):
                previous = None  # other chunking: nothing can be reused
            if previous is not None and previous.manifest.settings.get("milvus_collection") != \
                    settings.milvus_collection:
                previous = None  # other collections: their rows are not this build's
        old_ids = set(previous.documents) if previous else set()
        if previous is not None and same_documents(previous.documents.values(), loaded.documents):
            record_sources(root, loaded)  # files touched but unchanged: the next start is stat-only again
            return BuildReport(
                documents=len(loaded.documents), chunks=len(previous.chunks), sentences=len(previous.sentences),
                reused_documents=len(loaded.documents), embedded_documents=0, removed_documents=0,
                skipped=loaded.skipped, seconds=time.perf_counter() - started, path=str(root), up_to_date=True,
                pages=sum(d.page_count for d in loaded.documents),
            )

        chunks: list[Chunk] = []
        sentences: list[Span] = []
        reused: set[str] = set()
        for doc in loaded.documents:
            doc_chunks, doc_sents = chunk_document(doc, settings.chunk_size, settings.chunk_overlap, len(sentences))
            chunks.extend(doc_chunks)
            sentences.extend(doc_sents)
            prev_doc = previous.documents.get(doc.id) if previous else None
            if prev_doc is not None and prev_doc.sha256 == doc.sha256:
                reused.add(doc.id)

        dim = encoder.dim
        derived = settings.chunk_vectors == "derived"
        todo_chunks = [i for i, c in enumerate(chunks) if c.doc not in reused]
        todo_sents = [i for i, s in enumerate(sentences) if s.doc not in reused]
        # One call for everything, the background sentences included: a pooled encoder starts
        # its workers once, and this process need not load the model at all.
        background_texts = background_sentences([d.lang for d in loaded.documents])
        background_unique = sorted(set(background_texts))
        encoded_chunks = [] if derived else todo_chunks  # derived: from their sentences, below
        texts = [chunks[i].text for i in encoded_chunks] + [sentences[i].text for i in todo_sents]
        # the sentences' latent terms, for choosing answers (models with e5)
        terms = terms_encoder(encoder) if settings.latent_terms else None
        total = len(texts) + len(background_unique) + (len(todo_sents) if terms is not None else 0)
        done = 0

        def tick(n: int) -> None:
            nonlocal done
            done += n
            if progress:
                progress(done, total)

        if progress:
            progress(0, total)
        sentence_texts = [sentences[i].text for i in todo_sents]
        with _one_start(encoder, terms, texts, sentence_texts):  # the vectors and the terms from the same workers
            vectors = encode_passages(encoder, texts + background_unique, tick)
            new_terms = terms.encode_terms(sentence_texts, tick) if terms is not None else None
        n_chunks, n_texts = len(encoded_chunks), len(texts)
        background_vector = background_centroid(background_texts, vectors[n_texts:])
        parts = encoder_parts(encoder)
        new_sentence_vectors = vectors[n_chunks:n_texts]
        if derived:
            row_of = np.full(len(sentences), -1, dtype=np.int64)
            row_of[todo_sents] = np.arange(len(todo_sents))  # a new chunk's sentences are all new
            new_chunk_vectors = derive_chunk_vectors([chunks[i] for i in todo_chunks], sentences,
                                                     new_sentence_vectors, parts, row_of)
        else:
            new_chunk_vectors = vectors[:n_chunks]
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            rag_version=__version__,
            built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            model=ModelInfo(settings.model, encoder.model_id, int(dim),
                            tuple(ModelPart(str(p["id"]), int(p["dim"]), float(p["weight"])) for p in parts)),
            settings=settings.to_dict(),
            splitter_version=SPLITTER_VERSION,
            exact_search_bytes=EXACT_SEARCH_BYTES,
            counts=Counts(len(loaded.documents), len(chunks), len(sentences),
                          sum(d.page_count for d in loaded.documents)),
            documents=tuple(DocumentEntry(d.id, d.sha256, len(d.text), d.date, d.lang, d.kind, len(d.pages))
                            for d in loaded.documents),
            skipped=tuple(loaded.skipped),
            versions=_versions(),
            sources=loaded.sources,
            scanned_ns=loaded.scanned_ns,
        )
        if store == "milvus":
            collections = milvus.connect(settings)
            collections.ensure(encoder.model_id, int(dim), settings.milvus_index)
            versions, chunk_keys, sentence_keys = milvus.build_keys(loaded.documents, chunks, sentences, settings)
            keep = set(versions.values())
            with milvus.pending(root, collections, {versions[d] for d in versions if d not in reused}, keep):
                milvus.insert_rows(collections, "chunks", chunks, chunk_keys, versions, todo_chunks,
                                   new_chunk_vectors)
                milvus.insert_rows(collections, "sentences", sentences, sentence_keys, versions, todo_sents,
                                   new_sentence_vectors)
                write_build(root, manifest, loaded.documents, chunks, sentences, None, background_vector,
                            _fail_after, keys=(chunk_keys, sentence_keys),
                            terms=_all_terms(new_terms, sentences, todo_sents, previous, reused))
                milvus.after_switch(collections, before, keep)
        elif not reused:  # everything was embedded, in order: the encoder's rows are the arrays, no copy
            handover = VectorHandover(new_chunk_vectors, new_sentence_vectors)
            del vectors, new_chunk_vectors, new_sentence_vectors  # write_build holds the last references
            write_build(root, manifest, loaded.documents, chunks, sentences, handover, background_vector,
                        _fail_after, terms=new_terms)
        else:
            chunk_vectors = np.zeros((len(chunks), dim), dtype=np.float32)
            sentence_vectors = np.zeros((len(sentences), dim), dtype=np.float32)
            chunk_vectors[todo_chunks] = new_chunk_vectors
            sentence_vectors[todo_sents] = new_sentence_vectors
            del vectors, new_chunk_vectors, new_sentence_vectors  # copied: not held twice while the graphs are built
            if previous is not None:
                for doc_id, (cv, sv) in _vectors_by_doc(previous, reused).items():
                    chunk_vectors[[i for i, c in enumerate(chunks) if c.doc == doc_id]] = cv
                    sentence_vectors[[i for i, s in enumerate(sentences) if s.doc == doc_id]] = sv
            handover = VectorHandover(chunk_vectors, sentence_vectors)
            del chunk_vectors, sentence_vectors
            write_build(root, manifest, loaded.documents, chunks, sentences, handover, background_vector,
                        _fail_after, terms=_all_terms(new_terms, sentences, todo_sents, previous, reused))
        clean_leftovers(root)
    return BuildReport(
        documents=len(loaded.documents), chunks=len(chunks), sentences=len(sentences),
        reused_documents=len(reused), embedded_documents=len(loaded.documents) - len(reused),
        removed_documents=len(old_ids - {d.id for d in loaded.documents}),
        skipped=loaded.skipped, seconds=time.perf_counter() - started, path=str(root),
        pages=sum(d.page_count for d in loaded.documents),
    )


def _vectors_by_doc(index: Index, docs: set[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The stored vectors of ``docs``, from the previous build's store (read, never re-encoded)."""
    chunk_rows, sentence_rows = index.chunks.by_document(), index.sentences.by_document()
    return {d: (index.chunk_store.vectors(chunk_rows[pos]), index.sentence_store.vectors(sentence_rows[pos]))
            for pos, d in enumerate(index.chunks.ids) if d in docs}

def _one_start(encoder: Encoder, terms: Any, texts: list[str],
               sentence_texts: list[str]) -> contextlib.AbstractContextManager[Any]:
    """When a build makes the terms too, make them with the vectors: an encoder that can
    (``terms_alongside``: a Ray cluster's actors, the PyTorch e5 in this process) is told which
    texts' terms are wanted, and makes both in one pass; a pool's worker processes are started
    once and kept up for both passes (large builds, rag.pool; ~1.5 s each to load the models).
    Otherwise nothing."""
    from ..pool import PooledEncoder

    if terms is encoder and isinstance(encoder, PooledEncoder):
        return encoder.terms_alongside(sentence_texts, keep_workers=sum(map(len, texts)) >= encoder.min_chars)
    if terms is not None and hasattr(terms, "terms_alongside"):
        return terms.terms_alongside(sentence_texts)
    return contextlib.nullcontext()


def _all_terms(new: tuple[np.ndarray, np.ndarray] | None, sentences: list[Span], todo: list[int],
               previous: Index | None, reused: set[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """Every sentence's latent terms: the new ones at ``todo``, the reused documents' copied from the
    previous build (read, never re-encoded), document by document."""
    if new is None:
        return None
    n = len(sentences)
    ids, weights = np.zeros((n, TERMS), dtype=np.uint16), np.zeros((n, TERMS), dtype=np.float16)
    ids[todo], weights[todo] = new
    if previous is None or not reused:
        return ids, weights
    if previous.sentence_terms is None:  # the same model always stores them: refuse rather than store zeros
        raise IndexCorruptError(f"the index at {str(previous.path)!r} has no latent terms to reuse: "
                                "rebuild it with `rag index --full`")
    rows_now: dict[str, list[int]] = {}
    for i, s in enumerate(sentences):
        if s.doc in reused:
            rows_now.setdefault(s.doc, []).append(i)
    rows_before = dict(zip(previous.sentences.ids, previous.sentences.by_document(), strict=True))
    for doc_id, rows in rows_now.items():
        old = rows_before[doc_id]
        if len(old) != len(rows):
            raise IndexCorruptError(f"the index at {str(previous.path)!r} does not match its documents: "
                                    "rebuild it with `rag index --full`")
        ids[rows] = previous.sentence_terms[0][old]
        weights[rows] = previous.sentence_terms[1][old]
    return ids, weights


def _versions() -> dict[str, str]:
    import bm25s
    import faiss

    return {"rag": __version__, "faiss": faiss.__version__, "numpy": np.__version__, "bm25s": bm25s.__version__}
