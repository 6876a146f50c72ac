"""The alerts and silences pages and their write forms, over HTTP against a real daemon."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Daemon, Keys, SimProcess, launch
from tests.test_pages import page


@pytest.fixture
def daemon(tmp_path: Path, sim: SimProcess, rsa_keys: Keys) -> Iterator[Daemon]:
    d = launch(tmp_path, sim, rsa_keys)
    yield d
    d.proc.stop()


def firing(daemon: Daemon) -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = daemon.get("/api/v2/alerts").raise_for_status().json()
    return alerts


def api_silence(daemon: Daemon, tenant: str) -> str:
    now = datetime.now(UTC)
    body = {
        "matchers": [{"name": "tenant", "value": tenant, "isRegex": False}],
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(hours=1)).isoformat(),
        "createdBy": "ops",
        "comment": "migration",
    }
    answer = httpx.post(f"{daemon.url}/api/v2/silences", json=body, timeout=20)
    silence_id: str = answer.raise_for_status().json()["silenceID"]
    return silence_id


# --- reading ----------------------------------------------------------------------------


def test_the_alerts_page_lists_every_firing_alert_and_filters_in_the_url(daemon: Daemon) -> None:
    alerts = firing(daemon)
    assert alerts, "the simulator's fleet has firing alerts"
    rows = page(daemon, "/alerts").body("alerts")
    shown = {(r[3], r[4], r[5], r[2]) for r in rows if r[0].endswith("firing")}
    expected = {
        (
            a["labels"]["source"],
            a["labels"]["tenant"],
            a["labels"]["sync_id"],
            a["labels"]["alertname"],
        )
        for a in alerts
    }
    assert shown == expected
    a = alerts[0]["labels"]
    query = f"/alerts?source={a['source']}&tenant={a['tenant']}&severity={a['severity']}"
    filtered = page(daemon, query).body("alerts")
    assert filtered
    assert all(
        (r[3], r[4]) == (a["source"], a["tenant"]) and r[1].endswith(a["severity"])
        for r in filtered
    )
    pending = page(daemon, "/alerts?state=pending").body("alerts")
    assert all(r[0].endswith("pending") for r in pending if len(r) > 1)


@pytest.mark.parametrize("query", ["severity=loud", "state=asleep", "page=0", "page=x"])
def test_the_alerts_page_refuses_filters_it_does_not_know(daemon: Daemon, query: str) -> None:
    page(daemon, f"/alerts?{query}", 400)


def test_the_silences_page_groups_silences_by_state(daemon: Daemon) -> None:
    tenant = firing(daemon)[0]["labels"]["tenant"]
    silence_id = api_silence(daemon, tenant)
    shown = page(daemon, "/silences")
    assert [r[0] for r in shown.body("silences-active")] == [silence_id]
    assert shown.body("silences-expired") == [["None."]]
    assert shown.body("silences-pending") == [["None."]]
    rows = page(daemon, "/alerts").body("alerts")
    assert any(r[0].endswith("suppressed") and r[7] == silence_id for r in rows)
    httpx.delete(f"{daemon.url}/api/v2/silence/{silence_id}", timeout=20).raise_for_status()
    shown = page(daemon, "/silences")
    assert [r[0] for r in shown.body("silences-expired")] == [silence_id]
    assert shown.body("silences-active") == [["None."]]
