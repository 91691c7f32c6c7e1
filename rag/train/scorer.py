"""Train the answer scorer (rag/data/scorer.json) from scratch and print cross-validated figures.

``--without-terms`` trains the one for answers without latent terms (rag/data/scorer-no-terms.json).

    pip install -e '.[train]'    # scikit-learn, for fitting only; the package runs the weights in NumPy
    python -m rag.train.scorer [--bench ../shared/bench] [--seed-tune evals/seed_tune.jsonl]
                               [--ablation] [--held-out-pairs] [--write]

(``python scripts/train_scorer.py`` calls the same.) Run from the repository root.

Data: the four XQuAD development sets (an index per document language, built once under
bench/results/qidx/, question vectors cached in bench/results/scorer-cache/), and the seed
tuning questions, collected by ``rag.train.cases``: for every question the product's own
retrieval runs once; candidates are the sentences of its top chunks (``rag.features``). A
candidate is positive when it holds a gold answer and lies in the gold passage. Each XQuAD
question is also asked twice more as an unanswerable one: with the sentences of its document
that hold the answer masked out (an on-topic near miss), and with its whole document masked out
(off topic).

Cross-validation: GroupKFold over articles (5 folds); de-de and en-de, es-es and en-es, and
the German and Spanish versions of one article share a group; the seed article is one group.
Every figure printed is out of fold. ``--write`` then fits on everything and writes the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..evaluate.metrics import expected_calibration_error, largest_threshold, reliability_table
from ..features import COLUMN, SENTENCE_FEATURES, SENTENCE_GROUPS, SentenceFeatures
from ..scorer import ANSWER_FEATURES, SCORER, SCORER_NO_TERMS, Logistic, ScorerModel, answer_features, choose
from ..settings import CHUNK_VECTORS, Settings
from .cases import PACKAGE, Case, collect

SETS = ("xquad-en-de", "xquad-en-es", "xquad-de-de", "xquad-es-es")
# the columns a model without terms sees as 0
WITHOUT_TERMS = SENTENCE_GROUPS["latent terms"] + SENTENCE_GROUPS["term focus"]


def standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, scale = x.mean(axis=0), x.std(axis=0)
    return mean, np.where(scale > 1e-9, scale, 1.0)


def fit_logistic(x: np.ndarray, y: np.ndarray, names: tuple[str, ...], weight: np.ndarray | None = None,
                 c: float = 1.0) -> Logistic:
    from sklearn.linear_model import LogisticRegression

    mean, scale = standardise(x)
    model = LogisticRegression(C=c, max_iter=2000)
    model.fit((x - mean) / scale, y, sample_weight=weight)
    return Logistic(names, mean, scale, model.coef_[0].astype(np.float64), float(model.intercept_[0]))


def fit_listwise(xs: list[np.ndarray], ys: list[np.ndarray], names: tuple[str, ...], l2: float = 1.0) -> Logistic:
    """A linear score trained so that, per question, the softmax over its candidates puts its
    mass on the answering sentences (a conditional logit): what the choice needs is the order
    within a question, not a probability comparable across questions."""
    from scipy.optimize import minimize

    keep = [i for i, y in enumerate(ys) if y.any() and len(y) > 1]
    x = np.concatenate([xs[i] for i in keep])
    y = np.concatenate([ys[i] for i in keep]).astype(bool)
    mean, scale = standardise(x)
    z = (x - mean) / scale
    starts = np.cumsum([0] + [len(ys[i]) for i in keep])[:-1]
    owner = np.repeat(np.arange(len(keep)), [len(ys[i]) for i in keep])

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        s = z @ w
        top = np.maximum.reduceat(s, starts)[owner]
        e = np.exp(s - top)
        all_sum = np.add.reduceat(e, starts)
        pos_sum = np.add.reduceat(e * y, starts)
        value = float(np.sum(np.log(all_sum) - np.log(pos_sum))) + 0.5 * l2 * float(w @ w)
        p_all = e / all_sum[owner]
        p_pos = e * y / pos_sum[owner]
        grad = z.T @ (p_all - p_pos) + l2 * w
        return value, grad

    w = minimize(loss, np.zeros(z.shape[1]), jac=True, method="L-BFGS-B").x
    return Logistic(names, mean, scale, w.astype(np.float64), 0.0)


def mask_columns(x: np.ndarray, drop: tuple[str, ...]) -> np.ndarray:
    """Drop a feature group by zeroing its columns (standardised to a constant, its weight is 0)."""
    out = x.copy()
    for name in drop:
        out[:, COLUMN[name]] = 0.0
    return out


def folds(cases: list[Case], k: int = 5) -> np.ndarray:
    """A fold number per case: GroupKFold over the cases' groups."""
    from sklearn.model_selection import GroupKFold

    groups = np.array([c.group for c in cases])
    fold = np.zeros(len(cases), dtype=np.int64)
    for f, (_, test) in enumerate(GroupKFold(n_splits=k).split(groups, groups=groups)):
        fold[test] = f
    return fold


