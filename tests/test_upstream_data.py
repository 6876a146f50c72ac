"""Upstream data that must not fool a real `syncwatch run` (issue 13, items 5, 8, 15, 16, 18).

Each test runs the daemon as a process against the session simulator (seed 7, real time)
and changes the upstream through the simulator's own API (`/_sim/mutate`, `/_sim/faults`).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.capture import CaptureServer
from tests.conftest import Daemon, Keys, SimProcess, launch, toml_value, wait_until

DAY = 86_400


@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    with CaptureServer() as server:
        yield server


def webhook(capture: CaptureServer, sync_id: str) -> str:
    """A webhook notifier that hears only this sync's alerts."""
    return (
        f'[[notifiers]]\nname = "hook"\ntype = "webhook"\nurl = "{capture.url}/hook"\n'
        f"match = {{ sync_id = {toml_value(sync_id)} }}\n"
    )


def mutate(sim: SimProcess, sync: dict[str, Any], fields: dict[str, Any]) -> None:
    source = "timbal" if "org_id" in sync else "paragon"
    with sim.control() as client:
        client.post(
            "/_sim/mutate", json={"source": source, "sync_id": sync["sync_id"], "set": fields}
        ).raise_for_status()


def fault(sim: SimProcess, **spec: Any) -> None:
    with sim.control() as client:
        client.post("/_sim/faults", json=spec).raise_for_status()


def alerts(daemon: Daemon) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = daemon.get("/api/v1/alerts").raise_for_status().json()
    return found


def alert_of(daemon: Daemon, alertname: str, **labels: str) -> dict[str, Any] | None:
    for alert in alerts(daemon):
        got = alert["labels"]
        if got["alertname"] == alertname and all(got.get(k) == v for k, v in labels.items()):
            return alert
    return None


def counter(daemon: Daemon, name: str, **labels: str) -> float:
    return sum(
        value
        for got, value in daemon.metrics().get(name, [])
        if all(got.get(k) == v for k, v in labels.items())
    )


def log_lines(daemon: Daemon) -> list[dict[str, Any]]:
    """The daemon's JSON log, in order."""
    return [json.loads(line) for line in daemon.proc.output.splitlines() if line.startswith("{")]


def events(daemon: Daemon, event: str) -> list[dict[str, Any]]:
    return [record for record in log_lines(daemon) if record.get("event") == event]


def healthy_timbal(sim: SimProcess) -> dict[str, Any]:
    return next(s for s in sim.fleet()["timbal"] if s["scenario"] == "healthy")


# --- item 15: a listed but unreadable sync is held, not resolved -------------------------------


def test_a_firing_sync_whose_record_turns_invalid_is_held_one_notification(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys, capture: CaptureServer
) -> None:
    """Stale and firing; then `interval_secs: 0` for several cycles; then readable again."""
    sync = healthy_timbal(sim)
    org = sync["org_id"]
    daemon = launch(tmp_path, sim, rsa_keys, orgs=[org], extra=webhook(capture, sync["sync_id"]))
    try:
        mutate(sim, sync, {"seconds_since_success": 30 * DAY})
        capture.wait_for(1, timeout=20)
        invalid = counter(daemon, "syncwatch_invalid_records_total", source="timbal")

        mutate(sim, sync, {"interval_secs": 0})
        wait_until(
            lambda: (
                counter(daemon, "syncwatch_invalid_records_total", source="timbal") >= invalid + 4
            )
        )
        held = alert_of(daemon, "SyncStale", sync_id=sync["sync_id"])

        mutate(sim, sync, {"interval_secs": 3600})
        daemon.wait_cycles(3)
        after = alert_of(daemon, "SyncStale", sync_id=sync["sync_id"])
    finally:
        daemon.proc.stop()
    kinds = [(r.json()["status"], r.json()["notification_reason"]) for r in capture.requests]
    assert kinds == [("firing", "first notification")]
    assert held is not None
    assert held["state"] == "firing"
    assert after is not None


# --- item 16: a listing of nothing but invalid records is a failed poll ------------------------


