"""The status page, over HTTP against a real daemon polling the simulator, parsed as HTML."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Daemon, Keys, SimProcess, launch, wait_until

BROWSER = {"accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
X = "\N{MULTIPLICATION SIGN}"  # as the pages print ratios
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


class Page(HTMLParser):
    """The tables of a page (by id: rows of cell texts), its text and every linked URL."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.links: list[str] = []
        self.tags: list[str] = []
        self.texts: dict[str, str] = {}  # element id -> its text
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._ids: list[tuple[str, str, list[str]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        a = dict(attrs)
        self.links += [v for k, v in attrs if k in ("href", "src") and v]
        if tag == "table":
            self._table = a.get("id") or ""
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []
        if a.get("id"):
            self._ids.append((tag, a["id"] or "", []))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table":
            self._table = None
        if self._ids and self._ids[-1][0] == tag:
            _, name, parts = self._ids.pop()
            self.texts[name] = " ".join("".join(parts).split())

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        for _, _, parts in self._ids:
            parts.append(data)

    def body(self, table: str) -> list[list[str]]:
        """The rows after the header row."""
        return self.tables[table][1:]


def page(daemon: Daemon, path: str, status: int = 200) -> Page:
    response = daemon.get(path, headers=BROWSER)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    return Page(response.text)


@pytest.fixture
def daemon(tmp_path: Path, sim: SimProcess, rsa_keys: Keys) -> Iterator[Daemon]:
    d = launch(tmp_path, sim, rsa_keys)
    yield d
    d.proc.stop()


def fleet_by_tenant(sim: SimProcess) -> dict[tuple[str, str], list[dict[str, Any]]]:
    fleet = sim.fleet()
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for s in fleet["timbal"]:
        out.setdefault(("timbal", s["org_id"]), []).append(s)
    for s in fleet["paragon"]:
        out.setdefault(("paragon", s["user_id"]), []).append(s)
    return out


def test_the_overview_counts_every_tenant_worst_first_and_lists_the_alerts(
    daemon: Daemon, sim: SimProcess
) -> None:
    overview = page(daemon, "/")
    tenants = fleet_by_tenant(sim)
    rows = overview.body("tenants")
    header = overview.tables["tenants"][0]
    assert header[:3] == ["Source", "Tenant", "Worst"]
    states = header[3:9]
    assert states == ["unreachable", "critical", "warning", "suppressed", "ok", "other"]
    shown = {(r[0], r[1]): dict(zip(states, map(int, r[3:9]), strict=True)) for r in rows}
    assert set(shown) == set(tenants)
    for key, syncs in tenants.items():
        assert sum(shown[key].values()) == len(syncs), key
        intended = [s["intended"] for s in syncs]
        assert shown[key]["critical"] == intended.count("critical"), key
        assert shown[key]["warning"] == intended.count("warning"), key
    # Worst first: every tenant with a critical sync comes before every one without.
    worst = [r[2] for r in rows]
    assert worst == sorted(worst, key=lambda w: states.index(w.split()[-1]))
    # The state is written out, not only coloured.
    assert all(w.split()[-1] in states for w in worst)
    expected = {
        (s["sync_id"], s["alertname"])
        for syncs in tenants.values()
        for s in syncs
        if s["alertname"] and s["intended"] in ("warning", "critical")
    }
    alerts = {(r[5], r[2]) for r in overview.body("alerts")}
    assert expected <= alerts
    assert {r[0] for r in overview.body("sources")} == {"timbal", "paragon"}
    assert all("ok" in r[1] for r in overview.body("sources"))
    assert overview.texts["cycle"].startswith("Last cycle: ")
    assert "ago" in overview.texts["cycle"]
    # Landmarks, no external resource: everything the page links is served by syncwatch.
    assert {"header", "nav", "main", "footer", "caption"} <= set(overview.tags)
    assert all(link.startswith("/") for link in overview.links), overview.links


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"accept": "*/*"},
        {"accept": "application/json"},
        {"accept": "application/json, text/html"},
    ],
)
def test_the_index_stays_json_for_clients_that_are_not_browsers(
    daemon: Daemon, headers: dict[str, str]
) -> None:
    response = daemon.get("/", headers=headers)
    assert response.headers["content-type"] == "application/json"
    assert "/metrics" in response.json()["endpoints"]


