"""Crash safety: an indexing process killed with SIGKILL at any step never costs the index.

One worker process (this file run as a script) imports the library once and forks one
indexing child per kill point; the child either sends itself SIGKILL when it reaches the
named step of the build, or the worker kills it from outside while it is embedding. Each
child works on its own copy of an index that already holds a build. Afterwards, in this
process, the index must open and answer exactly as before the build (or exactly as the new
build does, once CURRENT was switched), and the next build must remove every leftover.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeEncoder
from helpers import ROOT, SEED_DOC

from rag.encoders import HashEncoder
from rag.index import BUILDS, CURRENT, TMP_PREFIX, build_index, current_build, open_index
from rag.load import load_documents
from rag.pipeline import Pipeline
from rag.settings import Settings
from rag.types import LoadResult

HASH = Settings(model="hash")
QUESTIONS = (
    "Qui a appelé le président Ilham Aliyev ?",
    "Combien de prisonniers arméniens ont été rendus ?",
    "Where do the river otters of the northern valley sleep in winter?",
    "What did the harbour council decide about the old lighthouse?",
    "Which festival brings the glass-blowers to the valley?",
    "Quel traité de paix pourrait être signé ?",
)
SLOW_BATCH_SECONDS = 0.03  # the externally killed children embed slowly enough to be caught mid-way


# ----------------------------------------------------------------------------- documents


def _otters(version: int) -> str:
    """A document long enough to need many embedding batches; ``version`` changes its text."""
    paragraphs = []
    for p in range(40):
        sentences = [
            f"River otters of the northern valley number {p * 7 + version} in survey {p}.",
            f"They sleep in winter burrows dug under the alder roots near pool {p + version}.",
            "The harbour council decided to keep the old lighthouse lit for the fishing boats.",
            f"Glass-blowers come to the valley for the festival held in week {p % 52 + 1}.",
        ]
        paragraphs.append(" ".join(sentences))
    return "\n\n".join(paragraphs) + "\n"


def _write_docs(folder: Path, version: int) -> Path:
    folder.mkdir(parents=True)
    shutil.copy(SEED_DOC, folder / SEED_DOC.name)
    if version >= 1:
        (folder / "otters.txt").write_text(_otters(version), encoding="utf-8")
    if version >= 2:
        (folder / "lighthouse.md").write_text(
            "# Lighthouse\n\nThe harbour council voted in March to restore the old lighthouse. "
            "Its lamp will be replaced by a small LED lantern.\n",
            encoding="utf-8",
        )
    return folder


def _answers(index_dir: Path) -> list[Any]:
    pipeline = Pipeline.open(index_dir, HASH, HashEncoder())
    return [pipeline.ask(q) for q in QUESTIONS]


def _finished_builds(index_dir: Path) -> set[str]:
    return {p.name for p in (index_dir / BUILDS).iterdir() if not p.name.startswith(TMP_PREFIX)}


def _leftovers(index_dir: Path) -> list[str]:
    tmp_builds = [p.name for p in (index_dir / BUILDS).iterdir() if p.name.startswith(TMP_PREFIX)]
    tmp_pointers = [p.name for p in index_dir.iterdir() if p.name.startswith(CURRENT) and p.name != CURRENT]
    return tmp_builds + tmp_pointers


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An index holding two builds (old documents in use), the new documents, and both sets of answers."""
    base = tmp_path_factory.mktemp("crash")
    docs_v0 = _write_docs(base / "docs_v0", 0)
    docs_old = _write_docs(base / "docs_old", 1)
    docs_new = _write_docs(base / "docs_new", 2)
    template = base / "template"
    build_index(load_documents(docs_v0), template, HASH, HashEncoder())
    first = current_build(template).name
    build_index(load_documents(docs_old), template, HASH, HashEncoder())
    old = current_build(template).name
    reference = base / "reference"
    build_index(load_documents(docs_new), reference, HASH, HashEncoder())
    old_answers = _answers(template)
    new_answers = _answers(reference)
    assert old_answers != new_answers  # otherwise "identical answers" would prove nothing
    return {
        "base": base, "template": template, "docs_new": docs_new, "history": [first, old],
        "old_answers": old_answers, "new_answers": new_answers,
    }


