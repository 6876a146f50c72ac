"""The status page in a real headless Chromium (Playwright), against a daemon over the simulator.

Debian's `chromium` is the browser (no Playwright browser download). Outside CI a missing
browser or Playwright skips; under CI=true it fails. `SYNCWATCH_UPDATE_SCREENSHOTS=1` makes
the run write docs/img/*.png for the README; nothing else writes them. Tests that write
(silences) get a daemon of their own; the module's shared one is only read.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.browsing import cells, open_page
from tests.conftest import Daemon, Keys, SimProcess, launch, wait_until
from tests.test_amapi import amtool, amtool_path

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

__all__ = ["amtool_path"]  # the fixture, shared with tests/test_amapi.py

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
    controls = page.locator(
        "select, button, textarea, input:not([type=hidden]), [tabindex='0']"
    ).count()
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


# --- writing: silences from the page (each test has a daemon of its own) -----------------


@pytest.fixture
def writable(tmp_path: Path, sim: SimProcess, rsa_keys: Keys) -> Iterator[Daemon]:
    d = launch(tmp_path, sim, rsa_keys)
    yield d
    d.proc.stop()


@pytest.fixture
def write_page(browser: Browser, writable: Daemon) -> Iterator[Page]:
    yield from open_page(browser, writable, javascript=True)


def table(page: Page, name: str) -> list[dict[str, str]]:
    """A table's body rows as {column header: cell text}: columns others add do not matter."""
    header = page.locator(f"#{name} thead th").all_inner_texts()
    return [dict(zip(header, row, strict=False)) for row in cells(page, name)]


def lone_alert(daemon: Daemon) -> dict[str, Any]:
    """A firing alert of a sync that has no other: silencing it makes its whole row
    suppressed on the tenant page."""
    alerts: list[dict[str, Any]] = daemon.get("/api/v2/alerts").raise_for_status().json()

    def key(a: dict[str, Any]) -> tuple[str, ...]:
        return tuple(a["labels"].get(k, "") for k in ("source", "tenant", "sync_id"))

    per_sync = Counter(key(a) for a in alerts)
    return next(a for a in alerts if a["labels"].get("sync_id") and per_sync[key(a)] == 1)


IDENTITY = ("alertname", "source", "tenant", "sync_id")


def identity_lines(labels: dict[str, str]) -> set[str]:
    return {f'{k}="{labels[k]}"' for k in IDENTITY}


def amtool_alerts(path: str, daemon: Daemon, labels: dict[str, str], *flags: str) -> list[str]:
    """The lines `amtool alert query` prints for this alert (by its identity labels)."""
    matchers = [f"{k}={labels[k]}" for k in IDENTITY]
    out = amtool(path, daemon, "alert", "query", "-o", "extended", *flags, *matchers)
    return [line for line in out.splitlines() if f'sync_id="{labels["sync_id"]}"' in line]


