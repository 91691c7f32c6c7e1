"""Stage 4, index: a versioned index folder, built atomically, verified and loaded.

- ``manifest``: the typed ``Manifest`` of a build, its validation, and ``check_compatible``
  (does this index fit these settings and this encoder);
- ``folder``: the folder layout, the ``CURRENT`` pointer, the build lock and clean-up;
- ``store``: the FAISS indexes and ``write_build``, the atomic write of a build;
- ``loaded``: ``open_index`` -> ``Index`` (with what questions need computed once, at open);
- ``build``: ``build_index``, and the abstention background;
- ``fresh``: ``index_state``, the one classification of an index against the settings (missing,
  mismatch, stale, ok), ``index_status`` and ``quick_status`` over it (the latter stat-only), and
  ``record_sources``;
- ``verify``: ``verify_index``, the full check (SHA-256 of every index file, and of the documents).

The BM25 tokenizer and indexes are in ``rag.lexical``.
"""

from .build import Progress, background_centroid, background_sentences, build_index
from .fresh import IndexState, index_state, index_status, quick_status, record_sources, same_documents
from .manifest import (
    FORMAT_VERSION,
    Manifest,
    ModelInfo,
    ModelPart,
    check_compatible,
    read_manifest,
    verify_files,
)
from .store import (
    BUILDS,
    CURRENT,
    EXACT_SEARCH_BYTES,
    TMP_PREFIX,
    Index,
    Part,
    build_lock,
    clean_leftovers,
    current_build,
    make_faiss,
    open_index,
    settings_for,
)
from .verify import Problem, VerifyReport, verify_index

__all__ = [
    "BUILDS",
    "CURRENT",
    "EXACT_SEARCH_BYTES",
    "FORMAT_VERSION",
    "TMP_PREFIX",
    "Index",
    "IndexState",
    "Manifest",
    "ModelInfo",
    "ModelPart",
    "Part",
    "Problem",
    "Progress",
    "VerifyReport",
    "background_centroid",
    "background_sentences",
    "build_index",
    "build_lock",
    "check_compatible",
    "clean_leftovers",
    "current_build",
    "index_state",
    "index_status",
    "make_faiss",
    "open_index",
    "quick_status",
    "read_manifest",
    "record_sources",
    "same_documents",
    "settings_for",
    "verify_files",
    "verify_index",
]
