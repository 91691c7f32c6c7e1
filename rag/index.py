"""Stage 4, index: build, write atomically, verify and load a versioned index directory.

Layout of an index folder::

    index/
      CURRENT            name of the build in use (replaced atomically)
      builds/<build>/    manifest.json, documents.jsonl, chunks.npy, sentences.npy,
                         chunk_vectors.npy, sentence_vectors.npy, background.npy, chunks.faiss,
                         sentences.faiss, bm25_chunks/, bm25_sentences/

A build is written into ``builds/.tmp-*``, flushed, renamed, and only then named in
``CURRENT``: a crash at any point leaves the previous build in use. JSON, NumPy and FAISS
files only, never pickle. The manifest records sizes and SHA-256 of every file, so damage
is found before use.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
import unicodedata
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from shlex import quote
from typing import Any

import numpy as np

from . import __version__
from .chunk import SPLITTER_VERSION, chunk_document
from .encoders import Encoder, encode_passages, encoder_parts
from .errors import IndexCorruptError, IndexMismatchError, IndexMissingError
from .settings import Settings
from .types import BuildReport, Chunk, Document, LoadResult, Span

FORMAT_VERSION = 1
CURRENT = "CURRENT"
BUILDS = "builds"
TMP_PREFIX = ".tmp-"
# Exact search reads every vector: ~0.5 us per 896-d vector here (466 ms at 1M, docs/scaling.md),
# so 20 MiB of vectors (~5,800 at 896 dimensions, ~13,600 at 384) cost ~3 ms per search. Above
# that an HNSW graph takes over (recall@10 0.998 and 0.90 ms p50 at 1M vectors, same run).
EXACT_SEARCH_BYTES = 20 * 2**20

Progress = Callable[[int, int], None]  # (passages embedded so far, total to embed)


def tokenize(text: str) -> list[str]:
    """Lexical tokens: lower-cased, accents removed, words of two characters or more."""
    folded = unicodedata.normalize("NFKD", text.lower())
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    return [t for t in re.findall(r"\w+", folded) if len(t) > 1 or t.isdigit()]


@dataclass
class Index:
    """A loaded index: spans, vectors, FAISS and BM25 indexes. Read-only once loaded."""

    path: Path
    manifest: dict[str, Any]
    documents: dict[str, Document]
    chunks: list[Chunk]
    sentences: list[Span]
    chunk_vectors: np.ndarray
    sentence_vectors: np.ndarray
    chunk_faiss: Any
    sentence_faiss: Any
    bm25_chunks: Any
    bm25_sentences: Any
    background: np.ndarray  # mean embedding of generic text in the documents' languages

    @property
    def model(self) -> str:
        return str(self.manifest["settings"]["model"])

    @property
    def built_at(self) -> str:
        return str(self.manifest["built_at"])


# ---------------------------------------------------------------------------------- paths


def _builds(root: Path) -> Path:
    return root / BUILDS


def current_build(root: str | os.PathLike[str]) -> Path:
    """The folder of the build in use; ``IndexMissingError`` when there is none."""
    root = Path(root)
    pointer = root / CURRENT
    arg = quote(str(root))  # the fix commands below must run as printed, spaces and all
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise IndexMissingError(f"no index at {str(root)!r}: build it with `rag index --index {arg}`") from None
    except OSError as exc:
        raise IndexCorruptError(
            f"cannot read {pointer} ({exc}): rebuild with `rag index --full --index {arg}`"
        ) from exc
    build = _builds(root) / name
    if not name or "/" in name or not build.is_dir():
        raise IndexCorruptError(
            f"index {str(root)!r} points to a missing build {name!r}: rebuild with `rag index --full --index {arg}`"
        )
    return build


@contextlib.contextmanager
def build_lock(root: Path) -> Iterator[None]:
    """One builder at a time per index folder (readers never wait)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def clean_leftovers(root: Path, keep: int = 2) -> list[str]:
    """Remove temporary folders of interrupted builds and builds older than the last ``keep``.

    Call with the build lock held. The build in use and the one before it stay, so a reader
    that has just read CURRENT can still load its build.
    """
    builds = _builds(root)
    if not builds.is_dir():
        return []
    removed = []
    try:
        in_use = current_build(root).name
    except (IndexMissingError, IndexCorruptError):
        in_use = None
    finished = sorted((p for p in builds.iterdir() if not p.name.startswith(TMP_PREFIX)), key=lambda p: p.name)
    # newer than the build in use yet never switched to: a crash between rename and switch
    orphans = [p for p in finished if in_use is not None and p.name > in_use]
    finished = [p for p in finished if p not in orphans]
    stale = [p for p in finished if p.name != in_use][: max(0, len(finished) - keep)]
    for path in [p for p in builds.iterdir() if p.name.startswith(TMP_PREFIX)] + orphans + stale:
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
    for pointer in root.glob(f"{CURRENT}.*.tmp"):  # a CURRENT written but never swapped in
        pointer.unlink(missing_ok=True)
        removed.append(pointer.name)
    return removed


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------- build