def test_the_favicon_browsers_ask_for_is_a_cached_no_content_not_a_404(daemon: Daemon) -> None:
    response = daemon.get("/favicon.ico", headers=BROWSER)
    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["cache-control"] == "max-age=86400"
    assert "/favicon.ico" not in daemon.get("/").json()["endpoints"]  # not an API


def test_pages_load_only_syncwatch_s_own_script_and_refresh_as_the_url_says(
    daemon: Daemon,
) -> None:
    html = daemon.get("/", headers=BROWSER)
    policy = html.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert re.findall(r"<script[^>]*>", html.text) == [
        '<script src="/static/refresh.js" defer>'
    ]  # never an inline one: the policy would refuse it
    assert '<main data-refresh="30">' in html.text
    script = daemon.get("/static/refresh.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert b"data-refresh" in script.content
    assert '<main data-refresh="5">' in daemon.get("/?refresh=5", headers=BROWSER).text
    off = daemon.get("/alerts?refresh=0", headers=BROWSER).text
    assert "<main>" in off
    assert "<script" not in off
    for wrong in ("x", "1", "3601", "-5"):
        assert daemon.get(f"/?refresh={wrong}", headers=BROWSER).status_code == 400


def rename(sim: SimProcess, org: str, sync_id: str, name: str) -> None:
    with sim.control() as control:
        control.post(
            "/_sim/mutate",
            json={"source": "timbal", "tenant": org, "sync_id": sync_id, "set": {"name": name}},
        ).raise_for_status()


def test_the_tenant_page_lists_every_sync_and_escapes_upstream_names(
    daemon: Daemon, sim: SimProcess
) -> None:
    org, syncs = next((k[1], v) for k, v in fleet_by_tenant(sim).items() if k[0] == "timbal")
    target = syncs[0]["sync_id"]
    rename(sim, org, target, HOSTILE)
    path = f"/tenants/timbal/{org}"

    def renamed() -> Page | None:
        shown = page(daemon, path)
        return shown if any(r[1] == HOSTILE for r in shown.body("syncs")) else None

    tenant = wait_until(renamed, timeout=20)
    raw = daemon.get(path, headers=BROWSER).text
    assert "<script>" not in raw  # the name is text, not markup
    assert "<img" not in raw
    assert "img" not in tenant.tags
    assert re.findall(r"<script[^>]*>", raw) == ['<script src="/static/refresh.js" defer>']
    rows = tenant.body("syncs")
    assert {r[0] for r in rows} == {s["sync_id"] for s in syncs}
    assert tenant.tables["syncs"][0] == [
        "Sync", "Name", "State", "Lag", "Ratio", "Thresholds", "Last success", "Alerts"
    ]  # fmt: skip
    by_id = {r[0]: r for r in rows}
    for s in syncs:
        state = by_id[s["sync_id"]][2]
        if s["intended"] in ("ok", "warning", "critical"):
            assert state.split()[1] == s["intended"], (s, state)
    # Worst first, and the filter is in the URL (a shareable link).
    ranks = ["unreachable", "critical", "warning", "suppressed", "ok", "other"]
    order = [ranks.index(r[2].split()[1]) for r in rows]
    assert order == sorted(order)
    critical = page(daemon, f"{path}?state=critical").body("syncs")
    want = {s["sync_id"] for s in syncs if s["intended"] == "critical"}
    assert {r[0] for r in critical if len(r) > 1} == want
    assert (
        "No syncs in state unreachable."
        in page(daemon, f"{path}?state=unreachable").body("syncs")[0]
    )
    assert "/syncs/timbal/" in " ".join(tenant.links)


def test_the_tenant_page_shows_each_ratio_against_its_lines_and_who_set_them(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys
) -> None:
    org, syncs = next((k[1], v) for k, v in fleet_by_tenant(sim).items() if k[0] == "timbal")
    stale = next(s for s in syncs if s["intended"] == "critical")
    override = f"""
[[timbal.overrides]]
match = {{ sync_id = "{stale["sync_id"]}" }}
warn_ratio = 40.0
critical_ratio = 80.0
"""
    d = launch(tmp_path, sim, rsa_keys, extra=override)

    def evaluated() -> str | None:
        html = d.get(f"/tenants/timbal/{org}", headers=BROWSER).text
        return html if "<meter" in html else None

    try:
        raw = wait_until(evaluated, timeout=20)
    finally:
        d.proc.stop()
    rows = {r[0]: r for r in Page(raw).body("syncs")}
    assert rows[stale["sync_id"]][5] == f"warn 40{X} · critical 80{X} (overrides[0])"
    others = [r for sync_id, r in rows.items() if sync_id != stale["sync_id"] and X in r[4]]
    assert others
    assert all(r[5] == f"warn 1.5{X} · critical 3{X} (default)" for r in others)
    # The bar: its lines are the sync's own, its value never past the end of the bar.
    meters = re.findall(r'<meter min="0" max="([\d.]+)" low="([\d.]+)" high="([\d.]+)"'
                        r' optimum="0" value="([\d.]+)"', raw)  # fmt: skip
    assert ("100.0", "40.0", "80.0") in {m[:3] for m in meters}
    assert all(float(value) <= float(top) for top, _, _, value in meters)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/tenants/timbal/org_nobody", 404),
        ("/tenants/timbal/{org}?state=purple", 400),
        ("/tenants/timbal/{org}?page=0", 400),
        ("/tenants/timbal/{org}?page=x", 400),
    ],
)
def test_the_tenant_page_refuses_what_it_does_not_know(
    daemon: Daemon, sim: SimProcess, path: str, status: int
) -> None:
    org = sim.fleet()["timbal"][0]["org_id"]
    shown = page(daemon, path.format(org=org), status)
    assert shown.texts["error"]


