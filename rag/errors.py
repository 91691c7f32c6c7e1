"""The exception tree. Library code raises these; the CLI and the app turn them into messages."""

from __future__ import annotations


class RagError(Exception):
    """Base class of every error this package raises on purpose."""


class SettingsError(RagError, ValueError):
    """A setting has an invalid value."""


class DocumentsError(RagError):
    """The documents folder is missing, empty or holds nothing readable."""


class DocumentFormatError(RagError, ValueError):
    """One file cannot be read as its format says (malformed, encrypted, no text, over a limit).

    The loader skips that file and reports it by name with this message as the reason.
    """


class QuestionError(RagError, ValueError):
    """The question cannot be asked as it is (empty, too long)."""


class ModelError(RagError):
    """An encoder cannot be created or loaded."""


class IndexError_(RagError):
    """Base class of index problems (named with a trailing underscore: IndexError is a builtin)."""


class IndexMissingError(IndexError_):
    """No index has been built at that path."""


class IndexCorruptError(IndexError_):
    """The index is damaged, truncated, edited or of an unknown format."""


class IndexMismatchError(IndexError_):
    """The index was built with another model or other settings than the ones asked for."""


class QuestionSetError(RagError):
    """A question-set file has a malformed line."""


class ScorerError(RagError):
    """The bundled answer-scorer weights are missing, unreadable or out of date."""


class ClusterError(RagError):
    """The Ray cluster cannot be reached, or a distributed build failed on it."""


class StoreError(RagError):
    """The vector store (Milvus) cannot be reached or refused a request."""


class StoreMismatchError(IndexMismatchError):
    """A vector store holds another model's vectors, or the store asked for is not the index's."""


__all__ = [
    "ClusterError",
    "DocumentFormatError",
    "DocumentsError",
    "IndexCorruptError",
    "IndexError_",
    "IndexMismatchError",
    "IndexMissingError",
    "ModelError",
    "QuestionError",
    "QuestionSetError",
    "RagError",
    "ScorerError",
    "SettingsError",
    "StoreError",
    "StoreMismatchError",
]
