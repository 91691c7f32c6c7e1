"""Fit the reader stage (rag/data/reader/stage.json) and print its out-of-fold figures.

    python -m rag.train.stage [--reader rag/data/reader] [--sentences 8] [--sweep 4,8,12] [--ablation] [--write]

The cases are the scorer's (``rag.train.cases``: the four XQuAD development sets, each question
also asked as a near miss and off topic, and the seed tuning questions), in the scorer's folds
(``rag.train.scorer.folds``: articles grouped across languages). For each case the reader reads
the best ``--sentences`` candidates of the out-of-fold scorer; its logits are cached under
``bench/results/reader-cache``. Per fold, on the other folds:

- the rerank model: a conditional logit over (scorer logit, reader logit) of the read candidates;
- the answer model: P(the answer shown holds a gold answer), from the questions as asked;
- the abstention model: P(the question is answerable), also from the near misses and off-topic ones;

both over the scorer's answer features and the reader's (``rag.scorer.STAGE_FEATURES``). The
threshold is the largest that keeps false abstention at or under ``--target`` on every tuning
set; supports follow the scorer's rule. The reader never trained on any of these questions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..answer import context_of
from ..features import SENTENCE_FEATURES, SENTENCE_GROUPS
from ..index import Index, open_index
from ..reader import Reader, Reading, shipped_dir
from ..scorer import (
    ANSWER_FEATURES,
    RERANK_FEATURES,
    STAGE,
    STAGE_FEATURES,
    Logistic,
    ReaderStage,
    ReadOut,
    ScorerModel,
    answer_features,
    choose,
    stage_row,
)
from ..settings import Settings
from .cases import PACKAGE, Case, collect
from .scorer import SETS, cross_validate, fit_listwise, fit_logistic, folds, pick_threshold, summary

# The stage's evidence by group, for the ablation: each is removed in turn from the rerank and the
# answer and abstention models (the scorer's sentence model, which picks the candidates read, is
# ablated by its SENTENCE_GROUPS with ``--ablation`` too). The group the ablation found no longer
# earning its place, the latent terms' answer features, left the stage (``rag.scorer.NOT_BESIDE_READER``).
STAGE_GROUPS: dict[str, tuple[str, ...]] = {
    "scorer logit in the order": ("scorer_logit",),
    "reader logit in the order": ("reader_logit",),
    "span score in the order": ("span_score",),
    "scorer's logits": ("best_logit", "best_share", "margin"),
    "specificity": ("specificity", "best_e5_spec"),
    "lexical coverage": ("coverage", "ngram_coverage", "names_found"),
    "question type": ("type_match", "type_found"),
    "retrieval": ("top_chunk_fused",),
    "reader's logits": ("reader_best", "reader_margin", "reader_first"),
    "reader's span": ("reader_span", "span_best", "span_first"),
}


@dataclass(frozen=True)
class Read:
    """One case's read candidates (positions in the case) and what the reader said of them."""

    top: list[int]
    out: ReadOut


def read_cases(cases: Sequence[Case], logits: dict[int, np.ndarray], reader: Reader, most: int,
               index_dirs: dict[str, Path], cache: Path,
               seen: dict[tuple[str, str, int], Reading] | None = None) -> list[Read]:
    """The reader's logits for each case's best ``most`` candidates by its out-of-fold scorer logits,
    cached per set, keyed by the reader, its precision and the set's logits (a set joining the fit
    changes the folds, and so the others' logits: they are read again). ``seen`` keeps what was read
    across calls (an ablation's scorer picks mostly the same candidates): only new ones are read."""
    seen = {} if seen is None else seen
    precision = "" if reader.precision == reader.auto_precision else reader.precision
    out: list[Read | None] = [None] * len(cases)
    for name in dict.fromkeys(c.set for c in cases):
        members = [i for i, c in enumerate(cases) if c.set == name]
        digest = hashlib.sha1((reader.record["sha256"] + str(most) + name + str(len(members)) + "v3"
                               + precision).encode())
        for i in members:
            digest.update(np.asarray(logits[i], np.float64).tobytes())
        path = cache / f"read-{digest.hexdigest()[:12]}.json"
        if path.exists():
            rows = json.loads(path.read_text(encoding="utf-8"))
            for i, r in zip(members, rows, strict=True):  # read before: only the figures the rows keep
                c = cases[i]
                seen.update(((c.set, c.question, c.sf.sentences[j]), Reading(0.0, logit, None, span, score))
                            for j, logit, span, score in zip(r["top"], r["logits"], r["spans"], r["scores"],
                                                             strict=True))
        else:
            rows = _read_set([cases[i] for i in members], [logits[i] for i in members], reader, most,
                             open_index(index_dirs[name]), seen)
            cache.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(rows), encoding="utf-8")
        for i, r in zip(members, rows, strict=True):
            out[i] = Read(r["top"], ReadOut(np.array(r["logits"]), np.array(r["spans"]), np.array(r["scores"])))
    return [r for r in out if r is not None]


