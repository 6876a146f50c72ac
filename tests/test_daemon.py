"""`syncwatch run` as a real process against `syncwatch simulate` in another process."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    Daemon,
    Keys,
    SimProcess,
    daemon_url,
    launch,
    start_syncwatch,
    wait_until,
)


@pytest.fixture
def daemon(tmp_path: Path, sim: SimProcess, rsa_keys: Keys) -> Iterator[Daemon]:
    d = launch(tmp_path, sim, rsa_keys)
    yield d
    d.proc.stop()


def _sync_ids(samples: list[tuple[dict[str, str], float]], key: str) -> set[tuple[str, str]]:
    tenant = "org_id" if key == "timbal" else "user_id"
    return {(labels[tenant], labels["sync_id"]) for labels, _ in samples}


def test_metrics_have_a_series_for_every_simulated_sync(daemon: Daemon, sim: SimProcess) -> None:
    fleet = sim.fleet()
    metrics = daemon.metrics()
    timbal = {(s["org_id"], s["sync_id"]) for s in fleet["timbal"]}
    paragon = {(s["user_id"], s["sync_id"]) for s in fleet["paragon"]}
    assert _sync_ids(metrics["syncwatch_timbal_sync_interval_seconds"], "timbal") == timbal
    assert _sync_ids(metrics["syncwatch_timbal_sync_info"], "timbal") == timbal
    assert _sync_ids(metrics["syncwatch_paragon_sync_info"], "paragon") == paragon
    # A state set: five known statuses per sync, exactly one of them 1.
    status = metrics["syncwatch_paragon_sync_status"]
    assert len(status) == 5 * len(paragon)
    assert sum(v for _, v in status) == len(paragon)


def test_source_up_for_every_tenant(daemon: Daemon, sim: SimProcess) -> None:
    fleet = sim.fleet()
    up = {
        (labels["source"], labels["tenant"]): value
        for labels, value in daemon.metrics()["syncwatch_source_up"]
    }
    expected = {("timbal", s["org_id"]) for s in fleet["timbal"]} | {
        ("paragon", s["user_id"]) for s in fleet["paragon"]
    }
    assert set(up) == expected
    assert all(v == 1 for v in up.values())


def test_alerts_api_lists_what_the_simulator_intends(daemon: Daemon, sim: SimProcess) -> None:
    fleet = sim.fleet()
    expected = {
        (s["alertname"], "timbal", s["org_id"], s["sync_id"])
        for s in fleet["timbal"]
        if s["alertname"]
    } | {
        (s["alertname"], "paragon", s["user_id"], s["sync_id"])
        for s in fleet["paragon"]
        if s["alertname"]
    }
    alerts = daemon.get("/api/v1/alerts").raise_for_status().json()
    got = {
        (
            a["labels"]["alertname"],
            a["labels"]["source"],
            a["labels"]["tenant"],
            a["labels"]["sync_id"],
        )
        for a in alerts
    }
    assert expected, "the simulated fleet should include alerting syncs"
    assert got == expected
    assert all(a["state"] == "firing" for a in alerts)
    firing = {
        labels["sync_id"]
        for labels, _ in daemon.metrics()["syncwatch_alert"]
        if labels["state"] == "firing"
    }
    assert firing == {k[3] for k in expected}


def test_sync_removed_upstream_has_no_series_at_the_next_scrape(
    daemon: Daemon, sim: SimProcess
) -> None:
    victim = sim.fleet()["timbal"][0]
    with sim.control() as control:
        control.post(
            "/_sim/mutate",
            json={
                "source": "timbal",
                "tenant": victim["org_id"],
                "sync_id": victim["sync_id"],
                "delete": True,
            },
        ).raise_for_status()
    daemon.wait_cycles(2)
    listed = _sync_ids(daemon.metrics()["syncwatch_timbal_sync_interval_seconds"], "timbal")
    assert (victim["org_id"], victim["sync_id"]) not in listed
    assert len(listed) == len(sim.fleet()["timbal"])


def test_openmetrics_is_served_when_asked(daemon: Daemon) -> None:
    response = daemon.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


@pytest.mark.parametrize(
    ("accept_encoding", "compressed"),
    [("gzip", True), ("gzip, deflate", True), ("identity", False), ("gzip;q=0", False)],
)
def test_metrics_are_gzipped_when_the_scraper_accepts_it(
    daemon: Daemon, accept_encoding: str, compressed: bool
) -> None:
    response = daemon.get("/metrics", headers={"Accept-Encoding": accept_encoding})
    assert (response.headers.get("content-encoding") == "gzip") is compressed
    assert int(response.headers["content-length"]) == len(response.read()) or compressed
    assert "syncwatch_timbal_sync_interval_seconds{" in response.text  # decoded by httpx
    assert "syncwatch_cycle_duration_seconds_count " in response.text  # the per-scrape part


def test_listen_port_0_serves_on_the_port_its_log_names(daemon: Daemon) -> None:
    """`launch` asks for port 0: the kernel's pick, named in `started` and `listening`."""
    events = [json.loads(line) for line in daemon.proc.output.splitlines() if line[:1] == "{"]
    (started,) = [e for e in events if e["event"] == "started"]
    (listening,) = [e for e in events if e["event"] == "listening"]
    host, _, port = started["listen"].rpartition(":")
    assert (host, listening["listen"]) == ("127.0.0.1", started["listen"])
    assert int(port) > 0
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200


