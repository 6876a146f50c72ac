"""The pages at fleet size: the overview shows the worst tenants and the most urgent alerts
and links the rest; the tenant list filters and pages in the URL (issue 17, "Scale").

The pages' app in process over a snapshot of the size given (a fleet this big cannot be
simulated quickly); the timing is benchmarks/pages.py's, never a test's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from syncwatch.amapi import ApiContext
from syncwatch.evaluate import Evaluation, SyncState
from syncwatch.history_store import HistoryStore
from syncwatch.lifecycle import Alert
from syncwatch.metrics import Snapshot
from syncwatch.models import AlertName, Severity, Source
from syncwatch.outbox import AlertStatus
from syncwatch.silence_store import SilenceStore
from syncwatch.silences import Matcher, Silence
from syncwatch.web.forms import FormsContext, form_routes
from syncwatch.web.pages import (
    OVERVIEW_ALERTS,
    OVERVIEW_TENANTS,
    PAGE_SIZE,
    Indexed,
    PagesContext,
    overview_page,
    page_routes,
)
from tests.test_exposition import ONE_SYNC, RULES
from tests.test_pages import BROWSER, Page

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
STATES = [SyncState.CRITICAL, SyncState.WARNING, SyncState.OK, SyncState.OK]


def fleet(tenants: int, syncs: int = 4) -> Snapshot:
    """`tenants` Timbal orgs of `syncs` syncs: one critical, one warning, the rest ok, with an
    alert for each critical and warning sync."""
    evaluations, alerts = [], []
    for t in range(tenants):
        org = f"org_{t:05}"
        for n in range(syncs):
            sync = replace(ONE_SYNC, org_id=org, id=f"sync_{t:05}_{n}", name=f"sync {n}")
            state = STATES[n % len(STATES)]
            evaluations.append(Evaluation(sync, state, ratio=2.0 - n / 2))
            if state in (SyncState.CRITICAL, SyncState.WARNING):
                severity = Severity(str(state))
                labels = {"alertname": "SyncStale", "severity": str(severity)}
                labels |= {"source": "timbal", "tenant": org, "sync_id": sync.id}
                alerts.append(
                    Alert(
                        alertname=AlertName.SYNC_STALE,
                        source=Source.TIMBAL,
                        tenant=org,
                        sync_id=sync.id,
                        severity=severity,
                        status=AlertStatus.FIRING,
                        labels=labels,
                        annotations={},
                        active_since=NOW - timedelta(hours=1),
                        fired_at=NOW - timedelta(hours=1),
                    )
                )
    return Snapshot(
        evaluations=tuple(evaluations),
        alerts=tuple(alerts),
        source_up={("timbal", f"org_{t:05}"): True for t in range(tenants)},
        last_cycle_timestamp=NOW.timestamp() - 5,
        rules=RULES,
    )


class Pages:
    """The pages' and forms' routes in process, over a snapshot that a test may replace."""

    def __init__(self, tmp_path: Path, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.history = HistoryStore(tmp_path / "history.db")
        self.silences = SilenceStore(tmp_path / "silences.db")
        ctx = PagesContext(lambda: self.snapshot, self.history, lambda: NOW)
        api = ApiContext(silences=self.silences, alerts=lambda: self.snapshot.alerts)
        self.app = Starlette(
            routes=[
                Route("/", overview_page(ctx)),
                *page_routes(ctx),
                *form_routes(FormsContext(api)),
            ]
        )

    def get(self, url: str, status: int = 200) -> tuple[Page, int]:
        """The page (parsed) and its size in bytes."""

        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, client=("127.0.0.1", 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://syncwatch") as c:
                return await c.get(url, headers=BROWSER)

        answer = asyncio.run(call())
        assert answer.status_code == status, answer.text
        return Page(answer.text), len(answer.content)

    def close(self) -> None:
        self.history.close()
        self.silences.close()


@pytest.fixture
def pages(tmp_path: Path) -> Iterator[Pages]:
    p = Pages(tmp_path, fleet(300))
    yield p
    p.close()


def test_the_overview_shows_the_worst_tenants_and_most_urgent_alerts_and_links_the_rest(
    pages: Pages,
) -> None:
    overview, _ = pages.get("/")
    tenants = overview.body("tenants")
    assert len(tenants) == OVERVIEW_TENANTS
    assert all(r[2].endswith("critical") for r in tenants)
    assert overview.texts["tenants-more"] == (
        f"The {OVERVIEW_TENANTS} worst of 300 tenants are shown: and {300 - OVERVIEW_TENANTS} more."
    )
    alerts = overview.body("alerts")
    assert len(alerts) == OVERVIEW_ALERTS
    assert all(r[1].endswith("critical") for r in alerts)  # the most urgent first
    assert overview.texts["alerts-more"] == (
        f"The {OVERVIEW_ALERTS} most urgent of 600 alerts are shown:"
        f" and {600 - OVERVIEW_ALERTS} more."
    )
    assert {"/tenants", "/alerts"} <= set(overview.links)
    # The rest is there: every tenant on the tenant list's pages, every alert on /alerts's.
    listed, _ = pages.get("/tenants")
    assert listed.texts["tenants"].startswith("300 tenants")
    alert_list, _ = pages.get("/alerts")
    assert alert_list.texts["alerts"].startswith("600 alerts, firing first")


def test_the_overview_stays_the_same_size_as_the_fleet_grows(tmp_path: Path) -> None:
    sizes = []
    for tenants in (100, 2000):
        (tmp_path / str(tenants)).mkdir()
        p = Pages(tmp_path / str(tenants), fleet(tenants))
        try:
            shown, size = p.get("/")
        finally:
            p.close()
        assert len(shown.body("tenants")) == OVERVIEW_TENANTS
        sizes.append(size)
    # Only the counts in the "and K more" lines differ.
    assert abs(sizes[1] - sizes[0]) < 100, sizes


def test_a_small_fleet_shows_everything_and_no_more_links(tmp_path: Path) -> None:
    p = Pages(tmp_path, fleet(3))
    try:
        overview, _ = p.get("/")
    finally:
        p.close()
    assert len(overview.body("tenants")) == 3
    assert len(overview.body("alerts")) == 6
    assert "tenants-more" not in overview.texts
    assert "alerts-more" not in overview.texts


def test_the_tenant_list_pages_and_its_links_keep_the_filters(pages: Pages) -> None:
    first, _ = pages.get("/tenants")
    assert len(first.body("tenants")) == PAGE_SIZE
    assert first.texts["tenants"].startswith("300 tenants, worst first; page 1 of 3")
    assert "?page=2" in first.links
    second, _ = pages.get("/tenants?page=2")
    assert {"?page=1", "?page=3"} <= set(second.links)
    last, _ = pages.get("/tenants?page=3")
    assert "?page=2" in last.links
    assert "?page=4" not in last.links
    seen = [r[1] for p in (first, second, last) for r in p.body("tenants")]
    assert sorted(seen) == [f"org_{t:05}" for t in range(300)]  # each tenant once
    filtered, _ = pages.get("/tenants?q=org_001&source=timbal")
    names = [r[1] for r in filtered.body("tenants")]
    assert names == [f"org_{t:05}" for t in range(100, 200)]
    assert filtered.texts["tenants"].startswith("100 tenants")
    wider, _ = pages.get("/tenants?q=ORG_00&page=2")
    assert "?q=ORG_00&page=1" in wider.links
    assert "?q=ORG_00&page=3" in wider.links
    none, _ = pages.get("/tenants?state=unreachable")
    assert none.body("tenants") == [["No tenants match these filters."]]


@pytest.mark.parametrize("query", ["state=purple", "page=0", "page=x"])
def test_the_tenant_list_refuses_filters_it_does_not_know(pages: Pages, query: str) -> None:
    shown, _ = pages.get(f"/tenants?{query}", 400)
    assert shown.texts["error"]


def test_each_page_reads_the_latest_snapshot(pages: Pages) -> None:
    tenant, _ = pages.get("/tenants/timbal/org_00007")
    assert len(tenant.body("syncs")) == 4
    sync, _ = pages.get("/syncs/timbal/org_00007/sync_00007_0")
    assert "critical" in sync.texts["now"]
    # The next cycle's snapshot: one more tenant, the old one's sync now ok.
    before = pages.snapshot
    pages.snapshot = replace(
        fleet(301),
        evaluations=tuple(
            replace(e, state=SyncState.OK) if e.sync.id == "sync_00007_0" else e
            for e in fleet(301).evaluations
        ),
    )
    assert pages.snapshot is not before
    sync, _ = pages.get("/syncs/timbal/org_00007/sync_00007_0")
    assert "ok" in sync.texts["now"]
    pages.get("/tenants/timbal/org_00300")
    listed, _ = pages.get("/tenants")
    assert listed.texts["tenants"].startswith("301 tenants")
    pages.get("/tenants/timbal/org_nobody", 404)


def test_the_alerts_pages_hold_every_alert_once_firing_then_suppressed_then_pending(
    pages: Pages,
) -> None:
    # Tenants 0-9 pending, 10-14 silenced: 570 firing, then 10 suppressed, then 20 pending,
    # on 6 pages of 100: page 6 starts in the firing ones and ends in the pending ones.
    pending = {f"org_{t:05}" for t in range(10)}
    pages.snapshot = replace(
        pages.snapshot,
        alerts=tuple(
            replace(a, status=None, fired_at=None) if a.tenant in pending else a
            for a in pages.snapshot.alerts
        ),
    )
    now = datetime.now(UTC)  # the forms' clock: the silence is active now
    for t in range(10, 15):
        pages.silences.set(
            Silence("", (Matcher("tenant", f"org_{t:05}"),), now - timedelta(minutes=1),
                    now + timedelta(hours=1), "ops", "migration", now),
            now,
        )  # fmt: skip
    seen = []
    for n in range(1, 7):
        shown, _ = pages.get(f"/alerts?page={n}")
        assert shown.texts["alerts"].startswith(f"600 alerts, firing first; page {n} of 6")
        seen += [(r[0].split()[-1], r[4], r[5]) for r in shown.body("alerts") if len(r) > 1]
    states = [state for state, _, _ in seen]
    assert states == ["firing"] * 570 + ["suppressed"] * 10 + ["pending"] * 20
    assert len(set(seen)) == 600  # each alert once, across the pages' boundaries
    assert {t for state, t, _ in seen if state == "suppressed"} == {
        f"org_{t:05}" for t in range(10, 15)
    }
    muted, _ = pages.get("/alerts?state=suppressed")
    assert [r[0].split()[-1] for r in muted.body("alerts")] == ["suppressed"] * 10
    assert all(r[7] for r in muted.body("alerts"))  # named by the silence that mutes it


def test_a_new_snapshot_is_indexed_after_its_cycle_only_while_someone_reads_the_pages() -> None:
    clock = [1000.0]
    indexed = Indexed(clock=lambda: clock[0])
    first, second, third = fleet(3), fleet(4), fleet(5)
    assert indexed.prepare(first) is None  # no page read yet: no work for nobody
    shown = indexed(first)
    assert shown.snapshot is first
    assert indexed(first) is shown  # one index per snapshot, shared by every page
    clock[0] += Indexed.WATCHED
    ready = indexed.prepare(second)  # the daemon, after the next cycle
    assert ready is not None
    assert ready.snapshot is second
    assert indexed(second) is ready  # the first view after the cycle finds it built
    clock[0] += Indexed.WATCHED + 1
    assert indexed.prepare(third) is None  # nobody has read a page for a while
