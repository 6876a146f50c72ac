"""History: entries, queries and cursors (pure), and the SQLite store's retention and cap."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from syncwatch.config.sections import PostgresTarget
from syncwatch.history import (
    MAX_ERROR,
    Attempt,
    BadQueryError,
    Entry,
    Kind,
    Outcome,
    Query,
    attempt_entries,
    decode_cursor,
    encode_cursor,
    ended_between,
    entry_json,
    parse_query,
    silence_entry,
)
from syncwatch.history_store import HistoryStore
from syncwatch.outbox import AlertPayload, AlertStatus, EventKind
from syncwatch.silences import Matcher, Silence
from syncwatch.startup import EX_DATAERR, StartupError
from syncwatch.state import StateStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def entry(at: float, tenant: str = "org_1", sync_id: str = "s1", event: str = "firing") -> Entry:
    return Entry(at, Kind.TRANSITION, event, "SyncStale", "timbal", tenant, sync_id)


def store(where: Path | PostgresTarget, **kw: float) -> HistoryStore:
    """The history of `where`: a directory's state.db, a SQLite file, or PostgreSQL."""
    now = kw.pop("now", T0.timestamp())
    target = where / "state.db" if isinstance(where, Path) and where.is_dir() else where
    return HistoryStore(target, wall=lambda: now, **kw)  # type: ignore[arg-type]


# --- pure -------------------------------------------------------------------------------


def test_a_cursor_round_trips_and_a_foreign_one_is_a_bad_query() -> None:
    assert decode_cursor(encode_cursor(12345)) == 12345
    for bad in ("", "xyz", encode_cursor(1)[:-1] + "!", "aDI6MQ"):  # aDI6MQ = "h2:1"
        with pytest.raises(BadQueryError, match="cursor"):
            decode_cursor(bad)


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-03-01T12:00:00"}, "until"),  # no time zone
        ({"tenat": "org_1"}, "tenat"),
    ],
)
def test_bad_query_parameters_are_named(params: dict[str, str], problem: str) -> None:
    with pytest.raises(BadQueryError, match=f"^{problem}:"):
        parse_query(params)


def test_a_query_takes_rfc3339_or_unix_seconds() -> None:
    q = parse_query({"since": "2026-03-01T12:00:00Z", "until": "1772370000", "limit": "5"})
    assert q == Query(since=T0.timestamp(), until=1772370000.0, limit=5)


def payload(sync_id: str) -> AlertPayload:
    labels = {"alertname": "SyncStale", "source": "timbal", "tenant": "org_1", "sync_id": sync_id}
    return AlertPayload(AlertStatus.FIRING, EventKind.FIRING, labels, {}, T0, None, "fp-" + sync_id)


def test_a_delivery_attempt_is_one_entry_per_alert_it_carried() -> None:
    attempt = Attempt(T0, "ops", "d1", Outcome.FAILED, 2, (payload("a"), payload("b")), 503, "down")
    got = attempt_entries(attempt)
    assert [(e.sync_id, e.event) for e in got] == [("a", "failed"), ("b", "failed")]
    assert got[0].detail == {
        "notifier": "ops",
        "deliveryId": "d1",
        "attempt": 2,
        "statusCode": 503,
        "error": "down",
        "fingerprint": "fp-a",
        "alertEvent": "firing",
    }


def test_a_delivery_error_keeps_no_url_path_and_is_bounded() -> None:
    error = "POST https://hooks.slack.com/services/T000/B000/XXXXSECRET: 500 " + "x" * 900
    (e,) = attempt_entries(Attempt(T0, "slack", "d1", Outcome.DROPPED, 1, (), None, error))
    text = str(e.detail["error"])
    assert "XXXXSECRET" not in text
    assert "https://hooks.slack.com" in text
    assert len(text) == MAX_ERROR
    assert e.tenant == ""  # the payload was never read: no labels


