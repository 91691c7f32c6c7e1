"""What the chat app shows, as pure functions and one resource holder; no Streamlit import here.

Everything a document, a file name or a question contributes to the page goes through
``escape_html`` (for HTML the app renders with ``unsafe_allow_html``) or ``escape_label``
(for widget labels, which Streamlit reads as Markdown), so document text always shows as text.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from .chunk import paragraphs
from .encoders import Encoder
from .errors import IndexMissingError, RagError
from .index import Index, Progress, build_index, current_build, settings_for
from .library import Added, add_file, remove_document
from .load import LoadProgress, load_documents
from .pipeline import Pipeline, encoder_for, ensure_index
from .settings import Paths, Settings
from .types import Answer, BuildReport, Document, Quote, SkippedFile

__all__ = [
    "AnswerView",
    "AppConfig",
    "ChatMessage",
    "DocumentRow",
    "Engine",
    "IndexFacts",
    "PassageView",
    "RebuildStatus",
    "answer_view",
    "escape_html",
    "escape_label",
    "highlight_html",
    "history_for",
    "passage_span",
    "readable_time",
    "text_block",
]

# Characters that HTML or Markdown (including Streamlit's $math$, :emoji: and :color[] syntax)
# could read as markup. As numeric character references they show as themselves in an HTML
# block and in Markdown text alike, and can never open a tag, a link or a formula.
_MARKUP = "&<>\"'\\`*_{}[]()#+-.!|~$:=^%@"
_HTML_TABLE = {ord(c): f"&#{ord(c)};" for c in _MARKUP}
# Widget labels do not take HTML, only Markdown; a backslash escapes any ASCII punctuation there.
_LABEL_TABLE = {ord(c): "\\" + c for c in "\\`*_{}[]()#+-.!|~$:<>&=^"}


def escape_html(text: str) -> str:
    """``text`` as inert HTML on one line: markup characters as references, line breaks as ``<br>``.

    Keeping it on one line matters: Streamlit's Markdown ends an HTML block at a blank line
    and would read what follows as Markdown.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "<br>".join(line.translate(_HTML_TABLE) for line in lines)


def text_block(text: str, css_class: str = "rag-text") -> str:
    """``text`` as an inert one-line HTML block for ``st.markdown(..., unsafe_allow_html=True)``.

    Inside an HTML block Streamlit's Markdown runs no inline syntax at all, emoji shortcodes included.
    """
    return f'<div class="{css_class}">{escape_html(text)}</div>'


def escape_label(text: str) -> str:
    """``text`` for a Streamlit widget label (Markdown): punctuation backslash-escaped, on one line."""
    return " ".join(text.split()).translate(_LABEL_TABLE)


def highlight_html(text: str, start: int, end: int, marks: Sequence[tuple[int, int]] = ()) -> str:
    """``text[start:end]`` escaped, with each ``(start, end)`` in ``marks`` wrapped in ``<mark>``.

    Offsets are into ``text`` (the whole document), so a citation's span can be passed as is;
    marks are clipped to the passage, and overlapping ones merged.
    """
    clipped = sorted((max(s, start), min(e, end)) for s, e in marks if min(e, end) > max(s, start))
    merged: list[list[int]] = []
    for s, e in clipped:
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    out, pos = [], start
    for s, e in merged:
        out.append(escape_html(text[pos:s]))
        out.append(f"<mark>{escape_html(text[s:e])}</mark>")
        pos = e
    out.append(escape_html(text[pos:end]))
    return "".join(out)


def readable_time(iso: str) -> str:
    """``2026-11-29T03:11:26+00:00`` as ``2026-11-29 03:11 UTC``; anything unparsable as it is."""
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if moment.tzinfo is not None:
        return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return moment.strftime("%Y-%m-%d %H:%M")


def passage_span(citation: Quote, sources: Sequence[Quote], document: Document | None) -> tuple[int, int]:
    """The passage to show around a cited sentence: the retrieved passage holding it, else its paragraph."""
    for source in sources:
        if source.doc == citation.doc and source.start <= citation.start and citation.end <= source.end:
            return source.start, source.end
    if document is not None:
        for paragraph in paragraphs(document):
            if paragraph.start <= citation.start < paragraph.end:
                return paragraph.start, max(paragraph.end, citation.end)
    return citation.start, citation.end


