"""Stage 4, index: the manifest, no pickle, incremental builds, atomic writes, damage detection."""

from __future__ import annotations

import hashlib
import inspect
import json
import re
import shutil
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes import FAKE, FakeEncoder, FakeTermsEncoder
from helpers import SEED_DOC, MakeIndex, write_docs

from rag import index as index_module
from rag.chunk import SPLITTER_VERSION, chunk_document
from rag.encoders import HashEncoder
from rag.errors import IndexCorruptError, IndexMismatchError, IndexMissingError
from rag.index import (
    BUILDS,
    CURRENT,
    FORMAT_VERSION,
    TMP_PREFIX,
    Manifest,
    ModelPart,
    build_index,
    current_build,
    index_status,
    open_index,
    read_manifest,
    verify_index,
)
from rag.index import store as index_store
from rag.load import load_documents
from rag.pipeline import Pipeline
from rag.types import Answer

NEW_DOC = (
    "Le phare de Cordouan a été construit en 1611 par Louis de Foix. "
    "Il se dresse dans l'estuaire de la Gironde.\n\n"
    "Il est classé monument historique depuis 1862."
)
QUESTIONS = ["Qu'a proposé Antony Blinken pour la délimitation des frontières ?", "Qui a reçu un coup de téléphone ?"]
FULL_FIX = "rag index --full"


def document_passages(encoder: FakeEncoder, seeds: Path) -> list[str]:
    """The passages embedded that come from the documents (not, say, generic calibration text)."""
    texts = [d.text for d in load_documents(seeds).documents]
    return [p for p in encoder.passages if any(p in t for t in texts)]


def texts_of(seeds: Path, doc_id: str) -> list[str]:
    """The chunk and sentence texts the index embeds for one document."""
    doc = next(d for d in load_documents(seeds).documents if d.id == doc_id)
    chunks, sentences = chunk_document(doc, FAKE.chunk_size, FAKE.chunk_overlap)
    return [c.text for c in chunks] + [s.text for s in sentences]


def answers(index_dir: Path) -> list[Answer]:
    pipeline = Pipeline.open(index_dir, FAKE, HashEncoder())
    return [pipeline.ask(q) for q in QUESTIONS]


def snapshot(index_dir: Path) -> dict[str, tuple[int, int]]:
    """Every file with its size and modification time."""
    return {
        p.relative_to(index_dir).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in index_dir.rglob("*") if p.is_file()
    }


@pytest.fixture
def built(make_index: MakeIndex, seeds_copy: Path) -> Path:
    return make_index(seeds_copy)


# ------------------------------------------------------------------------------- manifest


def test_a_manifest_is_parsed_again_only_when_its_file_changed(built: Path) -> None:
    """``read_manifest`` keeps what it read by the file's stat: `rag ask` reads one manifest twice."""
    build_dir = current_build(built)
    first = read_manifest(build_dir)
    assert read_manifest(build_dir) is first  # unchanged file: not parsed again
    path = build_dir / "manifest.json"
    text = path.read_text(encoding="utf-8")
    edited = text.replace(f'"built_at": "{first.built_at[:4]}', '"built_at": "1999', 1)  # the same size
    assert edited != text and len(edited.encode("utf-8")) == path.stat().st_size
    path.write_text(edited, encoding="utf-8")
    second = read_manifest(build_dir)
    assert second is not first and second.built_at == "1999" + first.built_at[4:]
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(IndexCorruptError, match="unreadable"):
        read_manifest(build_dir)


