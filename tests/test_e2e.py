"""End to end: simulator → `syncwatch run` → real Prometheus (rules) → real Alertmanager → capture.

One stalled Timbal sync must reach Alertmanager's webhook twice over: from syncwatch's own
Alertmanager notifier and from the SyncStale rule Prometheus evaluates on syncwatch's gauges;
and from the shipped rules in every `metrics.per_sync_series` mode.
"""

from __future__ import annotations

import re
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import test_alertmanager as am
from tests.capture import Captured, CaptureServer
from tests.conftest import Keys, SimProcess, launch, wait_until
from tests.test_prometheus import running_prometheus

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "syncwatch-rules.yml"
DEADLINE = 90.0

# Alertmanager (gossip off, group_wait 1s) feeding the capture server, from test_alertmanager.
capture = am.capture
am_config = am.am_config
alertmanager = am.alertmanager


def fast_rules(tmp_path: Path) -> Path:
    """A tmp copy of the shipped rules with every `for:` set to 0s.

    The rules wait 5m (SyncStale) or longer before firing, far beyond a test's deadline; the
    expressions themselves are left exactly as shipped.
    """
    text, count = re.subn(r"(?m)^(\s+)for: \S+$", r"\1for: 0s", RULES.read_text())
    assert count, "the shipped rules have `for:` clauses to shorten"
    path = tmp_path / "syncwatch-rules.yml"
    path.write_text(text)
    return path


def prometheus(
    tmp_path: Path, target: str, rules: Path, alertmanager_url: str
) -> AbstractContextManager[str]:
    return running_prometheus(
        tmp_path,
        target,
        rules=rules,
        alertmanager=alertmanager_url,
        extra_args=("--rules.alert.resend-delay=1s",),
    )


def stale_alerts(request: Captured, sync_id: str) -> list[dict[str, Any]]:
    return [
        a
        for a in am.alerts_of(request, sync_id)
        if a["labels"].get("alertname") == "SyncStale" and a["status"] == "firing"
    ]


def test_a_stalled_sync_reaches_alertmanager_from_syncwatch_and_from_prometheus(
    tmp_path: Path,
    sim: SimProcess,
    rsa_keys: Keys,
    alertmanager: str,
    capture: CaptureServer,
) -> None:
    started = time.monotonic()

    def left() -> float:
        return max(1.0, DEADLINE - (time.monotonic() - started))

    healthy = [s for s in sim.fleet()["timbal"] if s["scenario"] == "healthy"]
    assert healthy, "the seed-7 fleet has healthy Timbal syncs"
    target = healthy[0]

    daemon = launch(tmp_path, sim, rsa_keys, extra=am.am_notifier(alertmanager))
    try:
        daemon.wait_cycles(1, timeout=left())
        intervals = {
            labels["sync_id"]: value
            for labels, value in daemon.metrics()["syncwatch_timbal_sync_interval_seconds"]
        }
        interval = int(intervals[target["sync_id"]])
        target_url = daemon.url.removeprefix("http://")
        with prometheus(tmp_path, target_url, fast_rules(tmp_path), alertmanager) as prom:
            # Healthy so far: nobody alerts on the target before the stall.
            assert not [r for r in capture.requests if stale_alerts(r, target["sync_id"])]

            with sim.control() as control:
                control.post(
                    "/_sim/mutate",
                    json={
                        "source": "timbal",
                        "sync_id": target["sync_id"],
                        "set": {"seconds_since_success": 10 * interval},
                    },
                ).raise_for_status()

            def both() -> tuple[dict[str, Any], dict[str, Any]] | None:
                alerts = [a for r in capture.requests for a in stale_alerts(r, target["sync_id"])]
                own = [a for a in alerts if "job" not in a["labels"]]
                ruled = [a for a in alerts if a["labels"].get("job") == "syncwatch"]
                return (own[0], ruled[0]) if own and ruled else None

            try:
                own, ruled = wait_until(both, timeout=left(), interval=0.2)
            except AssertionError:
                rules = httpx.get(f"{prom}/api/v1/alerts", timeout=5).json()
                raise AssertionError(
                    f"SyncStale for {target['sync_id']} did not arrive from both paths; "
                    f"Prometheus alerts: {rules}; captured: "
                    f"{[r.json() for r in capture.requests]}"
                ) from None

        # syncwatch's own push: its labels, without Prometheus' target labels.
        assert own["labels"]["sync_id"] == target["sync_id"]
        assert own["labels"]["source"] == "timbal"
        assert own["labels"]["severity"] == "critical"
        assert "instance" not in own["labels"]

        # The Prometheus rule on syncwatch's gauges, labelled with the scrape target.
        assert ruled["labels"]["instance"] == target_url
        assert ruled["labels"]["org_id"] == target["org_id"]
        assert ruled["labels"]["severity"] in {"warning", "critical"}
    finally:
        daemon.proc.stop()


