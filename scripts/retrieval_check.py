"""Every part of the passage ranking checked against plain dense retrieval (issue 11, point 6).

For each question set (the four XQuAD development sets, German questions over the Spanish
articles and Spanish over the German, a pair in no development set, and both seed halves), over
the same index, the passage ranked first by:

- **plain e5**: the question's e5 vector against each chunk's e5 vector, nothing else (what a
  plain dense retriever over these chunks does);
- **e5 best sentence**: each chunk scored by its best sentence's e5 cosine alone;
- **e5 chunk + best sentence**: the z-scores of both added (the pairing the product uses);
- **+ USE**: the same for USE, with its weight in the model, added;
- **+ BM25**: BM25 of the chunk's best sentence added when the question's language is the
  document's (the product's formula), which is the whole ranking scored over every chunk;
- **product** (``rag.retrieve``): the same formula over the candidates FAISS and BM25 fetch,
  which is what ``rag eval`` measures.

And the same over **several documents at once in two languages**: the German and the Spanish
articles in one index, English, German and Spanish questions, a hit being the gold passage in
either language.

Printed per set: passage_hit@1, document hit@1 and passage MRR@10 (a passage hit: a chunk of the
gold document overlapping the gold context, as ``rag eval`` counts it). Nothing is fitted here.

    python scripts/retrieval_check.py [--bench ../shared/bench] [--json out.json]

It reuses the indexes and question vectors that ``rag.train.scorer`` caches under
bench/results/ (qidx, scorer-cache); the first run builds them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from rag.evaluate import load_questions  # noqa: E402
from rag.evaluate.metrics import overlaps  # noqa: E402
from rag.evaluate.questions import gold_span  # noqa: E402
from rag.index import Index  # noqa: E402
from rag.pipeline import Pipeline, ensure_index  # noqa: E402
from rag.retrieve import _segment_max, _segments, lexical_evidence, retrieve, zscore  # noqa: E402
from rag.settings import Settings  # noqa: E402
from rag.train import cases as tc  # noqa: E402
from rag.train import scorer as ts  # noqa: E402

VARIANTS = ("plain e5", "e5 best sentence", "e5 chunk + best sentence", "+ USE", "+ BM25", "product")


def _chunk_sentences(index: Index) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every chunk's sentence ids one chunk after the other (``flat``), with each chunk's offset in
    it and whether it has any: the segments the per-chunk maxima run over."""
    first, last = index.chunks.rows[:, 4], index.chunks.rows[:, 5]
    lengths = np.maximum(last - first, 0)
    offsets, filled = _segments(lengths)
    return np.repeat(first - offsets, lengths) + np.arange(int(lengths.sum()), dtype=np.int64), offsets, filled