def test_manifest_records_how_the_index_was_built(built: Path, seeds_copy: Path) -> None:
    before = datetime.now(timezone.utc)
    build_dir = current_build(built)
    manifest = read_manifest(build_dir)
    on_disk = json.loads((build_dir / "manifest.json").read_text(encoding="utf-8"))
    assert manifest.to_dict() == on_disk  # the typed manifest holds every key, and writes them back alike
    assert list(manifest.to_dict()) == list(on_disk)
    assert Manifest.from_dict(on_disk) == manifest

    assert manifest.format_version == FORMAT_VERSION == 4
    assert (manifest.model.spec, manifest.model.id, manifest.model.dim) == ("hash", "hash-bow-256", 256)
    assert manifest.model.parts == (ModelPart("hash-bow-256", 256, 1.0),)
    assert manifest.settings == FAKE.with_(store="faiss").to_dict()  # the store chosen is recorded
    assert manifest.splitter_version == SPLITTER_VERSION
    built_at = datetime.fromisoformat(manifest.built_at)
    assert built_at.tzinfo is not None
    assert before - timedelta(minutes=5) < built_at <= before + timedelta(seconds=1)

    doc = load_documents(seeds_copy).documents[0]
    chunks, sentences = chunk_document(doc, FAKE.chunk_size, FAKE.chunk_overlap)
    assert on_disk["counts"] == {"documents": 1, "chunks": len(chunks), "sentences": len(sentences), "pages": 1}
    [entry] = manifest.documents
    assert entry.id == SEED_DOC.name
    assert entry.sha256 == hashlib.sha256((seeds_copy / SEED_DOC.name).read_bytes()).hexdigest()
    assert (entry.date, entry.lang, entry.chars, entry.kind, entry.pages) == ("2022-10", "fr", len(doc.text), "text", 0)
    assert set(manifest.versions) >= {"rag", "faiss", "numpy", "bm25s"}
    # each file of the documents folder, with its size and mtime as read, for the quick freshness check
    seed_stat = (seeds_copy / SEED_DOC.name).stat()
    assert [(s.path, s.bytes, s.mtime_ns, s.sha256) for s in manifest.sources] == [
        (SEED_DOC.name, seed_stat.st_size, seed_stat.st_mtime_ns, entry.sha256)]
    assert before - timedelta(minutes=5) < datetime.fromtimestamp(manifest.scanned_ns / 1e9, timezone.utc) <= before

    # every file of the build is listed with its true size and checksum
    files = {p.relative_to(build_dir).as_posix(): p for p in build_dir.rglob("*") if p.is_file()}
    assert set(manifest.files) == set(files) - {"manifest.json"}
    assert {"documents.jsonl", "chunks.npy", "sentences.npy", "chunk_vectors.npy", "sentence_vectors.npy",
            "chunks.faiss", "sentences.faiss"} <= set(manifest.files)
    for name, meta in on_disk["files"].items():
        data = files[name].read_bytes()
        assert meta == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert manifest.build == build_dir.name
    assert (built / CURRENT).read_text(encoding="utf-8").strip() == build_dir.name


def test_only_json_numpy_and_faiss_files_never_pickle(built: Path) -> None:
    allowed = {".json", ".jsonl", ".npy", ".faiss"}
    files = [p for p in built.rglob("*") if p.is_file()]
    assert any(p.suffix == ".npy" for p in files) and any(p.suffix == ".faiss" for p in files)
    for path in files:
        assert path.suffix not in {".pkl", ".pickle", ".joblib"}
        if path.name in {CURRENT, ".lock"}:
            continue
        assert path.suffix in allowed, path
        head = path.read_bytes()[:2]
        assert not (head[:1] == b"\x80" and head[1:2] in {b"\x02", b"\x03", b"\x04", b"\x05"}), f"{path} is a pickle"
        if path.suffix == ".npy":
            array = np.load(path, allow_pickle=False)
            assert array.dtype != object
        elif path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".jsonl":
            for line in path.read_text(encoding="utf-8").splitlines():
                json.loads(line)


def test_opened_index_holds_exactly_what_was_built(built: Path, seeds_copy: Path) -> None:
    index = open_index(built, FAKE)
    doc = load_documents(seeds_copy).documents[0]
    chunks, sentences = chunk_document(doc, FAKE.chunk_size, FAKE.chunk_overlap)
    assert index.documents == {doc.id: doc}
    assert list(index.chunks) == chunks and list(index.sentences) == sentences
    assert index.chunk_vectors is not None and index.sentence_vectors is not None  # FAISS keeps them on disk
    np.testing.assert_allclose(index.chunk_vectors, HashEncoder().encode_passages([c.text for c in chunks]))
    np.testing.assert_allclose(index.sentence_vectors, HashEncoder().encode_passages([s.text for s in sentences]))
    assert index.chunk_faiss.ntotal == len(chunks) and index.sentence_faiss.ntotal == len(sentences)
    assert index.model == "hash"


