"""The whole question path: an encoder and a loaded index, asked one question at a time.

``Pipeline`` holds the heavy resources (model and index) and is safe to share between
threads: the index is read-only and the encoder serialises its own calls (batching the
questions of concurrent threads, ``rag.batcher``).
"""

from __future__ import annotations

import os
import re
import threading
import time
import unicodedata
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .answer import Decision, decide, learned, make_answer
from .encoders import Encoder, create_encoder, encode_query_timed, terms_encoder
from .errors import QuestionError
from .index import (
    Index,
    Progress,
    build_index,
    index_state,
    open_index,
    quick_status,
    record_sources,
)
from .load import LoadProgress, load_documents, load_language_identifier
from .pool import pooled_encoder
from .reader import Reader, load_reader
from .retrieve import LexicalEvidence, Retrieval, lexical_evidence, retrieve
from .settings import Settings
from .types import Answer, BuildReport

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean_question(question: str, settings: Settings) -> str:
    """The question with control characters removed and spaces folded; raises ``QuestionError``."""
    if not isinstance(question, str):
        raise QuestionError("the question must be text")
    if len(question) > settings.max_question_chars:
        raise QuestionError(
            f"the question is {len(question):,} characters long; the limit is "
            f"{settings.max_question_chars:,}: ask a shorter question"
        )
    # lone surrogates come from undecodable bytes on the command line; they cannot be printed
    question = question.encode("utf-8", "replace").decode("utf-8")
    text = _CONTROL.sub(" ", unicodedata.normalize("NFC", question))
    text = " ".join(text.split())
    if not text:
        raise QuestionError("the question is empty: type a question about the documents")
    return text


def encoder_for(settings: Settings) -> Encoder:
    """The encoder ``settings`` ask for: on a Ray cluster with ``ray_address``, else pooled for large
    builds when ``settings.processes`` > 1."""
    if settings.ray_address:
        from .distributed import ray_encoder

        return ray_encoder(settings.model, settings.ray_address, settings.threads, terms_pass=settings.terms_pass)
    return pooled_encoder(settings.model, settings.threads, settings.processes, settings.terms_pass)


def ensure_index(
    documents_dir: str | os.PathLike[str],
    index_dir: str | os.PathLike[str],
    settings: Settings,
    encoder: Encoder | None = None,
    progress: Progress | None = None,
    reading: LoadProgress | None = None,
) -> BuildReport | None:
    """Build or update the index when it is missing or older than the documents; None when up to date.

    When every document has the size and mtime recorded for the index, no document is read
    (``quick_status``); otherwise all are read and hashed, and only changed ones re-embedded.
    An index built with another model is refused (``IndexMismatchError``), never silently replaced.
    """
    if quick_status(index_dir, documents_dir, settings) == "ok":
        return None
    loaded = load_documents(documents_dir, progress=reading)
    state = index_state(index_dir, settings)
    if state.mismatch is not None:
        raise state.mismatch  # refused with the command that fixes it
    if state.holds(loaded):
        record_sources(index_dir, loaded)  # touched but unchanged: stat-only again next time
        return None
    encoder = encoder or encoder_for(settings)
    return build_index(loaded, index_dir, settings, encoder, progress=progress)


@dataclass(frozen=True)
class Traced:
    """An answer with the retrieval it was made from (the full chunk ranking, every sentence score)."""

    answer: Answer
    retrieval: Retrieval
    decision: Decision  # what the answer was made from: the sentences chosen, the abstention score, the readings


