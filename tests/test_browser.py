"""The status page in a real headless Chromium (Playwright), against a daemon over the simulator.

Debian's `chromium` is the browser (no Playwright browser download). Outside CI a missing
browser or Playwright skips; under CI=true it fails. `SYNCWATCH_UPDATE_SCREENSHOTS=1` makes
the run write docs/img/*.png for the README; nothing else writes them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.browsing import cells, open_page
from tests.conftest import Daemon, Keys, SimProcess, launch, wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

IMAGES = Path(__file__).resolve().parent.parent / "docs" / "img"
MAX_TABS = 400  # more Tab presses than any page here has stops: a bound, not a measure


@pytest.fixture(scope="module")
def daemon(
    tmp_path_factory: pytest.TempPathFactory, simulator: SimProcess, rsa_keys: Keys
) -> Iterator[Daemon]:
    """One daemon for the module (the tests only read): browser tests stay a few seconds."""
    simulator.reset()
    d = launch(tmp_path_factory.mktemp("browser"), simulator, rsa_keys)
    yield d
    d.proc.stop()


@pytest.fixture
def page(browser: Browser, daemon: Daemon) -> Iterator[Page]:
    yield from open_page(browser, daemon, javascript=True)


def worst_critical_tenant(page: Page) -> tuple[str, str, int]:
    """(source, tenant, critical count) of the first overview row with a critical sync."""
    header = page.locator("#tenants thead th").all_inner_texts()
    at = header.index("critical")
    row = next(r for r in cells(page, "tenants") if int(r[at]) > 0)
    return row[0], row[1], int(row[at])


def screenshot(page: Page, name: str) -> None:
    if os.environ.get("SYNCWATCH_UPDATE_SCREENSHOTS") == "1":
        IMAGES.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(IMAGES / name), full_page=True)


def has_transition(page: Page) -> bool:
    """The sync's timeline shows a state transition (the history store has caught up)."""
    page.reload()
    return any(len(r) == 5 and r[1] == "transition" for r in cells(page, "timeline"))


def walk(page: Page, *, shoot: bool = False) -> None:
    """Overview -> a tenant with a critical sync -> filtered to critical -> a sync's timeline."""
    page.goto("/")
    assert page.title() == "Overview · syncwatch"
    assert cells(page, "tenants"), "no tenant row"
    source, tenant, critical = worst_critical_tenant(page)
    if shoot:
        screenshot(page, "overview.png")
    page.locator("#tenants").get_by_role("link", name=tenant, exact=True).click()
    page.wait_for_url(re.compile(rf"/tenants/{source}/{re.escape(tenant)}$"))
    assert page.locator("h1").inner_text() == f"Tenant {tenant} ({source})"
    everything = cells(page, "syncs")
    assert len(everything) > critical
    if shoot:
        screenshot(page, "tenant.png")
    page.get_by_label("State").select_option("critical")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r"\?state=critical$"))
    only = cells(page, "syncs")
    assert len(only) == critical
    assert all(r[2].split()[1] == "critical" for r in only), only
    sync_id = only[0][0]
    page.locator("#syncs").get_by_role("link", name=sync_id, exact=True).click()
    page.wait_for_url(re.compile(rf"/syncs/{source}/{re.escape(tenant)}/{re.escape(sync_id)}$"))
    assert page.locator("h1").inner_text() == f"Sync {sync_id}"
    assert "critical" in page.locator("#now").inner_text()
    wait_until(lambda: has_transition(page), timeout=20)


def test_a_browser_follows_overview_tenant_filter_and_timeline(page: Page) -> None:
    walk(page, shoot=True)


def test_the_pages_work_with_javascript_disabled(browser: Browser, daemon: Daemon) -> None:
    for page in open_page(browser, daemon, javascript=False):
        # The context really runs no script (else this test would prove nothing).
        page.set_content("<title>t</title><script>document.title = 'ran'</script>")
        assert page.title() == "t"
        walk(page)
        # Nothing to lose: the page is server-rendered; the one script (auto-refresh) is
        # syncwatch's own file, never inline, and without it no control of its is shown.
        page.goto("/")
        sources = page.eval_on_selector_all("script", "ss => ss.map(s => s.src || s.text)")
        assert sources == [f"{daemon.url}/static/refresh.js"]
        assert page.locator("#refresh").count() == 0


FOCUSED = """() => {
  const e = document.activeElement;
  const s = getComputedStyle(e);
  return {tag: e.tagName.toLowerCase(), href: e.getAttribute("href"), id: e.id,
          text: e.innerText || "", outline: s.outlineStyle, width: parseFloat(s.outlineWidth),
          shadow: s.boxShadow, visible: e.matches(":focus-visible")};
}"""