def test_missing_index_says_how_to_build_it(tmp_path: Path) -> None:
    with pytest.raises(IndexMissingError, match=r"no index at '.*': build it with `rag index --index "):
        open_index(tmp_path / "index")


def test_another_model_is_refused_with_the_fix(built: Path) -> None:
    with pytest.raises(IndexMismatchError, match=re.escape(
        f"was built with model 'hash', not 'e5': rebuild it with `rag index --full --model e5 --index {built}`, "
        "or ask with --model hash"
    )):
        open_index(built, FAKE.with_(model="e5"))


# ------------------------------------------------------------------------------- incremental


def test_adding_a_document_embeds_only_it(built: Path, seeds_copy: Path) -> None:
    old = open_index(built, FAKE)
    (seeds_copy / "sub").mkdir()
    (seeds_copy / "sub" / "phare.txt").write_text(NEW_DOC, encoding="utf-8")
    encoder = FakeEncoder()

    report = build_index(load_documents(seeds_copy), built, FAKE, encoder)

    assert sorted(document_passages(encoder, seeds_copy)) == sorted(texts_of(seeds_copy, "sub/phare.txt"))
    assert (report.embedded_documents, report.reused_documents, report.removed_documents) == (1, 1, 0)
    assert not report.up_to_date and report.documents == 2
    new = open_index(built, FAKE)
    assert set(new.documents) == {SEED_DOC.name, "sub/phare.txt"}
    seed_rows = [i for i, c in enumerate(new.chunks) if c.doc == SEED_DOC.name]
    assert new.chunk_vectors is not None and old.chunk_vectors is not None
    np.testing.assert_array_equal(new.chunk_vectors[seed_rows], old.chunk_vectors)  # reused, not recomputed
    answer = Pipeline(new, HashEncoder(), FAKE).ask("Qui a construit le phare de Cordouan ?")
    assert not answer.abstained and answer.sentences[0].doc == "sub/phare.txt"
    assert "Louis de Foix" in answer.sentences[0].text


def test_a_changed_document_is_re_embedded(built: Path, seeds_copy: Path, make_index: MakeIndex) -> None:
    (seeds_copy / "phare.txt").write_text(NEW_DOC, encoding="utf-8")
    make_index(seeds_copy, index=built)
    changed = NEW_DOC.replace("1611", "1612")
    (seeds_copy / "phare.txt").write_text(changed, encoding="utf-8")
    encoder = FakeEncoder()

    report = build_index(load_documents(seeds_copy), built, FAKE, encoder)

    assert (report.embedded_documents, report.reused_documents) == (1, 1)
    assert sorted(document_passages(encoder, seeds_copy)) == sorted(texts_of(seeds_copy, "phare.txt"))
    assert any("1612" in t for t in encoder.passages)
    index = open_index(built, FAKE)
    assert index.documents["phare.txt"].text == changed
    assert all("1611" not in s.text for s in index.sentences)


def test_a_removed_document_is_dropped(built: Path, seeds_copy: Path, make_index: MakeIndex) -> None:
    (seeds_copy / "phare.txt").write_text(NEW_DOC, encoding="utf-8")
    make_index(seeds_copy, index=built)
    (seeds_copy / "phare.txt").unlink()
    encoder = FakeEncoder()

    report = build_index(load_documents(seeds_copy), built, FAKE, encoder)

    assert document_passages(encoder, seeds_copy) == []
    assert (report.embedded_documents, report.reused_documents, report.removed_documents) == (0, 1, 1)
    index = open_index(built, FAKE)
    assert set(index.documents) == {SEED_DOC.name}
    assert {c.doc for c in index.chunks} == {s.doc for s in index.sentences} == {SEED_DOC.name}
    assert index.manifest.counts.documents == 1


def test_unchanged_documents_write_nothing(built: Path, seeds_copy: Path) -> None:
    before = snapshot(built)
    encoder = FakeEncoder()

    report = build_index(load_documents(seeds_copy), built, FAKE, encoder)

    assert report.up_to_date
    assert (report.embedded_documents, report.reused_documents) == (0, 1)
    assert encoder.passages == []
    assert snapshot(built) == before


