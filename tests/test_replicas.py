"""Replicas on one PostgreSQL database (issue 19): real `syncwatch run` processes over the
simulator and a capture webhook. One replica per shard is active; killing it hands the
shard to a standby that carries on from the shared state: nothing is lost and nothing is
sent under two delivery ids. Resharding moves tenants without notifying them again, a
stopped server holds delivery back and then notifies each change once, and a silence made
through one replica mutes the alerts another delivers."""

from __future__ import annotations

import itertools
import json
import random
import signal
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from syncwatch.lifecycle import fingerprint
from tests.capture import CaptureServer, Reply
from tests.conftest import (
    Daemon,
    Keys,
    SimProcess,
    launch,
    sim_config_toml,
    start_simulator,
    start_syncwatch,
    wait_until,
)
from tests.postgres import PostgresServer, postgres_server
from tests.test_crash import _events, _flip
from tests.test_state_faults import delivery_ids, notified

QUICK_KILLS = 20
FULL_KILLS = 50


@dataclass
class Replicas:
    """`syncwatch run` processes sharing one database, started and stopped by a test."""

    tmp_path: Path
    sim: SimProcess
    keys: Keys
    state_url: str
    notifier: str
    poll_interval: str = "0.5s"
    running: list[Daemon] = field(default_factory=list)
    _names: Iterator[int] = field(default_factory=itertools.count)

    def config(self, shard: str) -> Path:
        path = self.tmp_path / f"shard-{shard.replace('/', '-of-')}.toml"
        if not path.exists():
            path.write_text(
                sim_config_toml(
                    self.sim,
                    self.keys,
                    state_path=self.tmp_path / "unused.db",
                    listen="127.0.0.1:0",
                    extra=self.notifier,
                    poll_interval=self.poll_interval,
                    state_url=self.state_url,
                    daemon_extra=f'shard = "{shard}"',
                )
            )
        return path

    def start(self, shard: str = "0/1", *, wait: bool = True) -> Daemon:
        """A replica; `wait`: until it answers /readyz (else its URL is read later)."""
        config = self.config(shard)
        name = next(self._names)
        proc = start_syncwatch(["run", "-c", str(config)], self.tmp_path / f"replica{name}.log")
        daemon = Daemon(proc, "", config)
        self.running.append(daemon)
        if wait:
            wait_until(lambda: ready(daemon), timeout=60)
        return daemon

    def kill(self, daemon: Daemon) -> None:
        daemon.proc.popen.send_signal(signal.SIGKILL)
        daemon.proc.popen.wait(10)
        self.running.remove(daemon)

    def stop(self, daemon: Daemon) -> None:
        wait_until(lambda: url_of(daemon), timeout=60)  # past start-up: SIGTERM is a clean stop
        assert daemon.proc.stop() == 0, daemon.proc.output[-3000:]
        self.running.remove(daemon)

    def leaders(self) -> list[Daemon]:
        return [d for d in self.running if leads(d)]

    def stop_all(self) -> None:
        for daemon in list(self.running):
            self.stop(daemon)


def url_of(daemon: Daemon) -> str:
    """The replica's URL from its `started` line ("" until it is logged)."""
    if not daemon.url:
        if daemon.proc.popen.poll() is not None:
            raise AssertionError(f"replica exited ({daemon.proc.popen.returncode}):\n"
                                 f"{daemon.proc.output[-3000:]}")  # fmt: skip
        for line in daemon.proc.output.splitlines():
            if line.startswith("{") and '"started"' in line:
                event = json.loads(line)
                if event.get("event") == "started":
                    daemon.url = f"http://{str(event['listen']).split(',')[0]}"
    return daemon.url


def ready(daemon: Daemon) -> bool:
    return bool(url_of(daemon)) and daemon.get("/readyz").status_code == 200


def leads(daemon: Daemon) -> bool:
    """syncwatch_leader is 1 (False while the replica is not serving yet)."""
    if not url_of(daemon):
        return False
    try:
        found = daemon.metrics().get("syncwatch_leader", [])
    except httpx.HTTPError:
        return False
    return any(value == 1 for _, value in found)


