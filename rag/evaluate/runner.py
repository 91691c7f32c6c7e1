"""The runner: every question of a set asked once through ``Pipeline.ask_traced``, timed, and scored.

``ask_traced`` returns the answer with the retrieval it came from (for a follow-up that the
pipeline rewrote, the retrieval of the rewritten question), so the ranks are those of the
ranking the user's answer was made from, with one model call per question.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..answer import Decision, abstain_threshold, answer_sentences
from ..errors import QuestionError, QuestionSetError
from ..index.loaded import Index
from ..pipeline import Pipeline
from ..types import Answer
from .metrics import (
    CaseResult,
    Metrics,
    citation_correct,
    contains_answer,
    doc_ranking,
    gold_rank,
    overlaps,
    summarise,
)
from .questions import EvalCase, QuestionSet, locate_passages
from .reading import exact, span_f1


@dataclass(frozen=True)
class EvalReport:
    source: str
    model: str
    abstain_threshold: float
    results: tuple[CaseResult, ...]
    build_s: float | None = None  # None: the index was not built by this run
    index: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.results)

    @property
    def metrics(self) -> Metrics:
        return {**summarise(self.results), "build_s": self.build_s}

    @property
    def by_lang(self) -> dict[str, Metrics]:
        """Metrics per question language, the most frequent first."""
        groups: dict[str, list[CaseResult]] = {}
        for r in self.results:
            groups.setdefault(r.question_lang, []).append(r)
        ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        return {lang: summarise(rows) for lang, rows in ordered}


def _run_case(pipeline: Pipeline, case: EvalCase, passage: tuple[int, int] | None,
              documents: Mapping[str, str], source: str) -> tuple[CaseResult, float]:
    """The case's result, and the threshold its abstention was decided with (the reader's stage has its own)."""
    try:
        started = time.perf_counter()
        traced = pipeline.ask_traced(case.question, history=case.history)
        latency_ms = (time.perf_counter() - started) * 1000
    except QuestionError as exc:
        raise QuestionSetError(f"{source} line {case.line}: {exc}") from exc
    answer, retrieval = traced.answer, traced.retrieval
    index = pipeline.index
    chunks = [(index.chunks[r.chunk], r.score) for r in retrieval.ranked]
    scores = [s for _, s in chunks]
    docs = doc_ranking([(c.doc, s) for c, s in chunks])
    doc_rank = gold_rank([d == case.doc for d, _ in docs], [s for _, s in docs]) if case.doc else None
    passage_rank = None
    if passage is not None:
        hits = [c.doc == case.doc and overlaps((c.start, c.end), passage) for c, _ in chunks]
        passage_rank = gold_rank(hits, scores)
    # the sentences make_answer shows unless it abstains; the best is the one of highest score
    picked = answer_sentences(traced.decision)
    candidate = " ".join(index.sentences[s].text for s, _ in picked) or None
    best = retrieval.sentence_cosine.get(max(picked, key=lambda p: p[1])[0]) if picked else None
    shown = answer.text
    # on the order of Answer.sentences: the sentence shown first, whatever order the pipeline chose
    first = answer.sentences[0].text if answer.sentences and not answer.abstained else None
    first_right = contains_answer(first, case.answers)
    span = _first_span(traced.decision, answer, index, case) if case.answerable else {}
    return CaseResult(
        id=case.id, question_lang=case.question_lang, answerable=case.answerable, abstained=answer.abstained,
        question=case.question, line=case.line, gold_doc=case.doc, has_context=passage is not None,
        near_miss=case.near_miss, group=case.group,
        doc_rank=doc_rank, passage_rank=passage_rank, answer=shown,
        answer_correct=contains_answer(shown, case.answers) if case.answerable else None,
        citation_correct=(citation_correct(answer.sentences, case.answers, case.doc, documents)
                          if case.answerable else None),
        first_sentence_correct=first_right if case.answerable else None,
        confidence=answer.confidence,
        abstain_score=round(traced.decision.score, 6),
        best_sentence_score=None if best is None else round(best, 6),
        candidate_answer=candidate,
        candidate_correct=contains_answer(candidate, case.answers) if case.answerable else None,
        rewritten_question=answer.rewritten_question,
        citations=tuple((c.doc, c.start, c.end) for c in answer.sentences),
        top_docs=tuple(d for d, _ in docs[:5]),
        latency_ms=round(latency_ms, 3),
        timings_ms={stage: round(ms, 3) for stage, ms in answer.timings_ms.items()},
        **span,
    ), traced.decision.threshold


def _first_span(decision: Decision, answer: Answer, index: Index, case: EvalCase) -> dict[str, Any]:
    """The reader's best span in the answer's first sentence, scored against the case's gold answers
    (SQuAD's exact match and F1, 0 when the answer abstained); nothing when the reader did not read."""
    if not decision.readings:
        return {}
    if answer.abstained or not answer.sentences:
        return {"span": None, "span_f1": 0.0, "span_exact": 0.0, "span_shown": False}
    sid = decision.choice.sentences[0]
    reading = decision.readings.get(sid)
    text = index.sentences[sid].text
    said = "" if reading is None or reading.span is None else text[reading.span[0] : reading.span[1]]
    return {"span": said or None, "span_f1": max(span_f1(said, a) for a in case.answers),
            "span_exact": max(exact(said, a) for a in case.answers),
            "span_shown": answer.sentences[0].span is not None}


def evaluate(
    pipeline: Pipeline,
    questions: QuestionSet,
    *,
    build_s: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> EvalReport:
    """Ask every question of ``questions`` and measure retrieval, answers, citations, abstention and latency.

    The question set is checked against the index first (gold documents, passages and answers
    must be in it). One untimed warm-up question comes before the timed ones, so latencies
    are those of a loaded model. ``progress(done, total)`` is called after each question.
    """
    documents = {doc_id: doc.text for doc_id, doc in pipeline.index.documents.items()}
    passages = locate_passages(questions, documents)
    total = len(questions.cases)
    if progress:
        progress(0, total)
    _run_case(pipeline, questions.cases[0], None, documents, questions.source)  # warm-up, not kept
    results = []
    threshold = abstain_threshold(pipeline.settings)
    for done, case in enumerate(questions.cases, start=1):
        result, threshold = _run_case(pipeline, case, passages.get(case.id), documents, questions.source)
        results.append(result)
        if progress:
            progress(done, total)
    return EvalReport(
        source=questions.source,
        model=pipeline.settings.model,
        abstain_threshold=threshold,
        results=tuple(results),
        build_s=None if build_s is None else round(build_s, 3),
        index=str(pipeline.index.path),
        settings=pipeline.settings.to_dict(),
    )