def _read_set(cases: Sequence[Case], logits: Sequence[np.ndarray], reader: Reader, most: int,
              index: Index, seen: dict[tuple[str, str, int], Reading]) -> list[dict]:
    """Read each case's best ``most`` candidates; ``seen`` (set, question, sentence) -> what the reader
    said: a question's near-miss and off-topic cases share sentences, and so do an ablation's."""
    rows = []
    for i, c in enumerate(cases):
        top = [int(j) for j in np.argsort(-logits[i], kind="stable")[:most]]
        keys = [(c.set, c.question, c.sf.sentences[j]) for j in top]
        new = [j for j, k in zip(top, keys, strict=True) if k not in seen]
        if new:
            said = reader.read(c.question, [c.texts[j] for j in new],
                               [context_of(index, c.sf.sentences[j]) for j in new])
            seen.update(((c.set, c.question, c.sf.sentences[j]), r) for j, r in zip(new, said, strict=True))
        got = [seen[k] for k in keys]
        rows.append({"top": top, "logits": [r.logit for r in got], "spans": [r.span_prob for r in got],
                     "scores": [r.span_score for r in got]})
        if (i + 1) % 1000 == 0:
            print(f"{c.set}: read {i + 1:,}/{len(cases):,} cases ({len(seen):,} sentences)", file=sys.stderr,
                  flush=True)
    return rows


def _cut(read: Read, n: int) -> Read:
    return Read(read.top[:n], read.out.head(n))


def _masked(x: np.ndarray, names: tuple[str, ...], drop: tuple[str, ...]) -> np.ndarray:
    """``x`` with the columns named in ``drop`` zeroed: a constant column gets weight 0 in the fit, so the
    fitted model ignores that evidence at run time too (the ablation's way of removing it)."""
    out = np.array(x, dtype=np.float64, copy=True)
    for name in drop:
        if name in names:
            out[..., names.index(name)] = 0.0
    return out


def rerank_rows(cases: Sequence[Case], logits: dict[int, np.ndarray], reads: Sequence[Read], idx: np.ndarray,
                drop: tuple[str, ...] = ()) -> tuple[list[np.ndarray], list[np.ndarray]]:
    xs, ys = [], []
    for i in idx:
        c, r = cases[i], reads[i]
        if c.answerable and c.variant in ("answerable", "seed") and r.top:
            xs.append(_masked(r.out.rerank_rows(logits[i][r.top]), RERANK_FEATURES, drop))
            ys.append(c.strict[r.top])
    return xs, ys


def _zero(names: tuple[str, ...]) -> Logistic:
    n = len(names)
    return Logistic(names, np.zeros(n), np.ones(n), np.zeros(n), 0.0)


# The scorer ``choose`` is given beside a stage and a case's out-of-fold logits: it reads neither
# its sentence model (the logits are given) nor its answer models (the stage's decide).
_STAGE_ONLY = ScorerModel(_zero(SENTENCE_FEATURES), _zero(ANSWER_FEATURES), _zero(ANSWER_FEATURES), 0.0, 0.15, {})


