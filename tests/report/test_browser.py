"""report.html of a real `dpo-eval report` (tests/report/real_results.py: two tiny runs, a rule judge,
`<script>` and `<img onerror>` in every held-out prompt) opened in a real headless Chromium (Debian's
/usr/bin/chromium driven by Playwright): no console error or outside request, every plot loaded, the
recommendation and key figures on the first screen, a screenshot that is not blank, the hostile text shown
as text, never run.

Skips outside CI when chromium or playwright is missing; under CI=true such a skip fails (tests/ci_guard.py
lists "chromium"): .ci/run installs chromium, the dev extra installs playwright. The browser and the page
opening (console errors, outside requests blocked) live in browser_page.py.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from browser_page import missing_browser, opened_page
from real_results import HOSTILE_IMG, HOSTILE_SCRIPT, copy_results

from dpo_eval.reports.plots import PLOTS
from dpo_eval.reports.render import render

pytestmark = pytest.mark.skipif(missing_browser() is not None, reason=missing_browser() or "")


@pytest.fixture(scope="module")
def opened(real_results, tmp_path_factory):
    """The rendered real results loaded in chromium: (page facts, console errors, outside requests, screenshot,
    the page's HTML)."""
    folder = copy_results(real_results.judged, tmp_path_factory.mktemp("browser") / "results")
    with opened_page(render(folder)[0]) as loaded:
        page = loaded.page
        facts = {
            "pwned": page.evaluate("typeof window.__pwned"),
            "images": page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth])"),
            "text": page.inner_text("body"),
            "hostile_visible": page.locator("pre.text", has_text=HOSTILE_SCRIPT).first.is_visible(),
            "figures": page.evaluate("Array.from(document.querySelectorAll('figure')).map(f => f.id)"),
            "scripts": page.evaluate("document.scripts.length"),
            "first_screen": page.evaluate("Array.from(document.querySelectorAll('section')).filter("
                                          "s => s.getBoundingClientRect().top < window.innerHeight).map(s => s.id)"),
        }
        screenshot = page.screenshot(full_page=False)
    return facts, loaded.errors, loaded.outside, screenshot, (folder / "report.html").read_text()


def test_page_loads_without_console_errors_or_outside_requests(opened):
    _, errors, outside, *_ = opened
    assert errors == []
    assert outside == []


def test_the_first_screen_shows_the_recommendation_and_the_key_figures(opened):
    assert opened[0]["first_screen"][:2] == ["recommended", "key-figures"]


def test_every_image_loaded(opened):
    facts = opened[0]
    assert {"plot-rewards", "plot-drift", "plot-lengths", "plot-winrates", "plot-training"} <= set(facts["figures"])
    assert len(facts["images"]) == len(facts["figures"]) <= len(PLOTS)
    assert all(complete and width > 0 for complete, width in facts["images"]), facts["images"]


def test_hostile_text_is_shown_as_text_and_never_runs(opened):
    facts, page = opened[0], opened[4]
    assert HOSTILE_SCRIPT not in page and "<img src=x" not in page
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in page
    assert facts["pwned"] == "undefined" and facts["scripts"] == 0
    assert HOSTILE_SCRIPT in facts["text"] and HOSTILE_IMG in facts["text"]
    assert facts["hostile_visible"]


def test_screenshot_is_not_blank(opened):
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(opened[3])).convert("RGB"), dtype=np.float64)
    assert pixels.shape[:2] == (900, 1000)
    assert pixels.std() > 10.0
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20
