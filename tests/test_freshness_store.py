"""The freshness ledger in the state database: rows per cycle, runs, migration, pruning.

A real database, written by a real HistoryStore (the writer the ledger is attached to):
on both backends (`state_target`: a SQLite file and a PostgreSQL database), except where a
test needs SQLite's own lock. Flushes are called directly, as the writer thread would;
wall and monotonic clocks are injected.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from syncwatch.config.sections import PostgresTarget
from syncwatch.freshness import DAY, Counts, Figures
from syncwatch.freshness_store import OBSERVED_EVERY, FreshnessLedger
from syncwatch.history import Entry, Kind
from syncwatch.history_store import HistoryStore
from syncwatch.sqldb import open_db
from syncwatch.startup import EX_DATAERR, StartupError
from syncwatch.state import StateStore

T0 = 1_780_000_000.0
A, B = ("timbal", "org_a"), ("paragon", "user_b")


class Clocks:
    def __init__(self) -> None:
        self.wall = T0
        self.mono = 1000.0


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


Where = Path | PostgresTarget


def open_ledger(
    path: Where,
    clocks: Clocks,
    *,
    retention: float = 30 * DAY,
    max_gap: float = 60.0,
    max_steps: int = 1000,
) -> tuple[HistoryStore, FreshnessLedger]:
    store = HistoryStore(path, retention=retention, wall=lambda: clocks.wall)
    ledger = FreshnessLedger(max_gap, max_steps, monotonic=lambda: clocks.mono)
    store.attach(ledger)
    return store, ledger


def rows(path: Where, sql: str) -> list[tuple[object, ...]]:
    db = open_db(path)
    try:
        return [tuple(r) for r in db.execute(sql)]
    finally:
        db.close()


def steps(path: Where) -> list[tuple[object, ...]]:
    return rows(path, "SELECT source, tenant, at, fresh, stale, excluded, unknown"
                " FROM freshness_steps ORDER BY source, tenant, at")  # fmt: skip


def runs(path: Where) -> list[tuple[object, ...]]:
    return rows(path, "SELECT id, started, last FROM freshness_runs ORDER BY id")


def cycle(
    store: HistoryStore, ledger: FreshnessLedger, clocks: Clocks, at: float, **counts: Counts
) -> int:
    clocks.wall, clocks.mono = at, clocks.mono + (at - clocks.wall)
    keys = {"a": A, "b": B}
    recorded = ledger.observe({keys[k]: c for k, c in counts.items()}, at)
    assert store.flush()
    return recorded


def test_a_cycle_writes_a_step_only_for_tenants_whose_counts_changed(
    state_target: Where, clocks: Clocks
) -> None:
    path = state_target
    store, ledger = open_ledger(path, clocks)
    assert cycle(store, ledger, clocks, T0, a=Counts(fresh=3), b=Counts(fresh=1)) == 2
    assert cycle(store, ledger, clocks, T0 + 10, a=Counts(fresh=3), b=Counts(fresh=1)) == 0
    assert cycle(store, ledger, clocks, T0 + 20, a=Counts(fresh=2, stale=1), b=Counts(fresh=1)) == 1
    assert steps(path) == [
        ("paragon", "user_b", T0, 1, 0, 0, 0),
        ("timbal", "org_a", T0, 3, 0, 0, 0),
        ("timbal", "org_a", T0 + 20, 2, 1, 0, 0),
    ]
    # The run is written with the steps, in the same transaction: it reaches their cycle.
    assert runs(path) == [(1, T0, T0 + 20)]
    store.close()


def test_a_quiet_cycle_leaves_the_file_alone_until_the_run_end_is_due(
    tmp_path: Path, clocks: Clocks
) -> None:
    path = tmp_path / "state.db"
    store, ledger = open_ledger(path, clocks)
    cycle(store, ledger, clocks, T0, a=Counts(fresh=1))
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # any write would fail now
    store._db.execute("PRAGMA busy_timeout=0")
    cycle(store, ledger, clocks, T0 + 10, a=Counts(fresh=1))  # nothing due: no lock taken
    blocker.execute("ROLLBACK")
    assert runs(path) == [(1, T0, T0)]
    cycle(store, ledger, clocks, T0 + 10 + OBSERVED_EVERY, a=Counts(fresh=1))
    assert runs(path) == [(1, T0, T0 + 10 + OBSERVED_EVERY)]
    clocks.wall += 5
    ledger.observe({A: Counts(fresh=1)}, clocks.wall)
    store.close()  # a clean stop writes where the run ended
    assert runs(path) == [(1, T0, T0 + 15 + OBSERVED_EVERY)]


def test_a_restart_starts_a_new_run_and_the_gap_reads_unknown(
    state_target: Where, clocks: Clocks
) -> None:
    path = state_target
    store, ledger = open_ledger(path, clocks)
    cycle(store, ledger, clocks, T0, a=Counts(fresh=2))
    cycle(store, ledger, clocks, T0 + 50, a=Counts(fresh=2))
    store.close()
    store, ledger = open_ledger(path, clocks)
    assert ledger.current() == {A: Counts(fresh=2)}  # read back
    # Back 30 s later, within max_gap: still a new run, as a new process is.
    assert cycle(store, ledger, clocks, T0 + 80, a=Counts(fresh=2)) == 0  # unchanged
    cycle(store, ledger, clocks, T0 + 100, a=Counts(fresh=2))
    assert runs(path) == [(1, T0, T0 + 50), (2, T0 + 80, T0 + 80)]  # its end: due later
    f = ledger.figures()
    assert f.as_of == T0 + 100
    assert f.runs == ((T0, T0 + 50), (T0 + 80, T0 + 100))
    day = f.tenants[A]["24h"]
    assert day.fresh == pytest.approx(2 * 70)
    assert day.unknown == pytest.approx(2 * (DAY - 70))  # 30 s down, and before T0
    store.close()
    # Reopened, the same figures come back from the file.
    store, ledger = open_ledger(path, clocks)
    assert ledger.figures().tenants[A]["24h"] == pytest.approx(day)
    store.close()


def test_a_pause_longer_than_max_gap_ends_the_run_inside_one_process(
    state_target: Where, clocks: Clocks
) -> None:
    path = state_target
    store, ledger = open_ledger(path, clocks, max_gap=60.0)
    cycle(store, ledger, clocks, T0, a=Counts(fresh=1))
    cycle(store, ledger, clocks, T0 + 60, a=Counts(fresh=1))  # at the limit: same run
    cycle(store, ledger, clocks, T0 + 200, a=Counts(fresh=1))  # suspended, stalled: a gap
    store.close()
    assert runs(path) == [(1, T0, T0 + 60), (2, T0 + 200, T0 + 200)]


def test_a_wall_clock_stepped_back_records_nothing_until_it_passes_the_last_cycle(
    tmp_path: Path, clocks: Clocks
) -> None:
    store, ledger = open_ledger(tmp_path / "state.db", clocks)
    cycle(store, ledger, clocks, T0, a=Counts(fresh=1))
    assert ledger.observe({A: Counts(stale=1)}, T0 - 3600) == 0
    assert ledger.figures().as_of == T0
    assert ledger.observe({A: Counts(stale=1)}, T0 + 1) == 1
    store.close()


def test_a_tenant_no_longer_listed_gets_an_empty_step(state_target: Where, clocks: Clocks) -> None:
    path = state_target
    store, ledger = open_ledger(path, clocks)
    cycle(store, ledger, clocks, T0, a=Counts(fresh=1), b=Counts(fresh=1))
    assert cycle(store, ledger, clocks, T0 + 10, a=Counts(fresh=1)) == 1
    assert cycle(store, ledger, clocks, T0 + 20, a=Counts(fresh=1)) == 0
    assert steps(path)[-1] == ("timbal", "org_a", T0, 1, 0, 0, 0)
    assert ("paragon", "user_b", T0 + 10, 0, 0, 0, 0) in steps(path)
    store.close()


def test_retention_keeps_each_tenants_state_at_the_cutoff_and_drops_the_rest(
    state_target: Where, clocks: Clocks
) -> None:
    path = state_target
    store, ledger = open_ledger(path, clocks, retention=10 * DAY, max_gap=2 * DAY)
    cycle(store, ledger, clocks, T0, a=Counts(fresh=2), b=Counts(fresh=1))
    cycle(store, ledger, clocks, T0 + DAY, a=Counts(fresh=1, stale=1), b=Counts(fresh=1))
    store.close()  # run 1 ends at T0 + 1 d
    store, ledger = open_ledger(path, clocks, retention=10 * DAY, max_gap=2 * DAY)
    cycle(store, ledger, clocks, T0 + 2 * DAY, a=Counts(fresh=2))  # run 2; b is gone
    assert len(steps(path)) == 5
    # A gap (run 3); this write applies the retention: the cutoff is T0 + 3 d.
    cycle(store, ledger, clocks, T0 + 13 * DAY, a=Counts(fresh=2))
    before = ledger.figures().tenants[A]["7d"]
    cycle(store, ledger, clocks, T0 + 13 * DAY + 1, a=Counts(fresh=2))
    assert steps(path) == [("timbal", "org_a", T0 + 2 * DAY, 2, 0, 0, 0)]  # b: gone by then
    assert runs(path) == [(3, T0 + 13 * DAY, T0 + 13 * DAY)]  # 1 and 2 ended before
    after = ledger.figures().tenants
    assert set(after) == {A}
    assert after[A]["7d"].fresh == pytest.approx(before.fresh + 2)
    store.close()
    store, ledger = open_ledger(path, clocks, retention=10 * DAY, max_gap=2 * DAY)
    assert ledger.figures().tenants[A]["7d"] == pytest.approx(after[A]["7d"])
    store.close()


def test_beyond_the_step_cap_the_oldest_go_but_never_a_tenants_last(
    state_target: Where, clocks: Clocks
) -> None:
    path = state_target
    store, ledger = open_ledger(path, clocks, max_steps=10)
    for i in range(12):
        state = Counts(fresh=1) if i % 2 else Counts(stale=1)
        cycle(store, ledger, clocks, T0 + i, a=state, b=Counts(fresh=1) if i < 3 else Counts())
    clocks.mono += 3600
    cycle(store, ledger, clocks, T0 + 20, a=Counts(fresh=1))
    kept = steps(path)
    assert len(kept) <= 10
    assert ("paragon", "user_b", T0 + 3, 0, 0, 0, 0) in kept  # b's last: kept
    assert ("timbal", "org_a", T0, 0, 1, 0, 0) not in kept  # the oldest: gone
    assert ("timbal", "org_a", T0 + 11, 1, 0, 0, 0) in kept
    store.close()


def test_a_locked_file_keeps_the_ledger_in_memory_until_it_can_write(
    tmp_path: Path, clocks: Clocks
) -> None:
    path = tmp_path / "state.db"
    store, ledger = open_ledger(path, clocks)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    store._db.execute("PRAGMA busy_timeout=0")
    ledger.observe({A: Counts(fresh=1)}, T0)
    assert not store.flush()
    assert ledger.figures().tenants[A]["24h"].fresh == 0.0  # shown from memory meanwhile
    blocker.execute("ROLLBACK")
    assert store.flush()
    assert steps(path) == [("timbal", "org_a", T0, 1, 0, 0, 0)]
    assert runs(path) == [(1, T0, T0)]
    store.close()


def test_the_history_writes_and_the_ledger_share_one_transaction(
    state_target: Where, clocks: Clocks
) -> None:
    path = state_target
    store, ledger = open_ledger(path, clocks)
    store.record([Entry(T0, Kind.TRANSITION, "firing", "SyncStale", "timbal", "org_a", "s1")])
    ledger.observe({A: Counts(stale=1)}, T0)
    assert store.flush()
    assert (store.rows, len(steps(path))) == (1, 1)
    store.close()


def test_a_database_from_the_current_schema_gains_the_freshness_tables(
    state_target: Where, clocks: Clocks
) -> None:
    """What this syncwatch's predecessor leaves: the state, and history at part version 1."""
    path = state_target
    StateStore(path).close()
    old = HistoryStore(path, wall=lambda: clocks.wall)
    old.record([Entry(T0, Kind.TRANSITION, "firing", "SyncStale", "timbal", "org_a", "s1")])
    assert old.flush()
    old.close()
    parts = "SELECT part, version FROM schema_parts WHERE part <> 'state' ORDER BY part"
    assert rows(path, parts) == [("history", 1)]
    store, ledger = open_ledger(path, clocks)
    assert rows(path, parts) == [("freshness", 1), ("history", 1)]
    assert store.rows == 1  # history kept
    assert ledger.figures().tenants == {}
    cycle(store, ledger, clocks, T0, a=Counts(fresh=1))
    store.close()
    assert StateStore(path).load() == ({}, {})  # the alert state opens as before