def ruled_alerts(request: Captured) -> list[dict[str, Any]]:
    """The firing alerts of one Alertmanager webhook that Prometheus' rules raised."""
    return [
        a
        for a in request.json()["alerts"]
        if a["labels"].get("job") == "syncwatch" and a["status"] == "firing"
    ]


@pytest.mark.parametrize("mode", ["alerting", "none"])
def test_the_shipped_rules_alert_on_a_stalled_sync_in_every_per_sync_series_mode(
    tmp_path: Path,
    sim: SimProcess,
    rsa_keys: Keys,
    alertmanager: str,
    capture: CaptureServer,
    mode: str,
) -> None:
    """`alerting`: SyncStale, once syncwatch has a condition on the sync and so exports it;
    `none`: no series names a sync, and TenantSyncsCritical names its org instead."""
    started = time.monotonic()

    def left() -> float:
        return max(1.0, DEADLINE - (time.monotonic() - started))

    target = next(s for s in sim.fleet()["timbal"] if s["scenario"] == "healthy")
    # Only the target is judged (every other sync ignored), so its org starts with nothing
    # to alert on and the stall below is the only thing that can make it critical.
    only_target = (
        f'[[timbal.overrides]]\nmatch = {{ sync_id = "{target["sync_id"]}" }}\n'
        'critical_ratio = 3.0\n[[timbal.overrides]]\nmatch = { sync_id = "*" }\nignore = true\n'
    )
    metrics = f'[metrics]\nper_sync_series = "{mode}"\n'
    daemon = launch(
        tmp_path, sim, rsa_keys, extra=metrics + only_target + am.am_notifier(alertmanager)
    )
    try:
        daemon.wait_cycles(1, timeout=left())
        target_url = daemon.url.removeprefix("http://")
        with prometheus(tmp_path, target_url, fast_rules(tmp_path), alertmanager) as prom:
            with sim.control() as control:
                control.post(
                    "/_sim/mutate",
                    json={
                        "source": "timbal",
                        "sync_id": target["sync_id"],
                        # 10 intervals of the longest schedule: critical whatever its own.
                        "set": {"seconds_since_success": 10 * 3600},
                    },
                ).raise_for_status()

            def ruled() -> dict[str, Any] | None:
                for request in capture.requests:
                    for a in ruled_alerts(request):
                        labels = a["labels"]
                        if mode == "alerting" and labels.get("sync_id") == target["sync_id"]:
                            return a
                        if mode == "none" and labels.get("tenant") == target["org_id"]:
                            return a
                return None

            try:
                alert = wait_until(ruled, timeout=left(), interval=0.2)
            except AssertionError:
                rules = httpx.get(f"{prom}/api/v1/alerts", timeout=5).json()
                raise AssertionError(
                    f"no Prometheus alert for {target} in mode {mode}; Prometheus alerts: "
                    f"{rules}; captured: {[r.json() for r in capture.requests]}"
                ) from None
            named = httpx.get(
                f"{prom}/api/v1/query",
                params={"query": 'count({__name__=~"syncwatch_.+", sync_id!=""})'},
                timeout=5,
            ).json()["data"]["result"]
    finally:
        daemon.proc.stop()

    assert alert["labels"]["instance"] == target_url
    if mode == "alerting":
        assert alert["labels"]["alertname"] == "SyncStale"
        assert alert["labels"]["org_id"] == target["org_id"]
        assert named  # the stalled sync's own series
    else:
        assert alert["labels"]["alertname"] == "TenantSyncsCritical"
        assert alert["labels"]["source"] == "timbal"
        summary = alert["annotations"]["summary"]
        assert summary == f"1 timbal syncs of tenant {target['org_id']} are critical"
        assert named == []  # Prometheus never saw a series naming a sync
    # No per-sync rule ever fired from a page without the sync (none) or before syncwatch
    # judged it (alerting): every Prometheus alert about the org is about the target.
    about_org = [
        a
        for r in capture.requests
        for a in ruled_alerts(r)
        if target["org_id"] in (a["labels"].get("org_id"), a["labels"].get("tenant"))
    ]
    assert {a["labels"].get("sync_id", target["sync_id"]) for a in about_org} == {target["sync_id"]}