# ----------------------------------------------------------------------------- the worker


def _run_worker(jobs: list[dict[str, Any]], docs: Path, timeout: float = 600) -> list[dict[str, Any]]:
    spec = json.dumps({"docs": str(docs), "jobs": jobs})
    proc = subprocess.run(
        [sys.executable, __file__, spec], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def _list_kill_points(scenario: dict[str, Any]) -> list[str]:
    job_dir = scenario["base"] / "listing"
    shutil.copytree(scenario["template"], job_dir)
    events = scenario["base"] / "events.txt"
    (result,) = _run_worker([{"index": str(job_dir), "kill": None, "events": str(events)}], scenario["docs_new"])
    assert result["status"] == "finished", result
    return events.read_text(encoding="utf-8").splitlines()


def _check_after_kill(scenario: dict[str, Any], job_dir: Path, switched: bool) -> list[str]:
    """Problems found in ``job_dir`` after a killed build, then after the next build; [] when none."""
    problems = []
    old, new = scenario["old_answers"], scenario["new_answers"]
    history = list(scenario["history"])
    try:
        in_use = current_build(job_dir).name
        open_index(job_dir, HASH, verify=True)
        answers = _answers(job_dir)
    except Exception as exc:
        return [f"the index does not open after the kill: {type(exc).__name__}: {exc}"]
    if switched:
        if in_use == history[-1] or answers != new:
            problems.append("the kill came after CURRENT was replaced, but the new build is not the one in use")
        history.append(in_use)
    elif in_use != history[-1] or answers != old:
        problems.append("the previous build is no longer the one in use, or answers differently")
    # the next run: brings the index up to date and removes what the killed one left
    build_index(load_documents(scenario["docs_new"]), job_dir, HASH, HashEncoder())
    if current_build(job_dir).name != history[-1]:
        history.append(current_build(job_dir).name)
    if _answers(job_dir) != new:
        problems.append("after the next build, answers differ from a clean build of the same documents")
    if _leftovers(job_dir):
        problems.append(f"the next build left temporary files: {_leftovers(job_dir)}")
    if _finished_builds(job_dir) != set(history[-2:]):
        problems.append(
            f"the next build kept {sorted(_finished_builds(job_dir))}, expected the last two builds in use "
            f"{history[-2:]}"
        )
    return problems


@pytest.mark.slow  # 21 s here: a build killed at each of its steps
def test_kill_at_every_step_of_a_build_keeps_the_previous_index(scenario: dict[str, Any]) -> None:
    points = _list_kill_points(scenario)
    # the listing must cover the whole write path, or the loop below proves little
    assert len(points) >= 30, points
    for needed in ("documents.jsonl", "chunks.faiss", "sentences.faiss", "bm25_sentences", "manifest.json",
                   "before rename", "after rename", "before replace", "after replace", "embedded"):
        assert any(needed in p for p in points), f"no kill point at {needed!r}: {points}"
    switch = next(i for i, p in enumerate(points) if p.startswith("after replace") and p.endswith(f" {CURRENT} #1"))

    jobs = []
    for i, point in enumerate(points):
        job_dir = scenario["base"] / f"kill-{i:03d}"
        shutil.copytree(scenario["template"], job_dir)
        jobs.append({"index": str(job_dir), "kill": point})
    results = _run_worker(jobs, scenario["docs_new"])
    assert [r["kill"] for r in results] == points

    failures = []
    left_something = 0
    for i, (point, result) in enumerate(zip(points, results, strict=True)):
        if result["status"] != "killed":
            failures.append(f"{point}: the child was not killed at that point ({result['status']})")
            continue
        left_something += bool(_leftovers(Path(result["index"])))
        problems = _check_after_kill(scenario, Path(result["index"]), switched=i >= switch)
        failures += [f"{point}: {problem}" for problem in problems]
    assert not failures, "\n".join(failures)
    # every kill from the first file written to the switch leaves a temporary folder or pointer
    assert left_something >= 30, f"only {left_something} kills left temporary files: the cleanup was barely tried"


def test_kill_from_outside_while_embedding(scenario: dict[str, Any]) -> None:
    """SIGKILL sent by another process at several moments of the embedding phase."""
    fractions = (0.0, 0.25, 0.5, 0.75)  # the progress ticks here come at 0, 0.26, 0.51, 0.77 and 1
    jobs = []
    for i, fraction in enumerate(fractions):
        job_dir = scenario["base"] / f"external-{i}"
        shutil.copytree(scenario["template"], job_dir)
        jobs.append({"index": str(job_dir), "kill": None, "kill_at_progress": fraction})
    results = _run_worker(jobs, scenario["docs_new"])
    failures = []
    for fraction, result in zip(fractions, results, strict=True):
        if result["status"] != "killed" or not 0 <= result["progress"] < 1:
            failures.append(f"{fraction}: not killed while embedding ({result})")
            continue
        failures += [f"{fraction}: {p}" for p in _check_after_kill(scenario, Path(result["index"]), switched=False)]
    assert not failures, "\n".join(failures)


@pytest.mark.slow  # 8 s here: the CLI killed at a sweep of delays
def test_kill_the_cli_at_a_sweep_of_delays(scenario: dict[str, Any]) -> None:
    """`rag index` itself, killed with SIGKILL after a sweep of delays (wherever that lands)."""
    # how long a full run takes here, so the sweep spans start-up, embedding and writing
    probe = scenario["base"] / "cli-probe"
    shutil.copytree(scenario["template"], probe)
    started = time.perf_counter()
    subprocess.run(_cli_index(probe, scenario["docs_new"]), check=True, capture_output=True, timeout=300)
    duration = time.perf_counter() - started
    failures = []
    for i, fraction in enumerate((0.3, 0.6, 0.8, 0.9, 0.95, 1.0)):
        job_dir = scenario["base"] / f"cli-kill-{i}"
        shutil.copytree(scenario["template"], job_dir)
        proc = subprocess.Popen(_cli_index(job_dir, scenario["docs_new"]), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(duration * fraction)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        try:
            switched = current_build(job_dir).name not in scenario["history"]
        except Exception as exc:
            failures.append(f"{fraction:.2f}: CURRENT unreadable after the kill ({exc})")
            continue
        failures += [f"{fraction:.2f}: {p}" for p in _check_after_kill(scenario, job_dir, switched)]
    assert not failures, "\n".join(failures)


def _cli_index(index_dir: Path, docs: Path) -> list[str]:
    return [sys.executable, "-m", "rag.cli", "index", "--model", "hash", "--seeds", str(docs),
            "--index", str(index_dir)]


def test_injected_failure_at_every_named_step_keeps_the_previous_index(scenario: dict[str, Any]) -> None:
    """The same guarantee for an exception (disk full, a bug) at the steps ``build_index`` names."""
    steps = ("documents.jsonl", "chunk_vectors.npy", "chunks.faiss", "bm25", "manifest.json", "rename")
    for step in steps:
        job_dir = scenario["base"] / f"fail-{step}"
        shutil.copytree(scenario["template"], job_dir)
        with pytest.raises(RuntimeError, match=f"injected failure after {re.escape(step)}"):
            build_index(load_documents(scenario["docs_new"]), job_dir, HASH, HashEncoder(), _fail_after=step)
        problems = _check_after_kill(scenario, job_dir, switched=False)
        assert not problems, f"{step}: {problems}"


# ----------------------------------------------------------------------------- worker side


def _install_kill_hooks(index_dir: str, kill: str | None, events: str | None) -> None:
    """Wrap every file-system step of a build so the process can die right before or after it."""
    import builtins

    import bm25s
    import faiss
    import numpy

    import rag.encoders
    import rag.index.build
    import rag.index.store

    counts: dict[str, int] = {}
    log = open(events, "w", encoding="utf-8") if events else None  # noqa: SIM115 - lives until os._exit

    def hook(label: str) -> None:
        # build names and process ids differ from run to run; kill points must not
        label = re.sub(r"\d{8}T\d+-[0-9a-f]+", "BUILD", label)
        label = re.sub(r"\.tmp-\d+-|\.\d+\.tmp", ".tmp-PID-", label)
        counts[label] = counts.get(label, 0) + 1
        label = f"{label} #{counts[label]}"
        if log:
            log.write(label + "\n")
            log.flush()
        if label == kill:
            os.kill(os.getpid(), signal.SIGKILL)

    def rel(path: Any) -> str:
        return os.path.relpath(os.fspath(path), index_dir)

    def wrap(owner: Any, attr: str, describe: Callable[..., str]) -> None:
        real = getattr(owner, attr)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            name = describe(*args, **kwargs)
            hook(f"before {attr} {name}")
            out = real(*args, **kwargs)
            hook(f"after {attr} {name}")
            return out

        setattr(owner, attr, wrapper)

    wrap(numpy, "save", lambda path, *a, **k: rel(path))
    wrap(faiss, "write_index", lambda index, path: rel(path))
    wrap(bm25s.BM25, "save", lambda self, path, **k: rel(path))
    wrap(json, "dump", lambda obj, handle, **k: rel(handle.name))
    wrap(os, "rename", lambda a, b: f"{rel(a)} -> {rel(b)}")
    wrap(os, "replace", lambda a, b: f"{rel(a)} -> {rel(b)}")
    wrap(shutil, "rmtree", lambda path, **k: rel(path))
    real_open = builtins.open

    def opener(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = real_open(file, mode, *args, **kwargs)
        if "w" in mode:
            hook(f"after open-for-writing {rel(file)}")
        return handle

    rag.index.store.open = opener  # type: ignore[attr-defined]  # shadows the builtin in that module only
    real_encode = rag.index.build.encode_passages

    def encode(enc: Any, texts: Any, progress: Any = None) -> Any:
        def tick(n: int) -> None:
            if progress:
                progress(n)
            hook("embedded a batch")

        return real_encode(enc, texts, tick)

    rag.index.build.encode_passages = encode


def _child(loaded: LoadResult, job: dict[str, Any], progress_fd: int | None) -> None:
    if job.get("kill") or job.get("events"):
        _install_kill_hooks(job["index"], job.get("kill"), job.get("events"))
    encoder = FakeEncoder(delay=SLOW_BATCH_SECONDS) if progress_fd is not None else HashEncoder()

    def progress(done: int, total: int) -> None:
        if progress_fd is not None:
            os.write(progress_fd, f"{done} {total}\n".encode())

    build_index(loaded, job["index"], HASH, encoder, progress=progress)


def _worker(spec: dict[str, Any]) -> None:
    """Fork one indexing child per job; print one JSON line per job saying how it ended."""
    import bm25s  # noqa: F401 - imported once here rather than in every child
    import faiss  # noqa: F401

    loaded = load_documents(spec["docs"])  # also loads the language identifier once
    for job in spec["jobs"]:
        fraction = job.get("kill_at_progress")
        read_fd, write_fd = os.pipe() if fraction is not None else (None, None)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _child(loaded, job, write_fd)
            except BaseException:
                code = 3
            os._exit(code)
        progress = -1.0
        if read_fd is not None:
            assert write_fd is not None
            os.close(write_fd)
            with os.fdopen(read_fd) as ticks:
                for line in ticks:
                    done, total = map(int, line.split())
                    if total and done / total >= fraction:
                        progress = done / total
                        os.kill(pid, signal.SIGKILL)
                        break
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            outcome = "killed"
        else:
            outcome = "finished" if os.WEXITSTATUS(status) == 0 else f"exit {os.WEXITSTATUS(status)}"
        print(json.dumps({"index": job["index"], "kill": job.get("kill"), "status": outcome, "progress": progress}),
              flush=True)


if __name__ == "__main__":
    _worker(json.loads(sys.argv[1]))