class Pipeline:
    """A loaded index and its encoder, answering questions."""

    def __init__(self, index: Index, encoder: Encoder, settings: Settings) -> None:
        self.index = index
        self.encoder = encoder
        self.settings = settings
        # the question's words are looked up (language, BM25) here while the encoders run
        self._lexical = ThreadPoolExecutor(max_workers=2, thread_name_prefix="lexical")
        # the question's latent terms (rag.features) are made there too, when the index has the sentences'
        self._terms = terms_encoder(encoder) if index.sentence_terms is not None and settings.latent_terms else None
        # the reader (rag.reader) loads in the background (PyTorch and the exported e5: a few seconds),
        # where its stage applies: the learned scorer with latent terms (rag.answer.decide)
        reads = settings.reader and learned(settings) and self._terms is not None
        self._reader = self._lexical.submit(load_reader, settings) if reads else None

    @property
    def reader(self) -> Reader | None:
        """The reader, once loaded (waits for it); None when ``settings.reader`` is off or its stage does not
        apply (models the scorer was not trained for, no latent terms). Raises ``ModelError``."""
        return None if self._reader is None else self._reader.result()

    @classmethod
    def open(cls, index_dir: str | os.PathLike[str], settings: Settings | None = None,
             encoder: Encoder | None = None) -> Pipeline:
        settings = settings or Settings()
        # questions only: no pool; loads lazily
        encoder = encoder or create_encoder(settings.model, settings.threads, settings.terms_pass)
        # every question detects its language: the detector's model loads (~0.5 s) while the index opens
        threading.Thread(target=load_language_identifier, name="langid", daemon=True).start()
        return cls(open_index(Path(index_dir), settings, encoder=encoder), encoder, settings)

    def ask(self, question: str, history: Sequence[str] = (), top_k: int | None = None) -> Answer:
        """Answer one question. ``history`` holds the earlier questions of the same conversation."""
        return self.ask_traced(question, history, top_k).answer

    def ask_traced(self, question: str, history: Sequence[str] = (), top_k: int | None = None) -> Traced:
        """``ask``, also returning the retrieval the answer came from (evaluation reads its ranking).

        A question that finds no answer alone is searched again together with the previous
        question ("Et de celle de Prague ?" after "Qu'a dit Aliyev de la rencontre de Genève ?"),
        and that answer is used when it is confident. (Also trying short follow-ups that did
        find an answer, keeping the more confident of the two, answered 3 of the 6 seed
        follow-ups instead of 4: measured, not adopted.)
        """
        settings = self.settings if top_k is None else self.settings.with_(top_k=top_k)
        text = clean_question(question, settings)
        traced = self._ask(text, settings)
        previous = next((h for h in reversed(history) if h and h.strip()), None)
        if not settings.followups or previous is None:
            return traced
        if traced.answer.abstained:
            combined = clean_question(f"{previous} {text}"[: settings.max_question_chars], settings)
            contextual = self._ask(combined, settings)
            if not contextual.answer.abstained:
                rewritten = replace(contextual.answer, question=text, rewritten_question=combined)
                traced = replace(contextual, answer=rewritten)
        return traced

    def _ask(self, text: str, settings: Settings) -> Traced:
        """One question, timed per stage (``Answer.timings_ms``, milliseconds): ``encode`` (the
        question's vector), ``encode.e5``/``encode.use``/... (each model; they run concurrently),
        ``encode.terms`` (its latent terms, concurrently),
        ``lexical`` (language and BM25, concurrently with encoding), ``search`` (nearest
        neighbours and candidates, after encoding), ``fuse`` (the encoders' and BM25's scores of
        the candidate chunks and sentences fused), ``read`` (the reader reading the best
        candidates with the question), ``decide`` (the answer scorer and the reader's stage
        choosing the sentences and deciding abstention, the reading excluded), ``answer`` (the
        cited answer made from that decision) and ``total``."""
        t0 = time.perf_counter()
        lexical = self._lexical.submit(_timed_lexical, self.index, text, settings)
        # terms made in the question's own encoder pass are read after it; others in a pass beside it
        in_pass = getattr(self._terms, "terms_in_pass", False)
        beside = self._terms is not None and not in_pass
        terms = self._lexical.submit(_timed_terms, self._terms, text) if beside else None
        vectors, per_model = encode_query_timed(self.encoder, [text])
        query_terms = None
        if terms is not None:
            query_terms, per_model["terms"] = terms.result()
        elif in_pass:
            query_terms, per_model["terms"] = _timed_terms(self._terms, text, query=True)
        t1 = time.perf_counter()
        evidence, lexical_ms = lexical.result()
        retrieval = retrieve(self.index, vectors[0], text, settings, evidence, query_terms)
        t2 = time.perf_counter()
        reader = self.reader if settings.reader else None  # settings: a per-question copy may turn it off
        decision = decide(self.index, retrieval, settings, reader)
        t3 = time.perf_counter()
        answer = make_answer(self.index, retrieval, settings, text, decision)
        t4 = time.perf_counter()
        fuse_ms, read_ms = retrieval.timings_ms["fuse"], decision.read_ms
        timings = {"encode": (t1 - t0) * 1000, **{f"encode.{k}": ms for k, ms in per_model.items()},
                   "lexical": lexical_ms, "search": (t2 - t1) * 1000 - fuse_ms, "fuse": fuse_ms,
                   "read": read_ms, "decide": (t3 - t2) * 1000 - read_ms, "answer": (t4 - t3) * 1000,
                   "total": (t4 - t0) * 1000}
        return Traced(replace(answer, timings_ms=timings), retrieval, decision)


def _timed_terms(encoder: Any, text: str, query: bool = False) -> tuple[tuple[np.ndarray, np.ndarray], float]:
    started = time.perf_counter()
    ids, weights = encoder.query_terms([text]) if query else encoder.encode_terms([text])
    return (ids[0], weights[0]), (time.perf_counter() - started) * 1000


def _timed_lexical(index: Index, text: str, settings: Settings) -> tuple[LexicalEvidence, float]:
    started = time.perf_counter()
    evidence = lexical_evidence(index, text, settings)
    return evidence, (time.perf_counter() - started) * 1000