def test_the_sync_page_shows_its_history_timeline(daemon: Daemon, sim: SimProcess) -> None:
    target = next(s for s in sim.fleet()["timbal"] if s["intended"] == "critical")
    org, sync_id = target["org_id"], target["sync_id"]
    path = f"/syncs/timbal/{org}/{sync_id}"

    def recorded() -> Page | None:
        shown = page(daemon, path)
        rows = [r for r in shown.body("timeline") if len(r) == 5]
        return shown if any(r[1] == "transition" for r in rows) else None

    timeline = wait_until(recorded, timeout=20)
    api = daemon.get(f"/api/v1/history?tenant={org}&sync_id={sync_id}").json()
    rows = [r for r in timeline.body("timeline") if len(r) == 5]
    assert len(rows) >= len(api["entries"]) > 0  # the page may have seen a later cycle
    oldest = api["entries"][-1]  # newest first on both: the first event is on the page too
    assert (oldest["type"], oldest["event"]) in {(r[1], r[2]) for r in rows}
    assert all(r[3] == target["alertname"] for r in rows if r[1] == "transition")
    assert "critical" in timeline.texts["now"]
    assert f"/tenants/timbal/{org}" in timeline.links
    assert page(daemon, f"{path}?before=nonsense", 400).texts["error"].startswith("cursor")
    empty = page(daemon, "/syncs/timbal/org_nobody/sync_nobody")
    assert empty.texts["now"] == "Not in the last cycle's listing."
    assert "Nothing recorded" in empty.body("timeline")[0][0]