def _spans_array(rows: Sequence[Span], doc_pos: dict[str, int], chunk: bool) -> np.ndarray:
    width = 6 if chunk else 4
    out = np.zeros((len(rows), width), dtype=np.int64)
    for i, s in enumerate(rows):
        out[i, :4] = (doc_pos[s.doc], s.start, s.end, s.paragraph)
        if chunk:
            assert isinstance(s, Chunk)
            out[i, 4:] = (s.first_sentence, s.last_sentence)
    return out


def background_sentences(languages: Sequence[str | None]) -> list[str]:
    """The bundled generic sentences in the documents' languages, in proportion to their documents.

    All of them when no document language is among the bundled ones.
    """
    by_lang: dict[str, list[str]] = {}
    with (resources.files("rag") / "data" / "background.tsv").open(encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("#") or "\t" not in line:
                continue
            lang, text = line.rstrip("\n").split("\t", 1)
            by_lang.setdefault(lang, []).append(text)
    counts = Counter(lang for lang in languages if lang in by_lang)
    if not counts:
        return [t for texts in by_lang.values() for t in texts]
    return [t for lang, n in sorted(counts.items()) for t in by_lang[lang] * n]


def background_centroid(texts: Sequence[str], vectors: np.ndarray) -> np.ndarray:
    """Mean embedding of generic text in the documents' languages: the baseline for abstention.

    ``texts`` are ``background_sentences(...)`` (repeats weight a language by its documents);
    ``vectors`` are the embeddings of ``sorted(set(texts))``, in that order.
    """
    unique = sorted(set(texts))
    weights = Counter(texts)
    mean = sum(vectors[i] * weights[t] for i, t in enumerate(unique)) / len(texts)
    return np.asarray(mean, dtype=np.float32)


def make_faiss(vectors: np.ndarray) -> Any:
    import faiss

    dim = vectors.shape[1]
    index: Any
    if vectors.size * 4 <= EXACT_SEARCH_BYTES:
        # inner product over unit vectors = cosine similarity
        index = faiss.IndexFlatIP(dim)
    else:
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = 128
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def _bm25(texts: Sequence[str]) -> Any:
    import bm25s

    retriever = bm25s.BM25()
    retriever.index([tokenize(t) or ["\u2205"] for t in texts], show_progress=False)
    return retriever


def index_status(root: str | os.PathLike[str], loaded: LoadResult, settings: Settings) -> str:
    """``missing``, ``mismatch`` (another model), ``stale`` (documents or chunking) or ``ok``.

    A damaged index raises ``IndexCorruptError``: rebuilding it unasked would hide the damage
    and overwrite an index written by a newer version.
    """
    try:
        manifest = read_manifest(current_build(root))
    except IndexMissingError:
        return "missing"
    if manifest.get("settings", {}).get("model") != settings.model:
        return "mismatch"
    if _build_key(manifest) != _wanted_key(settings):
        return "stale"
    have = {d["id"]: d["sha256"] for d in manifest.get("documents", [])}
    want = {d.id: d.sha256 for d in loaded.documents}
    return "ok" if have == want else "stale"


def _build_key(manifest: dict[str, Any]) -> dict[str, Any]:
    s = manifest.get("settings", {})
    return {
        "model": s.get("model"),
        "chunk_size": s.get("chunk_size"),
        "chunk_overlap": s.get("chunk_overlap"),
        "splitter_version": manifest.get("splitter_version"),
    }


def _wanted_key(settings: Settings) -> dict[str, Any]:
    return {**settings.build_key(), "splitter_version": SPLITTER_VERSION}


def build_index(
    loaded: LoadResult,
    root: str | os.PathLike[str],
    settings: Settings,
    encoder: Encoder,
    *,
    full: bool = False,
    progress: Progress | None = None,
    _fail_after: str | None = None,
) -> BuildReport:
    """Build (or bring up to date) the index at ``root`` from ``loaded`` documents.

    Only documents that are new or changed since the build in use are embedded, unless
    ``full``. The new build replaces the old one atomically; on any error the old one stays.
    ``_fail_after`` names a file after which to raise (tests inject crashes with it).
    """
    started = time.perf_counter()
    root = Path(root)
    with build_lock(root):
        clean_leftovers(root)
        previous = None
        if not full:
            try:
                previous = open_index(root, settings=settings, verify=True)
            except (IndexMissingError, IndexCorruptError, IndexMismatchError):
                previous = None
            if previous is not None and _build_key(previous.manifest) != _wanted_key(settings):
                previous = None
        old_ids = set(previous.documents) if previous else set()
        if previous is not None and {d.id: d.sha256 for d in loaded.documents} == {
            d.id: d.sha256 for d in previous.documents.values()
        }:
            return BuildReport(
                documents=len(loaded.documents), chunks=len(previous.chunks), sentences=len(previous.sentences),
                reused_documents=len(loaded.documents), embedded_documents=0, removed_documents=0,
                skipped=loaded.skipped, seconds=time.perf_counter() - started, path=str(root), up_to_date=True,
            )

        chunks: list[Chunk] = []
        sentences: list[Span] = []
        reuse: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        prev_by_doc = _vectors_by_doc(previous) if previous else {}
        for doc in loaded.documents:
            doc_chunks, doc_sents = chunk_document(doc, settings.chunk_size, settings.chunk_overlap, len(sentences))
            chunks.extend(doc_chunks)
            sentences.extend(doc_sents)
            prev_doc = previous.documents.get(doc.id) if previous else None
            if prev_doc is not None and prev_doc.sha256 == doc.sha256 and doc.id in prev_by_doc:
                reuse[doc.id] = prev_by_doc[doc.id]

        dim = encoder.dim
        chunk_vectors = np.zeros((len(chunks), dim), dtype=np.float32)
        sentence_vectors = np.zeros((len(sentences), dim), dtype=np.float32)
        todo_chunks = [i for i, c in enumerate(chunks) if c.doc not in reuse]
        todo_sents = [i for i, s in enumerate(sentences) if s.doc not in reuse]
        # One call for everything, the background sentences included: a pooled encoder starts
        # its workers once, and this process need not load the model at all.
        background_texts = background_sentences([d.lang for d in loaded.documents])
        background_unique = sorted(set(background_texts))
        texts = [chunks[i].text for i in todo_chunks] + [sentences[i].text for i in todo_sents]
        total = len(texts) + len(background_unique)
        done = 0

        def tick(n: int) -> None:
            nonlocal done
            done += n
            if progress:
                progress(done, total)

        if progress:
            progress(0, total)
        vectors = encode_passages(encoder, texts + background_unique, tick)
        n_chunks, n_texts = len(todo_chunks), len(texts)
        chunk_vectors[todo_chunks] = vectors[:n_chunks]
        sentence_vectors[todo_sents] = vectors[n_chunks:n_texts]
        for doc_id, (cv, sv) in reuse.items():
            chunk_vectors[[i for i, c in enumerate(chunks) if c.doc == doc_id]] = cv
            sentence_vectors[[i for i, s in enumerate(sentences) if s.doc == doc_id]] = sv

        background_vector = background_centroid(background_texts, vectors[n_texts:])
        manifest = {
            "format_version": FORMAT_VERSION,
            "rag_version": __version__,
            "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model": {"spec": settings.model, "id": encoder.model_id, "dim": int(dim), "parts": encoder_parts(encoder)},
            "settings": settings.to_dict(),
            "splitter_version": SPLITTER_VERSION,
            "exact_search_bytes": EXACT_SEARCH_BYTES,
            "counts": {"documents": len(loaded.documents), "chunks": len(chunks), "sentences": len(sentences)},
            "documents": [
                {"id": d.id, "sha256": d.sha256, "chars": len(d.text), "date": d.date, "lang": d.lang}
                for d in loaded.documents
            ],
            "skipped": [{"path": s.path, "reason": s.reason} for s in loaded.skipped],
            "versions": _versions(),
        }
        _write_build(root, manifest, loaded.documents, chunks, sentences, chunk_vectors, sentence_vectors,
                     background_vector, _fail_after)
        clean_leftovers(root)
    return BuildReport(
        documents=len(loaded.documents), chunks=len(chunks), sentences=len(sentences),
        reused_documents=len(reuse), embedded_documents=len(loaded.documents) - len(reuse),
        removed_documents=len(old_ids - {d.id for d in loaded.documents}),
        skipped=loaded.skipped, seconds=time.perf_counter() - started, path=str(root),
    )


def _vectors_by_doc(index: Index) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out: dict[str, tuple[list[int], list[int]]] = {}
    for i, c in enumerate(index.chunks):
        out.setdefault(c.doc, ([], []))[0].append(i)
    for i, s in enumerate(index.sentences):
        out.setdefault(s.doc, ([], []))[1].append(i)
    return {d: (index.chunk_vectors[c], index.sentence_vectors[s]) for d, (c, s) in out.items()}


def _versions() -> dict[str, str]:
    import bm25s
    import faiss

    return {"rag": __version__, "faiss": faiss.__version__, "numpy": np.__version__, "bm25s": bm25s.__version__}


def _write_build(
    root: Path,
    manifest: dict[str, Any],
    documents: Sequence[Document],
    chunks: list[Chunk],
    sentences: list[Span],
    chunk_vectors: np.ndarray,
    sentence_vectors: np.ndarray,
    background_vector: np.ndarray,
    fail_after: str | None,
) -> Path:
    import faiss

    builds = _builds(root)
    builds.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    name = f"{stamp}-{uuid.uuid4().hex[:8]}"
    tmp = builds / f"{TMP_PREFIX}{os.getpid()}-{name}"
    tmp.mkdir()
    doc_pos = {d.id: i for i, d in enumerate(documents)}

    def step(done: str) -> None:
        if fail_after == done:
            raise RuntimeError(f"injected failure after {done}")

    with open(tmp / "documents.jsonl", "w", encoding="utf-8") as out:
        for d in documents:
            row = {"id": d.id, "sha256": d.sha256, "body_start": d.body_start, "date": d.date, "lang": d.lang,
                   "text": d.text}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    step("documents.jsonl")
    np.save(tmp / "chunks.npy", _spans_array(chunks, doc_pos, chunk=True), allow_pickle=False)
    np.save(tmp / "sentences.npy", _spans_array(sentences, doc_pos, chunk=False), allow_pickle=False)
    np.save(tmp / "chunk_vectors.npy", chunk_vectors, allow_pickle=False)
    step("chunk_vectors.npy")
    np.save(tmp / "sentence_vectors.npy", sentence_vectors, allow_pickle=False)
    np.save(tmp / "background.npy", background_vector, allow_pickle=False)
    faiss.write_index(make_faiss(chunk_vectors), str(tmp / "chunks.faiss"))
    step("chunks.faiss")
    faiss.write_index(make_faiss(sentence_vectors), str(tmp / "sentences.faiss"))
    _bm25([c.text for c in chunks]).save(str(tmp / "bm25_chunks"), show_progress=False)
    _bm25([s.text for s in sentences]).save(str(tmp / "bm25_sentences"), show_progress=False)
    step("bm25")
    files = {}
    for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
        files[path.relative_to(tmp).as_posix()] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}
    manifest["files"] = files
    manifest["build"] = name
    with open(tmp / "manifest.json", "w", encoding="utf-8") as out:
        json.dump(manifest, out, ensure_ascii=False, indent=2)
        out.flush()
        os.fsync(out.fileno())
    step("manifest.json")
    _fsync_dir(tmp)
    final = builds / name
    os.rename(tmp, final)
    _fsync_dir(builds)
    step("rename")
    pointer_tmp = root / f"{CURRENT}.{os.getpid()}.tmp"
    with open(pointer_tmp, "w", encoding="utf-8") as out:
        out.write(name + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(pointer_tmp, root / CURRENT)  # the atomic switch
    _fsync_dir(root)
    return final


# ---------------------------------------------------------------------------------- load


def read_manifest(build: Path) -> dict[str, Any]:
    root = build.parent.parent
    fix = f"rebuild with `rag index --full --index {quote(str(root))}`"
    try:
        manifest = json.loads((build / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexCorruptError(f"index {str(root)!r} has no manifest.json: {fix}") from None
    except (OSError, ValueError) as exc:
        raise IndexCorruptError(f"index manifest {build / 'manifest.json'} is unreadable ({exc}): {fix}") from exc
    if not isinstance(manifest, dict):
        raise IndexCorruptError(f"index manifest {build / 'manifest.json'} is not a JSON object: {fix}")
    version = manifest.get("format_version")
    if not isinstance(version, int):
        raise IndexCorruptError(f"index manifest has no format_version: {fix}")
    if version > FORMAT_VERSION:
        raise IndexCorruptError(
            f"index {str(root)!r} has format version {version}, newer than this program reads ({FORMAT_VERSION}): "
            f"upgrade rag, or {fix}"
        )
    if version < FORMAT_VERSION:
        raise IndexCorruptError(f"index {str(root)!r} has old format version {version}: {fix}")
    for key in ("settings", "model", "documents", "files", "counts", "built_at"):
        if key not in manifest:
            raise IndexCorruptError(f"index manifest lacks {key!r}: {fix}")
    return manifest


def verify_files(build: Path, manifest: dict[str, Any], checksums: bool = True) -> None:
    """Check every file the manifest lists: present, same size and (optionally) same SHA-256."""
    fix = f"rebuild with `rag index --full --index {quote(str(build.parent.parent))}`"
    for name, meta in manifest["files"].items():
        path = build / name
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise IndexCorruptError(f"index file {name} is missing: {fix}") from None
        if size != meta.get("bytes"):
            raise IndexCorruptError(f"index file {name} has {size} bytes, the manifest says {meta.get('bytes')}: {fix}")
        if checksums and _sha256(path) != meta.get("sha256"):
            raise IndexCorruptError(f"index file {name} does not match its checksum (damaged or edited): {fix}")


def check_model(manifest: dict[str, Any], settings: Settings, root: Path) -> None:
    have = manifest["settings"].get("model")
    if have != settings.model:
        raise IndexMismatchError(
            f"the index at {str(root)!r} was built with model {have!r}, not {settings.model!r}: "
            f"rebuild it with `rag index --full --model {quote(settings.model)} --index {quote(str(root))}`, "
            f"or ask with --model {have}"
        )


def open_index(root: str | os.PathLike[str], settings: Settings | None = None, verify: bool = True) -> Index:
    """Load the build in use at ``root``, refusing a damaged index or one built with another model."""
    import bm25s
    import faiss

    root = Path(root)
    build = current_build(root)
    manifest = read_manifest(build)
    if settings is not None:
        check_model(manifest, settings, root)
    verify_files(build, manifest, checksums=verify)
    fix = f"rebuild with `rag index --full --index {quote(str(root))}`"
    try:
        documents: dict[str, Document] = {}
        with open(build / "documents.jsonl", encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                documents[row["id"]] = Document(
                    id=row["id"], text=row["text"], sha256=row["sha256"], body_start=row["body_start"],
                    date=row["date"], lang=row["lang"],
                )
        order = list(documents.values())
        chunk_rows = np.load(build / "chunks.npy", allow_pickle=False)
        sent_rows = np.load(build / "sentences.npy", allow_pickle=False)
        # Memory-mapped: FAISS holds its own copy for search; re-scoring reads ~150 rows per
        # question, so only those pages become resident (a loaded copy doubled the RAM at scale).
        # Builds never rewrite a file in place, so the mapping cannot be truncated under us.
        chunk_vectors = np.load(build / "chunk_vectors.npy", allow_pickle=False, mmap_mode="r")
        sentence_vectors = np.load(build / "sentence_vectors.npy", allow_pickle=False, mmap_mode="r")
        background = np.load(build / "background.npy", allow_pickle=False)
        chunk_faiss = faiss.read_index(str(build / "chunks.faiss"))
        sentence_faiss = faiss.read_index(str(build / "sentences.faiss"))
        bm25_chunks = bm25s.BM25.load(str(build / "bm25_chunks"), show_progress=False)
        bm25_sentences = bm25s.BM25.load(str(build / "bm25_sentences"), show_progress=False)
    except (OSError, ValueError, KeyError, RuntimeError, json.JSONDecodeError) as exc:
        raise IndexCorruptError(f"index at {str(root)!r} cannot be read ({type(exc).__name__}: {exc}): {fix}") from exc

    def span(row: np.ndarray) -> tuple[str, int, int, str, int]:
        doc = order[int(row[0])]
        start, end = int(row[1]), int(row[2])
        return doc.id, start, end, doc.text[start:end], int(row[3])

    try:
        sentences = [Span(*span(r)) for r in sent_rows]
        chunks = [Chunk(*span(r), int(r[4]), int(r[5])) for r in chunk_rows]
    except (IndexError, ValueError) as exc:
        raise IndexCorruptError(f"index at {str(root)!r} has inconsistent spans: {fix}") from exc
    dim = int(manifest["model"]["dim"])
    consistent = (
        chunk_vectors.shape == (len(chunks), dim)
        and sentence_vectors.shape == (len(sentences), dim)
        and chunk_faiss.ntotal == len(chunks)
        and sentence_faiss.ntotal == len(sentences)
        and chunk_faiss.d == dim
        and sentence_faiss.d == dim
        and len(documents) == manifest["counts"]["documents"]
        and background.shape == (dim,)
    )
    if not consistent:
        raise IndexCorruptError(f"index at {str(root)!r} has inconsistent sizes or dimensions: {fix}")
    return Index(build, manifest, documents, chunks, sentences, chunk_vectors, sentence_vectors,
                 chunk_faiss, sentence_faiss, bm25_chunks, bm25_sentences, background)
