"""The chat app: ``streamlit run app.py``. A thin layer over ``rag.ui``; all logic lives there.

Configured like the CLI: RAG_SEEDS (documents folder, default seeds/), RAG_INDEX (index
folder, default index/) and RAG_MODEL (default: the index's model, else e5+use); relative
paths are taken from this file's folder.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from rag.errors import RagError
from rag.formats import LIMITS, SUFFIXES
from rag.index import Progress
from rag.library import UPLOAD_MAX_BYTES
from rag.ui import AnswerView, AppConfig, ChatMessage, Engine, escape_label, history_for, readable_time, text_block

UPLOAD_TYPES = sorted({s.lstrip(".") for s in SUFFIXES})
LIMITS_TEXT = (
    f"Up to {UPLOAD_MAX_BYTES // 2**20} MB per file, several at once: "
    + ", ".join(t.upper() for t in ("pdf", "docx", "html", "md", "txt"))
    + f". PDF pages need a text layer (no OCR) and at most {LIMITS.page_chars:,} characters each; "
    "encrypted PDFs are refused. A file whose name is taken is added under a new name."
)

EXAMPLES = (
    "What did Blinken offer?",
    "And what did Aliyev ask for?",
    "Combien de citoyens azerbaïdjanais sont portés disparus ?",
    "Where did the foreign ministers meet?",
)


@st.cache_resource(show_spinner=False)
def get_engine(seeds: str, index: str, model: str | None) -> Engine:
    """One engine per process and configuration: the model and index load once, for every chat."""
    return Engine(AppConfig(Path(seeds), Path(index), model))


def progress_bar(label: str) -> tuple[Progress, st.delta_generator.DeltaGenerator]:
    bar = st.progress(0.0, text=label)

    def update(done: int, total: int) -> None:
        bar.progress(done / total if total else 1.0, text=f"{label}: {done} of {total} passages embedded")

    return update, bar


def show_answer(view: AnswerView) -> None:
    st.markdown(view.html, unsafe_allow_html=True)
    st.caption(view.caption, unsafe_allow_html=True)
    if view.passages:
        st.markdown(f"**{view.heading}**")
    for passage in view.passages:
        with st.expander(passage.label):
            st.markdown(passage.html, unsafe_allow_html=True)


def show_message(message: ChatMessage) -> None:
    with st.chat_message(message.role):
        if message.role == "user":
            st.markdown(text_block(message.text, "rag-question"), unsafe_allow_html=True)
        elif message.view is not None:
            show_answer(message.view)
        else:
            st.error(escape_label(message.text))


@st.fragment(run_every=1.0)
def rebuild_progress(engine: Engine) -> None:
    """Polls the background build; a full rerun when it is done refreshes the index facts and documents."""
    status = engine.rebuild_status()
    if not status.running:
        st.rerun()
    st.progress(status.fraction, text=("Rebuilding the index · " if status.full else "Updating the index · ")
                + status.text)
    st.caption("Questions are answered from the current index until the new one is in place.")


def watch(engine: Engine) -> None:
    st.session_state["rebuild_watched"] = engine.rebuild_status().number


def start_rebuild(engine: Engine) -> None:
    engine.start_rebuild()
    watch(engine)


def add_uploads(engine: Engine, key: str) -> None:
    """Callback of "Add to the documents": save the files, start the update, empty the uploader."""
    files = st.session_state.get(key) or []
    added = engine.add_files([(f.name, f.getvalue()) for f in files])
    st.session_state["upload_messages"] = [(a.refused is None, a.message) for a in added]
    st.session_state["upload_round"] = st.session_state.get("upload_round", 0) + 1
    watch(engine)


def remove_document(engine: Engine, doc_id: str) -> None:
    try:
        moved = engine.remove(doc_id)
        where = f"{moved.parent.name}/{moved.name}"
        st.session_state["upload_messages"] = [(True, f"{doc_id} was removed (moved to {where} in the folder)")]
    except RagError as exc:
        st.session_state["upload_messages"] = [(False, str(exc))]
    watch(engine)


def rebuild_controls(engine: Engine) -> None:
    status = engine.rebuild_status()  # a click has already started it: callbacks run before the script
    st.button("Rebuild index", key="rebuild", disabled=status.running, on_click=start_rebuild, args=(engine,),
              help="Re-read the documents folder and re-embed every document.")
    if status.running:
        rebuild_progress(engine)
    elif status.number and status.number == st.session_state.get("rebuild_watched"):
        if status.error is not None:
            st.error(escape_label(f"The index was not updated (the previous one is still in use): {status.error}"))
        elif status.report is not None:
            done = "rebuilt" if status.full else "updated"
            st.success(f"Index {done}: {status.report.documents} documents, {status.report.pages} pages "
                       f"in {status.report.seconds:.1f} s.")


def documents_view(engine: Engine) -> None:
    """Upload documents, list them with pages and chunks, remove one. Names are shown as plain text."""
    st.header("Documents")
    key = f"upload-{st.session_state.get('upload_round', 0)}"
    files = st.file_uploader("Add documents", type=UPLOAD_TYPES, accept_multiple_files=True, key=key,
                             max_upload_size=UPLOAD_MAX_BYTES // 2**20)
    st.caption(LIMITS_TEXT)
    st.button("Add to the documents", key="add-documents", disabled=not files, on_click=add_uploads,
              args=(engine, key))
    for ok, message in st.session_state.get("upload_messages", []):
        (st.success if ok else st.warning)(escape_label(message))
    if not engine.ready:
        return
    rows = engine.documents()
    with st.expander(f"{len(rows)} document{'' if len(rows) == 1 else 's'} in the index", expanded=len(rows) <= 8):
        for row in rows:
            left, right = st.columns([4, 1], vertical_alignment="center")
            size = f"{row.pages} pages" if row.pages else row.kind.upper()
            left.text(f"{row.id}\n{size} · {row.chunks} chunks" + (f" · {row.date}" if row.date else ""))
            right.button("✕", type="tertiary", key=f"remove-{row.id}", on_click=remove_document, args=(engine, row.id),
                         help=escape_label(f"Remove {row.id} from the documents folder (kept in its .removed folder)"))


st.set_page_config(page_title="Ask the documents", page_icon=":material/article:")
st.title("Ask the documents")
st.caption("Answers quote the documents word for word and cite where each sentence comes from.")

config = AppConfig.from_env(base=Path(__file__).resolve().parent)
messages: list[ChatMessage] = st.session_state.setdefault("messages", [])

engine: Engine | None = None
try:
    engine = get_engine(str(config.seeds), str(config.index), config.model)
    if not engine.ready:
        with st.spinner("Loading the model and the index…"):
            update, bar = progress_bar("Building the index")
            engine.start(update)
            bar.empty()
except RagError as exc:
    st.error(escape_label(f"The documents cannot be searched yet: {exc}"))

# Created only now, so that no question can interrupt the first build.
question = st.chat_input("Ask a question about the documents")

with st.sidebar:
    st.header("Index")
    facts_box = st.container()
    top_k = st.slider("Passages to retrieve (top_k)", 1, 20, 5, key="top_k")
    if engine is not None:
        rebuild_controls(engine)
        documents_view(engine)
    if engine is not None and engine.ready:
        facts = engine.facts()
        facts_box.markdown(
            f"- Documents: {facts.documents}\n- Pages: {facts.pages}\n- Chunks: {facts.chunks}\n"
            f"- Sentences: {facts.sentences}\n"
            f"- Model: {escape_label(facts.model)}\n- Built at: {escape_label(readable_time(facts.built_at))}"
        )
        for skipped in facts.skipped:
            facts_box.caption(escape_label(f"Skipped {skipped.path}: {skipped.reason}"))
    st.header("Try")
    for number, example in enumerate(EXAMPLES):
        if st.button(escape_label(example), key=f"example-{number}", width="stretch"):
            question = example
    if st.button("Clear the chat", key="clear", icon=":material/delete:"):
        messages.clear()

for message in messages:
    show_message(message)

if question:
    asked = ChatMessage("user", question)
    show_message(asked)
    if engine is None or not engine.ready:
        reply = ChatMessage("assistant", "No index is loaded, so there is nothing to search: see the message above.")
    else:
        try:
            with st.spinner("Searching the documents…"):
                _, view = engine.ask(question, history=history_for(messages), top_k=top_k)
            reply = ChatMessage("assistant", view=view)
        except RagError as exc:
            reply = ChatMessage("assistant", str(exc))
    show_message(reply)
    messages.extend([asked, reply])
