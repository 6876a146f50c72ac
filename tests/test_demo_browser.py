"""What a new user sees: `syncwatch demo`'s status page, opened from the URL its banner prints.

Without reloading, the page shows syncs going stale, escalating and recovering: the demo's
story (the same at every run, see SimConfig.epoch) arrives through the page's auto-refresh.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.browsing import cells
from tests.conftest import wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Browser

STORY_DEADLINE = 55.0  # real seconds; the demo's escalations and recoveries fall in its first 30


@pytest.fixture
def demo_url(tmp_path: Path) -> Iterator[str]:
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        demo = subprocess.Popen(
            [sys.executable, "-m", "syncwatch", "demo", "--duration", "90s"],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        found = wait_until(lambda: re.search(r"status page: (\S+)", log.read_text()), timeout=30)
        yield found[1]
    finally:
        demo.terminate()
        assert demo.wait(15) == 0, log.read_text()


def test_the_demo_page_shows_syncs_go_stale_escalate_and_recover(
    browser: Browser, demo_url: str
) -> None:
    page = browser.new_page()
    try:
        page.goto(demo_url)
        assert "refresh=" in demo_url
        wait_until(lambda: cells(page, "alerts") != [["No alerts."]] or None, timeout=30)
        seen: dict[tuple[str, str, str], list[str]] = {}
        gone: set[tuple[str, str, str]] = set()

        def sample() -> set[tuple[str, str, str]]:
            now: set[tuple[str, str, str]] = set()
            for state, severity, alert, _, tenant, sync, _ in cells(page, "alerts"):
                key = (alert, tenant, sync)
                now.add(key)
                if state.split()[-1] == "firing":
                    severities = seen.setdefault(key, [])
                    if not severities or severities[-1] != severity.split()[-1]:
                        severities.append(severity.split()[-1])
            gone.update(k for k in seen if k not in now)
            return now

        first = sample()

        def told() -> bool:
            stamp = page.locator("#refresh").inner_text()
            # The next swap of the page's content, by the page itself (no reload here).
            page.wait_for_function(
                "s => document.querySelector('#refresh').innerText !== s",
                arg=stamp,
                timeout=15_000,
            )
            now = sample()
            escalated = any(s[:2] == ["warning", "critical"] for s in seen.values())
            return escalated and bool(gone) and bool(now - first)

        wait_until(told, timeout=STORY_DEADLINE)
    finally:
        page.close()