def silence(ends: datetime, updated: datetime) -> Silence:
    matchers = (Matcher("tenant", "org_1"), Matcher("sync_id", "s.*", is_regex=True))
    return Silence("sid", matchers, T0, ends, "ann", "migration", updated)


def test_a_silence_entry_takes_its_labels_from_equality_matchers() -> None:
    e = silence_entry("created", silence(T0 + timedelta(hours=1), T0), T0)
    assert (e.tenant, e.sync_id, e.alertname) == ("org_1", "", "")
    assert e.detail["matchers"] == ['tenant="org_1"', 'sync_id=~"s.*"']
    assert entry_json(e)["labels"] == {"tenant": "org_1"}


def test_a_silence_ending_by_its_own_time_is_found_once_and_a_delete_is_not() -> None:
    ends = T0 + timedelta(minutes=10)
    natural, deleted = silence(ends, T0), silence(ends, ends)  # DELETE sets updated = ends
    found = ended_between([natural, deleted], ends - timedelta(seconds=5), ends)
    assert found == [natural]
    assert ended_between([natural], ends, ends + timedelta(seconds=5)) == []


# --- the store ----------------------------------------------------------------------------


def test_entries_are_written_and_read_back_newest_first_with_a_cursor(
    state_target: Path | PostgresTarget,
) -> None:
    h = store(state_target)
    h.record([entry(T0.timestamp() + i, sync_id=f"s{i}") for i in range(5)])
    assert h.unwritten() == 5
    assert h.flush()
    assert h.unwritten() == 0
    page, after = h.query(Query(limit=2))
    assert [e.sync_id for _, e in page] == ["s4", "s3"]
    assert after is not None
    page, after = h.query(Query(limit=2, before=after))
    assert [e.sync_id for _, e in page] == ["s2", "s1"]
    page, after = h.query(Query(limit=2, before=after))
    assert [e.sync_id for _, e in page] == ["s0"]
    assert after is None


def test_queries_filter_by_tenant_sync_alertname_and_time(
    state_target: Path | PostgresTarget,
) -> None:
    h = store(state_target)
    t = T0.timestamp()
    h.record([entry(t, "org_1", "a"), entry(t + 10, "org_1", "b"), entry(t + 20, "org_2", "a")])
    h.flush()

    def ids(**kw: object) -> list[tuple[str, str]]:
        return [(e.tenant, e.sync_id) for _, e in h.query(Query(**kw))[0]]  # type: ignore[arg-type]

    assert ids(tenant="org_1") == [("org_1", "b"), ("org_1", "a")]
    assert ids(tenant="org_1", sync_id="a") == [("org_1", "a")]
    assert ids(sync_id="a") == [("org_2", "a"), ("org_1", "a")]
    assert ids(since=t + 10, until=t + 20) == [("org_1", "b")]
    assert ids(alertname="SyncErrored") == []


def test_configured_secrets_never_reach_the_table(tmp_path: Path) -> None:
    h = store(tmp_path)
    h.set_secrets(["s3cr3t-smtp-password", "short"])
    detail = {"error": "535 login failed for s3cr3t-smtp-password", "notifier": "short"}
    h.record([Entry(T0.timestamp(), Kind.DELIVERY, "failed", detail=detail)])
    h.flush()
    raw = sqlite3.connect(tmp_path / "state.db").execute("SELECT detail FROM history").fetchone()
    assert b"s3cr3t" not in raw[0]
    assert h.query(Query())[0][0][1].detail == {
        "error": "535 login failed for [redacted]",
        "notifier": "short",  # too short to be a secret: ordinary words stay
    }


def test_entries_older_than_the_retention_are_deleted_at_the_next_write(
    state_target: Path | PostgresTarget,
) -> None:
    now = T0.timestamp()
    h = store(state_target, retention=3600.0, now=now)
    h.record([entry(now - 7200), entry(now - 60)])
    h.flush()
    assert [e.at for _, e in h.query(Query())[0]] == [now - 60]
    assert h.rows == 1
    assert not h.dropped  # ageing out is not a drop