def test_a_listing_whose_every_record_is_invalid_raises_source_unreachable(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys
) -> None:
    fleet = sim.fleet()
    org = fleet["orgs"][0]
    for sync in (s for s in fleet["timbal"] if s["org_id"] == org):
        mutate(sim, sync, {"interval_secs": 0})
    daemon = launch(tmp_path, sim, rsa_keys, orgs=fleet["orgs"][:2])
    try:
        unreachable = wait_until(lambda: alert_of(daemon, "SourceUnreachable", tenant=org))
        assert unreachable["labels"]["reason"] == "schema_mismatch"
        assert unreachable["state"] == "firing"
        up = daemon.metrics()["syncwatch_source_up"]
        assert {lb["tenant"]: v for lb, v in up if lb["source"] == "timbal"} == {
            org: 0.0,
            fleet["orgs"][1]: 1.0,
        }
        assert counter(daemon, "syncwatch_poll_errors_total", reason="schema_mismatch") >= 3
        assert alert_of(daemon, "SourceUnreachable", tenant=fleet["orgs"][1]) is None
    finally:
        daemon.proc.stop()
    # Fired in the cycle of the third failed poll (source_failure_threshold), not before.
    failures_before_firing = 0
    for record in log_lines(daemon):
        if record.get("event") == "poll_failed" and record["tenant"] == org:
            assert record["reason"] == "schema_mismatch"
            failures_before_firing += 1
        if record.get("event") == "alert_transition" and record["tenant"] == org:
            assert (record["alertname"], record["kind"]) == ("SourceUnreachable", "firing")
            break
    assert failures_before_firing == 3


# --- item 5: duplicate sync ids -----------------------------------------------------------------


def test_a_stale_duplicate_of_a_healthy_sync_alerts_and_is_logged_once(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys
) -> None:
    fleet = sim.fleet()["timbal"]
    # The simulator repeats an org's first sync, made stale: pick an org whose first is fine.
    firsts = {s["org_id"]: s for s in reversed(fleet)}
    first = next(s for s in firsts.values() if s["scenario"] == "healthy")
    org = first["org_id"]
    fault(sim, source="timbal", tenant=org, kind="duplicate")
    daemon = launch(tmp_path, sim, rsa_keys, orgs=[org])
    try:
        stale = wait_until(lambda: alert_of(daemon, "SyncStale", sync_id=first["sync_id"]))
        assert stale["labels"]["severity"] == "critical"
        daemon.wait_cycles(3)
        assert counter(daemon, "syncwatch_duplicate_records_total", source="timbal") >= 4
        # One evaluation, one set of series per (tenant, sync id).
        ratios = [
            lb
            for lb, _ in daemon.metrics()["syncwatch_timbal_sync_staleness_ratio"]
            if lb["sync_id"] == first["sync_id"]
        ]
        assert len(ratios) == 1
    finally:
        daemon.proc.stop()
    logged = events(daemon, "duplicate_records")
    assert [(e["tenant"], e["duplicates"], e["sync_ids"]) for e in logged] == [
        (org, 1, [first["sync_id"]])
    ]


# --- item 18: records for connectors we did not ask for ----------------------------------------


def test_records_outside_the_connector_filter_never_alert(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys
) -> None:
    fleet = sim.fleet()
    alerting = {"warning", "critical"}
    org, connector = next(
        (s["org_id"], c["connector_id"])
        for s in fleet["timbal"]
        if s["intended"] in alerting
        for c in fleet["timbal"]
        if c["org_id"] == s["org_id"]
        and c["connector_id"] != s["connector_id"]
        and all(
            o["intended"] not in alerting
            for o in fleet["timbal"]
            if o["org_id"] == s["org_id"] and o["connector_id"] == c["connector_id"]
        )
    )
    foreign = {
        s["sync_id"]
        for s in fleet["timbal"]
        if s["org_id"] == org and s["connector_id"] != connector
    }
    fault(sim, source="timbal", tenant=org, kind="ignore_filter")
    extra = f"[[timbal.orgs]]\nid = {toml_value(org)}\nconnector_ids = {toml_value([connector])}\n"
    daemon = launch(tmp_path, sim, rsa_keys, orgs=[], extra=extra)
    try:
        daemon.wait_cycles(3)
        timbal_alerts = [a for a in alerts(daemon) if a["labels"]["source"] == "timbal"]
        assert not {a["labels"]["sync_id"] for a in timbal_alerts} & foreign
        exported = {lb["sync_id"] for lb, _ in daemon.metrics()["syncwatch_timbal_sync_enabled"]}
        assert exported
        assert not exported & foreign
        assert counter(daemon, "syncwatch_unrequested_records_total", source="timbal") >= 3 * len(
            foreign
        )
    finally:
        daemon.proc.stop()
    assert [(e["tenant"], e["dropped"]) for e in events(daemon, "unrequested_records")] == [
        (org, len(foreign))
    ]