def sentence_rows(cases: list[Case], idx: np.ndarray, drop: tuple[str, ...] = ()
                  ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    chosen = [cases[i] for i in idx if cases[i].variant in ("answerable", "seed") and cases[i].answerable
              and len(cases[i].sf.sentences)]
    return [mask_columns(c.sf.x, drop) for c in chosen], [c.strict for c in chosen]


def fit_sentence(cases: list[Case], idx: np.ndarray, drop: tuple[str, ...] = ()) -> Logistic:
    xs, ys = sentence_rows(cases, idx, drop)
    return fit_listwise(xs, ys, SENTENCE_FEATURES)


def _zero_model() -> Logistic:
    n = len(ANSWER_FEATURES)
    return Logistic(ANSWER_FEATURES, np.zeros(n), np.ones(n), np.zeros(n), 0.0)


def answer_rows(cases: list[Case], idx: np.ndarray, sentence: Logistic, drop: tuple[str, ...] = (),
                support_min: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """Question-level rows and the answer model's label: the answer shown (first sentence and
    the supports ``support_min`` admits) holds a gold answer, what ``answer_accuracy`` counts."""
    xs, ys = [], []
    shape = ScorerModel(sentence, _zero_model(), _zero_model(), 0.0, support_min, {})
    for i in idx:
        c = cases[i]
        logits = sentence.logit(mask_columns(c.sf.x, drop)) if len(c.sf.sentences) else np.zeros(0)
        xs.append(answer_features(c.sf, logits))
        sf = SentenceFeatures(c.sf.sentences, mask_columns(c.sf.x, drop), c.sf.cues, c.sf.specificity)
        pos = {s: j for j, s in enumerate(c.sf.sentences)}
        ys.append(any(bool(c.loose[pos[s]]) for s in choose(sf, c.texts, shape).sentences))
    return np.array(xs), np.array(ys, dtype=bool)


def cross_validate(cases: list[Case], fold: np.ndarray, drop: tuple[str, ...] = (), seed_weight: float = 20.0,
                   with_answer: bool = True, support_min: float = 0.15
                   ) -> tuple[list[ScorerModel], dict[int, np.ndarray]]:
    """Per fold, a model fit on the other folds; returns the models and each case's out-of-fold logits."""
    models, logits = [], {}
    for f in range(int(fold.max()) + 1):
        train = np.flatnonzero(fold != f)
        sentence = fit_sentence(cases, train, drop)
        if with_answer:
            # the answer model learns from the sentence model's out-of-fold logits on its training folds
            answer, abstain = fit_answer_oof(cases, train, fold, drop, seed_weight, support_min)
        else:
            answer = abstain = Logistic(ANSWER_FEATURES, np.zeros(len(ANSWER_FEATURES)),
                                        np.ones(len(ANSWER_FEATURES)), np.zeros(len(ANSWER_FEATURES)), 0.0)
        models.append(ScorerModel(sentence, answer, abstain, 0.5, 0.5, {}))
        for i in np.flatnonzero(fold == f):
            c = cases[i]
            logits[int(i)] = sentence.logit(mask_columns(c.sf.x, drop)) if len(c.sf.sentences) else np.zeros(0)
    return models, logits


def fit_answer_oof(cases: list[Case], train: np.ndarray, fold: np.ndarray, drop: tuple[str, ...],
                   seed_weight: float, support_min: float = 0.15) -> tuple[Logistic, Logistic]:
    """The answer and abstention models on ``train``, their features made by sentence models that did
    not see each row. The answer model learns "the first sentence holds a gold answer", the
    abstention model "the question is answerable"."""
    xs, ys, ws, able, helds = [], [], [], [], []
    for f in np.unique(fold[train]):
        inner_train = train[fold[train] != f]
        held = train[fold[train] == f]
        helds.append(held)
        sentence = fit_sentence(cases, inner_train, drop)
        ax, ay = answer_rows(cases, held, sentence, drop, support_min)
        xs.append(ax)
        ys.append(ay)
        ws.append(np.array([seed_weight if cases[i].variant == "seed" else 1.0 for i in held]))
        able.append(np.array([cases[i].answerable for i in held]))
    x, w = np.concatenate(xs), np.concatenate(ws)
    # The confidence is learned from questions as asked (XQuAD and seed), not from the made-up
    # unanswerable ones: those would set its base rate to 2 unanswerable questions in 3, and it
    # was then under-confident on every real set (ECE 0.29-0.42). The abstention model needs them.
    real = np.concatenate([np.array([cases[i].variant in ("answerable", "seed") for i in held])
                           for held in helds])
    return (fit_logistic(x[real], np.concatenate(ys)[real], ANSWER_FEATURES, w[real]),
            fit_logistic(x, np.concatenate(able), ANSWER_FEATURES, w))


def outcomes(cases: list[Case], fold: np.ndarray, models: list[ScorerModel], threshold: float,
             support_min: float, drop: tuple[str, ...] = ()) -> list[dict]:
    rows = []
    for i, c in enumerate(cases):
        m = models[int(fold[i])]
        m = ScorerModel(m.sentence, m.answer, m.abstain, threshold, support_min, {})
        sf = SentenceFeatures(c.sf.sentences, mask_columns(c.sf.x, drop), c.sf.cues, c.sf.specificity)
        choice = choose(sf, c.texts, m)
        pos = {s: j for j, s in enumerate(c.sf.sentences)}
        shown = [pos[s] for s in choice.sentences]
        first = bool(shown) and bool(c.loose[shown[0]])
        rows.append({"set": c.set, "lang": c.lang, "variant": c.variant, "answerable": c.answerable,
                     "abstained": choice.abstain, "confidence": choice.confidence,
                     "answerable_p": choice.answerable,
                     "first_right": first, "any_right": any(bool(c.loose[j]) for j in shown),
                     "n_shown": len(shown)})
    return rows


def summary(rows: list[dict]) -> dict[str, float | None]:
    ans = [r for r in rows if r["answerable"]]
    una = [r for r in rows if not r["answerable"]]

    def mean(v: list[float]) -> float | None:
        return round(float(np.mean(v)), 3) if v else None

    answered = [r for r in ans if not r["abstained"]]
    return {
        "n": len(rows),
        "answer_accuracy": mean([float(r["any_right"] and not r["abstained"]) for r in ans]),
        "first_sentence_accuracy": mean([float(r["first_right"] and not r["abstained"]) for r in ans]),
        "candidate_first_accuracy": mean([float(r["first_right"]) for r in ans]),
        "false_abstention_rate": mean([float(r["abstained"]) for r in ans]),
        "abstain_recall": mean([float(r["abstained"]) for r in una]),
        "sentences_per_answer": mean([r["n_shown"] for r in answered]),
        "ece": ece(rows),
    }


def ece(rows: list[dict], bins: int = 10) -> float | None:
    """Expected calibration error of ``confidence`` against "the answer shown holds a gold answer"
    (whether or not the threshold withholds it), by the evaluation's own rule."""
    table = reliability_table([r["confidence"] for r in rows], [r["answerable"] and r["any_right"] for r in rows],
                              bins)
    error = expected_calibration_error(table)
    return None if error is None else round(error, 3)


def pick_threshold(rows: list[dict], target: float) -> float:
    """The largest threshold that keeps false abstention at or under ``target`` on every tuning set."""
    by_set: dict[str, list[float]] = {}
    for r in rows:
        if r["answerable"]:
            by_set.setdefault(r["set"], []).append(r["answerable_p"])
    return largest_threshold(by_set, target, np.round(np.arange(0.01, 0.96, 0.01), 2).tolist()) or 0.0


def pick_support(cases: list[Case], fold: np.ndarray, models: list[ScorerModel], most: float
                 ) -> tuple[float, list[dict]]:
    """The lowest support_min whose answers (no abstention) average at most ``most`` sentences,
    on the answerable XQuAD questions, out of fold; and the sweep it was chosen from."""
    answerable = [c for c in cases if c.variant == "answerable"]
    sub_fold = np.array([fold[i] for i, c in enumerate(cases) if c.variant == "answerable"])
    sweep = []
    for t in (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 1.01):
        rows = outcomes(answerable, sub_fold, models, 0.0, t)
        sweep.append({"support_min": t, "answer_accuracy": round(float(np.mean([r["any_right"] for r in rows])), 3),
                      "sentences_per_answer": round(float(np.mean([r["n_shown"] for r in rows])), 3)})
    ok = [r for r in sweep if r["sentences_per_answer"] <= most]
    return min(r["support_min"] for r in ok), sweep


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench", type=Path, default=Path("../shared/bench"))
    parser.add_argument("--seed-tune", type=Path, default=Path("evals/seed_tune.jsonl"))
    parser.add_argument("--work", type=Path, default=Path("bench/results"))
    parser.add_argument("--target", type=float, default=0.05, help="false abstention allowed on each tuning set")
    parser.add_argument("--max-sentences-per-answer", type=float, default=1.5,
                        help="the support rule: the lowest support_min whose answers average at most this "
                             "many sentences")
    parser.add_argument("--seed-weight", type=float, default=20.0)
    parser.add_argument("--ablation", action="store_true")
    parser.add_argument("--write", action="store_true", help="fit on all data and write rag/data/scorer.json "
                        "(with --without-terms: rag/data/scorer-no-terms.json)")
    parser.add_argument("--without-terms", action="store_true",
                        help="the model for indexes and questions without latent terms (Settings.latent_terms "
                             "off, models without e5): their columns are 0 in training as at run time")
    parser.add_argument("--chunk-vectors", choices=CHUNK_VECTORS, default=Settings.chunk_vectors,
                        help="how the indexes' chunk vectors are made (the features read them) [the default]")
    parser.add_argument("--held-out-pairs", action="store_true",
                        help="also report German questions over the Spanish articles and Spanish over the German, "
                             "language pairs no model is trained on, each answered by the fold models that did not "
                             "see its article")
    args = parser.parse_args(argv)
    settings = Settings(chunk_vectors=args.chunk_vectors)
    qidx = args.work / ("qidx" if settings.chunk_vectors == "encoded" else f"qidx-{settings.chunk_vectors}")
    cache = args.work / "scorer-cache"
    cases: list[Case] = []
    for name in SETS:
        lang = name.rsplit("-", 1)[1]
        d = args.bench / name
        group_of = {p.name: p.stem for p in (d / "docs").glob("*.txt")}
        cases += collect(name, d / "docs", d / "questions.jsonl", qidx / lang, settings, cache,
                         group_of, simulate=True)
        print(f"collected {name}: {len(cases)} cases", file=sys.stderr)
    if args.seed_tune.exists():
        cases += collect("seed-tune", Path("seeds"), args.seed_tune, qidx / "seeds", settings,
                         cache, {}, simulate=False)
    if args.without_terms:
        cases = [replace(c, sf=replace(c.sf, x=mask_columns(c.sf.x, WITHOUT_TERMS))) for c in cases]
    fold = folds(cases)
    # the support rule first (it needs the sentence models only): the answer model's label is
    # whether the answer shown with it is right
    shapes, _ = cross_validate(cases, fold, with_answer=False)
    support_min, sweep = pick_support(cases, fold, shapes, args.max_sentences_per_answer)
    models, _ = cross_validate(cases, fold, seed_weight=args.seed_weight, support_min=support_min)
    rows = outcomes(cases, fold, models, 0.0, 1.0)
    threshold = pick_threshold([r for r in rows if r["variant"] in ("answerable", "seed")], args.target)
    rows = outcomes(cases, fold, models, threshold, support_min)
    report: dict = {"threshold": threshold, "support_min": support_min, "support_sweep": sweep, "out_of_fold": {}}
    for name in sorted({r["set"] for r in rows}):
        sel = [r for r in rows if r["set"] == name]
        report["out_of_fold"][name] = {
            "answerable": summary([r for r in sel if r["variant"] in ("answerable", "seed")]),
            "masked": summary([r for r in sel if r["variant"] == "masked"]),
            "offdoc": summary([r for r in sel if r["variant"] == "offdoc"]),
            "all": summary(sel),
        }
    if args.held_out_pairs:
        report["held_out_pairs"] = held_out_pairs(args, settings, qidx, cache, cases, fold, models, threshold,
                                                  support_min)
    print(json.dumps(report, indent=1))
    if args.ablation:
        print(json.dumps(ablation(cases, fold), indent=1))
    if args.write:
        write(cases, fold, threshold, support_min, args)
    return 0


PAIRS = (("de", "es"), ("es", "de"))  # (question language, document language): in no development set


def pair_questions(bench: Path, asked: str, over: str, out: Path) -> Path:
    """A question set of ``asked``-language questions over the ``over``-language articles: XQuAD's
    questions share their ids across languages, so each takes the document, context and answers of
    its twin in the ``over`` set."""
    rows = {}
    for line in (bench / f"xquad-{over}-{over}" / "questions.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        rows[row["id"]] = row
    lines = []
    for line in (bench / f"xquad-{asked}-{asked}" / "questions.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        twin = rows[row["id"]]
        lines.append(json.dumps({**twin, "question": row["question"], "question_lang": row["question_lang"]},
                                ensure_ascii=False))
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"xquad-{asked}-{over}.jsonl"
    text = "\n".join(lines) + "\n"
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path


def held_out_pairs(args: argparse.Namespace, settings: Settings, qidx: Path, cache: Path, cases: list[Case],
                   fold: np.ndarray, models: list[ScorerModel], threshold: float, support_min: float) -> dict:
    """Out-of-fold figures on the language pairs of ``PAIRS``: no model learns from them, and each
    question is answered by the model of the fold that held its article out of training."""
    fold_of = {c.group: int(f) for c, f in zip(cases, fold, strict=True)}
    out = {}
    for asked, over in PAIRS:
        name = f"xquad-{asked}-{over}"
        d = args.bench / f"xquad-{over}-{over}"
        questions = pair_questions(args.bench, asked, over, args.work / "pairs")
        held = collect(name, d / "docs", questions, qidx / over, settings, cache,
                       {p.name: p.stem for p in (d / "docs").glob("*.txt")}, simulate=True)
        if args.without_terms:
            held = [replace(c, sf=replace(c.sf, x=mask_columns(c.sf.x, WITHOUT_TERMS))) for c in held]
        rows = outcomes(held, np.array([fold_of[c.group] for c in held]), models, threshold, support_min)
        out[name] = {variant: summary([r for r in rows if r["variant"] == variant])
                     for variant in ("answerable", "masked", "offdoc")}
    return out


def first_accuracy(cases: list[Case], logits: dict[int, np.ndarray]) -> dict[str, float]:
    out: dict[str, list[float]] = {}
    for i, c in enumerate(cases):
        if c.answerable:
            lg = logits[i]
            out.setdefault(c.set, []).append(float(len(lg) > 0 and bool(c.loose[int(np.argmax(lg))])))
    return {k: round(float(np.mean(v)), 3) for k, v in out.items()}


def ablation(cases: list[Case], fold: np.ndarray) -> dict[str, dict[str, float]]:
    """First-sentence accuracy (no abstention) out of fold: baselines, all features, each group removed."""
    col = COLUMN
    table = {
        "plain dense (best e5 cosine)": first_accuracy(
            cases, {i: c.sf.x[:, col["e5_gap"]] for i, c in enumerate(cases)}),
        "today (best fused score)": first_accuracy(cases, {i: c.sf.x[:, col["fused"]] for i, c in enumerate(cases)}),
    }
    _, logits = cross_validate(cases, fold, with_answer=False)
    table["all features"] = first_accuracy(cases, logits)
    for group, names in SENTENCE_GROUPS.items():
        _, logits = cross_validate(cases, fold, drop=names, with_answer=False)
        table[f"without {group}"] = first_accuracy(cases, logits)
    return table


def write(cases: list[Case], fold: np.ndarray, threshold: float, support_min: float,
          args: argparse.Namespace) -> None:
    everything = np.arange(len(cases))
    sentence = fit_sentence(cases, everything)
    answer, abstain = fit_answer_oof(cases, everything, fold, (), args.seed_weight, support_min)
    info = {"models": ["e5+use"], "latent_terms": not args.without_terms,
            "trained_on": sorted({c.set for c in cases}), "cases": len(cases),
            "target_false_abstention": args.target,
            "script": "python -m rag.train.scorer"}
    model = ScorerModel(sentence, answer, abstain, threshold, support_min, info)
    path = PACKAGE / "data" / (SCORER_NO_TERMS if args.without_terms else SCORER)
    path.write_text(json.dumps(model.to_dict(), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
