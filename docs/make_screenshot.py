"""Screenshot a rendered report with the headless Chromium the tests use (Debian's /usr/bin/chromium).

    python docs/make_screenshot.py demo_out/report/report.html docs/report.png

The executable and its launch arguments come from tests/report/browser_page.py, the one place they are set.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "report"))
from browser_page import CHROMIUM, CHROMIUM_ARGS  # noqa: E402


def screenshot(page_path: Path, png: Path, width: int = 1100, height: int = 1400) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(page_path.resolve().as_uri())
        page.screenshot(path=str(png))
        browser.close()


if __name__ == "__main__":
    screenshot(Path(sys.argv[1]), Path(sys.argv[2]))