def test_full_rebuild_embeds_everything(built: Path, seeds_copy: Path, make_index: MakeIndex) -> None:
    (seeds_copy / "phare.txt").write_text(NEW_DOC, encoding="utf-8")
    make_index(seeds_copy, index=built)
    first = current_build(built).name
    encoder = FakeEncoder()

    report = build_index(load_documents(seeds_copy), built, FAKE, encoder, full=True)

    assert (report.embedded_documents, report.reused_documents) == (2, 0)
    expected = texts_of(seeds_copy, SEED_DOC.name) + texts_of(seeds_copy, "phare.txt")
    assert sorted(document_passages(encoder, seeds_copy)) == sorted(expected)
    assert current_build(built).name != first


def test_other_chunk_settings_re_embed_everything(built: Path, seeds_copy: Path) -> None:
    encoder = FakeEncoder()
    settings = FAKE.with_(chunk_size=300, chunk_overlap=50)
    report = build_index(load_documents(seeds_copy), built, settings, encoder)
    assert report.embedded_documents == 1 and document_passages(encoder, seeds_copy)
    assert read_manifest(current_build(built)).settings["chunk_size"] == 300


def test_progress_reports_passages_done(tmp_path: Path, seeds_copy: Path) -> None:
    calls: list[tuple[int, int]] = []
    build_index(load_documents(seeds_copy), tmp_path / "index", FAKE, HashEncoder(),
                progress=lambda done, total: calls.append((done, total)))
    # every chunk and sentence, and the generic sentences of the documents' languages (abstention baseline)
    background = index_module.background_sentences([d.lang for d in load_documents(seeds_copy).documents])
    total = len(texts_of(seeds_copy, SEED_DOC.name)) + len(set(background))
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_index_status(tmp_path: Path, seeds_copy: Path, make_index: MakeIndex) -> None:
    index_dir = tmp_path / "index"
    assert index_status(index_dir, load_documents(seeds_copy), FAKE) == "missing"
    make_index(seeds_copy, index=index_dir)
    assert index_status(index_dir, load_documents(seeds_copy), FAKE) == "ok"
    assert index_status(index_dir, load_documents(seeds_copy), FAKE.with_(model="e5")) == "mismatch"
    assert index_status(index_dir, load_documents(seeds_copy), FAKE.with_(chunk_size=500)) == "stale"
    (seeds_copy / "phare.txt").write_text(NEW_DOC, encoding="utf-8")
    assert index_status(index_dir, load_documents(seeds_copy), FAKE) == "stale"


def test_old_builds_are_pruned(built: Path, seeds_copy: Path, make_index: MakeIndex) -> None:
    for year in (1611, 1612, 1613):
        (seeds_copy / "phare.txt").write_text(NEW_DOC.replace("1611", str(year)), encoding="utf-8")
        make_index(seeds_copy, index=built)
    builds = sorted(p.name for p in (built / BUILDS).iterdir())
    assert len(builds) == 2  # the build in use and the one before it, for readers that just read CURRENT
    assert current_build(built).name == builds[-1]


# ------------------------------------------------------------------------------- crash safety


def _write_steps() -> list[str]:
    steps = re.findall(r'\bstep\("([^"]+)"\)', inspect.getsource(index_store.write_build))
    assert {"chunks.faiss", "manifest.json", "rename"} <= set(steps), steps
    return steps


@pytest.mark.parametrize("step", _write_steps())
def test_a_failure_mid_write_keeps_the_old_index(built: Path, seeds_copy: Path, step: str) -> None:
    before = answers(built)
    in_use = current_build(built).name
    (seeds_copy / "phare.txt").write_text(NEW_DOC, encoding="utf-8")

    with pytest.raises(RuntimeError, match=f"injected failure after {re.escape(step)}"):
        build_index(load_documents(seeds_copy), built, FAKE, HashEncoder(), _fail_after=step)

    assert current_build(built).name == in_use
    open_index(built, FAKE, verify=True)
    assert answers(built) == before
    leftovers = [p.name for p in (built / BUILDS).iterdir() if p.name.startswith(TMP_PREFIX)]
    if step != "rename":
        assert leftovers, "the interrupted build should have left its temporary folder"

    # the next build finishes the job and cleans up
    report = build_index(load_documents(seeds_copy), built, FAKE, HashEncoder())

    assert report.embedded_documents == 1 and not report.up_to_date
    assert not [p for p in (built / BUILDS).iterdir() if p.name.startswith(TMP_PREFIX)]
    assert not list(built.glob(f"{CURRENT}.*"))
    assert "phare.txt" in open_index(built, FAKE).documents


