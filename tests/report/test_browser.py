"""report.html opened in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright).

Skips outside CI when chromium or playwright is missing; under CI=true such a skip fails (tests/ci_guard.py
lists "chromium"): .ci/run installs chromium, the dev extra installs playwright. Playwright's own browser
download is never used.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from example_results import HOSTILE_IMG, HOSTILE_SCRIPT, build_example

from dpo_eval.reports.plots import PLOTS
from dpo_eval.reports.render import render

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def missing_browser() -> str | None:
    """Why the browser test cannot run here (each reason names chromium, for the CI guard), or None."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"needs Debian's chromium at {CHROMIUM} (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "needs playwright to drive chromium (pip install -e '.[dev]' or pip install playwright)"
    return None


pytestmark = pytest.mark.skipif(missing_browser() is not None, reason=missing_browser() or "")


@pytest.fixture(scope="module")
def opened(tmp_path_factory):
    """The rendered example loaded in chromium: (page facts, console errors, outside requests, screenshot)."""
    from playwright.sync_api import sync_playwright

    folder = build_example(tmp_path_factory.mktemp("browser"))
    page_path = render(folder)[0]
    errors, outside = [], []
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=60_000)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.route("**/*", lambda route: _only_local(route, outside))
            page.goto(page_path.resolve().as_uri(), wait_until="load")
            facts = {
                "pwned": page.evaluate("typeof window.__pwned"),
                "images": page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth])"),
                "text": page.inner_text("body"),
                "hostile_visible": page.locator("pre.text", has_text=HOSTILE_SCRIPT).first.is_visible(),
            }
            screenshot = page.screenshot(full_page=False)
        finally:
            browser.close()
    return facts, errors, outside, screenshot


def _only_local(route, outside: list[str]) -> None:
    url = route.request.url
    if url.startswith(("file:", "data:")):
        route.continue_()
    else:
        outside.append(url)
        route.abort()


def test_page_loads_without_console_errors_or_outside_requests(opened):
    _, errors, outside, _ = opened
    assert errors == []
    assert outside == []


def test_every_image_loaded(opened):
    facts = opened[0]
    assert len(facts["images"]) == len(PLOTS)
    assert all(complete and width > 0 for complete, width in facts["images"]), facts["images"]


def test_hostile_text_is_shown_as_text_and_never_runs(opened):
    facts = opened[0]
    assert facts["pwned"] == "undefined"
    assert HOSTILE_SCRIPT in facts["text"] and HOSTILE_IMG in facts["text"]
    assert facts["hostile_visible"]


def test_screenshot_is_not_blank(opened):
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(opened[3])).convert("RGB"), dtype=np.float64)
    assert pixels.shape[:2] == (900, 1000)
    assert pixels.std() > 10.0
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20