def test_a_freshness_table_from_a_newer_syncwatch_refuses_to_start(
    state_target: Where, clocks: Clocks
) -> None:
    path = state_target
    store, _ = open_ledger(path, clocks)
    store.close()
    db = open_db(path)
    with db.transaction():
        db.execute("UPDATE schema_parts SET version = 9 WHERE part = 'freshness'")
    db.close()
    with pytest.raises(StartupError, match=r"freshness tables? ha(s|ve) schema 9") as err:
        open_ledger(path, clocks)
    assert err.value.exit_code == EX_DATAERR


def test_before_any_cycle_there_are_no_figures(tmp_path: Path, clocks: Clocks) -> None:
    store, ledger = open_ledger(tmp_path / "state.db", clocks)
    f = ledger.figures()
    assert (f.as_of, f.runs, dict(f.tenants)) == (None, (), {})
    assert Figures().fresh_share is None
    store.close()


def test_while_the_file_is_locked_what_waits_is_bounded_by_the_cap_too(
    tmp_path: Path, clocks: Clocks
) -> None:
    path = tmp_path / "state.db"
    store, ledger = open_ledger(path, clocks, max_steps=10)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    store._db.execute("PRAGMA busy_timeout=0")
    for i in range(40):
        clocks.mono += 3600  # every write attempt applies the caps
        ledger.observe({A: Counts(fresh=1) if i % 2 else Counts(stale=1)}, T0 + i)
        assert not store.flush()
    assert len(ledger._unwritten) <= 10
    blocker.execute("ROLLBACK")
    assert store.flush()
    kept = steps(path)
    assert len(kept) <= 10
    assert kept[-1] == ("timbal", "org_a", T0 + 39, 1, 0, 0, 0)
    store.close()
    store, reopened = open_ledger(path, clocks, max_steps=10)
    assert reopened.figures().tenants[A]["24h"] == pytest.approx(ledger.figures().tenants[A]["24h"])
    store.close()
