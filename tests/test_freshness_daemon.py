"""Freshness end to end: `syncwatch run` over the simulator, stopped, restarted, killed.

The time between one process's last recorded cycle and the next one's first is unknown
for every counted sync, never fresh: per tenant the 24 h figures add up to exactly that.
"""

from __future__ import annotations

import re
import signal
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from syncwatch.freshness import Figures, text
from tests.conftest import Daemon, Keys, SimProcess, launch, wait_until
from tests.test_pages import page

DAY = 86400.0
COUNTED = ("ok", "warning", "critical")  # disabled syncs are not counted


def t(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def counted(sim: SimProcess) -> dict[tuple[str, str], list[str]]:
    """Each tenant's counted sync ids, from the simulator's intended states."""
    fleet = sim.fleet()
    out: dict[tuple[str, str], list[str]] = {}
    for source, tenant_key in (("timbal", "org_id"), ("paragon", "user_id")):
        for s in fleet[source]:
            assert s["intended"] in (*COUNTED, "disabled"), s  # nothing unknown here
            ids = out.setdefault((source, s[tenant_key]), [])
            if s["intended"] in COUNTED:
                ids.append(s["sync_id"])
    return out


def maintenance(tenant: str, sync_id: str) -> str:
    now = datetime.now(UTC).replace(microsecond=0)
    spelt = [(now + timedelta(hours=h)).isoformat().replace("+00:00", "Z") for h in (-1, 1)]
    return f"""
[[maintenance]]
name = "one-sync"
match = {{ tenant = "{tenant}", sync_id = "{sync_id}" }}
start = {spelt[0]}
end = {spelt[1]}
"""


def figures(body: dict[str, Any], source: str, tenant: str, window: str) -> dict[str, Any]:
    (found,) = [x for x in body["tenants"] if (x["source"], x["tenant"]) == (source, tenant)]
    f: dict[str, Any] = found["windows"][window]
    return f


def as_figures(f: dict[str, Any]) -> Figures:
    return Figures(f["freshSeconds"], f["staleSeconds"], f["excludedSeconds"], f["unknownSeconds"])


@pytest.fixture
def restarted(tmp_path: Path, sim: SimProcess, rsa_keys: Keys) -> Any:
    """Three processes on one state file: run 1 stopped by SIGTERM, run 2 killed by SIGKILL."""
    tenants = counted(sim)
    maintained = ("timbal", "org_0001")
    extra = maintenance(maintained[1], tenants[maintained][0])

    def start() -> Daemon:
        d = launch(tmp_path, sim, rsa_keys, poll_interval="0.5s", extra=extra)
        d.wait_cycles(2)
        return d

    first = start()
    one_run = first.get("/api/v1/freshness").json()
    first.proc.stop(signal.SIGTERM)
    second = start()
    second.proc.stop(signal.SIGKILL)
    third = start()
    yield third, tenants, maintained, one_run
    third.proc.stop()


def test_the_time_between_runs_is_unknown_for_every_counted_sync(restarted: Any) -> None:
    daemon, tenants, maintained, one_run = restarted
    assert len(one_run["observed"]) == 1
    body = daemon.get("/api/v1/freshness").json()
    runs = [(t(r["start"]), t(r["end"])) for r in body["observed"]]
    assert len(runs) == 3
    gaps = [b[0] - a[1] for a, b in pairwise(runs)]
    assert all(gap > 0 for gap in gaps), runs  # each restart took some time
    as_of = t(body["asOf"])
    assert body["windows"]["24h"] == {"start": body["windows"]["24h"]["start"], "seconds": DAY}
    observed = sum(min(e, as_of) - max(s, as_of - DAY) for s, e in runs)
    assert {(x["source"], x["tenant"]) for x in body["tenants"]} == set(tenants)
    for key, syncs in tenants.items():
        f = figures(body, key[0], key[1], "24h")
        n = len(syncs)
        known = f["freshSeconds"] + f["staleSeconds"] + f["excludedSeconds"]
        # Observed time is known, sync by sync; the gaps and the time before run 1 are not.
        assert known == pytest.approx(n * observed, abs=0.01), key
        assert f["unknownSeconds"] == pytest.approx(n * (DAY - observed), abs=0.01), key
        assert f["unknownShare"] > 0.99
        excluded = observed if key == maintained else 0.0
        assert f["excludedSeconds"] == pytest.approx(excluded, abs=0.01), key
    # Without the gaps the unknown would be smaller by this much: more than rounding.
    assert min(gaps) * min(len(s) for s in tenants.values()) > 0.01


def test_the_api_filters_by_source_and_tenant_and_refuses_what_it_does_not_know(
    restarted: Any,
) -> None:
    daemon, tenants, _, _ = restarted
    timbal = daemon.get("/api/v1/freshness", params={"source": "timbal"}).json()
    assert {x["source"] for x in timbal["tenants"]} == {"timbal"}
    one = daemon.get("/api/v1/freshness", params={"tenant": "user-0002"}).json()
    assert [(x["source"], x["tenant"]) for x in one["tenants"]] == [("paragon", "user-0002")]
    assert set(one["tenants"][0]["windows"]) == {"24h", "7d", "30d"}
    bad = daemon.get("/api/v1/freshness", params={"tennant": "x"})
    assert bad.status_code == 400
    assert "tennant" in bad.json()["error"]
    assert len(tenants) == 6


def test_the_overview_and_the_tenant_page_show_freshness_as_text(restarted: Any) -> None:
    daemon, tenants, maintained, _ = restarted

    def same_cycle() -> tuple[dict[str, Any], Any, Any] | None:
        before = daemon.get("/api/v1/freshness").json()
        overview = page(daemon, "/")
        tenant = page(daemon, f"/tenants/{maintained[0]}/{maintained[1]}")
        after = daemon.get("/api/v1/freshness").json()
        return (before, overview, tenant) if before["asOf"] == after["asOf"] else None

    body, overview, tenant = wait_until(same_cycle)
    header = overview.tables["tenants"][0]
    assert header[-3:] == ["Fresh 24 h", "Fresh 7 d", "Fresh 30 d"]
    for row in overview.body("tenants"):
        shown = row[-3:]
        want = [text(as_figures(figures(body, row[0], row[1], w))) for w in ("24h", "7d", "30d")]
        assert shown == want, row
        # The share of what was known, with the unknown share beside it, in words.
        assert all(re.fullmatch(r"\d+(\.\d)? % \(\d+(\.\d)? % unknown\)", s) for s in shown)
    line = tenant.texts["freshness"]
    for label, w in (("24 h", "24h"), ("7 d", "7d"), ("30 d", "30d")):
        shown = text(as_figures(figures(body, maintained[0], maintained[1], w)))
        assert f"{label}: {shown}" in line
    assert "maintenance" in line  # one of its syncs is in a window
    assert len(tenants) == 6