def only_leader(replicas: Replicas, timeout: float = 30) -> Daemon:
    found: list[Daemon] = wait_until(replicas.leaders, timeout=timeout)
    assert len(found) == 1, [d.proc.log_path.name for d in found]
    return found[0]


def outbox_rows(url: str) -> int:
    with psycopg.connect(url) as db:
        row = db.execute("SELECT COUNT(*) FROM outbox").fetchone()
    return 0 if row is None else int(row[0])


def notifications(capture: CaptureServer, sync_id: str) -> list[tuple[str, str]]:
    """(delivery id, status) of each distinct delivery about `sync_id`, in arrival order."""
    seen: dict[str, str] = {}
    for request in capture.requests:
        for alert in request.json()["alerts"]:
            if alert["labels"].get("sync_id") == sync_id:
                seen.setdefault(request.header("X-Syncwatch-Delivery-Id") or "", alert["status"])
    return list(seen.items())


def webhook(capture: CaptureServer) -> str:
    return f'[[notifiers]]\nname = "hook"\ntype = "webhook"\nurl = "{capture.url}/hook"\n'


def test_on_sqlite_the_one_process_is_the_active_one_of_its_shard(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys
) -> None:
    daemon = launch(tmp_path, sim, rsa_keys, daemon_extra='shard = "1/2"')
    try:
        assert daemon.metrics()["syncwatch_leader"] == [({"shard": "1/2"}, 1.0)]
        assert daemon.get("/readyz").text == "ok\n"
        assert daemon.get("/readyz", params={"role": "active"}).status_code == 200
    finally:
        assert daemon.proc.stop() == 0


# --- kill -9 of the active replica --------------------------------------------------------