def test_sigterm_exits_zero_within_ten_seconds(daemon: Daemon) -> None:
    started = time.monotonic()
    assert daemon.proc.stop(signal.SIGTERM, timeout=10) == 0
    assert time.monotonic() - started < 10
    assert '"stopped"' in daemon.proc.output


def test_sighup_with_a_bad_config_keeps_the_old_one(daemon: Daemon) -> None:
    good = daemon.config_path.read_text()
    daemon.config_path.write_text(good.replace('poll_interval = "1s"', 'poll_interval = "soon"'))
    daemon.proc.popen.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload_failed" in daemon.proc.output)
    assert "daemon.poll_interval" in daemon.proc.output
    daemon.wait_cycles(2)  # still polling at the old interval
    assert daemon.proc.popen.poll() is None


def test_sighup_with_a_good_config_reloads(daemon: Daemon) -> None:
    text = daemon.config_path.read_text()
    daemon.config_path.write_text(text + '\n[[notifiers]]\nname = "console"\ntype = "console"\n')
    daemon.proc.popen.send_signal(signal.SIGHUP)
    wait_until(lambda: '"reloaded"' in daemon.proc.output)
    names = {labels["notifier"] for labels, _ in daemon.metrics()["syncwatch_outbox_pending"]}
    assert names == {"console"}


def test_healthz_turns_503_when_the_loop_is_stuck(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys
) -> None:
    d = launch(tmp_path, sim, rsa_keys)
    try:
        assert d.get("/healthz").status_code == 200
        with sim.control() as control:
            for source in ("timbal", "paragon"):
                control.post(
                    "/_sim/faults",
                    json={"source": source, "tenant": "*", "kind": "timeout", "delay": 30},
                ).raise_for_status()
        # A cycle now waits on 5 s request timeouts; 3 x 1 s poll_interval passes first.
        wait_until(lambda: d.get("/healthz").status_code == 503, timeout=15)
        assert d.get("/metrics").status_code == 200  # scrapes are not blocked by the cycle
    finally:
        sim.reset()
        d.proc.stop()


def test_sd_notify_sends_ready_and_watchdog(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys
) -> None:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(15)
    d = launch(
        tmp_path,
        sim,
        rsa_keys,
        env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"},
    )
    try:
        messages: list[str] = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not (
            any("READY=1" in m for m in messages) and any("WATCHDOG=1" in m for m in messages)
        ):
            messages.append(sock.recv(4096).decode())
        assert any(m.startswith("READY=1") for m in messages), messages
        assert "WATCHDOG=1" in messages
        d.proc.stop()
        sock.settimeout(5)
        rest = [sock.recv(4096).decode()]
        while "STOPPING=1" not in rest[-1]:
            rest.append(sock.recv(4096).decode())
        assert "STOPPING=1" in rest
    finally:
        sock.close()
        d.proc.stop()


def test_state_survives_restart_without_renotifying(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys
) -> None:
    d = launch(tmp_path, sim, rsa_keys, extra='[[notifiers]]\nname = "console"\ntype = "console"')
    d.wait_cycles(1)
    d.proc.stop()
    first_fired = d.proc.output.count("FIRING")
    assert first_fired > 0
    log_path = tmp_path / "daemon2.log"
    proc = start_syncwatch(["run", "-c", str(d.config_path)], log_path)
    try:
        restarted = Daemon(proc, daemon_url(proc), d.config_path)
        wait_until(lambda: restarted.get("/readyz").status_code == 200, timeout=30)
        restarted.wait_cycles(2)
        assert proc.output.count("FIRING") == 0
        restored = [json.loads(line) for line in proc.output.splitlines() if '"started"' in line]
        assert restored[0]["alerts_restored"] > 0
    finally:
        proc.stop()
