"""Stage 1, load: which files become documents, their metadata, and what is skipped and why."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from helpers import SEED_DOC, SEEDS

from rag.chunk import chunk_document
from rag.errors import DocumentsError
from rag.load import detect_language, load_documents, parse_document, scan_sources
from rag.settings import Settings

BOM = "\ufeff"


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


def file_text(path: Path) -> str:
    """The text every offset indexes: decoded as UTF-8, newlines untouched."""
    with open(path, encoding="utf-8", newline="") as handle:
        return handle.read()


def test_reads_documents_recursively_and_ignores_the_rest(tmp_path: Path) -> None:
    write(tmp_path / "a.txt", "Alpha is the first letter of the Greek alphabet.")
    write(tmp_path / "sub" / "b.md", "# Beta\n\nBeta is the second letter of the Greek alphabet.")
    write(tmp_path / "sub" / "deeper" / "c.TXT", "Gamma is the third letter of the Greek alphabet.")
    write(tmp_path / "notes.rst", "Not a supported suffix.")
    write(tmp_path / "d.odt", b"PK not a supported format")
    write(tmp_path / ".hidden.txt", "Hidden files are not documents.")
    write(tmp_path / ".git" / "HEAD.txt", "Nor is anything in a hidden folder.")

    result = load_documents(str(tmp_path))

    assert [d.id for d in result.documents] == ["a.txt", "sub/b.md", "sub/deeper/c.TXT"]
    assert result.skipped == ()  # unsupported suffixes are not candidates at all, so not "skipped"
    for doc in result.documents:
        assert doc.text == file_text(tmp_path / doc.id)


def test_seed_document_date_prefix_is_metadata_not_text() -> None:
    result = load_documents(SEEDS)
    doc = next(d for d in result.documents if d.id == SEED_DOC.name)
    raw = file_text(SEED_DOC)

    assert raw.startswith(" date 2022-10 Le 10 octobre")
    assert doc.date == "2022-10"
    assert doc.text == raw  # offsets index the whole file, prefix included
    assert doc.body.startswith("Le 10 octobre, le président")
    assert doc.body_start == raw.index("Le 10 octobre")
    assert doc.sha256 == hashlib.sha256(SEED_DOC.read_bytes()).hexdigest()
    assert doc.lang == "fr"

    settings = Settings()
    chunks, sentences = chunk_document(doc, settings.chunk_size, settings.chunk_overlap)
    assert chunks and sentences
    for span in [*chunks, *sentences]:
        assert span.start >= doc.body_start
        assert "date 2022-10" not in span.text
        assert raw[span.start : span.end] == span.text
    assert sentences[0].text.startswith("Le 10 octobre")


@pytest.mark.parametrize(
    ("data", "date", "body"),
    [
        (BOM + "date 2021-05\nLe texte commence ici. Deuxième phrase.", "2021-05", "Le texte commence ici."),
        (BOM + "  Hello there, this is the text. A second sentence.", None, "Hello there, this is the text."),
        ("date: 2021-03-04 Bonjour, voici un texte. Et une suite.", "2021-03-04", "Bonjour, voici un texte."),
        ("date 2020-01\r\n\r\nWindows line ends. Another sentence.\r\n\r\nA paragraph.", "2020-01", "Windows"),
        # only a leading prefix is metadata
        ("Le rapport date 2022-10 est public. Il est court.", None, "Le rapport date 2022-10"),
        ("update 2022-10 is not a date prefix. Fine.", None, "update 2022-10"),
    ],
)
def test_bom_date_prefix_and_line_ends(tmp_path: Path, data: str, date: str | None, body: str) -> None:
    path = write(tmp_path / "doc.txt", data)
    doc = load_documents(tmp_path).documents[0]
    raw = file_text(path)

    assert doc.text == raw
    assert doc.date == date
    assert doc.body.startswith(body)
    _, sentences = chunk_document(doc, 1200, 200)
    assert sentences[0].text.startswith(body)
    for s in sentences:
        assert raw[s.start : s.end] == s.text
        assert BOM not in s.text and "\r" not in s.text


def test_skips_binary_empty_and_undecodable_files_naming_them(tmp_path: Path) -> None:
    write(tmp_path / "good.txt", "A readable document about lighthouses.")
    write(tmp_path / "binary.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    write(tmp_path / "empty.md", b"")
    write(tmp_path / "blank.txt", " \n\n\t \n")
    write(tmp_path / "only-date.txt", "date 2022-10\n")
    write(tmp_path / "sub" / "latin1.txt", "Un café à Besançon.".encode("latin-1"))

    result = load_documents(tmp_path)

    assert [d.id for d in result.documents] == ["good.txt"]
    reasons = {s.path: s.reason for s in result.skipped}
    assert set(reasons) == {"binary.txt", "empty.md", "blank.txt", "only-date.txt", "sub/latin1.txt"}
    assert "binary" in reasons["binary.txt"]
    assert "empty" in reasons["empty.md"]
    assert "empty" in reasons["blank.txt"]
    assert "empty" in reasons["only-date.txt"]
    assert reasons["sub/latin1.txt"].startswith("not valid UTF-8 (byte ")


def test_pipes_and_undecodable_file_names_are_skipped(tmp_path: Path) -> None:
    write(tmp_path / "good.txt", "A readable document about lighthouses.")
    os.mkfifo(tmp_path / "pipe.txt")  # reading it would block forever
    try:
        with open(os.path.join(os.fsencode(tmp_path), b"caf\xe9.txt"), "wb") as handle:
            handle.write(b"Latin-1 file name, UTF-8 content.")
        bad_name = True
    except OSError:  # a file system that refuses non-UTF-8 names
        bad_name = False

    result = load_documents(tmp_path)

    assert [d.id for d in result.documents] == ["good.txt"]
    reasons = {s.path: s.reason for s in result.skipped}
    assert "not a regular file" in reasons.pop("pipe.txt")
    if bad_name:
        [(name, reason)] = reasons.items()
        assert name.startswith("caf") and name.endswith(".txt")
        assert "not valid UTF-8" in reason
        name.encode("utf-8")  # printable: no lone surrogates
    assert len(result.skipped) == 1 + bad_name


def test_empty_folder_is_a_clear_error(tmp_path: Path) -> None:
    expected = r"no readable document in '.*': add documents \(\.txt, \.md, .*\.pdf, .*\.docx\) to it"
    with pytest.raises(DocumentsError, match=expected):
        load_documents(tmp_path)


def test_folder_of_unreadable_files_names_one_of_them(tmp_path: Path) -> None:
    write(tmp_path / "binary.txt", b"\x00\x01\x02")
    with pytest.raises(DocumentsError, match=r"1 file\(s\) skipped: binary\.txt: binary file"):
        load_documents(tmp_path)


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DocumentsError, match=r"documents folder '.*nowhere' does not exist: create it and put"):
        load_documents(tmp_path / "nowhere")


def test_a_file_is_not_a_folder(tmp_path: Path) -> None:
    path = write(tmp_path / "a.txt", "Some text.")
    with pytest.raises(DocumentsError, match="does not exist"):
        load_documents(path)


def test_symlink_loop_is_followed_once(tmp_path: Path) -> None:
    write(tmp_path / "docs" / "a.txt", "A document inside a folder that links to itself.")
    (tmp_path / "docs" / "loop").symlink_to(tmp_path / "docs", target_is_directory=True)
    result = load_documents(tmp_path / "docs")
    assert [d.id for d in result.documents] == ["a.txt"]


def test_parse_document_rejects_binary_and_bad_utf8() -> None:
    with pytest.raises(ValueError, match="binary file"):
        parse_document("x.txt", b"text\x00more")
    with pytest.raises(ValueError, match=r"not valid UTF-8 \(byte 3\)"):
        parse_document("x.txt", b"caf\xe9")


def test_language_detection() -> None:
    assert detect_language("Le président a reçu un coup de téléphone du secrétaire d'État.") == "fr"
    assert detect_language("Der Präsident erhielt einen Anruf vom amerikanischen Außenminister.") == "de"
    assert detect_language("El presidente recibió una llamada del secretario de Estado.") == "es"
    assert detect_language("Hi") is None  # too short to tell


def test_the_language_model_loads_once_whoever_asks_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """``Pipeline.open`` loads it in a thread; a question arriving meanwhile waits for that load."""
    import threading

    import py3langid

    from rag import load

    calls: list[str] = []
    real = py3langid.classify

    def counted(text: str) -> tuple[str, float]:
        calls.append(text)
        return real(text)

    monkeypatch.setattr(load, "_identifier_loaded", False)
    monkeypatch.setattr(py3langid, "classify", counted)
    threads = [threading.Thread(target=load.load_language_identifier) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert detect_language("Der Präsident erhielt einen Anruf vom amerikanischen Außenminister.") == "de"
    assert len(calls) == 2  # the question itself, no second load


@pytest.mark.parametrize("spelling", ["path", "trailing slash", "dot"])
def test_the_quick_scan_finds_what_loading_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   spelling: str) -> None:
    """``scan_sources`` (the quick freshness check, stat only) and ``load_documents().sources`` agree
    on every candidate: the same ids, order, sizes and mtimes, whatever the root's spelling."""
    docs = tmp_path / "docs"
    write(docs / "a.txt", "Alpha is the first letter of the Greek alphabet.")
    write(docs / "sub" / "deeper" / "c.TXT", "Gamma is the third letter of the Greek alphabet.")
    write(tmp_path / "elsewhere" / "e.md", "Epsilon lives outside and is linked in.")
    (docs / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (docs / "dangling.txt").symlink_to(tmp_path / "nowhere.txt")  # a candidate that cannot be stat'ed
    os.mkfifo(docs / "pipe.txt")
    write(docs / ".hidden.txt", "Not a candidate.")
    write(docs / "notes.rst", "Not a candidate either.")
    if spelling == "dot":
        monkeypatch.chdir(docs)
        root: str | Path = "."
    else:
        root = str(docs) + "/" if spelling == "trailing slash" else docs

    scanned = scan_sources(root)
    loaded = load_documents(root).sources

    assert [s.path for s in scanned] == ["a.txt", "dangling.txt", "pipe.txt", "linked/e.md", "sub/deeper/c.TXT"]
    assert [(s.path, s.bytes, s.mtime_ns) for s in scanned] == [(s.path, s.bytes, s.mtime_ns) for s in loaded]
    assert next(s for s in scanned if s.path == "dangling.txt").bytes == -1