def test_kill_9_of_the_active_replica_loses_nothing_and_sends_nothing_under_two_ids(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys, pg_url: str, request: pytest.FixtureRequest
) -> None:
    kills = FULL_KILLS if request.config.getoption("--run-slow") else QUICK_KILLS
    rng = random.Random(20261202)
    fleet = sim.fleet()
    flipped = next(s for s in fleet["paragon"] if s["intended"] == "ok")
    failovers: list[float] = []
    # The receiver answers after 0.3 s, so a kill lands before the 200, around it, or after.
    with CaptureServer(default=Reply(delay=0.3)) as capture:
        replicas = Replicas(tmp_path, sim, rsa_keys, pg_url, webhook(capture))
        try:
            for _ in range(3):
                replicas.start()
            active = only_leader(replicas)
            wait_until(lambda: outbox_rows(pg_url) == 0 and capture.requests, timeout=30)
            errored = False
            for _ in range(kills):
                errored = not errored
                status = "firing" if errored else "resolved"
                sent = len(notifications(capture, flipped["sync_id"]))
                _flip(sim, flipped, errored)
                # The moment of the crash: while this flip's notification is being delivered.
                wait_until(
                    lambda n=sent: len(notifications(capture, flipped["sync_id"])) > n,  # type: ignore[misc]
                    timeout=30,
                )
                assert notifications(capture, flipped["sync_id"])[-1][1] == status
                time.sleep(rng.uniform(0.0, 0.45))  # the random moment, not a sync
                replicas.kill(active)
                killed = time.monotonic()
                active = wait_until(lambda: next(iter(replicas.leaders()), None), 30, 0.02)
                failovers.append(time.monotonic() - killed)
                assert len(replicas.leaders()) == 1
                replicas.start(wait=False)  # back to three
            # Settle: everything stored is delivered.
            wait_until(lambda: outbox_rows(pg_url) == 0, timeout=60)
            active.wait_cycles(2)
        finally:
            replicas.stop_all()
        ids, _ = _events(capture.requests)
        repeated = Counter(delivery_ids(capture))
        sends = notifications(capture, flipped["sync_id"])
    # 0 sent under two delivery ids (a kill between the 200 and its record re-sends, same id).
    twice = {key: found for key, found in ids.items() if len(found) > 1}
    assert not twice, twice
    # 0 lost: every flip was notified, exactly once, in order.
    assert [status for _, status in sends] == ["firing", "resolved"] * (kills // 2), sends
    fingerprints = {a["fingerprint"] for r in capture.requests for a in r.json()["alerts"]}
    expected = sum(1 for s in fleet["paragon"] + fleet["timbal"] if s["alertname"])
    assert len(fingerprints - {fingerprint(("SyncErrored", "paragon", flipped["user_id"],
                                            flipped["sync_id"]))}) >= expected  # fmt: skip
    again = sum(1 for n in repeated.values() if n > 1)
    print(
        f"{kills} kills of the active replica: failover max {max(failovers):.2f} s, "
        f"median {statistics.median(failovers):.2f} s; "
        f"{again} deliveries re-sent under the same id"
    )


# --- resharding ---------------------------------------------------------------------------


@pytest.fixture
def wide_sim(tmp_path_factory: pytest.TempPathFactory, rsa_keys: Keys) -> Iterator[SimProcess]:
    """A fleet with room for 50 open alerts over a dozen tenants (to spread over shards)."""
    sim = start_simulator(
        tmp_path_factory.mktemp("wide"),
        rsa_keys,
        *("--orgs", "1", "--syncs-per-org", "2", "--users", "12", "--syncs-per-user", "6"),
        *("--seed", "11", "--churn", "0"),
    )
    yield sim
    sim.proc.stop()


def test_resharding_2_to_3_moves_50_open_alerts_without_notifying_them_again(
    tmp_path: Path, wide_sim: SimProcess, rsa_keys: Keys, pg_url: str
) -> None:
    fleet = wide_sim.fleet()
    broken = [s for s in fleet["paragon"] if s["intended"] == "ok"][:50]
    assert len(broken) == 50
    with CaptureServer() as capture:
        replicas = Replicas(tmp_path, wide_sim, rsa_keys, pg_url, webhook(capture))
        try:
            old = [replicas.start(f"{i}/2") for i in range(2)]
            wait_until(lambda: all(leads(d) for d in old))
            for sync in broken:
                _flip(wide_sim, sync, errored=True)
            for sync in broken:
                wait_until(lambda s=sync: notified(capture, s["sync_id"], "firing"), timeout=30)  # type: ignore[misc]
            wait_until(lambda: outbox_rows(pg_url) == 0, timeout=30)
            before = len(capture.requests)
            # The new layout starts while the old one runs: it waits, it does not double up.
            new = [replicas.start(f"{i}/3") for i in range(3)]
            for daemon in new:
                assert not leads(daemon)
                assert "replicas of 2 shards are active" in daemon.get("/readyz").text
                assert daemon.get("/readyz", params={"role": "active"}).status_code == 503
            for daemon in old:
                replicas.stop(daemon)
            wait_until(lambda: all(leads(d) for d in new), timeout=30)
            for daemon in new:
                daemon.wait_cycles(3)
            # 0 new notifications: each new owner carries on the open alerts it took over.
            assert len(capture.requests) == before, [r.json() for r in capture.requests[before:]]
            firing = {
                a["labels"]["sync_id"]
                for d in new
                for a in d.get("/api/v1/alerts").json()
                if a["state"] == "firing"
            }
            assert {s["sync_id"] for s in broken} <= firing
            # And they resolve normally, from their new owners, once each.
            for sync in broken:
                _flip(wide_sim, sync, errored=False)
            for sync in broken:
                wait_until(lambda s=sync: notified(capture, s["sync_id"], "resolved"), timeout=30)  # type: ignore[misc]
            wait_until(lambda: outbox_rows(pg_url) == 0, timeout=30)
        finally:
            replicas.stop_all()
        for sync in broken:
            assert [s for _, s in notifications(capture, sync["sync_id"])] == [
                "firing",
                "resolved",
            ]
        repeated = {d: n for d, n in Counter(delivery_ids(capture)).items() if n > 1}
        assert not repeated, repeated
    print(f"resharded 2 -> 3 with {len(broken)} open alerts: 0 notified again, 50 resolved once")


# --- PostgreSQL stopped -------------------------------------------------------------------


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


def test_postgresql_stopped_for_3_cycles_notifies_the_changes_once_when_it_is_back(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys, own_server: PostgresServer
) -> None:
    flipped = next(s for s in sim.fleet()["paragon"] if s["intended"] == "ok")
    with CaptureServer() as capture:
        replicas = Replicas(
            tmp_path, sim, rsa_keys, own_server.url(), webhook(capture), poll_interval="1s"
        )
        try:
            pair = [replicas.start(), replicas.start()]
            active = only_leader(replicas)
            wait_until(lambda: capture.requests and outbox_rows(own_server.url()) == 0)
            own_server.stop()
            _flip(sim, flipped, errored=True)  # the change during the outage
            cycles = active.cycles()
            active.wait_cycles(3)
            for daemon in pair:  # no crash; /metrics served; the store is down
                assert daemon.proc.popen.poll() is None
                ((_, up),) = daemon.metrics()["syncwatch_state_up"]
                assert up == 0
            assert active.cycles() >= cycles + 3  # it kept polling
            assert not notified(capture, flipped["sync_id"], "firing")  # not recordable
            own_server.start()
            wait_until(lambda: notified(capture, flipped["sync_id"], "firing"), timeout=60)
            active = only_leader(replicas)  # the same one, or the standby that won the race
            for daemon in pair:
                wait_until(lambda d=daemon: d.metrics()["syncwatch_state_up"][0][1] == 1)  # type: ignore[misc]
            wait_until(lambda: outbox_rows(own_server.url()) == 0)
            active.wait_cycles(2)
        finally:
            replicas.stop_all()
        repeated = {d: n for d, n in Counter(delivery_ids(capture)).items() if n > 1}
        assert not repeated, repeated
        assert [s for _, s in notifications(capture, flipped["sync_id"])] == ["firing"]
    logs = "".join(d.proc.output for d in pair)
    assert '"cycle_failed"' not in logs
    assert '"Traceback' not in logs


# --- silences -----------------------------------------------------------------------------


def test_a_silence_made_through_one_replica_mutes_what_another_delivers(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys, pg_url: str
) -> None:
    fleet = sim.fleet()
    muted, control = [s for s in fleet["paragon"] if s["intended"] == "ok"][:2]
    with CaptureServer() as capture:
        replicas = Replicas(tmp_path, sim, rsa_keys, pg_url, webhook(capture))
        try:
            b = replicas.start()
            only_leader(replicas)
            a = replicas.start()  # a standby
            assert not leads(a)
            # It polls nothing: no listing timed, no sync or alert series of its own.
            standby = a.metrics()
            polls = standby.get("syncwatch_poll_duration_seconds_count", [])
            assert all(value == 0 for _, value in polls)
            assert not [n for n in standby if n.startswith(("syncwatch_paragon_sync_",
                                                            "syncwatch_alert"))]  # fmt: skip
            silence: dict[str, Any] = {
                "matchers": [
                    {"name": "sync_id", "value": muted["sync_id"], "isRegex": False},
                ],
                "startsAt": "2020-01-01T00:00:00Z",
                "endsAt": "2099-01-01T00:00:00Z",
                "createdBy": "replica test",
                "comment": "made through the standby",
            }
            a.get("/readyz").raise_for_status()
            made = httpx.post(f"{a.url}/api/v2/silences", json=silence, timeout=20)
            assert made.status_code == 200, made.text
            _flip(sim, muted, errored=True)
            _flip(sim, control, errored=True)
            wait_until(lambda: notified(capture, control["sync_id"], "firing"), timeout=30)
            b.wait_cycles(2)
            states = {x["labels"]["sync_id"]: x["state"] for x in b.get("/api/v1/alerts").json()}
            assert states[muted["sync_id"]] == "suppressed"
            assert not notified(capture, muted["sync_id"], "firing")
        finally:
            replicas.stop_all()
