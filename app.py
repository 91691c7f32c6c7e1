"""The chat app: ``streamlit run app.py``. A thin layer over ``rag.ui``; all logic lives there.

Configured like the CLI: RAG_SEEDS (documents folder, default seeds/), RAG_INDEX (index
folder, default index/) and RAG_MODEL (default: the index's model, else e5+use); relative
paths are taken from this file's folder.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from rag.errors import RagError
from rag.index import Progress
from rag.ui import AnswerView, AppConfig, ChatMessage, Engine, escape_label, history_for, readable_time, text_block

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
    """Polls the background rebuild; a full rerun when it is done refreshes the index facts."""
    status = engine.rebuild_status()
    if not status.running:
        st.rerun()
    fraction = status.done / status.total if status.total else 0.0
    st.progress(fraction, text=f"Rebuilding the index: {status.done} of {status.total} passages embedded")
    st.caption("Questions are answered from the current index until the new one is in place.")


def start_rebuild(engine: Engine) -> None:
    st.session_state["rebuild_watched"] = engine.start_rebuild().number


def rebuild_controls(engine: Engine) -> None:
    status = engine.rebuild_status()  # a click has already started it: callbacks run before the script
    st.button("Rebuild index", key="rebuild", disabled=status.running, on_click=start_rebuild, args=(engine,),
              help="Re-read the documents folder and re-embed every document.")
    if status.running:
        rebuild_progress(engine)
    elif status.number and status.number == st.session_state.get("rebuild_watched"):
        if status.error is not None:
            st.error(escape_label(f"The index was not rebuilt (the previous one is still in use): {status.error}"))
        elif status.report is not None:
            st.success(f"Index rebuilt: {status.report.documents} documents in {status.report.seconds:.1f} s.")


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
    if engine is not None and engine.ready:
        facts = engine.facts()
        facts_box.markdown(
            f"- Documents: {facts.documents}\n- Chunks: {facts.chunks}\n- Sentences: {facts.sentences}\n"
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
