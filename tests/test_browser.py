"""The app in a real browser: `streamlit run app.py` on the real seeds and default model, driven by Chromium.

Needs Debian's chromium and the `playwright` package (scripts/install_chromium.sh installs both;
never `playwright install`, which downloads a browser). Saves docs/screenshot.png for the README
when RAG_SAVE_SCREENSHOT=1, else tests/artifacts/browser-answer.png (a test run leaves the checkout clean).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ARTIFACTS, ROOT, browser_page, serve_app

from rag.settings import DEFAULT_MODEL

SCREENSHOT = ROOT / "docs" / "screenshot.png"
QUESTION = "What did Blinken offer?"
EXPECTED = "délimitation des frontières"
START_TIMEOUT_S = 300  # the first start embeds the seeds with the real model
ANSWER_TIMEOUT_S = 120

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # 16 s: Streamlit and Chromium start


@pytest.fixture
def app_url(tmp_path: Path) -> Iterator[str]:
    """The app over a fresh index of the real seeds with the default model."""
    env = {"RAG_SEEDS": str(ROOT / "seeds"), "RAG_INDEX": str(tmp_path / "index"), "RAG_MODEL": DEFAULT_MODEL}
    with serve_app(env, tmp_path / "streamlit.log") as url:
        yield url


def test_ask_in_the_browser_and_open_the_source(app_url: str) -> None:
    from playwright.sync_api import expect

    with browser_page(1280, 1250, "browser-failure.png") as page:  # the whole chat in one shot
        page.goto(app_url)
        # the index is built at the first start; the chat input and the facts appear once it is loaded
        expect(page.get_by_text("Documents: 1")).to_be_visible(timeout=START_TIMEOUT_S * 1000)
        # a local tool: no "Deploy" button or menu item (.streamlit/config.toml: toolbarMode minimal;
        # with toolbarMode developer the header shows one)
        menu = page.locator("[data-testid='stMainMenu']")
        if menu.count():
            menu.click()
        expect(page.get_by_text(re.compile("Deploy"))).to_have_count(0)
        page.keyboard.press("Escape")
        box = page.get_by_placeholder("Ask a question about the documents")
        box.fill(QUESTION)
        box.press("Enter")
        answer = page.locator("[data-testid='stChatMessage']").nth(1)
        expect(answer.locator(".rag-answer")).to_be_visible(timeout=ANSWER_TIMEOUT_S * 1000)
        expect(answer.locator(".rag-answer")).to_contain_text(EXPECTED)
        quotes = re.findall(r"«(.*?)»\s*\[(\d+)\]", answer.locator(".rag-answer").inner_text())
        number = next(n for quote, n in quotes if EXPECTED in quote)
        source = answer.locator("[data-testid='stExpander'] summary").nth(int(number) - 1)
        expect(source).to_contain_text(f"[{number}] 000_5af0c40136177a6e.txt · 2022-10 · paragraph")
        source.click()
        mark = answer.locator("[data-testid='stExpander']").nth(int(number) - 1).locator("mark")
        expect(mark).to_be_visible()
        expect(mark).to_contain_text(EXPECTED)
        assert mark.inner_text() == dict((n, q) for q, n in quotes)[number]  # exactly the cited sentence
        page.wait_for_timeout(1000)  # let the expander finish opening
        shot = SCREENSHOT if os.environ.get("RAG_SAVE_SCREENSHOT") == "1" else ARTIFACTS / "browser-answer.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