# ---------------------------------------------------------------------------------- views


@dataclass(frozen=True)
class PassageView:
    """One source as shown: a Markdown-safe label and the escaped passage HTML."""

    label: str
    html: str


@dataclass(frozen=True)
class AnswerView:
    """An answer ready to show. Made once, when asked, so it survives a rebuild of the index."""

    abstained: bool
    html: str  # the answer itself (escaped HTML)
    caption: str  # confidence, and the question actually searched for a follow-up (an HTML block)
    heading: str  # "Sources" or "Possibly related passages"
    passages: tuple[PassageView, ...]


def _where(quoted: Quote) -> str:
    """``report.pdf · p. 2 · 2024-03 · paragraph 3``: file, page (else section), date, paragraph."""
    place = f"p. {quoted.page}" if quoted.page is not None else (f"§ {quoted.section}" if quoted.section else None)
    return " · ".join(part for part in (quoted.doc, place, quoted.date, f"paragraph {quoted.paragraph}") if part)


def _passage_html(quoted: Quote, start: int, end: int, body: str) -> str:
    where = escape_html(f"{_where(quoted)} · characters {start}–{end}")
    return f'<div class="rag-passage"><div class="rag-where"><small>{where}</small></div><div>{body}</div></div>'


def _quote_html(quoted: Quote) -> str:
    """The quoted sentence, escaped, with the reader's answering words marked when it gave them."""
    if quoted.span is None:
        return escape_html(quoted.text)
    a, b = quoted.span[0] - quoted.start, quoted.span[1] - quoted.start
    text = quoted.text
    return (escape_html(text[:a]) + f'<mark class="rag-span">{escape_html(text[a:b])}</mark>'
            + escape_html(text[b:]))


def answer_view(answer: Answer, index: Index) -> AnswerView:
    """What to show for ``answer``, with each cited sentence highlighted in its passage of ``index``."""
    # no figure beside an abstention: a confidence there reads as confidence in an answer
    caption = "" if answer.abstained else f"confidence {answer.confidence:.2f}"
    if answer.rewritten_question:
        caption += (" · " if caption else "") + f"read as a follow-up: «{answer.rewritten_question}»"
    caption_html = text_block(caption, "rag-caption")
    if answer.abstained or not answer.sentences:
        passages = tuple(
            PassageView(escape_label(f"[{s.number}] {_where(s)}"),
                        _passage_html(s, s.start, s.end, escape_html(s.text)))
            for s in answer.sources
        )
        text = "I found no answer to this question in the documents."
        if passages:
            text += " These passages may be related:"
        return AnswerView(True, f'<div class="rag-answer"><p>{escape_html(text)}</p></div>', caption_html,
                          "Possibly related passages", passages)
    # the answering sentence as the answer; supporting sentences below it, set apart and labelled
    main = [c for c in answer.sentences if c.role != "support"]
    backing = [c for c in answer.sentences if c.role == "support"]
    quotes = " ".join(f"«{_quote_html(c)}»&nbsp;<strong>[{c.number}]</strong>" for c in main)
    if backing:
        quotes += '</p><p class="rag-support"><small>Supported by: ' + " ".join(
            f"«{escape_html(c.text)}»&nbsp;<strong>[{c.number}]</strong>" for c in backing) + "</small>"
    views = []
    for c in answer.sentences:
        document = index.documents.get(c.doc)
        if document is not None and document.text[c.start : c.end] == c.text:
            start, end = passage_span(c, answer.sources, document)
            body = highlight_html(document.text, start, end, [(c.start, c.end)])
        else:  # cannot be verified against the source: show the quote alone, unmarked
            start, end = c.start, c.end
            body = escape_html(c.text)
        views.append(PassageView(escape_label(f"[{c.number}] {_where(c)}"), _passage_html(c, start, end, body)))
    return AnswerView(False, f'<div class="rag-answer"><p>{quotes}</p></div>', caption_html, "Sources",
                      tuple(views))


@dataclass(frozen=True)
class ChatMessage:
    """One turn of the chat as kept in the session: a question, an answer or an error."""

    role: str  # "user" or "assistant"
    text: str = ""  # the question, or the error message
    view: AnswerView | None = None

    @property
    def is_error(self) -> bool:
        return self.role == "assistant" and self.view is None


