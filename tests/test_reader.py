"""The reader (rag.reader) and its training (rag.train.reader): inputs, spans, a tiny training run,
the loader's refusals. The shipped reader's judgement is tested in test_reader_model.py."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from rag.errors import ModelError
from rag.model.export import export_model
from rag.reader import MAX_CONTEXT, MAX_QUESTION, MAX_SENTENCE, RECORD, WEIGHTS, Pair, Reader, Tokens, best_span
from rag.train.reader import TrainConfig, _step_loss, draw, evaluate_readers, train, write_card
from rag.train.reader_data import Record, make_groups

pytestmark = pytest.mark.model

PARAGRAPH = ("Marie Curie was born in Warsaw in 1867. She moved to Paris in 1891 to study physics. "
             "In 1903 she shared the Nobel Prize in Physics with Pierre Curie and Henri Becquerel.")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_model(tmp_path_factory.mktemp("e5") / "model").path


def _records() -> list[Record]:
    rows = []
    for k, (question, answer) in enumerate([("Where was Marie Curie born?", "Warsaw"),
                                            ("When did she move to Paris?", "1891"),
                                            ("Who shared the 1903 prize with her?", "Pierre Curie")]):
        for lang in ("en", "fr"):
            rows.append(Record(f"pool-{lang}:{k}", f"pool-{lang}", lang, "Curie", PARAGRAPH, question,
                               ((answer, PARAGRAPH.index(answer)),)))
    rows.append(Record("pool-es:9", "pool-es", "es", "Curie", PARAGRAPH, "¿Cuántos hijos tuvo?", ()))
    return rows


def test_groups_hold_the_answering_sentence_with_its_span_and_negatives() -> None:
    groups = make_groups(_records(), per_language=10, seed=1)
    answerable = [g for g in groups if g.kind == "answerable"]
    assert answerable and all(sum(r.label for r in g.rows) == 1 for g in answerable)
    for g in answerable:
        hit = next(r for r in g.rows if r.label)
        assert hit.span is not None and hit.sentence[hit.span[0] : hit.span[1]] == g.answer
        assert all(r.span is None for r in g.rows if not r.label)
    # unanswerable and near-miss groups have no answering row
    assert all(not any(r.label for r in g.rows) for g in groups if g.kind != "answerable")
    assert any(g.kind == "unanswerable" for g in groups)


def test_another_seed_draws_other_training_questions_but_the_same_held_out_ones() -> None:
    records = [Record(f"pool-en:{a}-{k}", "pool-en", "en", f"Article {a}", PARAGRAPH, f"Question {k} on {a}?",
                      (("Warsaw", PARAGRAPH.index("Warsaw")),))
               for a in range(40) for k in range(3)]
    config = TrainConfig("", "", per_language=20, held_out_per_language=5, held_out_share=4)
    fit, dev = draw(records, config)
    assert dev and all(g.article[1] not in {f.article[1] for f in fit} for g in dev)  # held out by article
    for seed in (1, 2):
        fit_other, dev_other = draw(records, TrainConfig("", "", per_language=20, held_out_per_language=5,
                                                         held_out_share=4, seed=seed))
        assert [g.question for g in dev_other] == [g.question for g in dev]
        assert {g.question for g in fit_other} != {g.question for g in fit}


def test_pairs_read_question_sentence_and_the_end_of_the_context(base: Path) -> None:
    tokens = Tokens(base)
    long_q = "word " * 200
    [pair] = tokens.pairs(long_q, ["A short sentence."], ["context " * 100])
    assert pair.ids[0] == tokens.bos and pair.ids[-1] == tokens.eos
    assert pair.first == 1 + MAX_QUESTION + 2  # <s> question </s></s>
    assert pair.ids[pair.first - 2 : pair.first] == (tokens.eos, tokens.eos)
    n = len(pair.offsets)
    assert pair.ids[pair.first + n] == tokens.eos
    assert len(pair.ids) == pair.first + n + 1 + MAX_CONTEXT + 1
    sentence = "word " * 300
    [pair] = tokens.pairs("q", [sentence], [""])
    assert len(pair.offsets) == MAX_SENTENCE and len(pair.ids) == pair.first + MAX_SENTENCE + 2


def test_best_span_is_ordered_short_and_inside_the_sentence() -> None:
    pair = Pair(ids=(0, 5, 2, 2, 7, 8, 9, 2, 2), first=4, offsets=((0, 3), (4, 9), (10, 14)))
    start = np.full(9, -5.0)
    end = np.full(9, -5.0)
    start[1], end[1] = 20.0, 20.0  # the question's tokens are never a span
    start[5], end[6] = 3.0, 3.0
    assert best_span(start, end, pair)[0] == (4, 14)
    start[6], end[4] = 9.0, 9.0  # an end before the start is not a span
    span, prob = best_span(start, end, pair)
    assert span is not None and span[0] <= span[1] and 0 < prob <= 1


def test_a_tiny_training_run_writes_a_reader_that_loads_and_reads(base: Path, tmp_path: Path) -> None:
    pool = tmp_path / "pool.jsonl.gz"
    with gzip.open(pool, "wt", encoding="utf-8") as handle:
        for r in _records():
            handle.write(json.dumps({"id": r.id, "source": r.source, "lang": r.lang, "title": r.title,
                                     "context": r.context, "question": r.question,
                                     "answers": [{"text": t, "start": s} for t, s in r.answers]}) + "\n")
    out = tmp_path / "reader"
    record = train(TrainConfig(str(pool), str(out), layers=1, per_language=10, held_out_per_language=10,
                               held_out_share=1000, groups_per_step=4), base, log=lambda _: None)
    assert record["layers"] == 1 and record["trained"]["steps"] >= 1
    assert set(record["held_out"]) >= {"first_sentence", "span_f1_when_first", "log_loss"}
    assert "Held-out articles" in (out / "README.md").read_text(encoding="utf-8")
    reader = Reader(base, out, threads=1, precision="fp32")
    sentences = ["She moved to Paris in 1891 to study physics.", "Marie Curie was born in Warsaw in 1867."]
    said = reader.read("Where was Marie Curie born?", sentences, ["", ""])
    assert len(said) == 2
    for reading, sentence in zip(said, sentences, strict=True):
        assert 0.0 < reading.prob < 1.0
        if reading.span is not None:  # a span of spaces only is no span
            a, b = reading.span
            assert 0 <= a < b <= len(sentence) and sentence[a : b] == sentence[a : b].strip()
    # int8 (the linear layers quantised) reads as float32 does, within quantisation's noise
    int8 = Reader(base, out, threads=1, precision="int8").read("Where was Marie Curie born?", sentences, ["", ""])
    assert [r.prob for r in int8] == pytest.approx([r.prob for r in said], abs=0.05)
    with pytest.raises(ModelError, match="not 'fp8'"):
        Reader(base, out, precision="fp8")
    # a further run goes on from that reader: with nothing learnt (rates 0) it writes the same weights
    again = train(TrainConfig(str(pool), str(tmp_path / "again"), layers=1, per_language=10, held_out_per_language=10,
                              held_out_share=1000, groups_per_step=4, lr=0.0, head_lr=0.0, seed=1, init=str(out)),
                  base, log=lambda _: None)
    assert again["trained"]["went_on_from"]["steps"] == record["trained"]["steps"]
    assert again["trained"]["went_on_from"]["held_out"] == record["held_out"]
    card = (tmp_path / "again" / "README.md").read_text(encoding="utf-8")
    assert "Then, going on from that reader" in card and "The reader it went on from, on the same held-out" in card
    first, then = load_file(str(out / WEIGHTS)), load_file(str(tmp_path / "again" / WEIGHTS))
    assert set(first) == set(then) and all(np.array_equal(first[k], then[k]) for k in first)
    # --evaluate: readers of several runs on one held-out sample (here every article held out)
    every = TrainConfig(str(pool), "", held_out_per_language=10, held_out_share=1)
    figures = evaluate_readers(every, base, [out, tmp_path / "again"])
    assert figures[str(out)]["questions"] == len(draw(_records(), every)[1]) > 0
    assert figures[str(out)] == figures[str(tmp_path / "again")] and 0 <= figures[str(out)]["first_sentence"] <= 1
    with pytest.raises(ValueError, match="has 1 layers, not --layers 2"):
        train(TrainConfig(str(pool), str(tmp_path / "other"), layers=2, init=str(out)), base, log=lambda _: None)
    # a damaged weights file is refused, naming the fix
    weights = out / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelError, match=r"python -m rag\.train\.reader"):
        Reader(base, out)


def test_a_step_under_bf16_autocast_computes_the_float32_loss_within_rounding(base: Path) -> None:
    import torch

    from rag.reader import build_net

    torch.manual_seed(0)
    net = build_net(base, 1)
    groups = make_groups(_records(), per_language=10)
    tokens = Tokens(base)
    fp32 = _step_loss(net, tokens, groups)
    bf16 = _step_loss(net, tokens, groups, bf16=True)
    assert bf16.dtype == torch.float32 and bf16.item() == pytest.approx(fp32.item(), rel=0.03)
    bf16.backward()  # gradients reach the float32 weights, the layers' and the heads'
    grads = {n: p.grad for n, p in net.named_parameters() if p.grad is not None}
    assert any(n.startswith("bert.") for n in grads) and any(not n.startswith("bert.") for n in grads)
    assert all(g.dtype == torch.float32 and bool(torch.isfinite(g).all()) for g in grads.values())


def test_the_card_says_when_the_run_before_was_measured_on_another_held_out_sample(tmp_path: Path) -> None:
    (tmp_path / WEIGHTS).write_bytes(b"0" * 1000)
    run = {"command": "python -m rag.train.reader", "steps": 10, "seconds": 60, "hardware": "CPU",
           "config": {"groups_per_step": 8}, "groups": {"fr/answerable": 80}}
    record = {"base": "e5", "layers": 6, "held_out": {"questions": 1026},
              "trained": {**run, "went_on_from": {**run, "held_out": {"questions": 814}}}}
    write_card(tmp_path, record, tmp_path / "no-sources.json")
    card = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert "on its own run's held-out questions (another sample" in card and "same held-out" not in card


def test_a_reader_of_another_shape_or_format_is_refused(base: Path, tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    from rag.files import sha256_file

    out = tmp_path / "reader"
    out.mkdir()
    save_file({"answer.weight": np.zeros((1, 384), np.float16)}, str(out / WEIGHTS))
    record = {"format": 1, "layers": 2, "sha256": sha256_file(out / WEIGHTS)}
    (out / RECORD).write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(ModelError, match="do not fit a 2-layer e5"):
        Reader(base, out)
    (out / RECORD).write_text(json.dumps({**record, "format": 99}), encoding="utf-8")
    with pytest.raises(ModelError, match="format 99"):
        Reader(base, out)


def test_training_refuses_to_start_when_the_long_document_splits_are_missing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from rag.train.reader import main

    monkeypatch.chdir(tmp_path)  # a fresh clone: no bench/results/long-docs/*/split.json
    with pytest.raises(SystemExit) as exited:
        main(["--pool", str(tmp_path / "pool.jsonl.gz"), "--out", str(tmp_path / "out")])
    assert exited.value.code == 2
    assert "python scripts/long_docs.py" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
