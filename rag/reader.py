"""Stage 7, read: a cross-encoder that reads the question together with each candidate sentence.

The reader is the first layers of the exported e5 (``rag.model``) fine-tuned as a
cross-encoder (``rag.train.reader``): the question's and the sentence's tokens attend to each
other in every layer. It reads ``<s> question </s></s> sentence </s> context </s>``, where the
context is the end of the sentence before it (who "he" is), and gives

- the probability that the sentence itself answers the question (from the ``<s>`` state), and
- the span inside the sentence that answers (start and end logits over the sentence's tokens).

Only the fine-tuned layers and the two heads are shipped (``rag/data/reader/``, float16
safetensors with their SHA-256 in ``reader.json``); the embeddings come from the exported e5
made in the cache (``rag.model.ensure_model``). PyTorch is imported on first use only.
"""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelError
from .files import sha256_file
from .settings import READER_PRECISIONS

FORMAT = 1  # of rag/data/reader; a change of inputs or layout bumps it
MAX_QUESTION, MAX_SENTENCE, MAX_CONTEXT = 40, 72, 24  # tokens of each part read
MAX_SPAN = 30  # tokens an answer span may have
WEIGHTS, RECORD = "reader.safetensors", "reader.json"
RETRAIN = "reinstall the package, or retrain it with `python -m rag.train.reader`"


@dataclass(frozen=True)
class Pair:
    """One (question, sentence, context) as the reader's token ids."""

    ids: tuple[int, ...]
    first: int  # position of the sentence's first token
    offsets: tuple[tuple[int, int], ...]  # each sentence token's characters within the sentence


@dataclass(frozen=True)
class Reading:
    """What the reader says of one sentence."""

    prob: float  # that this sentence answers the question
    logit: float
    span: tuple[int, int] | None  # the answering words: characters within the sentence
    span_prob: float  # the span's share of the start and end probabilities (0 without a span)
    span_score: float = 0.0  # the best start logit plus the best end logit over the sentence's words


class Tokens:
    """The exported e5's tokenizer, cutting each part of a pair to its budget."""

    def __init__(self, folder: Path) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        self.bos, self.eos, self.pad = int(config["bos_token_id"]), int(config["eos_token_id"]), int(
            config["pad_token_id"])

    def pairs(self, question: str, sentences: Sequence[str], contexts: Sequence[str]) -> list[Pair]:
        """``<s> question </s></s> sentence </s> context </s>``; the context keeps its last tokens."""
        encoded = self.tokenizer.encode_batch([question, *sentences, *contexts], add_special_tokens=False)
        q = encoded[0].ids[:MAX_QUESTION]
        out = []
        n = len(sentences)
        for s, c in zip(encoded[1 : 1 + n], encoded[1 + n :], strict=True):
            head = (self.bos, *q, self.eos, self.eos)
            tail = c.ids[-MAX_CONTEXT:] if c.ids else []
            ids = (*head, *s.ids[:MAX_SENTENCE], self.eos, *tail, self.eos)
            out.append(Pair(ids, len(head), tuple(s.offsets[:MAX_SENTENCE])))
        return out


def _net_class() -> Any:
    import torch

    class ReaderNet(torch.nn.Module):
        """The truncated e5 and its two heads: answer (from <s>) and span (start, end per token)."""

        def __init__(self, bert: Any, pooling: str = "mean") -> None:
            super().__init__()
            self.bert = bert
            self.pooling = pooling
            dim = int(bert.config.hidden_size)
            self.answer = torch.nn.Linear(dim, 1)
            self.span = torch.nn.Linear(dim, 2)

        def forward(self, ids: Any, mask: Any) -> tuple[Any, Any, Any]:
            hidden = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state
            spans = self.span(hidden)
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:  # e5 was trained to mean-pool; its <s> state barely varies between inputs
                weights = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
            return self.answer(pooled).squeeze(-1), spans[..., 0], spans[..., 1]

    return ReaderNet


_NET: Any = None


def build_net(folder: Path, layers: int, pooling: str = "mean") -> Any:
    """The exported e5 folder's first ``layers`` layers with fresh heads (float32, for training or reading);
    the answer head reads the mean of the token states (``pooling="mean"``) or the <s> state ("cls")."""
    global _NET
    try:
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging
    except ImportError as exc:
        raise ModelError("the reader needs: pip install torch==2.13.0 transformers") from exc
    hf_logging.disable_progress_bar()  # no "Loading weights" bar on the CLI's stderr
    bert = AutoModel.from_pretrained(str(folder))  # its zero pooler is kept (and never read)
    bert.encoder.layer = bert.encoder.layer[:layers]
    bert.config.num_hidden_layers = layers
    _NET = _NET or _net_class()
    return _NET(bert, pooling)


def trained_keys(net: Any) -> list[str]:
    """The parameters a reader ships: every layer it keeps and the heads, not the embeddings or pooler."""
    return [k for k in net.state_dict() if not k.startswith(("bert.embeddings.", "bert.pooler."))]