def test_a_build_never_switched_to_is_removed_before_the_build_in_use(built: Path, seeds_copy: Path,
                                                                       make_index: MakeIndex) -> None:
    in_use = current_build(built).name
    (seeds_copy / "phare.txt").write_text(NEW_DOC, encoding="utf-8")
    with pytest.raises(RuntimeError):
        # renamed into builds/, CURRENT not switched
        build_index(load_documents(seeds_copy), built, FAKE, HashEncoder(), _fail_after="rename")
    orphan = {p.name for p in (built / BUILDS).iterdir()} - {in_use}
    assert len(orphan) == 1

    make_index(seeds_copy, index=built)

    # the build that was in use stays for readers that read CURRENT just before the switch
    assert sorted(p.name for p in (built / BUILDS).iterdir()) == sorted([in_use, current_build(built).name])


# ------------------------------------------------------------------------------- damage


def _edit_manifest(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(build_dir: Path) -> None:
        path = build_dir / "manifest.json"
        manifest = json.loads(path.read_text(encoding="utf-8"))
        change(manifest)
        path.write_text(json.dumps(manifest), encoding="utf-8")
    return apply


def _truncate(name: str, keep: float = 0.5) -> Callable[[Path], None]:
    def apply(build_dir: Path) -> None:
        path = build_dir / name
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])
    return apply


def _truncate_and_fix_manifest(name: str) -> Callable[[Path], None]:
    """A truncated file whose manifest entry was updated too: only reading the file finds it."""
    def apply(build_dir: Path) -> None:
        _truncate(name)(build_dir)
        data = (build_dir / name).read_bytes()
        _edit_manifest(lambda m: m["files"].__setitem__(
            name, {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}))(build_dir)
    return apply


def _flip_byte(name: str) -> Callable[[Path], None]:
    def apply(build_dir: Path) -> None:
        path = build_dir / name
        data = bytearray(path.read_bytes())
        data[-3] ^= 0xFF
        path.write_bytes(bytes(data))
    return apply


def _edit_rows(name: str, edit: Callable[[np.ndarray], np.ndarray | None]) -> Callable[[Path], None]:
    """Span rows edited (out of range, or another shape), the manifest updated to match: only open's check finds it."""
    def apply(build_dir: Path) -> None:
        rows = np.load(build_dir / name)
        changed = edit(rows)
        np.save(build_dir / name, rows if changed is None else changed, allow_pickle=False)
        data = (build_dir / name).read_bytes()
        _edit_manifest(lambda m: m["files"].__setitem__(
            name, {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}))(build_dir)
    return apply


def _set_dim(manifest: dict) -> None:
    manifest["model"]["dim"] = 128


def _set_chunks(manifest: dict) -> None:
    manifest["counts"]["documents"] = 7


