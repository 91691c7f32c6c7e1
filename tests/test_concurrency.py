"""Concurrency: one loaded pipeline shared by many threads, as the Streamlit sessions share it.

Answers under load must be exactly the single-thread answers, and a rebuild running
beside the readers must not change what they get until the new build is swapped in.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fakes import FakeEncoder
from helpers import SEEDS, MakeIndex

from rag.encoders import HashEncoder
from rag.errors import RagError
from rag.index import BUILDS, TMP_PREFIX, build_index, current_build
from rag.load import load_documents
from rag.pipeline import Pipeline
from rag.settings import Settings
from rag.types import Answer

HASH = Settings(model="hash")
THREADS = 16
PER_THREAD = 200

TOPICS = {
    "harbour.txt": "The harbour council met on Tuesday. It voted to repair the north pier before winter. "
                   "The fishing cooperative asked for a new crane.\n\nRepairs will cost 2.4 million euros. "
                   "The mayor said the work would start in October.",
    "otters.md": "# Otters\n\nRiver otters returned to the valley in 2019. They sleep in burrows under alder roots. "
                 "A survey counted forty-two animals.\n\nThe otters eat mostly fish and crayfish.",
    "glass.txt": "Die Glasbläser kommen jedes Jahr im August ins Tal. Das Fest dauert drei Tage. "
                 "Im Jahr 2023 kamen zwölftausend Besucher.",
    "faro.txt": "El faro de la isla fue construido en 1858. Su lámpara se puede ver a treinta kilómetros. "
                "Desde 1990 funciona sin farero.",
}


def _questions() -> list[str]:
    """50 distinct questions: answerable ones in four languages, nonsense, and odd but valid input."""
    base = [
        "Qui a appelé le président Ilham Aliyev ?", "Combien de prisonniers arméniens ont été rendus ?",
        "Où se sont tenues les réunions des ministres ?", "Que demande Aliyev au Secrétaire d'État ?",
        "Quel traité de paix pourrait être signé ?", "Combien de citoyens sont portés disparus ?",
        "When did the harbour council meet?", "What will the repairs cost?", "When will the work start?",
        "What did the fishing cooperative ask for?", "When did the otters return to the valley?",
        "Where do otters sleep?", "How many otters did the survey count?", "What do otters eat?",
        "Wann kommen die Glasbläser ins Tal?", "Wie lange dauert das Fest?", "Wie viele Besucher kamen 2023?",
        "¿Cuándo fue construido el faro?", "¿Desde qué distancia se ve la lámpara?", "¿Desde cuándo no hay farero?",
        "What is the airspeed of an unladen swallow?", "Quelle est la recette du cassoulet ?",
        "Blinken", "Aliyev Genève Prague", "🙂", "<b>harbour</b>", "'; DROP TABLE x; --", "?!?", "Karabagh",
        "Croix-Rouge charniers", "pier crane October", "alder roots burrows", "August Tal Fest",
        "faro lámpara kilómetros", "Jake Sullivan Maison Blanche", "délimitation des frontières",
    ]
    while len(base) < 50:
        base.append(f"question number {len(base)} about the pier and the otters")
    return base


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("concurrency")
    docs = root / "docs"
    shutil.copytree(SEEDS, docs)
    for name, text in TOPICS.items():
        (docs / name).write_text(text, encoding="utf-8")
    build_index(load_documents(docs), root / "index", HASH, HashEncoder())
    return root


def _ask_all(pipeline: Pipeline, questions: Sequence[str], history: bool = False) -> list[Answer]:
    return [pipeline.ask(q, history=[questions[i - 1]] if history and i else ()) for i, q in enumerate(questions)]


@pytest.mark.slow  # 5.5 s
def test_16_threads_x_200_questions_give_the_single_thread_answers(corpus: Path) -> None:
    pipeline = Pipeline.open(corpus / "index", HASH, HashEncoder())
    questions = _questions()
    expected = dict(zip(questions, _ask_all(pipeline, questions)))
    assert len({a.abstained for a in expected.values()}) == 2, "the set must hold answers and abstentions"
    start = threading.Barrier(THREADS)

    def session(t: int) -> list[tuple[str, Answer]]:
        order = [questions[(t * 7 + i * (t % 5 + 1)) % len(questions)] for i in range(PER_THREAD)]
        start.wait()  # all sessions ask at once
        return [(q, pipeline.ask(q)) for q in order]

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(session, range(THREADS)))  # re-raises the first error of any thread
    asked = [pair for r in results for pair in r]
    assert len(asked) == THREADS * PER_THREAD
    wrong = [q for q, a in asked if a != expected[q]]
    assert not wrong, f"{len(wrong)} answers differ from the single-thread ones, e.g. {wrong[:3]}"


def test_threads_with_conversation_history_give_the_single_thread_answers(corpus: Path) -> None:
    """Follow-ups re-ask with the previous question: no state may leak between sessions."""
    pipeline = Pipeline.open(corpus / "index", HASH, HashEncoder())
    questions = _questions()
    conversations = [questions[i:] + questions[:i] for i in range(0, 48, 6)]
    expected = [_ask_all(pipeline, c, history=True) for c in conversations]
    assert any(a.rewritten_question for run in expected for a in run), "no follow-up was rewritten"
    with ThreadPoolExecutor(len(conversations)) as pool:
        got = list(pool.map(lambda c: _ask_all(pipeline, c, history=True), conversations * 2))
    assert got == expected * 2


def test_rebuild_while_serving_answers_from_the_old_index_until_the_swap(corpus: Path, tmp_path: Path,
                                                                        make_index: MakeIndex) -> None:
    index_dir = tmp_path / "index"
    shutil.copytree(corpus / "index", index_dir)
    new_docs = tmp_path / "new-docs"
    shutil.copytree(corpus / "docs", new_docs)
    (new_docs / "harbour.txt").write_text(
        "The harbour council met on Friday. It voted to demolish the north pier. The crane was sold.",
        encoding="utf-8",
    )
    (new_docs / "bridge.txt").write_text("The new bridge opens in May. It has two lanes.", encoding="utf-8")
    reference = make_index(new_docs, index="reference", settings=HASH)
    questions = _questions()[:12]
    served = Pipeline.open(index_dir, HASH, HashEncoder())
    old_build = served.index.path.name
    old_answers = _ask_all(served, questions)
    new_answers = _ask_all(Pipeline.open(reference, HASH, HashEncoder()), questions)
    assert old_answers != new_answers

    building = threading.Event()
    done = threading.Event()
    errors: list[str] = []
    opened: list[tuple[str, bool]] = []  # (build loaded by a new session, while the build was running)

    def builder() -> None:
        try:
            # full, as the app's "rebuild" button does: every passage is embedded again, slowly
            build_index(load_documents(new_docs), index_dir, HASH, FakeEncoder(delay=0.4), full=True,
                        progress=lambda d, t: building.set())
        except Exception as exc:  # reported below, with the readers' errors
            errors.append(f"build: {exc!r}")
        finally:
            done.set()

    def old_session() -> None:
        """A session that opened the pipeline before the rebuild keeps its answers throughout."""
        while not done.is_set():
            if _ask_all(served, questions) != old_answers:
                errors.append("a loaded pipeline changed its answers during the rebuild")
                return

    def new_session() -> None:
        """A session opening the index during the rebuild sees the old build, then the new one, never a mix."""
        while not done.is_set():
            running = building.is_set() and not done.is_set()
            try:
                pipeline = Pipeline.open(index_dir, HASH, HashEncoder())
            except RagError as exc:
                errors.append(f"open during the rebuild: {exc}")
                return
            name = pipeline.index.path.name
            want = old_answers if name == old_build else new_answers
            if _ask_all(pipeline, questions) != want:
                errors.append(f"build {name} answered neither like the old nor like the new index")
                return
            opened.append((name, running))

    threads = [threading.Thread(target=f) for f in (builder, old_session, old_session, new_session, new_session)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors
    during = [name for name, running in opened if running]
    assert during, "no session opened the index while the build was running: the test proved nothing"
    switched = current_build(index_dir).name
    assert switched != old_build
    assert any(name == old_build for name in during), "sessions during the build should get the old build"
    assert _ask_all(Pipeline.open(index_dir, HASH, HashEncoder()), questions) == new_answers
    # the pipeline loaded before the rebuild still answers, from memory, as before
    assert _ask_all(served, questions) == old_answers
    assert not [p for p in (index_dir / BUILDS).iterdir() if p.name.startswith(TMP_PREFIX)]


def test_two_builders_at_once_are_serialised(corpus: Path, tmp_path: Path) -> None:
    """Two rebuilds started together (two app sessions pressing "rebuild"): one waits, both succeed."""
    index_dir = tmp_path / "index"
    shutil.copytree(corpus / "index", index_dir)
    loaded = load_documents(corpus / "docs")
    with ThreadPoolExecutor(2) as pool:
        reports = list(pool.map(
            lambda _: build_index(loaded, index_dir, HASH, FakeEncoder(delay=0.01), full=True), range(2)
        ))
    assert all(not r.up_to_date for r in reports)
    finished = [p for p in (index_dir / BUILDS).iterdir()]
    assert not [p for p in finished if p.name.startswith(TMP_PREFIX)]
    questions = _questions()[:10]
    assert _ask_all(Pipeline.open(index_dir, HASH, HashEncoder()), questions) == _ask_all(
        Pipeline.open(corpus / "index", HASH, HashEncoder()), questions
    )


@pytest.mark.model
def test_real_model_4_threads_x_10_questions_match_a_single_thread(real_pipeline: Pipeline) -> None:
    questions = [*_questions()[:6], "Qui a reçu un coup de téléphone ?", "Who called Aliyev?",
                 "Wer hat Aliyev angerufen?", "¿Quién llamó a Aliyev?"]
    expected = _ask_all(real_pipeline, questions)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda t: _ask_all(real_pipeline, questions[t:] + questions[:t]), range(4)))
    for t, answers in enumerate(got):
        assert answers == expected[t:] + expected[:t], f"thread {t}"