def batch_tensors(pairs: Sequence[Pair], pad: int) -> tuple[Any, Any]:
    import torch

    width = max(len(p.ids) for p in pairs)
    ids = torch.full((len(pairs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(pairs), width), dtype=torch.long)
    for row, p in enumerate(pairs):
        ids[row, : len(p.ids)] = torch.tensor(p.ids)
        mask[row, : len(p.ids)] = 1
    return ids, mask


def best_span(start: np.ndarray, end: np.ndarray, pair: Pair) -> tuple[tuple[int, int] | None, float]:
    """The most likely (start <= end, at most ``MAX_SPAN`` tokens) span of the sentence's tokens, as characters."""
    n = len(pair.offsets)
    if n == 0:
        return None, 0.0
    s = start[pair.first : pair.first + n].astype(np.float64)
    e = end[pair.first : pair.first + n].astype(np.float64)
    ps, pe = np.exp(s - s.max()), np.exp(e - e.max())
    ps, pe = ps / ps.sum(), pe / pe.sum()
    joint = np.triu(np.outer(ps, pe)) - np.triu(np.outer(ps, pe), MAX_SPAN)
    i, j = np.unravel_index(int(np.argmax(joint)), joint.shape)
    return (pair.offsets[i][0], pair.offsets[j][1]), float(joint[i, j])


def shipped_dir() -> Path:
    return Path(str(resources.files("rag") / "data" / "reader"))


def reader_record(folder: Path | None = None) -> dict[str, Any]:
    """The shipped reader's ``reader.json`` (layers, calibration, figures), checked against its weights file."""
    folder = folder or shipped_dir()
    try:
        record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the reader's {folder / RECORD} ({exc}): {RETRAIN}") from exc
    if record.get("format") != FORMAT:
        raise ModelError(f"the reader in {folder} has format {record.get('format')}, this rag reads {FORMAT}: "
                         f"{RETRAIN}")
    weights = folder / WEIGHTS
    if not weights.is_file() or sha256_file(weights) != record.get("sha256"):
        raise ModelError(f"the reader's weights {weights} are missing or damaged (SHA-256 differs from "
                         f"{RECORD}): {RETRAIN}")
    return dict(record)


def load_net(base: Path, folder: Path, record: dict[str, Any]) -> Any:
    """The reader in ``folder`` (its ``record`` checked by ``reader_record``) over the exported e5 ``base``,
    in float32: for reading, or as the start of a further training run."""
    from safetensors.torch import load_file

    net = build_net(base, int(record["layers"]), str(record.get("pooling", "cls")))
    state = load_file(str(folder / WEIGHTS))
    expected = set(trained_keys(net))
    if set(state) != expected:
        missing, unknown = sorted(expected - set(state))[:3], sorted(set(state) - expected)[:3]
        raise ModelError(f"the reader's weights in {folder} do not fit a {record['layers']}-layer e5 "
                         f"(missing {missing}, unknown {unknown}): {RETRAIN}")
    net.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    return net


class Reader:
    """The shipped reader over the exported e5 ``base`` folder; thread-safe (one read at a time)."""

    def __init__(self, base: Path, folder: Path | None = None, threads: int = 2, precision: str = "auto") -> None:
        import torch

        from .model.torch_e5 import native_bf16

        if precision not in READER_PRECISIONS:
            raise ModelError(f"the reader's precision is one of {', '.join(READER_PRECISIONS)}, not {precision!r}")
        folder = folder or shipped_dir()
        self.record = reader_record(folder)
        torch.set_num_threads(threads)
        self.tokens = Tokens(base)
        net = load_net(base, folder, self.record)
        net.eval()
        self.auto_precision = "bf16" if native_bf16() else "fp32"
        if precision == "auto":
            precision = self.auto_precision
        self.precision = precision
        if precision == "int8":  # the linear layers' weights in int8, activations quantised as they come
            with warnings.catch_warnings():  # torch 2.13 says this API moves to torchao; it still works
                warnings.simplefilter("ignore", category=DeprecationWarning)
                warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*", category=UserWarning)
                net = torch.ao.quantization.quantize_dynamic(net, {torch.nn.Linear}, dtype=torch.qint8)
        self.net = net.to(torch.bfloat16) if precision == "bf16" else net
        self._lock = threading.Lock()

    def read(self, question: str, sentences: Sequence[str], contexts: Sequence[str]) -> list[Reading]:
        """Each sentence's answer probability and span, read with the question."""
        import torch

        if not sentences:
            return []
        pairs = self.tokens.pairs(question, sentences, contexts)
        ids, mask = batch_tensors(pairs, self.tokens.pad)
        with self._lock, torch.inference_mode():
            logit, start, end = (t.float().numpy() for t in self.net(ids, mask))
        out = []
        for row, (pair, sentence) in enumerate(zip(pairs, sentences, strict=True)):
            span, span_prob = best_span(start[row], end[row], pair)
            if span is not None:  # a word's token carries the space before it: the span starts at the word
                a, b = span
                while a < b and sentence[a].isspace():
                    a += 1
                while b > a and sentence[b - 1].isspace():
                    b -= 1
                span = (a, b) if a < b else None
            value = float(logit[row])
            n = len(pair.offsets)
            words = slice(pair.first, pair.first + n)
            score = float(start[row, words].max() + end[row, words].max()) if n else 0.0
            out.append(Reading(1.0 / (1.0 + np.exp(-np.clip(value, -50, 50))), value, span, span_prob, score))
        return out


def load_reader(settings: Any) -> Reader:
    """The shipped reader over the exported e5 in the cache (made there on first use), for ``settings``'
    threads and ``reader_precision``. Raises ``ModelError`` naming the fix."""
    from .model.export import ensure_model
    from .settings import Paths

    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise ModelError("the reader needs PyTorch: pip install torch==2.13.0 transformers, "
                         "or turn it off with --set reader=false") from exc
    return Reader(ensure_model(Paths.from_env().cache).path, threads=settings.threads,
                  precision=settings.reader_precision)