def fit_stage(cases: Sequence[Case], logits: dict[int, np.ndarray], reads: Sequence[Read], idx: np.ndarray,
              sentences: int, support_min: float, seed_weight: float, drop: tuple[str, ...] = ()) -> ReaderStage:
    """The stage fit on the cases ``idx``; ``drop`` names evidence it must not use (the ablation)."""
    xs, ys = rerank_rows(cases, logits, reads, idx, drop)
    rerank = fit_listwise(xs, ys, RERANK_FEATURES)
    names = STAGE_FEATURES
    shape = ReaderStage(sentences, rerank, _zero(names), _zero(names), 0.0, support_min, {})
    rows, right, able, weight, real = [], [], [], [], []
    for i in idx:
        c, r = cases[i], reads[i]
        rows.append(_row(c, logits[i], r, rerank))
        # the answer model's label: the answer shown (first sentence and supports) holds a gold answer
        choice = choose(c.sf, c.texts, _STAGE_ONLY, 3, shape, r.out, logits[i]) \
            if len(c.sf.sentences) else None
        shown = [] if choice is None else [list(c.sf.sentences).index(s) for s in choice.sentences]
        right.append(any(bool(c.loose[j]) for j in shown))
        able.append(c.answerable)
        weight.append(seed_weight if c.set == "seed-tune" else 1.0)
        real.append(c.variant in ("answerable", "seed"))
    x, w, keep = _masked(np.array(rows), names, drop), np.array(weight), np.array(real)
    answer = fit_logistic(x[keep], np.array(right)[keep], names, w[keep])
    abstain = fit_logistic(x, np.array(able), names, w)
    return ReaderStage(sentences, rerank, answer, abstain, 0.5, support_min, {})


def _row(case: Case, logits: np.ndarray, read: Read, rerank: Logistic) -> np.ndarray:
    """The answer/abstention row of a case, as ``choose`` makes it."""
    base = answer_features(case.sf, logits)
    if not read.top:
        return stage_row(base, None, np.zeros(0))
    final = rerank.logit(read.out.rerank_rows(logits[read.top]))
    return stage_row(base, read.out, final)


def outcomes(cases: Sequence[Case], logits: dict[int, np.ndarray], reads: Sequence[Read], fold: np.ndarray,
             stages: list[ReaderStage], threshold: float) -> list[dict]:
    out = []
    for i, c in enumerate(cases):
        stage = stages[int(fold[i])]
        stage = ReaderStage(stage.sentences, stage.rerank, stage.answer, stage.abstain, threshold,
                            stage.support_min, {})
        choice = choose(c.sf, c.texts, _STAGE_ONLY, 3, stage, reads[i].out,
                        logits[i]) if len(c.sf.sentences) else None
        shown = [] if choice is None else [list(c.sf.sentences).index(s) for s in choice.sentences]
        abstained = choice is None or choice.abstain
        out.append({"set": c.set, "lang": c.lang, "variant": c.variant, "answerable": c.answerable,
                    "abstained": abstained, "confidence": 0.0 if choice is None else choice.confidence,
                    "answerable_p": 0.0 if choice is None else choice.answerable,
                    "first_right": bool(shown) and bool(c.loose[shown[0]]),
                    "any_right": any(bool(c.loose[j]) for j in shown), "n_shown": len(shown)})
    return out