def tab_through(page: Page) -> list[dict[str, Any]]:
    """Every stop Tab makes, from the top of the page until focus leaves it again."""
    page.reload()  # a fresh load: sequential focus starts at the top
    stops: list[dict[str, Any]] = []
    for _ in range(MAX_TABS):
        page.keyboard.press("Tab")
        stop: dict[str, Any] = page.evaluate(FOCUSED)
        if stop["tag"] == "body" or (stops and stop == stops[0]):
            return stops
        stops.append(stop)
    raise AssertionError(f"Tab never left the page after {MAX_TABS} presses")


def assert_every_control_reached_with_focus_shown(page: Page) -> list[dict[str, Any]]:
    stops = tab_through(page)
    links = page.eval_on_selector_all("a[href]", "as => as.map(a => a.getAttribute('href'))")
    assert [s["href"] for s in stops if s["tag"] == "a"] == links
    # Controls, and each wide table's scroll region (focusable, so keys can scroll it).
    controls = page.locator("select, button, input, [tabindex='0']").count()
    assert len([s for s in stops if s["tag"] != "a"]) == controls
    for stop in stops:
        # Focus is shown: :focus-visible matches and draws an outline (or a ring).
        assert stop["visible"], stop
        assert (stop["outline"] != "none" and stop["width"] > 0) or stop["shadow"] != "none", stop
    return stops


def tab_to(page: Page, selector: str) -> None:
    """Tab (never click) until the focused element matches `selector`."""
    for _ in range(MAX_TABS):
        page.keyboard.press("Tab")
        if page.evaluate("s => document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"Tab never reached {selector}")


def test_the_flow_works_with_the_keyboard_alone(page: Page) -> None:
    page.goto("/")
    stops = assert_every_control_reached_with_focus_shown(page)
    assert stops[0]["href"] == "/"  # the main navigation comes first
    source, tenant, critical = worst_critical_tenant(page)
    tab_to(page, f'#tenants a[href="/tenants/{source}/{tenant}"]')
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(rf"/tenants/{source}/{re.escape(tenant)}$"))
    assert_every_control_reached_with_focus_shown(page)
    tab_to(page, "#state")
    # A closed <select> takes the arrow keys: step down until it says critical.
    for _ in range(10):
        if page.locator("#state").input_value() == "critical":
            break
        page.keyboard.press("ArrowDown")
    assert page.locator("#state").input_value() == "critical"
    tab_to(page, "button[type=submit]")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"\?state=critical$"))
    only = cells(page, "syncs")
    assert len(only) == critical
    tab_to(page, "#syncs a")
    sync_id = page.evaluate("document.activeElement.innerText")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(rf"/syncs/{source}/{re.escape(tenant)}/{re.escape(sync_id)}$"))
    assert_every_control_reached_with_focus_shown(page)
    # And back up the breadcrumb to the tenant, still by keyboard.
    tab_to(page, f'nav a[href="/tenants/{source}/{tenant}"]')
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(rf"/tenants/{source}/{re.escape(tenant)}$"))


def test_auto_refresh_keeps_the_scroll_position_filters_and_focus(page: Page) -> None:
    page.set_viewport_size({"width": 1280, "height": 300})  # short: the page scrolls
    page.goto("/?refresh=2")
    source, tenant, _ = worst_critical_tenant(page)
    page.goto(f"/tenants/{source}/{tenant}?state=critical&refresh=2")
    filtered = f"{page.url}"
    page.goto("/?refresh=2")
    assert page.locator("#refresh").inner_text().startswith("Auto-refresh every 2 s")
    before = page.locator("#cycle").inner_text()
    page.mouse.wheel(0, 400)
    page.wait_for_function("() => window.scrollY > 0")
    scrolled = page.evaluate("window.scrollY")
    # The page swaps in a later cycle's content; the place, the address and the filters stay.
    page.wait_for_function(
        "t => document.querySelector('#cycle').innerText !== t", arg=before, timeout=20_000
    )
    assert "updated" in page.locator("#refresh").inner_text()
    assert page.evaluate("window.scrollY") == scrolled
    assert page.url.endswith("/?refresh=2")
    page.goto(filtered)
    page.wait_for_function(
        "() => document.querySelector('#refresh').innerText.includes('updated')",
        timeout=20_000,
    )
    assert page.url == filtered
    assert page.locator("#state").input_value() == "critical"
    assert all(r[2].split()[1] == "critical" for r in cells(page, "syncs"))
    # Paused by the button, it stops swapping (the stamp stays); resumed, it goes on.
    page.get_by_role("button", name="Pause").click()
    assert page.locator("#refresh").inner_text() == "Auto-refresh paused. Resume"
    page.get_by_role("button", name="Resume").click()
    page.wait_for_function(
        "() => document.querySelector('#refresh').innerText.includes('updated')",
        timeout=20_000,
    )
