"""kill -9 at random moments loses no notification and never re-sends one under a new id."""

from __future__ import annotations

import itertools
import os
import random
import signal
import sqlite3
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import psycopg
import pytest

from syncwatch.lifecycle import fingerprint
from tests.capture import Captured, CaptureServer, Reply
from tests.conftest import (
    Daemon,
    Keys,
    SimProcess,
    launch,
    sim_config_toml,
    start_syncwatch,
    wait_until,
)

QUICK_KILLS = 8
FULL_KILLS = 50


def _flip(sim: SimProcess, sync: dict[str, Any], errored: bool) -> None:
    status = (
        {"status": "ERRORED", "reason": "Credential revoked"} if errored else {"status": "ACTIVE"}
    )
    with sim.control() as control:
        control.post(
            "/_sim/mutate",
            json={
                "source": "paragon",
                "tenant": sync["user_id"],
                "sync_id": sync["sync_id"],
                "set": status,
            },
        ).raise_for_status()


def _events(
    requests: list[Captured],
) -> tuple[dict[tuple[str, ...], set[str]], list[tuple[str, str]]]:
    """Notification key → delivery ids carrying it; and (fingerprint, status) in order."""
    ids: dict[tuple[str, ...], set[str]] = defaultdict(set)
    order: list[tuple[str, str]] = []
    seen: set[str] = set()
    for request in requests:
        delivery_id = request.header("X-Syncwatch-Delivery-Id") or ""
        for alert in request.json()["alerts"]:
            key = (
                alert["fingerprint"],
                alert["status"],
                alert["startsAt"],
                alert["labels"]["severity"],
            )
            ids[key].add(delivery_id)
            if delivery_id not in seen:
                order.append((alert["fingerprint"], alert["status"]))
        seen.add(delivery_id)
    return ids, order


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_kill_9_loses_nothing_and_duplicates_only_under_the_same_id(
    backend: str, tmp_path: Path, sim: SimProcess, rsa_keys: Keys, request: pytest.FixtureRequest
) -> None:
    kills = FULL_KILLS if request.config.getoption("--run-slow") else QUICK_KILLS
    # PostgreSQL: daemon.state_url, a database of this test's own on the suite's server.
    state: dict[str, Any] = {}
    if backend == "postgresql":
        state["state_url"] = request.getfixturevalue("pg_url")
    rng = random.Random(20261123)
    fleet = sim.fleet()
    flipped = next(s for s in fleet["paragon"] if s["intended"] == "ok")
    # A slow receiver, so that kills land mid-delivery too.
    with CaptureServer(default=Reply(delay=0.15)) as capture:
        notifier = f'[[notifiers]]\nname = "hook"\ntype = "webhook"\nurl = "{capture.url}/hook"\n'
        errored = False
        config_path: Path | None = None
        for i in range(kills):
            errored = not errored
            _flip(sim, flipped, errored)
            if config_path is None:
                daemon = launch(
                    tmp_path, sim, rsa_keys, extra=notifier, poll_interval="0.3s", **state
                )
                config_path = daemon.config_path
            else:
                proc = start_syncwatch(["run", "-c", str(config_path)], tmp_path / f"run{i}.log")
                daemon = Daemon(proc, "", config_path)
            time.sleep(rng.uniform(0.3, 2.0))  # the random moment of the crash, not a sync
            daemon.proc.popen.send_signal(signal.SIGKILL)
            daemon.proc.popen.wait(10)

        # Settle: one clean run until everything stored has been delivered.
        assert config_path is not None
        final = launch(tmp_path, sim, rsa_keys, extra=notifier, poll_interval="0.3s", **state)
        try:
            final.wait_cycles(3)

            def drained() -> bool:
                pending = final.metrics()["syncwatch_outbox_pending"]
                return all(value == 0 for _, value in pending)

            wait_until(drained, timeout=30)
        finally:
            assert final.proc.stop() == 0

        ids, order = _events(capture.requests)

    # No notification went out under two different delivery ids.
    twice = {key: found for key, found in ids.items() if len(found) > 1}
    assert not twice, twice
    # Every static alert of the fleet was announced.
    fingerprints = {fp for fp, status in order if status == "firing"}
    assert len(fingerprints) >= sum(1 for s in fleet["paragon"] + fleet["timbal"] if s["alertname"])
    # The flipped sync's notifications alternate and end in its final state.
    flipped_fp = fingerprint(("SyncErrored", "paragon", flipped["user_id"], flipped["sync_id"]))
    flips = [status for fp, status in order if fp == flipped_fp]
    assert flips, "the flipped sync was never notified"
    assert all(a != b for a, b in itertools.pairwise(flips)), flips
    assert flips[-1] == ("firing" if errored else "resolved")
    if backend == "postgresql":
        with psycopg.connect(state["state_url"]) as pg:
            assert pg.execute("SELECT COUNT(*) FROM outbox").fetchone() == (0,)
        assert not (tmp_path / "state.db").exists()  # nothing went to a SQLite file
        return
    db = sqlite3.connect(tmp_path / "state.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()


def _drain(tmp_path: Path, sim: SimProcess, keys: Keys, notifier: str) -> None:
    """One clean run until everything stored has been delivered, then SIGTERM."""
    daemon = launch(tmp_path, sim, keys, extra=notifier, poll_interval="0.3s")
    try:
        daemon.wait_cycles(2)
        wait_until(
            lambda: all(v == 0 for _, v in daemon.metrics()["syncwatch_outbox_pending"]),
            timeout=30,
        )
    finally:
        assert daemon.proc.stop() == 0


def test_kill_9_right_after_the_200_resends_at_most_once_under_the_same_id(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys
) -> None:
    """The one window at-least-once leaves: the receiver said 200, the ack is not committed."""
    fleet = sim.fleet()
    flipped = next(s for s in fleet["paragon"] if s["intended"] == "ok")
    rounds = 3
    killed: list[str] = []
    with CaptureServer() as capture:
        notifier = f'[[notifiers]]\nname = "hook"\ntype = "webhook"\nurl = "{capture.url}/hook"\n'
        config_path = tmp_path / "kill.toml"
        config_path.write_text(
            sim_config_toml(
                sim,
                rsa_keys,
                state_path=tmp_path / "state.db",
                listen="127.0.0.1:0",
                extra=notifier,
                poll_interval="0.3s",
            )
        )
        for i in range(rounds):
            _flip(sim, flipped, errored=i % 2 == 0)  # something new to notify each round
            target: dict[str, int] = {}
            seen = len(capture.requests)
            # SIGKILL the instant the 200 is on the wire: before the daemon can commit the ack.
            capture.reply(200, after=lambda t=target: os.kill(t["pid"], signal.SIGKILL))  # type: ignore[misc]
            proc = start_syncwatch(["run", "-c", str(config_path)], tmp_path / f"kill{i}.log")
            target["pid"] = proc.popen.pid  # set long before the daemon's first delivery
            assert proc.popen.wait(30) == -signal.SIGKILL
            killed.append(capture.requests[seen].header("X-Syncwatch-Delivery-Id") or "")
            _drain(tmp_path, sim, rsa_keys, notifier)

        requests = capture.requests
    sent = [r.header("X-Syncwatch-Delivery-Id") or "" for r in requests]
    redelivered = [d for d in killed if sent.count(d) == 2]
    # At most one duplicate per kill, under the same delivery id; every other id once.
    assert all(sent.count(d) <= 2 for d in killed), sent
    assert all(sent.count(d) == 1 for d in set(sent) - set(killed)), sent
    ids, _ = _events(requests)
    twice = {key: found for key, found in ids.items() if len(found) > 1}
    assert not twice, twice
    print(f"kill right after the 200: re-delivered {len(redelivered)}/{rounds} (same id)")
