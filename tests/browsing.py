"""Opening the status page in the `browser` fixture's Chromium (tests/conftest.py).

Shared by the browser tests (tests/test_browser.py) and the accessibility check
(tests/test_accessibility.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from tests.conftest import Daemon

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, ViewportSize

VIEWPORT: ViewportSize = {"width": 1280, "height": 900}


def open_page(
    browser: Browser,
    daemon: Daemon,
    *,
    javascript: bool,
    refused: tuple[str, ...] = (),
    bypass_csp: bool = False,
) -> Iterator[Page]:
    """A fresh context whose every request must go to the daemon: no external resource.

    After the test: no request left the daemon, no script error, and nothing answered 400 or
    more except the paths in `refused` (an error page the test opens on purpose).
    `bypass_csp` lets the test inject a script of its own (the pages allow only theirs).
    """
    context = browser.new_context(
        viewport=VIEWPORT,
        java_script_enabled=javascript,
        bypass_csp=bypass_csp,
        color_scheme="light",
        base_url=daemon.url,
    )
    elsewhere: list[str] = []
    context.on(
        "request",
        lambda r: None if r.url.startswith(daemon.url + "/") else elsewhere.append(r.url),
    )
    errors: list[str] = []
    expected = {daemon.url + path for path in refused}
    missing: list[str] = []  # every answer of 400 or more, /favicon.ico included
    context.on(
        "response",
        lambda r: missing.append(r.url) if r.status >= 400 and r.url not in expected else None,
    )
    tab = context.new_page()
    tab.on("pageerror", lambda e: errors.append(str(e)))
    # An error page opened on purpose logs its status; any other console error counts.
    tab.on(
        "console",
        lambda m: (
            errors.append(m.text)
            if m.type == "error" and m.location.get("url") not in expected
            else None
        ),
    )
    yield tab
    context.close()
    assert not elsewhere, elsewhere
    assert not errors, errors
    assert not missing, missing


def cells(page: Page, table: str) -> list[list[str]]:
    """The body rows of a table by id, as the cell texts a reader sees."""
    rows: list[list[str]] = page.eval_on_selector_all(
        f"#{table} tbody tr",
        "rows => rows.map(r => [...r.cells].map(c => c.innerText.trim()))",
    )
    return rows
