"""Upload a PDF in the chat app in a real browser, ask about its second page, see the quote cited with "p. 2".

Runs `streamlit run app.py` on a temporary documents folder with the hashing encoder (the
question shares its words with the sentence, so lexical matching suffices) and drives
Debian's chromium offline, as tests/test_browser.py does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import samples
from helpers import browser_page, serve_app
from samples import PAGES, write

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # 8 s: Streamlit and Chromium start
DREDGING = ["Dredging", "The dredging of the inner basin will remove eleven thousand cubic metres of silt.",
            "Dredging boats work only at night to spare the ferries."]
HOSTILE_NAME = "<img src=x onerror=alert(1)>.html"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The app on a free loopback port over a folder holding one Markdown note; its URL and the folder."""
    pytest.importorskip("reportlab", reason="the test extra is missing: pip install -e '.[test]'")
    folder = write(tmp_path / "docs" / "notes.md", "# Notes\n\nThe harbour of Port Nelle opened in 1887.\n").parent
    env = {"RAG_SEEDS": str(folder), "RAG_INDEX": str(tmp_path / "index"), "RAG_MODEL": "hash"}
    with serve_app(env, tmp_path / "streamlit.log") as url:
        yield url, folder


def test_upload_a_pdf_and_cite_its_second_page(app: tuple[str, Path], tmp_path: Path) -> None:
    from playwright.sync_api import Dialog, expect

    url, folder = app
    upload = tmp_path / "upload"
    pdf = write(upload / "report.pdf", samples.pdf_bytes([PAGES["en"], DREDGING], created="2024-03-05"))
    hostile = write(upload / HOSTILE_NAME, samples.html_page("en", "<b>Title</b>", None, [("Part", ["Some text."])]))
    dialogs: list[str] = []

    def dismiss(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    with browser_page(1400, 1400, "browser-upload-failure.png") as page:
        page.on("dialog", dismiss)
        page.goto(url)
        expect(page.get_by_text("Documents: 1")).to_be_visible(timeout=120_000)
        expect(page.get_by_text("Up to 50 MB per file")).to_be_visible()  # the limits are stated
        page.locator("[data-testid='stFileUploader'] input[type='file']").set_input_files([str(pdf), str(hostile)])
        expect(page.get_by_text("report.pdf", exact=True)).to_be_visible(timeout=30_000)  # both are listed
        page.get_by_role("button", name="Add to the documents").click()
        expect(page.get_by_text("report.pdf was added")).to_be_visible(timeout=30_000)
        expect(page.get_by_text("Documents: 3")).to_be_visible(timeout=120_000)  # index updated
        expect(page.get_by_text("Pages: 4")).to_be_visible()
        sidebar = page.locator("[data-testid='stSidebar']")
        expect(sidebar.get_by_text(f"{HOSTILE_NAME}\nHTML", exact=False)).to_be_visible()  # a name, as text
        expect(sidebar.get_by_text("report.pdf\n2 pages", exact=False)).to_be_visible()
        assert (folder / "report.pdf").read_bytes() == pdf.read_bytes()

        box = page.get_by_placeholder("Ask a question about the documents")
        box.fill("How much silt will the dredging of the inner basin remove?")
        box.press("Enter")
        answer = page.locator("[data-testid='stChatMessage']").nth(1)
        expect(answer.locator(".rag-answer")).to_contain_text(DREDGING[1], timeout=60_000)
        source = answer.locator("[data-testid='stExpander'] summary").first
        expect(source).to_contain_text("[1] report.pdf · p. 2 · 2024-03-05 · paragraph")
        source.click()
        expect(answer.locator("mark").first).to_have_text(DREDGING[1])
        assert page.locator("img[src='x']").count() == 0 and dialogs == []  # nothing of a name ran as HTML

        # the documents view removes one: out of the folder (kept aside) and out of the index
        row = sidebar.locator("[data-testid='stHorizontalBlock']").filter(has_text="notes.md")
        row.get_by_role("button").click()
        expect(page.get_by_text("notes.md was removed")).to_be_visible(timeout=30_000)
        expect(page.get_by_text("Documents: 2")).to_be_visible(timeout=120_000)
        assert not (folder / "notes.md").exists() and (folder / ".removed" / "notes.md").exists()