def test_over_the_row_cap_the_oldest_are_dropped_and_counted(
    state_target: Path | PostgresTarget,
) -> None:
    h = store(state_target, max_rows=3)
    t = T0.timestamp()
    h.record([entry(t + i, sync_id=f"s{i}") for i in range(2)])
    h.flush()
    h.record([entry(t + i, sync_id=f"s{i}") for i in range(2, 5)])
    h.flush()
    assert [e.sync_id for _, e in h.query(Query())[0]] == ["s4", "s3", "s2"]
    assert (h.rows, h.dropped["cap"]) == (3, 2)
    h.close()
    reopened = store(state_target, max_rows=3)
    assert reopened.rows == 3  # counted again at start


def test_a_locked_database_keeps_entries_in_memory_until_it_can_write(tmp_path: Path) -> None:
    h = store(tmp_path)
    h.record([entry(T0.timestamp())])
    blocker = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    h._db.execute("PRAGMA busy_timeout=0")  # the test need not wait out the lock
    assert not h.flush()
    assert h.unwritten() == 1
    blocker.execute("ROLLBACK")
    assert h.flush()
    assert (h.unwritten(), h.rows) == (0, 1)


def test_a_flush_with_nothing_to_write_leaves_the_database_alone(tmp_path: Path) -> None:
    """Quiet cycles cost the state file nothing: no write lock taken beside the cycle's."""
    h = store(tmp_path)
    h.record([entry(T0.timestamp())])
    assert h.flush()
    blocker = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    h._db.execute("PRAGMA busy_timeout=0")
    assert h.flush()
    blocker.execute("ROLLBACK")


def test_entries_waiting_for_a_sick_disk_are_bounded_by_the_cap(tmp_path: Path) -> None:
    h = store(tmp_path, max_rows=2)
    h.record([entry(T0.timestamp() + i) for i in range(5)])
    assert (h.unwritten(), h.dropped["unwritten"]) == (2, 3)


def test_the_writer_thread_writes_what_is_recorded_and_close_flushes(
    state_target: Path | PostgresTarget,
) -> None:
    h = store(state_target)
    h.start()
    h.record([entry(T0.timestamp())])
    h.close()
    assert store(state_target).rows == 1


def test_the_history_table_lives_beside_the_alert_state(tmp_path: Path) -> None:
    state = StateStore(tmp_path / "state.db")
    h = store(tmp_path)
    h.record([entry(T0.timestamp())])
    assert h.flush()
    h.close()
    state.close()
    assert StateStore(tmp_path / "state.db").load() == ({}, {})


def test_a_history_table_from_a_newer_syncwatch_refuses_to_start(tmp_path: Path) -> None:
    store(tmp_path).close()
    db = sqlite3.connect(tmp_path / "state.db")
    db.execute("UPDATE schema_parts SET version = 99 WHERE part = 'history'")
    db.commit()
    db.close()
    with pytest.raises(StartupError, match="history table has schema 99") as err:
        store(tmp_path)
    assert err.value.exit_code == EX_DATAERR


def test_an_ack_is_recorded_as_the_acknowledgement_of_its_alert() -> None:
    from dataclasses import replace as _replace
    from datetime import UTC, datetime, timedelta

    from syncwatch.history import silence_entry
    from syncwatch.silences import AckOf, Matcher, Silence

    at = datetime(2026, 12, 2, tzinfo=UTC)
    plain = Silence(
        id="s1",
        matchers=(Matcher("tenant", "org_1"),),
        starts_at=at,
        ends_at=at + timedelta(hours=1),
        created_by="ops",
        comment="looking",
        updated_at=at,
    )
    acked = _replace(plain, ack=AckOf("fp-1", "critical"))
    assert "ackOf" not in silence_entry("created", plain, at).detail
    assert silence_entry("created", acked, at).detail["ackOf"] == {
        "fingerprint": "fp-1",
        "severity": "critical",
    }
