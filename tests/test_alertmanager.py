"""A real Alertmanager (Debian's package) is fed by a real `syncwatch run`, as Prometheus would.

Alertmanager groups syncwatch's alerts and notifies a capture server through its own webhook
receiver; a sync that recovers upstream must arrive there as resolved.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.capture import Captured, CaptureServer
from tests.conftest import (
    Keys,
    SimProcess,
    launch,
    ready_process,
    require_tool,
    wait_until,
)

DEADLINE = 60.0


def alertmanager_yaml(receiver_url: str) -> str:
    return f"""\
route:
  receiver: capture
  group_by: ['alertname']
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: capture
    webhook_configs:
      - url: '{receiver_url}'
        send_resolved: true
"""


@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    with CaptureServer() as server:
        yield server


@pytest.fixture
def am_config(tmp_path: Path, capture: CaptureServer) -> Path:
    path = tmp_path / "alertmanager.yml"
    path.write_text(alertmanager_yaml(f"{capture.url}/alertmanager"))
    return path


@pytest.fixture
def alertmanager(tmp_path: Path, am_config: Path) -> Iterator[str]:
    """`prometheus-alertmanager` on a free loopback port, gossip off; yields its URL."""
    binary = require_tool("prometheus-alertmanager", "apt-get install prometheus-alertmanager")
    with ready_process(
        [
            binary,
            f"--config.file={am_config}",
            f"--storage.path={tmp_path / 'am-data'}",
            "--web.listen-address=127.0.0.1:0",
            "--cluster.listen-address=",
        ],
        tmp_path / "alertmanager.log",
        timeout=30,
    ) as url:
        yield url


def am_notifier(url: str) -> str:
    return f'[[notifiers]]\nname = "am"\ntype = "alertmanager"\nurls = ["{url}"]\n'


def group(request: Captured) -> str:
    body: dict[str, Any] = request.json()
    return str(body.get("groupLabels", {}).get("alertname", ""))


def alerts_of(request: Captured, sync_id: str) -> list[dict[str, Any]]:
    return [a for a in request.json()["alerts"] if a["labels"].get("sync_id") == sync_id]


def parse_time(value: str) -> float:
    # Alertmanager sends nanoseconds; Python parses microseconds at most.
    head, _, frac = value.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00").timestamp()


def test_amtool_accepts_the_generated_config(am_config: Path) -> None:
    amtool = require_tool("amtool", "apt-get install prometheus-alertmanager")
    result = subprocess.run(
        [amtool, "check-config", str(am_config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alertmanager_groups_syncwatch_alerts_and_notifies_a_recovery_as_resolved(
    tmp_path: Path,
    sim: SimProcess,
    rsa_keys: Keys,
    alertmanager: str,
    capture: CaptureServer,
) -> None:
    fleet = sim.fleet()
    expected = {s["alertname"] for s in fleet["timbal"] + fleet["paragon"] if s["alertname"]}
    stale_count = sum(1 for s in fleet["timbal"] if s["alertname"] == "SyncStale")
    errored = [s for s in fleet["paragon"] if s["alertname"] == "SyncErrored"]
    assert errored, "the seed-7 fleet has an ERRORED Paragon sync"
    target = errored[0]["sync_id"]
    assert "SyncErrored" in expected
    assert stale_count >= 2, "the seed-7 fleet has several stale Timbal syncs to group"

    daemon = launch(tmp_path, sim, rsa_keys, extra=am_notifier(alertmanager))
    try:
        # Alertmanager's own webhook, one group per alertname, with syncwatch's alerts in it.
        (firing,) = capture.wait_for(
            1,
            timeout=DEADLINE,
            where=lambda r: group(r) == "SyncErrored" and bool(alerts_of(r, target)),
        )
        body = firing.json()
        assert firing.path == "/alertmanager"
        assert body["version"] == "4"
        assert body["receiver"] == "capture"
        assert body["status"] == "firing"
        assert body["groupLabels"] == {"alertname": "SyncErrored"}
        (alert,) = alerts_of(firing, target)
        assert alert["status"] == "firing"
        assert alert["labels"]["source"] == "paragon"
        assert alert["labels"]["tenant"] == errored[0]["user_id"]
        assert alert["labels"]["severity"] == "critical"

        (stale,) = capture.wait_for(
            1,
            timeout=DEADLINE,
            where=lambda r: group(r) == "SyncStale" and len(r.json()["alerts"]) >= stale_count,
        )
        assert {a["labels"]["alertname"] for a in stale.json()["alerts"]} == {"SyncStale"}

        def groups_seen() -> set[str]:
            return {group(r) for r in capture.requests}

        wait_until(lambda: groups_seen() >= expected, timeout=DEADLINE)

        # The sync recovers upstream; Alertmanager must hear the resolution from syncwatch.
        mutated_at = time.time()
        with sim.control() as control:
            control.post(
                "/_sim/mutate",
                json={"source": "paragon", "sync_id": target, "set": {"status": "ACTIVE"}},
            ).raise_for_status()
        (resolved,) = capture.wait_for(
            1,
            timeout=DEADLINE,
            where=lambda r: (
                r.received_at >= mutated_at
                and any(a["status"] == "resolved" for a in alerts_of(r, target))
            ),
        )
        assert resolved.json()["status"] == "resolved"
        (gone,) = alerts_of(resolved, target)
        assert parse_time(gone["endsAt"]) >= mutated_at - 1.0

        # No flapping before the recovery: syncwatch kept endsAt ahead of Alertmanager's clock.
        for request in capture.requests:
            if request.received_at < mutated_at:
                for a in alerts_of(request, target):
                    assert a["status"] == "firing", request.json()

        # syncwatch still feeds the alerts that did not recover.
        active = httpx.get(f"{alertmanager}/api/v2/alerts", timeout=5).raise_for_status().json()
        active_names = {
            a["labels"]["alertname"] for a in active if a["status"]["state"] == "active"
        }
        assert active_names >= expected - {"SyncErrored"}
        assert not [a for a in active if a["labels"].get("sync_id") == target]
    finally:
        daemon.proc.stop()
