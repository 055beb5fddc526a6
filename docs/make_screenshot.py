"""Screenshot a rendered report with the headless Chromium the tests use (Debian's /usr/bin/chromium).

    python docs/make_screenshot.py demo_out/report/report.html docs/report.png
"""

from __future__ import annotations

import sys
from pathlib import Path

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def screenshot(page_path: Path, png: Path, width: int = 1100, height: int = 1400) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(page_path.resolve().as_uri())
        page.screenshot(path=str(png))
        browser.close()


if __name__ == "__main__":
    screenshot(Path(sys.argv[1]), Path(sys.argv[2]))