DAMAGE = {
    "future format": (_edit_manifest(lambda m: m.__setitem__("format_version", FORMAT_VERSION + 1)),
                      rf"has format version {FORMAT_VERSION + 1}, newer than this program reads \({FORMAT_VERSION}\): "
                      r"upgrade rag, or rebuild with `rag index --full"),
    "old format": (_edit_manifest(lambda m: m.__setitem__("format_version", 0)),
                   r"has the old format version 0 \(this program reads 4\): rebuild with `rag index --full --index "),
    "no format": (_edit_manifest(lambda m: m.pop("format_version")), r"has no format_version"),
    "manifest not json": (_truncate("manifest.json"), r"manifest\.json is unreadable"),
    "manifest not an object": (lambda b: (b / "manifest.json").write_text("[]"), r"is not a JSON object"),
    "manifest key removed": (_edit_manifest(lambda m: m.pop("files")), r"index manifest lacks 'files'"),
    "manifest dimension edited": (_edit_manifest(_set_dim), r"inconsistent sizes or dimensions"),
    "manifest counts edited": (_edit_manifest(_set_chunks), r"inconsistent sizes or dimensions"),
    "truncated faiss": (_truncate("chunks.faiss"), r"index file chunks\.faiss has \d+ bytes, the manifest says \d+"),
    "truncated faiss, manifest updated": (_truncate_and_fix_manifest("chunks.faiss"), r"cannot be read"),
    "truncated vectors, manifest updated": (_truncate_and_fix_manifest("sentence_vectors.npy"), r"cannot be read"),
    "bad documents, manifest updated": (_truncate_and_fix_manifest("documents.jsonl"), r"cannot be read"),
    "missing file": (lambda b: (b / "sentences.npy").unlink(), r"index file sentences\.npy is missing"),
    "sentence past its text": (_edit_rows("sentences.npy", lambda r: r.__setitem__((-1, 2), 10**9)),
                               r"inconsistent spans \(sentence \d+ lies outside its document's text\)"),
    "chunk with start after end": (_edit_rows("chunks.npy", lambda r: r.__setitem__((0, 1), r[0, 2] + 1)),
                                   r"inconsistent spans \(chunk 0 lies outside its document's text\)"),
    "negative start": (_edit_rows("sentences.npy", lambda r: r.__setitem__((1, 1), -1)),
                       r"inconsistent spans \(sentence 1 lies outside"),
    "unknown document": (_edit_rows("chunks.npy", lambda r: r.__setitem__((0, 0), 5)),
                         r"inconsistent spans \(chunk 0 names a document that is not in the index\)"),
    "negative document": (_edit_rows("sentences.npy", lambda r: r.__setitem__((0, 0), -1)),
                          r"inconsistent spans \(sentence 0 names a document"),
    "chunk past the sentences": (_edit_rows("chunks.npy", lambda r: r.__setitem__((-1, 5), r[-1, 5] + 1)),
                                 r"inconsistent spans \(chunk \d+ names sentences that are not in the index\)"),
    "span rows of another width": (_edit_rows("sentences.npy", lambda r: r[:, :3].copy()),
                                   r"inconsistent spans \(sentences\.npy has shape \(\d+, 3\)"),
    "missing bm25 file": (lambda b: (b / "bm25_chunks" / "vocab.index.json").unlink(),
                          r"index file bm25_chunks/vocab\.index\.json is missing"),
    "missing manifest": (lambda b: (b / "manifest.json").unlink(), r"has no manifest\.json"),
    "missing build": (lambda b: shutil.rmtree(b), r"points to a missing build"),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_damage_is_refused_with_the_fix(built: Path, seeds_copy: Path, damage: str, make_index: MakeIndex) -> None:
    harm, message = DAMAGE[damage]
    harm(current_build(built))

    with pytest.raises(IndexCorruptError, match=message) as caught:
        open_index(built, FAKE)
    assert FULL_FIX in str(caught.value)
    assert "\n" not in str(caught.value)

    # the fix the message names works
    make_index(seeds_copy, index=built, full=True)
    assert answers(built)[0].sentences


# Opening checks sizes, not checksums: these are found by ``verify_index`` (``rag verify``) and by builds.
SAME_SIZE_DAMAGE = {
    "manifest checksum edited": (_edit_manifest(lambda m: m["files"]["chunks.npy"].__setitem__("sha256", "0" * 64)),
                                 r"index file chunks\.npy does not match its checksum"),
    "flipped byte": (_flip_byte("sentence_vectors.npy"), r"sentence_vectors\.npy does not match its checksum"),
}


@pytest.mark.parametrize("damage", SAME_SIZE_DAMAGE, ids=list(SAME_SIZE_DAMAGE))
def test_same_size_damage_is_found_by_verify_and_by_the_next_build(built: Path, seeds_copy: Path,
                                                                    damage: str) -> None:
    harm, message = SAME_SIZE_DAMAGE[damage]
    harm(current_build(built))
    [problem] = verify_index(built).problems
    assert re.search(message, problem.message) and FULL_FIX in problem.message
    with pytest.raises(IndexCorruptError, match=message):
        open_index(built, FAKE, verify=True)  # what a build does before reusing vectors
    report = build_index(load_documents(seeds_copy), built, FAKE, HashEncoder())
    assert report.embedded_documents == 1  # nothing trusted from the damaged build
    assert verify_index(built).ok


def test_a_damaged_index_is_rebuilt_by_the_next_incremental_build(built: Path, seeds_copy: Path) -> None:
    _truncate("chunks.faiss")(current_build(built))
    report = build_index(load_documents(seeds_copy), built, FAKE, HashEncoder())
    assert report.embedded_documents == 1  # nothing trusted from the damaged build
    open_index(built, FAKE)


def test_exact_search_up_to_the_byte_budget_then_hnsw(monkeypatch: pytest.MonkeyPatch) -> None:
    import faiss

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((300, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    monkeypatch.setattr(index_store, "EXACT_SEARCH_BYTES", vectors.nbytes)
    assert isinstance(index_store.make_faiss(vectors), faiss.IndexFlatIP)
    monkeypatch.setattr(index_store, "EXACT_SEARCH_BYTES", vectors.nbytes - 1)
    hnsw = index_store.make_faiss(vectors)
    assert isinstance(hnsw, faiss.IndexHNSWFlat) and hnsw.ntotal == 300
    flat = faiss.IndexFlatIP(64)
    flat.add(vectors)
    _, want = flat.search(vectors[:50], 10)
    _, got = hnsw.search(vectors[:50], 10)
    recall = np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got, want, strict=True)])
    assert recall >= 0.95