def amtool_silences(path: str, daemon: Daemon, *flags: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = json.loads(
        amtool(path, daemon, "silence", "query", "-o", "json", *flags)
    )
    return listed


def tenant_path(labels: dict[str, str]) -> str:
    return f"/tenants/{labels['source']}/{labels['tenant']}"


def assert_suppressed(
    page: Page, daemon: Daemon, amtool_path: str, alert: dict[str, Any], silence_id: str
) -> None:
    """Muted everywhere: at once on /alerts and in the API, from the next cycle in the views."""
    labels = alert["labels"]
    page.goto(f"/alerts?tenant={labels['tenant']}&state=suppressed")
    (row,) = [r for r in table(page, "alerts") if r["Sync"] == labels["sync_id"]]
    assert (row["State"], row["Alert"], row["Muted by"]) == (
        "◌ suppressed",
        labels["alertname"],
        silence_id,
    )
    (line,) = amtool_alerts(amtool_path, daemon, labels, "--silenced")
    assert "suppressed" in line
    assert amtool_alerts(amtool_path, daemon, labels) == []  # gone from the active view
    wait_until(lambda: overview_state(page, labels) == "suppressed", timeout=20)
    wait_until(lambda: sync_state(page, labels) == "suppressed", timeout=20)


def assert_firing(page: Page, daemon: Daemon, amtool_path: str, alert: dict[str, Any]) -> None:
    labels = alert["labels"]
    page.goto(f"/alerts?tenant={labels['tenant']}")
    (row,) = [
        r
        for r in table(page, "alerts")
        if (r["Sync"], r["Alert"]) == (labels["sync_id"], labels["alertname"])
    ]
    assert (row["State"], row["Muted by"]) == ("✖ firing", "")
    (line,) = amtool_alerts(amtool_path, daemon, labels)
    assert "active" in line
    wait_until(lambda: overview_state(page, labels) == "firing", timeout=20)
    wait_until(lambda: sync_state(page, labels) == labels["severity"], timeout=20)


def overview_state(page: Page, labels: dict[str, str]) -> str:
    page.goto("/")
    (row,) = [
        r
        for r in table(page, "alerts")
        if (r["Sync"], r["Alert"]) == (labels["sync_id"], labels["alertname"])
    ]
    return row["State"].split()[1]


def sync_state(page: Page, labels: dict[str, str]) -> str:
    page.goto(tenant_path(labels))
    (row,) = [r for r in table(page, "syncs") if r["Sync"] == labels["sync_id"]]
    return row["State"].split()[1]


def landed_on_silence(page: Page) -> str:
    """The id of the silence the page was redirected to (`/silences#silence-<id>`)."""
    page.wait_for_url(re.compile(r"/silences#silence-[0-9a-f-]+$"))
    return page.url.rsplit("#silence-", 1)[1]


def test_a_silence_made_from_an_alert_suppresses_it_until_expired(
    write_page: Page, writable: Daemon, amtool_path: str
) -> None:
    page, alert = write_page, lone_alert(writable)
    labels = alert["labels"]
    page.goto("/alerts")
    name = f"Silence {labels['alertname']} of {labels['sync_id']}"
    page.locator("#alerts").get_by_role("link", name=name, exact=True).click()
    page.wait_for_url(re.compile(rf"/silences/new\?fingerprint={alert['fingerprint']}$"))
    # Pre-filled with the alert's identity, not its severity: it holds through an escalation.
    assert set(page.get_by_label("Matchers").input_value().splitlines()) == identity_lines(labels)
    assert page.get_by_label("Starts at").input_value() == ""  # now
    page.get_by_label("Duration").fill("45m")
    page.get_by_label("Author").fill("ops")
    page.get_by_label("Comment").fill("customer migrating the table")
    screenshot(page, "silence-form.png")
    page.get_by_role("button", name="Create silence").click()
    silence_id = landed_on_silence(page)
    assert [r["ID"] for r in table(page, "silences-active")] == [silence_id]
    (stored,) = amtool_silences(amtool_path, writable)
    assert (stored["id"], stored["createdBy"]) == (silence_id, "ops")
    span = datetime.fromisoformat(stored["endsAt"]) - datetime.fromisoformat(stored["startsAt"])
    assert span == timedelta(minutes=45)

    assert_suppressed(page, writable, amtool_path, alert, silence_id)

    page.goto("/silences")
    page.get_by_role("button", name=f"Expire silence {silence_id}", exact=True).click()
    assert landed_on_silence(page) == silence_id
    assert [r["ID"] for r in table(page, "silences-expired")] == [silence_id]
    assert table(page, "silences-active") == [{"ID": "None."}]
    assert_firing(page, writable, amtool_path, alert)


def edit(page: Page, silence_id: str) -> None:
    page.goto("/silences")
    page.get_by_role("link", name=f"Edit silence {silence_id}", exact=True).click()
    page.wait_for_url(re.compile(rf"/silences/{silence_id}/edit$"))
    assert page.locator("h1").inner_text() == f"Edit silence {silence_id}"


def save(page: Page) -> str:
    page.get_by_role("button", name="Save silence").click()
    return landed_on_silence(page)


def ids(path: str, daemon: Daemon, *flags: str) -> list[str]:
    return amtool(path, daemon, "silence", "query", "-q", *flags).split()


def test_editing_a_silence_updates_it_in_place_or_replaces_it_as_alertmanager_does(
    write_page: Page, writable: Daemon, amtool_path: str
) -> None:
    page, labels = write_page, lone_alert(writable)["labels"]
    tenant = f'tenant="{labels["tenant"]}"'
    first = amtool(
        amtool_path, writable, "silence", "add", "--author=ops", "--comment=migration",
        "--duration=1h", f"tenant={labels['tenant']}",
    ).strip()  # fmt: skip
    (made,) = amtool_silences(amtool_path, writable)

    # The form shows the stored silence.
    edit(page, first)
    assert page.get_by_label("Matchers").input_value() == tenant
    starts = page.get_by_label("Starts at").input_value()
    assert datetime.fromisoformat(starts) == datetime.fromisoformat(made["startsAt"])
    assert page.get_by_label("Duration").input_value() == "1h"
    assert page.get_by_label("Author").input_value() == "ops"
    assert page.get_by_label("Comment").input_value() == "migration"

    # A new end and comment: the same silence, updated in place.
    page.get_by_label("Duration").fill("3h")
    page.get_by_label("Comment").fill("migration, day two")
    assert save(page) == first
    assert ids(amtool_path, writable) == [first]
    assert ids(amtool_path, writable, "--expired") == []
    (updated,) = amtool_silences(amtool_path, writable)
    assert updated["comment"] == "migration, day two"
    assert updated["startsAt"] == made["startsAt"]
    span = datetime.fromisoformat(updated["endsAt"]) - datetime.fromisoformat(starts)
    assert abs(span - timedelta(hours=3)) < timedelta(seconds=1)
    active = table(page, "silences-active")
    assert [(r["ID"], r["Comment"]) for r in active] == [(first, "migration, day two")]

    # New matchers: the old silence is expired (its history kept), a new one replaces it.
    edit(page, first)
    sync = f'sync_id="{labels["sync_id"]}"'
    page.get_by_label("Matchers").fill(f"{tenant}\n{sync}")
    second = save(page)
    assert second != first
    assert ids(amtool_path, writable) == [second]
    assert ids(amtool_path, writable, "--expired") == [first]
    (replaced,) = amtool_silences(amtool_path, writable)
    assert {(m["name"], m["value"]) for m in replaced["matchers"]} == {
        ("tenant", labels["tenant"]),
        ("sync_id", labels["sync_id"]),
    }
    assert replaced["comment"] == "migration, day two"
    assert [r["ID"] for r in table(page, "silences-active")] == [second]
    assert [r["ID"] for r in table(page, "silences-expired")] == [first]

    # A new start of an active silence replaces it too: here with a pending one.
    later = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    edit(page, second)
    page.get_by_label("Starts at").fill(later.isoformat())
    third = save(page)
    assert third not in (first, second)
    assert [r["ID"] for r in table(page, "silences-pending")] == [third]
    assert table(page, "silences-active") == [{"ID": "None."}]
    assert sorted(ids(amtool_path, writable, "--expired")) == sorted([first, second])
    # A pending silence may move its start (still in the future) in place.
    edit(page, third)
    page.get_by_label("Starts at").fill((later + timedelta(hours=1)).isoformat())
    assert save(page) == third
    (pending,) = [s for s in amtool_silences(amtool_path, writable) if s["id"] == third]
    assert datetime.fromisoformat(pending["startsAt"]) == later + timedelta(hours=1)
    assert pending["status"]["state"] == "pending"


def shift_tab_to(page: Page, selector: str) -> None:
    """Shift+Tab (backwards) until the focused element matches `selector`."""
    for _ in range(MAX_TABS):
        page.keyboard.press("Shift+Tab")
        if page.evaluate("s => document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"Shift+Tab never reached {selector}")


def type_into(page: Page, selector: str, text: str) -> None:
    """Tab to a field, select what it holds and type over it: keys only."""
    tab_to(page, selector)
    page.keyboard.press("ControlOrMeta+A")
    page.keyboard.type(text)


def test_silencing_and_expiring_works_with_the_keyboard_alone(
    write_page: Page, writable: Daemon, amtool_path: str
) -> None:
    page, alert = write_page, lone_alert(writable)
    labels = alert["labels"]
    page.goto("/alerts")
    assert_every_control_reached_with_focus_shown(page)
    tab_to(page, f'#alerts a[href="/silences/new?fingerprint={alert["fingerprint"]}"]')
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/silences/new\?fingerprint="))
    assert_every_control_reached_with_focus_shown(page)
    assert set(page.locator("#matchers").input_value().splitlines()) == identity_lines(labels)
    type_into(page, "#duration", "45m")
    type_into(page, "#author", "ops")
    tab_to(page, "#silence button[type=submit]")
    shift_tab_to(page, "#comment")  # one back: the comment is just before the button
    page.keyboard.type("on it, by keyboard")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.innerText") == "Create silence"
    page.keyboard.press("Space")
    silence_id = landed_on_silence(page)
    (stored,) = amtool_silences(amtool_path, writable)
    assert (stored["id"], stored["comment"]) == (silence_id, "on it, by keyboard")

    assert_suppressed(page, writable, amtool_path, alert, silence_id)

    # Back to the silences page by the main navigation, and expire it there.
    page.goto("/")
    tab_to(page, 'nav a[href="/silences"]')
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/silences$"))
    assert_every_control_reached_with_focus_shown(page)
    tab_to(page, f"#silence-{silence_id} button")
    page.keyboard.press("Enter")
    assert landed_on_silence(page) == silence_id
    assert [r["ID"] for r in table(page, "silences-expired")] == [silence_id]
    assert_firing(page, writable, amtool_path, alert)


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
