"""A rendered page opened in a real headless Chromium (Debian's /usr/bin/chromium driven by Playwright).

One place for the browser the tests (test_browser.py) and docs/make_screenshot.py use:
the executable, its launch arguments, why it cannot run here, and a page opened with every console error and
page error recorded and every request that leaves file:/data: recorded and aborted. Playwright's own browser
download is never used. Imports only the standard library at module level (playwright when a page is opened),
so the docs script can import it without pytest.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def missing_browser() -> str | None:
    """Why the browser cannot run here (each reason names chromium, for the CI guard), or None."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"needs Debian's chromium at {CHROMIUM} (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "needs playwright to drive chromium (pip install -e '.[dev]' or pip install playwright)"
    return None


@dataclass
class OpenedPage:
    """A loaded page, the console/page errors it raised, and the outside requests it tried (all aborted)."""

    page: Any
    errors: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)


@contextmanager
def opened_page(page_path: Path, width: int = 1000, height: int = 900) -> Iterator[OpenedPage]:
    """`page_path` loaded (until its load event) in headless chromium with a `width` x `height` viewport.

    Console messages of type error and uncaught page errors go to `errors`; a request to anything but a
    file: or data: URL goes to `outside` and is aborted. The browser closes when the block ends.
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=60_000)
        try:
            opened = OpenedPage(browser.new_page(viewport={"width": width, "height": height}))
            opened.page.on("console", lambda msg: opened.errors.append(msg.text) if msg.type == "error" else None)
            opened.page.on("pageerror", lambda error: opened.errors.append(str(error)))
            opened.page.route("**/*", lambda route: _only_local(route, opened.outside))
            opened.page.goto(page_path.resolve().as_uri(), wait_until="load")
            yield opened
        finally:
            browser.close()


def _only_local(route, outside: list[str]) -> None:
    """Let file: and data: requests through; record and abort any other."""
    url = route.request.url
    if url.startswith(("file:", "data:")):
        route.continue_()
    else:
        outside.append(url)
        route.abort()
