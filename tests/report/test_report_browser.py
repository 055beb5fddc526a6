"""The report.html of a real `dpo-eval report` (the tiny trained run, a rule judge) in headless Chromium, with
`<script>` and `<img onerror>` in every held-out prompt: no console error or outside request, every plot
loaded, a screenshot that is not blank, and the hostile text shown as text, never run.

Chromium and Playwright from browser_page.py, as in test_browser.py (the example document): skips outside CI
when either is missing, and under CI=true such a skip fails (tests/ci_guard.py lists "chromium").
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from browser_page import missing_browser, opened_page
from click.testing import CliRunner
from real_results import HOSTILE_IMG, HOSTILE_SCRIPT
from tiny_run import FAST, JUDGE_DIR, RULE_JUDGE, trained_once

from dpo_eval.cli import main

pytestmark = pytest.mark.skipif(missing_browser() is not None, reason=missing_browser() or "")


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """The tiny run reported on its held-out pairs with hostile HTML added to every prompt."""
    tiny = trained_once(tmp_path_factory)
    root = tmp_path_factory.mktemp("real_page")
    rows = [json.loads(line) for line in open(tiny["eval"])]
    data = root / "hostile.jsonl"
    data.write_text("".join(json.dumps({**r, "prompt": f"{r['prompt']}{HOSTILE_SCRIPT} {HOSTILE_IMG} "}) + "\n"
                            for r in rows))
    out = root / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(JUDGE_DIR))
        result = CliRunner().invoke(main, ["report", str(tiny["run"]), "--data", str(data), "--judge", RULE_JUDGE,
                                           "--out", str(out), "--cache-dir", str(tiny["cache"]), *FAST],
                                    catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def opened(reported):
    """report.html loaded in chromium: (page facts, console errors, outside requests, screenshot)."""
    with opened_page(reported / "report.html") as loaded:
        page = loaded.page
        facts = {
            "pwned": page.evaluate("typeof window.__pwned"),
            "images": page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth])"),
            "figures": page.evaluate("Array.from(document.querySelectorAll('figure')).map(f => f.id)"),
            "scripts": page.evaluate("document.scripts.length"),
            "text": page.inner_text("body"),
            "hostile_shown": page.locator("pre.text", has_text=HOSTILE_SCRIPT).count(),
        }
        screenshot = page.screenshot(full_page=False)
    return facts, loaded.errors, loaded.outside, screenshot


def test_no_console_error_and_no_outside_request(opened):
    _, errors, outside, _ = opened
    assert errors == [] and outside == []


def test_every_plot_of_the_real_report_loaded(opened):
    facts = opened[0]
    assert {"plot-rewards", "plot-drift", "plot-lengths", "plot-winrates", "plot-training"} <= set(facts["figures"])
    assert len(facts["images"]) == len(facts["figures"])
    assert all(complete and width > 0 for complete, width in facts["images"]), facts["images"]


def test_hostile_prompts_are_shown_as_text_and_never_run(opened, reported):
    facts = opened[0]
    assert facts["pwned"] == "undefined" and facts["scripts"] == 0
    assert HOSTILE_SCRIPT in facts["text"] and HOSTILE_IMG in facts["text"]
    assert facts["hostile_shown"] >= 1
    page = (reported / "report.html").read_text()
    assert HOSTILE_SCRIPT not in page and "<img src=x" not in page
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in page


def test_screenshot_is_not_blank(opened):
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(opened[3])).convert("RGB"), dtype=np.float64)
    assert pixels.shape[:2] == (900, 1000)
    assert pixels.std() > 10.0 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20