def out_of_fold(cases: Sequence[Case], logits: dict[int, np.ndarray], reads: Sequence[Read], fold: np.ndarray,
                stages: list[ReaderStage], target: float) -> tuple[float, dict]:
    """The threshold the rule picks and each set's out-of-fold figures (as asked, near miss, off topic)."""
    rows = outcomes(cases, logits, reads, fold, stages, 0.0)
    threshold = pick_threshold([r for r in rows if r["variant"] in ("answerable", "seed")], target)
    rows = outcomes(cases, logits, reads, fold, stages, threshold)
    figures = {}
    for name in sorted({r["set"] for r in rows}):
        sel = [r for r in rows if r["set"] == name]
        asked = [r for r in sel if r["variant"] in ("answerable", "seed")]
        able = [r["answerable_p"] for r in asked if r["answerable"]]
        # how well P(answerable) tells the questions as asked from the unanswerable ones, whatever the
        # threshold (the seed questions' own unanswerable ones count with the near misses)
        near = [r["answerable_p"] for r in sel if r["variant"] == "masked" or (r["variant"] == "seed"
                                                                                and not r["answerable"])]
        figures[name] = {
            "answerable": summary(asked),
            "masked": summary([r for r in sel if r["variant"] == "masked"]),
            "offdoc": summary([r for r in sel if r["variant"] == "offdoc"]),
            "auc": {"near_miss": auc(able, near),
                    "off_topic": auc(able, [r["answerable_p"] for r in sel if r["variant"] == "offdoc"])},
        }
    return threshold, figures


def auc(positive: Sequence[float], negative: Sequence[float]) -> float | None:
    """The chance that a random ``positive`` scores above a random ``negative`` (ties count half)."""
    from sklearn.metrics import roc_auc_score

    if not positive or not negative:
        return None
    return round(float(roc_auc_score([1] * len(positive) + [0] * len(negative), [*positive, *negative])), 3)


