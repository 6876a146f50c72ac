"""A sick state database at run time: locked by another process, or full.

The store degrades instead of blinding syncwatch: cycles, /healthz and /metrics go on,
deliveries go on from memory and are never repeated, `syncwatch_state_up` says 0, and
everything is committed once the database takes writes again.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from syncwatch.lifecycle import Transition
from syncwatch.notifiers.base import DELIVERY_ID_HEADER
from syncwatch.state import StateStore
from syncwatch.store import Store
from tests.capture import CaptureServer
from tests.conftest import Daemon, Keys, SimProcess, launch, wait_until
from tests.test_crash import _flip
from tests.test_runtime import queued


def state_up(daemon: Daemon) -> float:
    ((_, value),) = daemon.metrics()["syncwatch_state_up"]
    return value


def delivery_ids(capture: CaptureServer) -> list[str]:
    return [r.header(DELIVERY_ID_HEADER) or "" for r in capture.requests]


def notified(capture: CaptureServer, sync_id: str, status: str) -> bool:
    return any(
        a["labels"].get("sync_id") == sync_id and a["status"] == status
        for r in capture.requests
        for a in r.json()["alerts"]
    )


@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    with CaptureServer() as server:
        yield server


def test_a_locked_state_file_degrades_without_blocking_or_resending(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys, capture: CaptureServer
) -> None:
    flipped = next(s for s in sim.fleet()["paragon"] if s["intended"] == "ok")
    notifier = f'[[notifiers]]\nname = "hook"\ntype = "webhook"\nurl = "{capture.url}/hook"\n'
    daemon = launch(tmp_path, sim, rsa_keys, extra=notifier, poll_interval="1s")
    try:
        wait_until(lambda: capture.requests and state_up(daemon) == 1)
        # Another process takes the write lock and keeps it.
        lock = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        try:
            _flip(sim, flipped, errored=True)
            wait_until(lambda: notified(capture, flipped["sync_id"], "firing"), timeout=20)
            wait_until(lambda: state_up(daemon) == 0)
            slowest = 0.0
            for _ in range(10):  # over several cycles, each failing to write
                started = time.monotonic()
                health = daemon.get("/healthz")
                slowest = max(slowest, time.monotonic() - started)
                assert health.status_code == 200
                assert health.text.startswith("degraded: state store: OperationalError")
                assert "database is locked" in health.text
                daemon.wait_cycles(1)
            assert slowest < 1.0, f"/healthz took {slowest:.2f}s"
            _flip(sim, flipped, errored=False)
            wait_until(lambda: notified(capture, flipped["sync_id"], "resolved"), timeout=20)
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        wait_until(lambda: state_up(daemon) == 1, timeout=20)
        assert httpx.get(f"{daemon.url}/healthz", timeout=5).text == "ok\n"
        daemon.wait_cycles(2)
    finally:
        assert daemon.proc.stop() == 0
    # Each delivery reached the receiver once, and everything was committed in the end.
    repeated = {d: n for d, n in Counter(delivery_ids(capture)).items() if n > 1}
    assert not repeated, repeated
    with closing(sqlite3.connect(tmp_path / "state.db")) as db:
        assert db.execute("SELECT COUNT(*) FROM outbox").fetchone() == (0,)
        errored = db.execute(
            "SELECT COUNT(*) FROM alerts WHERE alertname = 'SyncErrored' AND sync_id = ?",
            (flipped["sync_id"],),
        ).fetchone()
        assert errored == (0,)  # the resolve of the flipped sync reached the disk
    log = daemon.proc.output
    assert log.count('"state_degraded"') == 1
    assert '"state_recovered"' in log
    assert '"cycle_failed"' not in log


def nothing() -> Transition:
    return Transition({}, {}, [], [], [], {})


async def test_a_full_disk_keeps_writes_in_memory_until_there_is_room(tmp_path: Path) -> None:
    db_path = tmp_path / "state.db"
    store = Store(StateStore(db_path))
    try:
        # SQLITE_FULL: the database may not grow past the pages it has now.
        with closing(sqlite3.connect(db_path)) as db:
            pages = db.execute("PRAGMA page_count").fetchone()[0]
        # A full disk, on the store's own connection (the limit is per connection).
        store.db._db.execute(f"PRAGMA max_page_count={pages}")
        big = [queued(f"d{i}", "hook") for i in range(50)]
        for batch in big:
            batch.alerts[0].annotations["description"] = "x" * 4000
        store.commit_cycle(nothing(), big)
        assert await store.flush() is False
        assert not store.up
        assert "full" in store.problem
        assert store.pending() == {"hook": 50}  # still deliverable, from memory
        assert await store.payload("d0")
        store.ack("d0")
        store.db._db.execute("PRAGMA max_page_count=1073741823")  # room again
        assert await store.flush() is True
        assert store.up
    finally:
        store.close()
    with closing(sqlite3.connect(db_path)) as db:
        assert db.execute("SELECT COUNT(*) FROM outbox").fetchone() == (49,)


async def test_a_locked_database_costs_a_write_one_busy_timeout_then_nothing(
    tmp_path: Path,
) -> None:
    db_path = tmp_path / "state.db"
    store = Store(StateStore(db_path))
    lock = sqlite3.connect(db_path, isolation_level=None)
    try:
        lock.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        store.commit_cycle(nothing(), [queued("d1", "hook")])
        assert await store.flush() is False
        first = time.monotonic() - started
        started = time.monotonic()
        store.commit_cycle(nothing(), [queued("d2", "hook")])
        assert await store.flush() is False
        second = time.monotonic() - started
        # The first write waited out the busy timeout (1 s); a sick store does not wait.
        assert 0.9 <= first < 2.0
        assert second < 0.5
        lock.execute("ROLLBACK")
        assert await store.flush() is True
    finally:
        lock.close()
        store.close()
    with closing(sqlite3.connect(db_path)) as db:
        assert db.execute("SELECT delivery_id FROM outbox ORDER BY seq").fetchall() == [
            ("d1",),
            ("d2",),
        ]