@pytest.mark.parametrize("exact", [True, False])
def test_a_graph_built_from_the_saved_vectors_in_batches_is_the_one_built_from_the_array(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, exact: bool) -> None:
    import faiss

    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((301, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    monkeypatch.setattr(index_store, "EXACT_SEARCH_BYTES", vectors.nbytes if exact else 0)
    np.save(tmp_path / "v.npy", vectors)
    from_file = index_store.faiss_from_npy(tmp_path / "v.npy", batch_rows=64)  # 5 batches, the last one short
    kind = faiss.IndexFlatIP if exact else faiss.IndexHNSWFlat
    assert isinstance(from_file, kind) and from_file.ntotal == 301
    np.testing.assert_array_equal(from_file.reconstruct_n(0, 301), vectors)  # every row, in order
    if exact:
        want_d, want_i = index_store.make_faiss(vectors).search(vectors[:20], 5)
        got_d, got_i = from_file.search(vectors[:20], 5)
        np.testing.assert_array_equal(got_i, want_i)
        np.testing.assert_array_equal(got_d, want_d)
    else:
        _, got = from_file.search(vectors[:50], 1)
        assert (got[:, 0] == np.arange(50)).mean() >= 0.95  # each vector finds itself


def test_saved_vectors_cut_short_are_reported(tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", np.ones((10, 8), dtype=np.float32))
    data = (tmp_path / "v.npy").read_bytes()
    (tmp_path / "v.npy").write_bytes(data[: len(data) - 4 * 8 * 3])
    with pytest.raises(IndexCorruptError, match="ended after 56 of 80 values"):
        index_store.faiss_from_npy(tmp_path / "v.npy", batch_rows=4)


def test_saved_vectors_of_another_kind_are_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", np.ones((10, 8), dtype=np.float64))
    with pytest.raises(IndexCorruptError, match="float32 array"):
        index_store.faiss_from_npy(tmp_path / "v.npy")


def test_the_vectors_are_handed_over_once() -> None:
    chunks, sentences = np.zeros((2, 4), dtype=np.float32), np.ones((3, 4), dtype=np.float32)
    handover = index_store.VectorHandover(chunks, sentences)
    got = handover.take()
    assert got[0] is chunks and got[1] is sentences
    with pytest.raises(RuntimeError, match="handed over already"):
        handover.take()


def test_a_build_frees_the_encoders_vectors_before_the_graphs_are_built(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, seeds_copy: Path) -> None:
    """The encoder's array is gone (no reference left anywhere) when FAISS reads the saved vectors."""
    import weakref

    refs: list[weakref.ref[np.ndarray]] = []
    encoder = HashEncoder()
    encode = encoder.encode_passages

    def remember(texts: Any, progress: Any = None) -> np.ndarray:
        out = encode(texts, progress)
        refs.append(weakref.ref(out))
        return out

    monkeypatch.setattr(encoder, "encode_passages", remember)
    alive: list[bool] = []
    read_back = index_store.faiss_from_npy

    def check(path: Path, batch_rows: int = index_store.FAISS_BATCH_ROWS) -> Any:
        alive.append(any(r() is not None for r in refs))
        return read_back(path, batch_rows)

    monkeypatch.setattr(index_store, "faiss_from_npy", check)
    build_index(load_documents(seeds_copy), tmp_path / "idx", FAKE, encoder)
    assert refs and alive == [False, False]


def test_an_hnsw_index_answers_like_exact_search(monkeypatch: pytest.MonkeyPatch, seeds_copy: Path,
                                                 make_index: MakeIndex) -> None:
    exact_dir = make_index(seeds_copy, index="exact")
    monkeypatch.setattr(index_store, "EXACT_SEARCH_BYTES", 0)
    hnsw_dir = make_index(seeds_copy, index="hnsw")
    hnsw = open_index(hnsw_dir, FAKE)
    assert "HNSW" in type(hnsw.chunk_faiss).__name__ and "HNSW" in type(hnsw.sentence_faiss).__name__
    exact_pipe = Pipeline.open(exact_dir, FAKE, HashEncoder())
    hnsw_pipe = Pipeline.open(hnsw_dir, FAKE, HashEncoder())
    for question in ("Qu'a proposé Blinken ?", "Où se sont rencontrés les dirigeants ?", "What about Geneva?"):
        assert hnsw_pipe.ask(question) == exact_pipe.ask(question)


def test_vectors_are_read_only_maps_that_survive_the_next_build(seeds_copy: Path, make_index: MakeIndex) -> None:
    index_dir = make_index(seeds_copy)
    old_build = current_build(index_dir)
    pipe = Pipeline.open(index_dir, FAKE, HashEncoder())
    assert isinstance(pipe.index.chunk_vectors, np.memmap) and not pipe.index.chunk_vectors.flags.writeable
    question = "Qu'a proposé Blinken ?"
    before = pipe.ask(question)
    (seeds_copy / "new.txt").write_text(NEW_DOC, encoding="utf-8")
    make_index(seeds_copy, index=index_dir)
    shutil.rmtree(old_build)  # the files under the old maps are unlinked, as a clean-up would
    assert not old_build.exists()
    assert pipe.ask(question) == before  # unlinked files stay readable through their mapping


def test_chunks_per_document_counts_the_rows_as_the_chunks_do(built: Path) -> None:
    from collections import Counter

    index = open_index(built, FAKE)
    counted = Counter(c.doc for c in index.chunks)
    assert index.chunks_per_document() == {d: counted.get(d, 0) for d in index.documents}
    assert sum(index.chunks_per_document().values()) == len(index.chunks) > 0


def test_latent_terms_of_reused_documents_are_copied_in_document_order(tmp_path: Path, make_index: MakeIndex) -> None:
    docs = write_docs(tmp_path / "docs", {"b.txt": "Blinken called Aliyev. They spoke of Geneva.\n",
                                          "c.txt": "The Red Cross holds information. Graves were found.\n"})
    make_index(docs, index="inc", encoder=FakeTermsEncoder())
    # a new document sorts first: every reused sentence moves to another row
    (docs / "a.txt").write_text("Prague hosted the leaders. A declaration was adopted.\n", encoding="utf-8")
    encoder = FakeTermsEncoder()
    report = build_index(load_documents(docs), tmp_path / "inc", FAKE, encoder)
    assert report.reused_documents == 2 and not any("Blinken" in t for t in encoder.passages)
    make_index(docs, index="full", encoder=FakeTermsEncoder())
    inc, full = open_index(tmp_path / "inc", FAKE), open_index(tmp_path / "full", FAKE)
    assert [s.text for s in inc.sentences] == [s.text for s in full.sentences]
    assert inc.sentence_terms is not None and full.sentence_terms is not None
    assert np.array_equal(inc.sentence_terms[0], full.sentence_terms[0])
    assert np.array_equal(inc.sentence_terms[1], full.sentence_terms[1])
    assert inc.sentence_terms[1].any(axis=1).all()  # every sentence has terms