def real_halves(questions: Path) -> tuple[Path, Path]:
    """A question set split in two by article (``doc``, or ``topic_doc`` for an unanswerable question):
    the articles ordered by a stable hash, every other one to each half. Written beside the set as
    ``questions-tune.jsonl`` and ``questions-test.jsonl``; in the tuning half every question's
    ``group`` is its article, so the stage's folds keep an article's questions together."""
    rows = [json.loads(line) for line in questions.read_text(encoding="utf-8").splitlines() if line.strip()]
    for q in rows:
        if not (q.get("doc") or q.get("topic_doc")):
            raise ValueError(f"{questions}: question {q.get('id')} names no article (doc or topic_doc)")
    articles = sorted({q.get("doc") or q.get("topic_doc") for q in rows},
                      key=lambda a: hashlib.sha256(f"{questions.parent.name}\x00{a}".encode()).hexdigest())
    testing = set(articles[1::2])
    tune, test = [], []
    for q in rows:
        article = q.get("doc") or q.get("topic_doc")
        if article in testing:
            test.append(json.dumps(q, ensure_ascii=False))
        else:
            tune.append(json.dumps({**q, "group": f"{questions.parent.name}/{article}"}, ensure_ascii=False))
    out = questions.with_name("questions-tune.jsonl"), questions.with_name("questions-test.jsonl")
    for path, lines in zip(out, (tune, test), strict=True):
        path.write_text("".join(f"{x}\n" for x in lines), encoding="utf-8")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rag.train.stage", description=__doc__.split("\n")[0])
    parser.add_argument("--bench", type=Path, default=Path("../shared/bench"))
    parser.add_argument("--seed-tune", type=Path, default=Path("evals/seed_tune.jsonl"))
    parser.add_argument("--work", type=Path, default=Path("bench/results"))
    parser.add_argument("--sets", default=",".join(SETS), help="the XQuAD sets to use [all four]")
    parser.add_argument("--reader", type=Path, default=None, help="a reader folder (default: the shipped one)")
    parser.add_argument("--sentences", type=int, default=8, help="candidates the reader reads [8]")
    parser.add_argument("--sweep", default="", help="also report these numbers of sentences, e.g. 4,8,12")
    parser.add_argument("--target", type=float, default=0.05)
    parser.add_argument("--seed-weight", type=float, default=20.0)
    parser.add_argument("--support-min", type=float, default=0.15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="auto", help="the reader's: auto, fp32, bf16 or int8 [auto]")
    parser.add_argument("--real", action="append", type=Path, default=[], metavar="DIR",
                        help="a question-set folder (docs/, questions.jsonl) with unanswerable questions written "
                             "by people (e.g. bench/results/long-docs/long-es): the half of its articles "
                             "real_halves() names for tuning joins the fit; the other half is left for rag eval")
    parser.add_argument("--ablation", action="store_true",
                        help="also each group of the stage's and the scorer's evidence removed in turn, and the "
                             "reader without the scorer's evidence (docs/reader.md, \"Ablation with the reader\")")
    parser.add_argument("--write", action="store_true", help="fit on everything and write stage.json to the reader")
    args = parser.parse_args(argv)
    from ..model.export import ensure_model
    from ..settings import Paths

    settings = Settings()
    qidx, cache = args.work / "qidx", args.work / "scorer-cache"
    cases: list[Case] = []
    dirs: dict[str, Path] = {}
    for name in args.sets.split(","):
        lang = name.rsplit("-", 1)[1]
        d = args.bench / name
        cases += collect(name, d / "docs", d / "questions.jsonl", qidx / lang, settings, cache,
                         {p.name: p.stem for p in (d / "docs").glob("*.txt")}, simulate=True)
        dirs[name] = qidx / lang
    cases += collect("seed-tune", Path("seeds"), args.seed_tune, qidx / "seeds", settings, cache, {}, simulate=False)
    dirs["seed-tune"] = qidx / "seeds"
    for d in args.real:
        tune, test = real_halves(d / "questions.jsonl")
        print(f"{d.name}: tuning on {tune} (its test half, for rag eval: {test})", file=sys.stderr)
        cases += collect(f"{d.name}-tune", d / "docs", tune, qidx / d.name, settings, cache, {}, simulate=False)
        dirs[f"{d.name}-tune"] = qidx / d.name
    fold = folds(cases)
    _, logits = cross_validate(cases, fold, with_answer=False)
    folder = args.reader or shipped_dir()
    reader = Reader(ensure_model(Paths.from_env().cache).path, folder, threads=args.threads, precision=args.precision)
    sweep = sorted({args.sentences, *(int(n) for n in args.sweep.split(",") if n)})
    seen: dict[tuple[str, str, int], Reading] = {}
    reads_all = read_cases(cases, logits, reader, max(sweep), dirs, args.work / "reader-cache", seen)
    report: dict = {}
    variants: dict[str, tuple[str, ...]] = {"scorer and reader": ()}
    if args.ablation:  # the reader without the scorer's evidence, and each group of the stage's evidence removed
        variants["reader alone"] = (*ANSWER_FEATURES, "scorer_logit")
        variants |= {f"without {group}": names for group, names in STAGE_GROUPS.items()}
    for n in sweep:
        reads = [_cut(r, n) for r in reads_all]
        for variant, drop in variants.items():
            if variant != "scorer and reader" and n != args.sentences:
                continue
            report[f"{n} sentences, {variant}"] = variant_figures(cases, logits, reads, fold, n, args, drop)
        if args.write and n == args.sentences:
            stage = fit_stage(cases, logits, reads, np.arange(len(cases)), n, args.support_min, args.seed_weight)
            threshold = report[f"{n} sentences, scorer and reader"]["threshold"]
            stage = ReaderStage(n, stage.rerank, stage.answer, stage.abstain, threshold, args.support_min,
                                {"reader_sha256": reader.record["sha256"], "cases": len(cases),
                                 "trained_on": sorted({c.set for c in cases}), "target_false_abstention": args.target,
                                 "command": "python -m rag.train.stage " + " ".join(sys.argv[1:])})
            out = (args.reader or PACKAGE / "data" / "reader") / STAGE
            out.write_text(json.dumps(stage.to_dict(), indent=1) + "\n", encoding="utf-8")
            print(f"wrote {out}", file=sys.stderr)
    if args.ablation:  # the scorer's sentence model without each group: it picks the candidates read
        for group, names in SENTENCE_GROUPS.items():
            _, dropped = cross_validate(cases, fold, drop=names, with_answer=False)
            reads = read_cases(cases, dropped, reader, args.sentences, dirs, args.work / "reader-cache", seen)
            report[f"{args.sentences} sentences, without the scorer's {group}"] = variant_figures(
                cases, dropped, reads, fold, args.sentences, args)
            print(f"ablation: without the scorer's {group} done ({len(seen):,} sentences read in all)",
                  file=sys.stderr, flush=True)
    print(json.dumps(report, indent=1))
    print(table(report), file=sys.stderr)
    if args.ablation:
        print(ablation_table(report, f"{args.sentences} sentences, scorer and reader"), file=sys.stderr)
    return 0