# --- item 8: a stepped local clock -------------------------------------------------------------


def libfaketime() -> str:
    """The LD_PRELOAD library of Debian's `faketime` package, or skip (fail under CI)."""
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    if found and shutil.which("faketime"):
        return found[0]
    reason = (
        "SKIPPED: libfaketime is not installed, the stepped-clock test of a real process did "
        "not run (apt-get install faketime; .ci/run installs it, and with CI set this fails)"
    )
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


ORDER = ("SyncNeverSucceeded", "SyncStuckInitializing")


def intended(fleet: dict[str, Any]) -> set[tuple[str, str]]:
    """What real time raises for the upstream-age alerts: the simulator's own verdict."""
    return {
        (s["alertname"], s["sync_id"])
        for s in fleet["timbal"] + fleet["paragon"]
        if s["alertname"] in ORDER
    }


def paragon_requests(sim: SimProcess) -> dict[str, int]:
    with sim.control() as client:
        counts: dict[str, int] = client.get("/_sim/requests").raise_for_status().json()["paragon"]
        return counts


@pytest.mark.parametrize("tokens", ["static", "minted"])
@pytest.mark.parametrize("step", ["+1d", "-1d"])
def test_a_daemon_whose_clock_is_a_day_off_raises_the_upstream_age_alerts_real_time_would(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys, step: str, tokens: str
) -> None:
    """`syncwatch run` under libfaketime, the simulator on real time: SyncNeverSucceeded
    and SyncStuckInitializing are judged by the upstream's Date, not our clock; minted
    Paragon user tokens (verified by the simulator's PyJWT) carry the upstream's time."""
    library = libfaketime()
    fleet = sim.fleet()
    expected = intended(fleet)
    assert {name for name, _ in expected} == set(ORDER), "seed 7 has both kinds"
    users = (
        [{"id": u, "token": f"sim-paragon-token:{u}"} for u in fleet["users"]]
        if tokens == "static"
        else None  # every fleet user, tokens minted with paragon.signing_key_file
    )
    env = {
        "LD_PRELOAD": library,
        "FAKETIME": step,
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_NO_CACHE": "1",
    }
    daemon = launch(tmp_path, sim, rsa_keys, env=env, users=users)
    try:
        daemon.wait_cycles(1)
        # Cycles counted from before the first count of requests and up to after the last:
        # a cycle in flight at either end is counted, never its requests alone.
        cycles = daemon.cycles()
        first = paragon_requests(sim)
        daemon.wait_cycles(3)
        later = paragon_requests(sim)
        cycles = daemon.cycles() - cycles
        raised = {
            (a["labels"]["alertname"], a["labels"]["sync_id"])
            for a in alerts(daemon)
            if a["labels"]["alertname"] in ORDER
        }
        metrics = daemon.metrics()
        skews = [v for _, v in metrics.get("syncwatch_source_clock_skew_seconds", [])]
        down = [lb for lb, v in metrics["syncwatch_source_up"] if v != 1.0]
    finally:
        daemon.proc.stop()
    assert down == []
    assert not [e for e in events(daemon, "poll_failed") if e["source"] == "paragon"]
    # A minted token is refused once, re-minted on the upstream's clock and then cached:
    # about one request per user and cycle, not a 401 and a re-mint every time.
    assert all(later[u] - first.get(u, 0) <= cycles + 1 for u in fleet["users"]), (
        first,
        later,
        cycles,
    )
    assert raised == expected
    sign = 1 if step.startswith("+") else -1
    assert len(skews) == len(fleet["orgs"]) + len(fleet["users"])
    assert all(abs(skew - sign * DAY) < 60 for skew in skews), skews
    # Logged once per tenant for the episode, not every cycle.
    logged = sorted((e["source"], e["tenant"]) for e in events(daemon, "clock_skew"))
    assert logged == sorted(
        [("timbal", o) for o in fleet["orgs"]] + [("paragon", u) for u in fleet["users"]]
    )