def _part_cosines(index: Index, q: np.ndarray, part_no: int, chunk_v: np.ndarray, sent_v: np.ndarray,
                  segments: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """One encoder's cosine of the question with every chunk, and with each chunk's best sentence."""
    part = index.parts[part_no]
    qp = q[part.start : part.stop] / part.scale
    chunk_cos = chunk_v[:, part.start : part.stop] @ qp / part.scale
    sent_cos = sent_v[:, part.start : part.stop] @ qp / part.scale
    flat, offsets, filled = segments
    return chunk_cos, _segment_max(sent_cos[flat], offsets, filled, -1.0)


def rankings(index: Index, q: np.ndarray, question: str, settings: Settings, chunk_v: np.ndarray,
             sent_v: np.ndarray, segments: tuple[np.ndarray, np.ndarray, np.ndarray]) -> dict[str, list[int]]:
    """Chunk ids in ranked order (the first ten) under every variant."""
    e5_chunk, e5_best = _part_cosines(index, q, 0, chunk_v, sent_v, segments)
    scores: dict[str, np.ndarray] = {
        "plain e5": e5_chunk,
        "e5 best sentence": e5_best,
        "e5 chunk + best sentence": zscore(e5_chunk) + zscore(e5_best),
    }
    fused = index.parts[0].weight * scores["e5 chunk + best sentence"]
    for part_no in range(1, len(index.parts)):
        chunk_cos, best = _part_cosines(index, q, part_no, chunk_v, sent_v, segments)
        fused = fused + index.parts[part_no].weight * (zscore(chunk_cos) + zscore(best))
    scores["+ USE"] = fused
    evidence = lexical_evidence(index, question, settings)
    lexical = fused.copy()
    if evidence.lexical and evidence.sentence_scores is not None:
        same = np.asarray(index.sentence_lang == evidence.question_lang, dtype=bool)
        flat, offsets, filled = segments
        first = index.chunks.rows[:, 4]
        chunk_same = np.zeros(len(first), dtype=bool)  # a chunk counts when its first sentence is in that language
        chunk_same[filled] = same[first[filled]]
        best_bm25 = _segment_max(evidence.sentence_scores[flat], offsets, filled, 0.0)
        lexical += settings.lexical_weight * zscore(best_bm25) * chunk_same
    scores["+ BM25"] = lexical
    out = {name: np.argsort(-s, kind="stable")[:10].tolist() for name, s in scores.items()}
    out["product"] = [r.chunk for r in retrieve(index, q, question, settings, evidence).ranked[:10]]
    return out


def check(name: str, pipe: Pipeline, settings: Settings, cache: Path,
          asked: list[tuple[str, list[tuple[str, str]]]]) -> dict[str, dict[str, float]]:
    """The figures of every variant for ``asked``: (question, [(gold document, gold context), ...]),
    a hit being a chunk that overlaps any of the gold contexts in its document."""
    index = pipe.index
    vectors = tc._vectors(pipe, [q for q, _ in asked], cache)
    chunk_v = np.asarray(index.chunk_store.vectors(np.arange(len(index.chunks), dtype=np.int64)), dtype=np.float32)
    sent_v = np.asarray(index.sentence_store.vectors(np.arange(len(index.sentences), dtype=np.int64)),
                        dtype=np.float32)
    segments = _chunk_sentences(index)
    sums = {v: np.zeros(3) for v in VARIANTS}
    for (question, golds), q in zip(asked, vectors, strict=True):
        spans = []
        for doc, context in golds:
            span = gold_span(index.documents[doc].text, context)
            if span is None:
                raise ValueError(f"{name}: context of {question!r} not found in {doc}")
            spans.append((doc, span))
        for variant, ranked in rankings(index, q, question, settings, chunk_v, sent_v, segments).items():
            chunks = [index.chunks[c] for c in ranked]
            hits = [any(c.doc == doc and overlaps((c.start, c.end), span) for doc, span in spans) for c in chunks]
            first_hit = next((i for i, h in enumerate(hits) if h), None)
            sums[variant] += (float(hits[0]), float(any(chunks[0].doc == doc for doc, _ in spans)),
                              0.0 if first_hit is None else 1.0 / (first_hit + 1))
    n = len(asked)
    print(f"\n{name} ({n} questions, {len(index.chunks)} chunks in {len(index.documents)} documents)")
    print(f"  {'ranking':26} passage_hit@1  doc_hit@1  MRR@10")
    out = {}
    for variant in VARIANTS:
        p, d, m = (sums[variant] / n).round(3).tolist()
        out[variant] = {"passage_hit@1": p, "doc_hit@1": d, "mrr@10": m}
        print(f"  {variant:26} {p:13.3f} {d:10.3f} {m:7.3f}", flush=True)
    return out


def one_set(name: str, docs: Path, questions_path: Path, index_dir: Path, settings: Settings, cache: Path
            ) -> dict[str, dict[str, float]]:
    """A question set over its own documents."""
    ensure_index(docs, index_dir, settings)
    pipe = Pipeline.open(index_dir, settings)
    cases = [c for c in load_questions(questions_path).cases if c.answerable and c.doc and c.context]
    return check(name, pipe, settings, cache, [(c.question, [(c.doc, c.context)]) for c in cases])  # type: ignore[list-item]


Figures = dict[str, dict[str, float]]  # variant -> metric -> value


def mixed(bench: Path, work: Path, settings: Settings, cache: Path) -> dict[str, Figures]:
    """Several documents at once in two languages: the German and the Spanish articles in one index
    (``de/...``, ``es/...``); English, German and Spanish questions, each answered by the passage in
    either language."""
    docs = work / "mixed-docs"
    for lang in ("de", "es"):
        (docs / lang).mkdir(parents=True, exist_ok=True)
        for src in sorted((bench / f"xquad-{lang}-{lang}" / "docs").glob("*.txt")):
            if not (docs / lang / src.name).exists():
                (docs / lang / src.name).write_bytes(src.read_bytes())
    gold: dict[str, list[tuple[str, str]]] = {}
    for lang in ("de", "es"):
        for c in load_questions(bench / f"xquad-{lang}-{lang}" / "questions.jsonl").cases:
            gold.setdefault(c.id, []).append((f"{lang}/{c.doc}", c.context))  # type: ignore[arg-type]
    ensure_index(docs, work / "qidx" / "mixed", settings)
    pipe = Pipeline.open(work / "qidx" / "mixed", settings)
    out = {}
    for set_name in ("xquad-en-de", "xquad-de-de", "xquad-es-es"):
        cases = load_questions(bench / set_name / "questions.jsonl").cases
        lang = set_name.split("-")[1]
        out[f"mixed de+es, {lang} questions"] = check(f"de+es articles in one index, {lang} questions", pipe,
                                                      settings, cache, [(c.question, gold[c.id]) for c in cases])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench", type=Path, default=REPO.parent / "shared" / "bench")
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--skip-mixed", action="store_true",
                        help="leave out the German and Spanish articles in one index (its first build takes minutes)")
    args = parser.parse_args()
    settings, cache = Settings(), args.work / "scorer-cache"
    sets = [(name, args.bench / name / "docs", args.bench / name / "questions.jsonl",
             args.work / "qidx" / name.rsplit("-", 1)[1]) for name in ts.SETS]
    sets += [
        (f"xquad-{asked}-{over}", args.bench / f"xquad-{over}-{over}" / "docs",
         ts.pair_questions(args.bench, asked, over, args.work / "pairs"), args.work / "qidx" / over)
        for asked, over in ts.PAIRS
    ]
    sets += [
        (f"seed-{half}", REPO / "seeds", REPO / "evals" / f"seed_{half}.jsonl", args.work / "qidx" / "seeds")
             for half in ("tune", "test")]
    figures = {name: one_set(name, docs, questions, index_dir, settings, cache)
               for name, docs, questions, index_dir in sets}
    if not args.skip_mixed:
        figures |= mixed(args.bench, args.work, settings, cache)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