def variant_figures(cases: Sequence[Case], logits: dict[int, np.ndarray], reads: Sequence[Read], fold: np.ndarray,
                    sentences: int, args: argparse.Namespace, drop: tuple[str, ...] = ()) -> dict:
    """A stage fit per fold without ``drop``: the threshold the rule picks and the out-of-fold figures."""
    stages = [fit_stage(cases, logits, reads, np.flatnonzero(fold != f), sentences, args.support_min,
                        args.seed_weight, drop) for f in range(int(fold.max()) + 1)]
    threshold, figures = out_of_fold(cases, logits, reads, fold, stages, args.target)
    return {"threshold": threshold, "out_of_fold": figures}


def ablation_table(report: dict, base: str) -> str:
    """Each variant against ``base``: the mean over the sets of each figure, and its largest fall on any
    one set. First the figures no threshold moves: the answering sentence first (abstention aside), and
    how well P(answerable) tells answerable questions from near misses and off-topic ones (AUC); then
    answers, near-miss and off-topic recall at the threshold the rule picks on a 0.01 grid (a step of it
    moves recall by points), and the worst set's ECE."""
    figures = (("answerable", "candidate_first_accuracy"), ("auc", "near_miss"), ("auc", "off_topic"),
               ("answerable", "answer_accuracy"), ("masked", "abstain_recall"), ("offdoc", "abstain_recall"))

    def values(entry: dict, part: str, key: str) -> dict[str, float]:
        out = {}
        for name, f in entry["out_of_fold"].items():
            # the seed questions' own unanswerable ones count with the near misses
            got = f["answerable"] if part == "masked" and not f["masked"]["n"] else f[part]
            if got.get(key) is not None and (part != "offdoc" or got["n"]):
                out[name] = float(got[key])
        return out

    lines = ["| variant | first sentence, abstention aside | near-miss AUC | off-topic AUC | threshold | "
             "answers | near-miss recall | off-topic recall | ECE, worst set |", "|---" * 9 + "|"]
    for variant, entry in report.items():
        cells = []
        for part, key in figures:
            now, before = values(entry, part, key), values(report[base], part, key)
            fall = max(before[k] - now[k] for k in now)
            cells.append(f"{np.mean(list(now.values())):.3f} ({fall:+.3f})")
        worst = max(float(f["answerable"]["ece"]) for f in entry["out_of_fold"].values())
        lines.append(f"| {variant} | {' | '.join(cells[:3])} | {entry['threshold']} | {' | '.join(cells[3:])} | "
                     f"{worst:.3f} |")
    return "\n".join(lines)


def table(report: dict) -> str:
    """The report as a Markdown table (answer accuracy, first sentence, false abstention, near-miss and
    off-topic recall, ECE of the questions as asked)."""
    lines = ["| variant | set | threshold | answer_accuracy | first_sentence_accuracy | false abstention | "
             "near-miss recall | off-topic recall | ECE, as asked |", "|---|---|---|---|---|---|---|---|---|"]
    for variant, entry in report.items():
        for name, f in entry["out_of_fold"].items():
            a, m, o = f["answerable"], f["masked"], f["offdoc"]
            if not m["n"]:  # the seed questions: their own unanswerable ones, near misses and off topic together
                m = {"abstain_recall": f"{a['abstain_recall']} (all unanswerable)"}
            lines.append(f"| {variant} | {name} | {entry['threshold']} | {a['answer_accuracy']} | "
                         f"{a['first_sentence_accuracy']} | {a['false_abstention_rate']} | {m['abstain_recall']} | "
                         f"{o['abstain_recall']} | {a['ece']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
