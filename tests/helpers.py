"""The helpers and data shared by several test modules (tests/ is on sys.path: `from helpers import ...`).

Test modules import from here and from fakes.py, never from conftest or from one another."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pytest

from rag.encoders import Encoder
from rag.evaluate.metrics import CaseResult
from rag.settings import Settings

# ------------------------------------------------------------------------------ the repository's data

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
SEED_DOC = SEEDS / "000_5af0c40136177a6e.txt"
SHARED_BENCH = ROOT.parent / "shared" / "bench"

# ------------------------------------------------------------------------------ indexes (conftest's make_index)


def write_docs(folder: Path, docs: Mapping[str, str]) -> Path:
    """``folder`` holding one UTF-8 file per entry of ``docs`` (name relative to the folder: text)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in docs.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return folder


class MakeIndex(Protocol):
    """The type of conftest's ``make_index`` fixture."""

    def __call__(self, docs: Mapping[str, str] | Path, *, index: str | Path = "index", settings: Settings = ...,
                 encoder: Encoder | None = None, full: bool = False) -> Path: ...


# ------------------------------------------------------------------------------ from test_ui.py

HOSTILE = (
    'The zebra report says <script>alert("pwned")</script> and **bold** and [a link](http://example.com) '
    "and $x^2$ and :smile: and <img src=x onerror=alert(1)> about zebras."
)


def visible(markup: str) -> str:
    """The text a browser shows for our HTML (tags dropped, references decoded)."""
    return html.unescape(re.sub(r"<[^>]*>", "", markup.replace("<br>", "\n")))


def make_harbour(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "harbour.txt").write_text(
        "date 2023-05\nThe harbour of Port Nelle opened in 1887 after ten years of work.\n\n"
        "The lighthouse keeper, Maren Holt, asked the council for a new lamp. The council offered a grant "
        "to repair the pier. Fishing boats still leave the harbour every morning at five.\n",
        encoding="utf-8",
    )
    (folder / "*zebra*_[x](y).md").write_text(HOSTILE + "\n\n# Not a heading\n", encoding="utf-8")
    return folder


# ------------------------------------------------------------------------------ from test_browser.py

ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # offline: every host but the app's loopback address fails to resolve
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_app(env_overrides: dict[str, str], log_path: Path) -> Iterator[str]:
    """`streamlit run app.py` on a free loopback port with ``env_overrides``; yields its URL, stops it after."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}: run scripts/install_chromium.sh")
    pytest.importorskip("playwright.sync_api", reason="playwright is missing: run scripts/install_chromium.sh")
    port = _free_port()
    env = dict(os.environ, STREAMLIT_BROWSER_GATHER_USAGE_STATS="false", **env_overrides)
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.address", "127.0.0.1",
             "--server.port", str(port), "--server.headless", "true", "--client.toolbarMode", "viewer"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                pytest.fail(f"streamlit exited with {server.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit did not answer on {url}:\n{log_path.read_text()}")
            time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# ------------------------------------------------------------------------------ from test_evaluate_questions.py

SEED_QUESTIONS = ROOT / "evals" / "seed_questions.jsonl"


def write_lines(path: Path, lines: Sequence[object]) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ from test_evaluate_runner.py

TINY_DOCS = {
    "lighthouse.txt": "The lighthouse of Varnholm was built in 1887 by the engineer Mira Castellan.\n\n"
                      "Its lamp burns whale oil and can be seen from forty kilometres away.\n",
    "river.txt": "The Quorrel river rises in the Ostheim hills and flows north for 212 kilometres.\n\n"
                 "Salmon return to the Quorrel every October to spawn.\n",
    "bakery.txt": "The bakery on Linden Square sells rye bread baked in a wood oven.\n\n"
                  "Its owner, Tomas Brandl, opens the shop at five every morning.\n",
}
TINY_QUESTIONS: list[dict[str, Any]] = [  # question-set records, as JSON lines hold them
    {"id": "t1", "question": "Who built the lighthouse of Varnholm in 1887?", "question_lang": "en",
     "doc": "lighthouse.txt", "answers": ["Mira Castellan"],
     "context": "The lighthouse of Varnholm was built in 1887 by the engineer Mira Castellan."},
    {"id": "t2", "question": "When does the salmon return to the Quorrel to spawn?", "question_lang": "en",
     "doc": "river.txt", "answers": ["October"], "context": "Salmon return to the Quorrel every October to spawn."},
    {"id": "t3", "question": "Who opens the bakery shop at five every morning?", "question_lang": "fr",
     "doc": "bakery.txt", "answers": ["Tomas Brandl"]},
    {"id": "t4", "question": "Xylophone zebra quantum?", "question_lang": "fr", "doc": None, "answers": []},
]


# ------------------------------------------------------------------------------ from test_evaluate_metrics.py

def case_result(**kw: object) -> CaseResult:
    base: dict[str, object] = {"id": "q", "question_lang": "en", "answerable": True, "abstained": False}
    base.update(kw)
    return CaseResult(**base)  # type: ignore[arg-type]


HAND_MADE = [
    case_result(id="1", gold_doc="a", has_context=True, doc_rank=1, passage_rank=2, answer_correct=True,
                citation_correct=True, latency_ms=10.0),
    case_result(id="2", gold_doc="a", has_context=True, doc_rank=4, passage_rank=None, answer_correct=True,
                citation_correct=False, latency_ms=20.0),
    case_result(id="3", gold_doc="b", doc_rank=None, abstained=True, answer_correct=False, citation_correct=False,
                latency_ms=30.0, question_lang="fr"),
    case_result(id="4", answerable=False, abstained=True, latency_ms=40.0, question_lang="fr"),
]


TermRows = tuple[np.ndarray | Sequence[np.ndarray], np.ndarray | Sequence[np.ndarray]]


def sparse_cosines(a: TermRows, b: TermRows) -> np.ndarray:
    """Row by row, the cosine of two sets of latent-term rows given as (term ids, weights)."""
    out = []
    for ids_a, w_a, ids_b, w_b in zip(*a, *b):
        x, y = np.zeros(1 << 16), np.zeros(1 << 16)
        x[ids_a] += w_a.astype(np.float64)
        y[ids_b] += w_b.astype(np.float64)
        out.append(x @ y / max(float(np.linalg.norm(x) * np.linalg.norm(y)), 1e-12))
    return np.array(out)


@contextmanager
def browser_page(width: int, height: int, failure_shot: str) -> Iterator[Any]:
    """A page (``width`` x ``height``) of Debian's Chromium kept off the network (``CHROMIUM_ARGS``);
    when the block fails, a full-page screenshot goes to tests/artifacts/``failure_shot`` before the
    error is raised; the browser is closed after."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": width, "height": height})
        try:
            yield page
        except Exception:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / failure_shot), full_page=True)
            raise
        finally:
            browser.close()