def history_for(messages: Sequence[ChatMessage]) -> list[str]:
    """The earlier questions of the conversation, oldest first, for ``Pipeline.ask(history=...)``."""
    return [m.text for m in messages if m.role == "user" and m.text.strip()]


# ---------------------------------------------------------------------------------- resources


@dataclass(frozen=True)
class AppConfig:
    seeds: Path
    index: Path
    model: str | None = None  # None: the model the index was built with, else the default

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, base: Path | None = None) -> AppConfig:
        """From RAG_SEEDS, RAG_INDEX and RAG_MODEL (``Paths.from_env``); relative paths are taken from ``base``."""
        paths = Paths.from_env(environ, base or Path.cwd())
        return cls(seeds=paths.seeds, index=paths.index, model=paths.model)

    def settings(self) -> Settings:
        return settings_for(self.index, self.model)


@dataclass(frozen=True)
class IndexFacts:
    documents: int
    chunks: int
    sentences: int
    model: str
    built_at: str
    path: str
    skipped: tuple[SkippedFile, ...] = ()
    pages: int = 0


@dataclass(frozen=True)
class RebuildStatus:
    """Where the latest background build is; ``number`` counts the builds started (0: none yet).

    A build first reads the documents (``read`` of ``to_read`` files, ``pages`` so far), then
    embeds the passages of the new and changed ones (``done`` of ``total``).
    """

    number: int = 0
    running: bool = False
    full: bool = True  # re-embed everything, or only new and changed documents
    read: int = 0
    to_read: int = 0
    pages: int = 0
    done: int = 0  # passages embedded so far
    total: int = 0
    report: BuildReport | None = None
    error: str | None = None

    @property
    def text(self) -> str:
        """One line for a progress bar."""
        if self.total or not self.to_read or self.read >= self.to_read:
            return f"Embedding: {self.done} of {self.total} passages"
        return f"Reading documents: {self.read} of {self.to_read} ({self.pages} pages)"

    @property
    def fraction(self) -> float:
        if self.total:
            return self.done / self.total
        return self.read / self.to_read if self.to_read else 0.0


@dataclass(frozen=True)
class DocumentRow:
    """One document of the index as the documents view lists it."""

    id: str
    kind: str
    title: str | None
    date: str | None
    pages: int | None  # None: a format without pages
    chunks: int


