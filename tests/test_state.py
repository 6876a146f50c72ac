"""Specs for the state store: migrations, atomic cycles, restarts and the outbox.

Each test runs on both backends (`state_target`: a SQLite file and a PostgreSQL database)
unless it is about the SQLite file itself.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from syncwatch.config import AlertingConfig, TimbalConfig, TimbalOrg
from syncwatch.config.sections import PostgresTarget
from syncwatch.engine import Engine
from syncwatch.evaluate import Report, evaluate_listings
from syncwatch.lifecycle import Alert, Identity, TenantKey, Transition
from syncwatch.models import AlertName, Listing, Severity, Source, TimbalSync
from syncwatch.notifiers.console import ConsoleConfig as ConsoleNotifier
from syncwatch.outbox import AlertPayload, AlertStatus, Batch, EventKind, NotificationReason
from syncwatch.settings import Config
from syncwatch.sources.timbal.rules import TimbalRules
from syncwatch.startup import EX_DATAERR, StartupError
from syncwatch.state import PG_MIGRATIONS, SCHEMA_VERSION, StateStore
from syncwatch.store import Store

Target = Path | PostgresTarget

T0 = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def store(state_target: Target) -> Iterator[StateStore]:
    s = StateStore(state_target)
    yield s
    s.close()


def user_version(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


def schema(target: Target) -> tuple[int, int]:
    """(the alert state's schema version in the database, this syncwatch's)."""
    if isinstance(target, Path):
        return user_version(target), SCHEMA_VERSION
    with psycopg.connect(target.dsn.get_secret_value()) as db:
        row = db.execute("SELECT version FROM schema_parts WHERE part = 'state'").fetchone()
    return (0 if row is None else int(row[0])), len(PG_MIGRATIONS)


def set_schema(target: Target, version: int) -> None:
    if isinstance(target, Path):
        with sqlite3.connect(target) as db:
            db.execute(f"PRAGMA user_version={version}")
        return
    with psycopg.connect(target.dsn.get_secret_value()) as db:
        db.execute("UPDATE schema_parts SET version = %s WHERE part = 'state'", (version,))


def alert(
    sync_id: str = "s1",
    *,
    severity: Severity = Severity.WARNING,
    status: AlertStatus | None = AlertStatus.FIRING,
    active_since: datetime = T0,
    fired_at: datetime | None = T0,
    last_notified_at: datetime | None = T0,
    cleared_since: datetime | None = None,
) -> Alert:
    return Alert(
        alertname=AlertName.SYNC_STALE,
        source=Source.TIMBAL,
        tenant="org_1",
        sync_id=sync_id,
        severity=severity,
        status=status,
        labels={
            "alertname": "SyncStale",
            "severity": str(severity),
            "source": "timbal",
            "tenant": "org_1",
            "sync_id": sync_id,
            "name": "billing \u2013 ünïcode",
        },
        annotations={"summary": f"{sync_id} is stale", "ratio": "2.0"},
        active_since=active_since,
        fired_at=fired_at,
        last_notified_at=last_notified_at,
        cleared_since=cleared_since,
    )


def write(
    changed: Sequence[Alert] = (),
    removed: Sequence[Identity] = (),
    failures_changed: dict[TenantKey, int] | None = None,
) -> Transition:
    """A transition carrying only what the store writes."""
    return Transition(
        alerts={},
        failures={},
        events=[],
        changed=list(changed),
        removed=list(removed),
        failures_changed=failures_changed or {},
    )


def batch(delivery_id: str, notifier: str = "ops", created_at: datetime = T0) -> Batch:
    payload = AlertPayload(
        status=AlertStatus.FIRING,
        event=EventKind.FIRING,
        labels={"alertname": "SyncStale", "severity": "warning", "sync_id": "s1"},
        annotations={"summary": "s1 is stale"},
        starts_at=created_at,
        ends_at=None,
        fingerprint="abc",
    )
    return Batch(
        delivery_id=delivery_id,
        notifier=notifier,
        created_at=created_at,
        reason=NotificationReason.FIRST,
        alerts=(payload,),
    )


# --- migrations -------------------------------------------------------------------------


def test_fresh_database_migrates_to_the_schema_version(
    store: StateStore, state_target: Target
) -> None:
    found, latest = schema(state_target)
    assert found == latest
    assert store.load() == ({}, {})


def test_reopening_does_not_migrate_again(state_target: Target) -> None:
    first = StateStore(state_target)
    first.commit_cycle(write([alert()]), [batch("d1")])
    first.close()
    second = StateStore(state_target)  # a second CREATE TABLE would raise here
    try:
        found, latest = schema(state_target)
        assert found == latest
        alerts, _ = second.load()
        assert list(alerts) == [alert().identity]
        assert second.pending() == {"ops": 1}
    finally:
        second.close()


def test_newer_schema_is_refused_with_a_clear_error(state_target: Target) -> None:
    StateStore(state_target).close()
    _, latest = schema(state_target)
    set_schema(state_target, latest + 1)
    with pytest.raises(StartupError, match=r"newer than this syncwatch.*upgrade syncwatch") as err:
        StateStore(state_target)
    assert err.value.exit_code == EX_DATAERR
    assert schema(state_target) == (latest + 1, latest)


def test_creates_the_state_directory(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "state.db"
    StateStore(path).close()
    assert path.exists()


def test_integrity_check_is_ok(store: StateStore) -> None:
    store.commit_cycle(write([alert()], failures_changed={("paragon", "u1"): 2}), [batch("d1")])
    assert store.integrity_check() == "ok"


# --- alerts and failures round-trip -----------------------------------------------------


@pytest.mark.parametrize(
    "original",
    [
        pytest.param(alert(), id="firing"),
        pytest.param(
            alert(status=None, fired_at=None, last_notified_at=None, active_since=at(12.5)),
            id="pending",
        ),
        pytest.param(alert(severity=Severity.CRITICAL, cleared_since=at(600)), id="clearing"),
        pytest.param(
            alert(
                active_since=datetime(2025, 3, 1, 12, 0, 0, 999_999, tzinfo=UTC),
                fired_at=datetime(2025, 3, 1, 12, 5, 0, 1, tzinfo=UTC),
                last_notified_at=datetime(2025, 3, 1, 12, 5, 0, 123_456, tzinfo=UTC),
            ),
            id="microseconds",
        ),
        pytest.param(
            alert(
                active_since=datetime(2025, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))),
                fired_at=None,
                last_notified_at=None,
                status=None,
            ),
            id="non-utc-offset",
        ),
    ],
)
def test_commit_cycle_round_trips_an_alert_exactly(
    original: Alert, store: StateStore, state_target: Target
) -> None:
    store.commit_cycle(write([original]), [])
    store.close()
    reopened = StateStore(state_target)
    try:
        alerts, _ = reopened.load()
    finally:
        reopened.close()
    assert alerts == {original.identity: original}


def test_commit_cycle_replaces_changed_and_deletes_removed(store: StateStore) -> None:
    store.commit_cycle(write([alert("s1"), alert("s2")]), [])
    escalated = alert("s1", severity=Severity.CRITICAL, last_notified_at=at(60))
    store.commit_cycle(write([escalated], removed=[alert("s2").identity]), [])
    alerts, _ = store.load()
    assert alerts == {escalated.identity: escalated}


def test_commit_cycle_round_trips_failure_counts(store: StateStore) -> None:
    store.commit_cycle(
        write(failures_changed={("timbal", "org_1"): 1, ("paragon", "user-1"): 4}), []
    )
    store.commit_cycle(write(failures_changed={("timbal", "org_1"): 0}), [])
    assert store.load()[1] == {("paragon", "user-1"): 4}


# --- a restart, through the engine ------------------------------------------------------


def timbal_config(**alerting: object) -> Config:
    return Config(
        timbal=TimbalConfig(api_key="test-key", orgs=[TimbalOrg(id="org_1")]),
        alerting=AlertingConfig(**alerting),
        notifiers=[ConsoleNotifier(name="console", type="console")],
    )


def stale_report(config: Config, now: datetime) -> Report:
    """org_1 lists one sync whose lag is 2x its 10-minute interval: SyncStale warning."""
    sync = TimbalSync(
        org_id="org_1",
        id="s1",
        connector_id="c1",
        name="billing",
        source_kind="postgres",
        source_table="public.invoices",
        dest_table="raw.invoices",
        interval_secs=600,
        enabled=True,
        seconds_since_success=1200,
        last_success_at=now - timedelta(seconds=1200),
        last_run_at=now - timedelta(seconds=60),
        last_state="running",
        created_at=datetime(2024, 1, 1, tzinfo=UTC),
        updated_at=datetime(2024, 1, 1, tzinfo=UTC),
    )
    assert config.timbal is not None
    listing = Listing(source=Source.TIMBAL, tenant="org_1", syncs=[sync])
    return evaluate_listings(
        [listing], {Source.TIMBAL: TimbalRules.from_config(config.timbal)}, now
    )


def test_restart_does_not_announce_a_still_firing_alert_again(state_target: Target) -> None:
    config = timbal_config()
    store = Store(StateStore(state_target))
    first = Engine(config, store, new_id=lambda: "delivery-1").apply(stale_report(config, T0), T0)
    assert [b.alerts[0].event for b in first.batches] == [EventKind.FIRING]
    store.close()

    store = Store(StateStore(state_target))
    try:
        engine = Engine(config, store, new_id=lambda: "delivery-2")
        (restored,) = engine.alerts.values()
        assert restored.firing
        assert restored.fired_at == T0
        again = engine.apply(stale_report(config, at(60)), at(60))
        assert again.batches == []
        assert store.pending() == {"console": 1}  # only the first notification
    finally:
        store.close()


def test_restart_keeps_a_pending_alerts_active_since(state_target: Target) -> None:
    config = timbal_config(**{"for": 3600})
    store = Store(StateStore(state_target))
    Engine(config, store).apply(stale_report(config, T0), T0)
    store.close()

    store = Store(StateStore(state_target))
    try:
        engine = Engine(config, store)
        (restored,) = engine.alerts.values()
        assert restored.state == "pending"
        assert restored.active_since == T0
        result = engine.apply(stale_report(config, at(3600)), at(3600))
        (fired,) = engine.alerts.values()
        assert fired.fired_at == at(3600)
        assert [b.alerts[0].event for b in result.batches] == [EventKind.FIRING]
    finally:
        store.close()


# --- atomicity --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("queued", "batches"),
    [
        pytest.param(["d1"], [batch("d1")], id="delivery-id-already-queued"),
        pytest.param([], [batch("d2"), batch("d2")], id="duplicate-within-the-cycle"),
    ],
)
def test_failed_batch_insert_changes_no_alert_row(
    queued: list[str], batches: list[Batch], store: StateStore
) -> None:
    store.commit_cycle(write([alert("s1")], failures_changed={("timbal", "org_1"): 1}), [])
    store.enqueue(batch(d) for d in queued)
    before = store.load()
    pending_before = store.pending()

    cycle = write(
        [alert("s1", severity=Severity.CRITICAL), alert("s3")],
        removed=[alert("s1").identity],
        failures_changed={("timbal", "org_1"): 2},
    )
    with pytest.raises(store.integrity_errors):
        store.commit_cycle(cycle, batches)

    assert store.load() == before
    assert store.pending() == pending_before


def test_store_keeps_working_after_a_rolled_back_cycle(store: StateStore) -> None:
    store.enqueue([batch("d1")])
    with pytest.raises(store.integrity_errors):
        store.commit_cycle(write([alert()]), [batch("d1")])
    assert store.commit_cycle(write([alert()]), [batch("d2")]) == 2
    assert list(store.load()[0]) == [alert().identity]


# --- outbox -----------------------------------------------------------------------------


def test_heads_gives_the_oldest_row_of_each_notifier_in_queue_order(store: StateStore) -> None:
    store.enqueue(
        [batch("a1", "slack"), batch("b1", "am"), batch("a2", "slack"), batch("c1", "hook")]
    )
    assert [(r.notifier, r.delivery_id) for r in store.heads()] == [
        ("slack", "a1"),
        ("am", "b1"),
        ("hook", "c1"),
    ]
    store.ack("a1")
    assert [r.delivery_id for r in store.heads()] == ["b1", "a2", "c1"]


@pytest.mark.parametrize(
    ("notifier", "expected"),
    [
        pytest.param("slack", "a1", id="oldest-of-several"),
        pytest.param("am", "b1", id="only-row"),
        pytest.param("nobody", None, id="empty"),
    ],
)
def test_head_is_the_oldest_row_of_one_notifier(
    notifier: str, expected: str | None, store: StateStore
) -> None:
    store.enqueue([batch("a1", "slack"), batch("b1", "am"), batch("a2", "slack")])
    row = store.head(notifier)
    assert (row.delivery_id if row else None) == expected


def test_outbox_row_carries_the_batch_unchanged(store: StateStore) -> None:
    original = batch("d1", created_at=at(0.25))
    store.enqueue([original])
    row = store.head("ops")
    assert row is not None
    assert row.batch() == original
    assert row.created_at == row.next_attempt_at == at(0.25)
    assert row.attempts == 0


def test_ack_removes_only_that_row(store: StateStore) -> None:
    store.enqueue([batch("d1"), batch("d2")])
    store.ack("d1")
    assert [r.delivery_id for r in store.heads()] == ["d2"]
    assert store.pending() == {"ops": 1}


def test_reschedule_counts_the_attempt_and_sets_next_attempt_at(store: StateStore) -> None:
    store.enqueue([batch("d1")])
    store.reschedule("d1", at(10), "HTTP 503")
    store.reschedule("d1", at(30), "HTTP 503")
    row = store.head("ops")
    assert row is not None
    assert (row.attempts, row.next_attempt_at) == (2, at(30))


def test_reschedule_keeps_the_row_at_the_head(store: StateStore) -> None:
    store.enqueue([batch("d1"), batch("d2")])
    store.reschedule("d1", at(3600), "HTTP 503")
    row = store.head("ops")
    assert row is not None
    assert row.delivery_id == "d1"


def test_pending_counts_undelivered_rows_per_notifier(store: StateStore) -> None:
    assert store.pending() == {}
    store.enqueue([batch("a1", "slack"), batch("a2", "slack"), batch("b1", "am")])
    store.ack("b1")
    assert store.pending() == {"slack": 2}


def test_commit_cycle_counts_rows_written(store: StateStore) -> None:
    rows = store.commit_cycle(
        write([alert("s1"), alert("s2")], failures_changed={("timbal", "org_1"): 1}),
        [batch("d1", "a"), batch("d2", "b")],
    )
    assert rows == 5


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not SQLite " * 100)
    with pytest.raises(StartupError, match=r"not a usable SQLite database") as err:
        StateStore(path)
    assert err.value.exit_code == EX_DATAERR
