"""Durable silences: round trip, Alertmanager's update rules, expiry, collection, kill -9."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path

import pytest

from syncwatch.config.sections import PostgresTarget
from syncwatch.silence_store import SilenceNotFoundError, SilenceStore, plan_set
from syncwatch.silences import Matcher, Silence, SilenceState
from syncwatch.startup import EX_DATAERR, StartupError
from syncwatch.state import SCHEMA_VERSION as STATE_SCHEMA
from syncwatch.state import StateStore

NOW = datetime(2026, 12, 2, 12, 0, 0, 123456, tzinfo=UTC)
HOUR = timedelta(hours=1)
MATCHERS = (Matcher("tenant", "org_1"), Matcher("alertname", "Sync.*", is_regex=True))


def silence(
    silence_id: str = "",
    *,
    matchers: tuple[Matcher, ...] = MATCHERS,
    starts: datetime = NOW,
    ends: datetime = NOW + HOUR,
) -> Silence:
    return Silence(silence_id, matchers, starts, ends, "ops@example.com", "migration", starts)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def store(state_target: Path | PostgresTarget) -> SilenceStore:
    """On both backends (a SQLite file, a PostgreSQL database)."""
    ids = count(1)
    return SilenceStore(state_target, new_id=lambda: f"id-{next(ids)}")


def test_a_silence_survives_reopening_exactly(
    store: SilenceStore, state_target: Path | PostgresTarget
) -> None:
    made = store.set(silence(matchers=(*MATCHERS, Matcher("x", "y", is_equal=False))), NOW)
    store.close()
    again = SilenceStore(state_target)
    assert again.all(NOW) == [made.stored]
    assert again.get(made.stored.id, NOW) == made.stored


def test_shares_the_state_database_without_touching_its_schema(db_path: Path) -> None:
    state = StateStore(db_path)
    state.close()
    SilenceStore(db_path).set(silence(), NOW)
    reopened = StateStore(db_path)  # its quick_check and migration still pass
    assert reopened.integrity_check() == "ok"
    assert reopened._db.execute("PRAGMA user_version").fetchone()[0] == STATE_SCHEMA
    reopened.close()


def test_reopening_does_not_migrate_again(
    store: SilenceStore, state_target: Path | PostgresTarget
) -> None:
    store.set(silence(), NOW)
    store.close()
    assert len(SilenceStore(state_target).all(NOW)) == 1


def test_a_newer_silences_schema_is_refused_with_a_clear_error(db_path: Path) -> None:
    SilenceStore(db_path).close()
    with sqlite3.connect(db_path) as db:
        db.execute("UPDATE schema_parts SET version = 99 WHERE part = 'silences'")
    with pytest.raises(StartupError, match="silences table has schema 99") as raised:
        SilenceStore(db_path)
    assert raised.value.exit_code == EX_DATAERR


def test_a_new_silence_gets_an_id_and_starts_no_earlier_than_now(store: SilenceStore) -> None:
    made = store.set(silence(starts=NOW - HOUR), NOW)
    assert made.stored.id == "id-1"
    assert made.stored.starts_at == NOW
    assert made.stored.updated_at == NOW
    assert made.expired is None


def test_updating_an_unknown_id_is_not_found(store: SilenceStore) -> None:
    with pytest.raises(SilenceNotFoundError):
        store.set(silence("no-such-id"), NOW)


def test_extending_an_active_silence_keeps_its_id(store: SilenceStore) -> None:
    made = store.set(silence(), NOW).stored
    later = NOW + timedelta(minutes=5)
    change = store.set(silence(made.id, ends=NOW + 3 * HOUR), later)
    assert change.stored.id == made.id
    assert change.expired is None
    assert store.all(later) == [change.stored]
    assert change.stored.updated_at == later


def test_changing_the_matchers_replaces_the_silence_and_expires_the_old_one(
    store: SilenceStore,
) -> None:
    made = store.set(silence(), NOW).stored
    later = NOW + timedelta(minutes=5)
    change = store.set(silence(made.id, matchers=(Matcher("tenant", "org_2"),)), later)
    assert change.stored.id == "id-2"
    assert change.expired is not None
    assert change.expired.ends_at == later
    states = {s.id: s.state(later) for s in store.all(later)}
    assert states == {made.id: SilenceState.EXPIRED, "id-2": SilenceState.ACTIVE}


def test_moving_an_active_silences_start_replaces_it() -> None:
    prev = silence("a", starts=NOW - HOUR)
    change = plan_set(prev, silence("a", starts=NOW - 2 * HOUR), NOW, "b")
    assert change.stored.id == "b"
    assert change.expired == prev.expired(NOW)


def test_a_pending_silence_may_move_its_start_within_the_future() -> None:
    prev = silence("a", starts=NOW + HOUR, ends=NOW + 2 * HOUR)
    change = plan_set(prev, silence("a", starts=NOW + 30 * 60 * timedelta(seconds=1)), NOW, "b")
    assert change.stored.id == "a"


def test_an_expired_silence_is_replaced_and_left_as_it_was() -> None:
    prev = silence("a", starts=NOW - 2 * HOUR, ends=NOW - HOUR)
    change = plan_set(prev, silence("a"), NOW, "b")
    assert (change.stored.id, change.expired) == ("b", None)


def test_expiring_an_active_silence_ends_it_now(store: SilenceStore) -> None:
    made = store.set(silence(), NOW).stored
    later = NOW + timedelta(minutes=1)
    ended = store.expire(made.id, later)
    assert (ended.starts_at, ended.ends_at) == (NOW, later)
    assert ended.state(later) is SilenceState.EXPIRED


def test_expiring_a_pending_silence_sets_both_ends_to_now(store: SilenceStore) -> None:
    made = store.set(silence(starts=NOW + HOUR, ends=NOW + 2 * HOUR), NOW).stored
    ended = store.expire(made.id, NOW)
    assert (ended.starts_at, ended.ends_at) == (NOW, NOW)


def test_expiring_twice_changes_nothing(store: SilenceStore) -> None:
    made = store.set(silence(), NOW).stored
    first = store.expire(made.id, NOW + HOUR / 2)
    assert store.expire(made.id, NOW + HOUR) == first


def test_expiring_an_unknown_id_is_not_found(store: SilenceStore) -> None:
    with pytest.raises(SilenceNotFoundError):
        store.expire("nope", NOW)


def test_expired_silences_are_kept_for_the_retention_then_collected(
    state_target: Path | PostgresTarget,
) -> None:
    store = SilenceStore(state_target, retention=timedelta(days=5))
    made = store.set(silence(), NOW).stored
    ended = made.ends_at
    just_before = ended + timedelta(days=5) - timedelta(seconds=1)
    assert store.collect(just_before) == 0
    assert store.get(made.id, just_before) == made
    at_retention = ended + timedelta(days=5)
    assert store.get(made.id, at_retention) is None  # hidden at once, before any collection
    assert store.collect(at_retention) == 1
    store.close()
    assert SilenceStore(state_target).all(NOW) == []


def test_counts_give_every_state(store: SilenceStore) -> None:
    store.set(silence(), NOW)
    store.set(silence(starts=NOW + HOUR, ends=NOW + 2 * HOUR), NOW)
    store.expire(store.set(silence(), NOW).stored.id, NOW + HOUR / 2)
    assert store.counts(NOW + HOUR / 2) == {
        SilenceState.ACTIVE: 1,
        SilenceState.PENDING: 1,
        SilenceState.EXPIRED: 1,
    }


def test_the_muter_names_the_silences_that_mute_an_alert(store: SilenceStore) -> None:
    made = store.set(silence(), NOW).stored
    muter = store.muter()
    assert muter({"tenant": "org_1", "alertname": "SyncStale"}, NOW) == (made.id,)
    assert muter({"tenant": "org_2", "alertname": "SyncStale"}, NOW) == ()


def test_a_failed_write_changes_nothing_in_memory(db_path: Path) -> None:
    store = SilenceStore(db_path)
    made = store.set(silence(), NOW).stored
    with sqlite3.connect(db_path, isolation_level=None) as other:
        other.execute("BEGIN EXCLUSIVE")
        store._db.execute("PRAGMA busy_timeout=0")
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            store.expire(made.id, NOW + HOUR / 2)
        other.execute("ROLLBACK")
    assert store.get(made.id, NOW + HOUR / 2) == made


WRITER = textwrap.dedent(
    """
    import sys, time
    from datetime import UTC, datetime, timedelta
    from syncwatch.silence_store import SilenceStore
    from syncwatch.silences import Matcher, Silence
    now = datetime.now(UTC)
    made = SilenceStore(sys.argv[1]).set(
        Silence("", (Matcher("tenant", "org_1"),), now, now + timedelta(hours=1), "me", "c", now),
        now,
    )
    print(made.stored.id, flush=True)
    time.sleep(60)
    """
)


def test_an_acknowledged_silence_survives_kill_9(db_path: Path) -> None:
    """Once `set` returns, the silence is on disk: SIGKILL right after loses nothing."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db_path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    silence_id = proc.stdout.readline().strip()
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert [s.id for s in SilenceStore(db_path).all(datetime.now(UTC))] == [silence_id]