class Engine:
    """One encoder and the current ``Pipeline``, shared by every chat of the process.

    ``start`` builds the index when it is missing or stale and opens it, once. ``rebuild``
    writes a new build beside the one in use (``build_index`` swaps it in atomically) and only
    then replaces the pipeline, so questions keep being answered from the old index meanwhile;
    ``start_rebuild`` runs it in a background thread, so the chat that asked for it keeps working.
    """

    def __init__(self, config: AppConfig, encoder_factory: Callable[[Settings], Encoder] = encoder_for) -> None:
        self.config = config
        self.settings = config.settings()
        self._encoder_factory = encoder_factory
        self._encoder: Encoder | None = None
        self._pipeline: Pipeline | None = None
        self._refused_build: str | None = None  # a build on disk that could not be opened
        self._lock = threading.Lock()
        self._rebuild = RebuildStatus()
        self._rebuild_thread: threading.Thread | None = None
        self._again: str | None = None  # "full" or "update": asked for while a build was running

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self._encoder = self._encoder_factory(self.settings)
        return self._encoder

    @property
    def ready(self) -> bool:
        return self._pipeline is not None

    def start(self, progress: Progress | None = None) -> BuildReport | None:
        """Build the index if needed, load it and the model; the build report, or None if nothing was built."""
        with self._lock:  # a second chat opening meanwhile waits instead of building too
            if self._pipeline is not None:
                return None
            report = ensure_index(self.config.seeds, self.config.index, self.settings, self.encoder, progress)
            pipeline = Pipeline.open(self.config.index, self.settings, self.encoder)
            self.encoder.encode_queries(["warm-up"])  # load the model now, not at the first question
            self._pipeline = pipeline
            return report

    @property
    def pipeline(self) -> Pipeline:
        """The pipeline in use, reopened if another process (``rag index``) has swapped in a new build."""
        if self._pipeline is None:
            raise IndexMissingError("the index is not loaded yet")
        try:
            on_disk = current_build(self.config.index).name
        except RagError:  # removed or damaged on disk: the loaded copy still answers
            return self._pipeline
        if on_disk not in (self._pipeline.index.path.name, self._refused_build):
            with self._lock:
                try:
                    self._pipeline = Pipeline.open(self.config.index, self.settings, self.encoder)
                except RagError:  # damaged, or built with another model: keep answering, and do not retry it
                    self._refused_build = on_disk
        return self._pipeline

    def rebuild(self, progress: Progress | None = None, full: bool = True,
                reading: LoadProgress | None = None) -> BuildReport:
        """Re-read the documents and embed them (all of them when ``full``) into a new build, then answer from it."""
        loaded = load_documents(self.config.seeds, progress=reading)
        report = build_index(loaded, self.config.index, self.settings, self.encoder, full=full, progress=progress)
        pipeline = Pipeline.open(self.config.index, self.settings, self.encoder)
        with self._lock:
            self._pipeline = pipeline
        return report

    def start_rebuild(self, full: bool = True) -> RebuildStatus:
        """Start ``rebuild`` in a background thread; when one is running, another follows it. Its status."""
        with self._lock:
            if self._rebuild.running:
                self._again = self._again or ("full" if full else "update")
            else:
                self._rebuild = RebuildStatus(self._rebuild.number + 1, running=True, full=full)
                self._rebuild_thread = threading.Thread(target=self._run_rebuild, name="rag-rebuild", daemon=True)
                self._rebuild_thread.start()
            return self._rebuild

    def _run_rebuild(self) -> None:
        def progress(done: int, total: int) -> None:
            self._rebuild = replace(self._rebuild, done=done, total=total)

        def reading(read: int, to_read: int, pages: int) -> None:
            self._rebuild = replace(self._rebuild, read=read, to_read=to_read, pages=pages)

        while True:
            try:
                report = self.rebuild(progress, full=self._rebuild.full, reading=reading)
            except RagError as exc:
                outcome = replace(self._rebuild, running=False, error=str(exc))
            except Exception as exc:  # a bug: the chat must still hear that the rebuild failed
                outcome = replace(self._rebuild, running=False, error=f"unexpected {type(exc).__name__}: {exc}")
            else:
                outcome = replace(self._rebuild, running=False, report=report)
            with self._lock:
                # files added or removed while this build ran: build again, or they would wait for the next one
                again, self._again = self._again, None
                if again is None:
                    self._rebuild = outcome
                    return
                self._rebuild = RebuildStatus(outcome.number + 1, running=True, full=again == "full")

    def add_files(self, files: Sequence[tuple[str, bytes]]) -> tuple[Added, ...]:
        """Write uploaded ``(name, bytes)`` into the documents folder, then update the index in the background."""
        added = tuple(add_file(self.config.seeds, name, data) for name, data in files)
        if any(a.saved_as for a in added):
            self.start_rebuild(full=False)
        return added

    def remove(self, doc_id: str) -> Path:
        """Move a document out of the documents folder (into ``.removed/``), then update the index."""
        moved = remove_document(self.config.seeds, doc_id)
        self.start_rebuild(full=False)
        return moved

    def documents(self) -> tuple[DocumentRow, ...]:
        """The documents of the index in use, with their pages and chunks."""
        index = self.pipeline.index
        chunks = index.chunks_per_document()
        return tuple(DocumentRow(d.id, d.kind, d.title, d.date, len(d.pages) or None, chunks.get(d.id, 0))
                     for d in index.documents.values())

    def rebuild_status(self, wait: float | None = None) -> RebuildStatus:
        """The latest rebuild's status, after waiting up to ``wait`` seconds for it to finish."""
        thread = self._rebuild_thread
        if wait is not None and thread is not None:
            thread.join(wait)
        return self._rebuild

    def ask(self, question: str, history: Sequence[str] = (), top_k: int | None = None) -> tuple[Answer, AnswerView]:
        """Answer ``question``, and what to show for it."""
        pipeline = self.pipeline
        answer = pipeline.ask(question, history=history, top_k=top_k)
        return answer, answer_view(answer, pipeline.index)

    def facts(self) -> IndexFacts:
        index = self.pipeline.index
        counts = index.manifest.counts
        return IndexFacts(counts.documents, counts.chunks, counts.sentences, index.model, index.built_at,
                          str(self.config.index), index.manifest.skipped, counts.pages)
