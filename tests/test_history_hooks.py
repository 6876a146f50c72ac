"""What the engine, the dispatcher and the silence store record in the history."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from syncwatch.engine import Engine
from syncwatch.evaluate import Report, evaluate_listings
from syncwatch.history import Entry, Kind, Query, silence_entry
from syncwatch.history_store import HistoryStore
from syncwatch.models import Listing, Source
from syncwatch.outbox import DeliveryError
from syncwatch.settings import Config
from syncwatch.silence_store import SilenceStore
from syncwatch.silences import Matcher, Silence
from syncwatch.sources.timbal.rules import TimbalRules
from syncwatch.state import StateStore
from syncwatch.store import Store
from tests.delivery import deliver_due
from tests.test_dispatch import RecordingNotifier, clock_at, dispatcher, queued, retryable
from tests.test_state import T0, at, stale_report, timbal_config


@pytest.fixture
def history(tmp_path: Path) -> Iterator[HistoryStore]:
    h = HistoryStore(tmp_path / "state.db", wall=T0.timestamp)
    yield h
    h.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(StateStore(tmp_path / "state.db"))
    yield s
    s.close()


def recorded(h: HistoryStore, kind: Kind | None = None) -> list[Entry]:
    """Everything recorded, oldest first."""
    assert h.flush()
    entries = [e for _, e in h.query(Query(limit=1000))[0]]
    return [e for e in reversed(entries) if kind is None or e.kind is kind]


def healthy_report(config: Config, now: datetime) -> Report:
    assert config.timbal is not None
    listing = Listing(source=Source.TIMBAL, tenant="org_1", syncs=[])
    return evaluate_listings(
        [listing], {Source.TIMBAL: TimbalRules.from_config(config.timbal)}, now
    )


def test_the_engine_records_pending_firing_and_resolved(
    store: Store, history: HistoryStore
) -> None:
    config = timbal_config(**{"for": 60})
    engine = Engine(config, store)
    engine.history = history
    engine.apply(stale_report(config, T0), T0)
    engine.apply(stale_report(config, at(30)), at(30))  # still pending: nothing new
    engine.apply(stale_report(config, at(60)), at(60))
    engine.apply(healthy_report(config, at(120)), at(120))
    got = [(e.event, e.at, e.alertname, e.tenant, e.sync_id) for e in recorded(history)]
    assert got == [
        ("pending", T0.timestamp(), "SyncStale", "org_1", "s1"),
        ("firing", at(60).timestamp(), "SyncStale", "org_1", "s1"),
        ("resolved", at(120).timestamp(), "SyncStale", "org_1", "s1"),
    ]
    assert recorded(history)[1].detail["severity"] == "warning"


def test_an_alert_that_clears_while_pending_is_recorded_inactive(
    store: Store, history: HistoryStore
) -> None:
    config = timbal_config(**{"for": 600})
    engine = Engine(config, store)
    engine.history = history
    engine.apply(stale_report(config, T0), T0)
    engine.apply(healthy_report(config, at(60)), at(60))
    assert [e.event for e in recorded(history)] == ["pending", "inactive"]


async def test_a_failed_then_successful_delivery_is_two_attempts(
    store: Store, history: HistoryStore
) -> None:
    ops = RecordingNotifier("ops", [retryable(5.0)])
    store.enqueue([queued("d1")])
    clock = clock_at()
    d = dispatcher(store, clock, ops)
    d.history = history
    await deliver_due(d)
    clock.now += 5.0
    await deliver_due(d)
    got = [
        (e.event, e.sync_id, e.detail["attempt"], e.detail.get("statusCode"))
        for e in recorded(history, Kind.DELIVERY)
    ]
    assert got == [("failed", "d1", 1, 503), ("sent", "d1", 2, None)]
    first = recorded(history)[0].detail
    assert (first["notifier"], first["deliveryId"], first["error"]) == ("ops", "d1", "HTTP 503")


async def test_a_permanent_failure_is_recorded_failed_then_dropped(
    store: Store, history: HistoryStore
) -> None:
    ops = RecordingNotifier("ops", [DeliveryError("HTTP 400", retryable=False, status_code=400)])
    store.enqueue([queued("d1")])
    d = dispatcher(store, clock_at(), ops)
    d.history = history
    await deliver_due(d)
    assert [e.event for e in recorded(history)] == ["failed", "dropped"]
    assert recorded(history)[1].detail["error"] == "permanent failure: HTTP 400"


async def test_a_row_of_a_removed_notifier_is_recorded_dropped(
    store: Store, history: HistoryStore
) -> None:
    store.enqueue([queued("d1", notifier="gone")])
    d = dispatcher(store, clock_at(), RecordingNotifier("ops"))
    d.history = history
    await deliver_due(d)
    (dropped,) = recorded(history)
    assert (dropped.event, dropped.detail["notifier"]) == ("dropped", "gone")


def test_an_entry_that_cannot_be_built_loses_only_itself(history: HistoryStore) -> None:
    def broken() -> list[Entry]:
        raise KeyError("boom")

    history.record_later(broken)
    history.record_later(lambda: [Entry(T0.timestamp(), Kind.TRANSITION, "firing")])
    assert [e.event for e in recorded(history)] == ["firing"]


def test_a_broken_history_never_fails_the_cycle(store: Store) -> None:
    class Broken:
        def record(self, entries: object) -> None:
            raise RuntimeError("boom")

        def record_later(self, build: object) -> None:
            raise RuntimeError("boom")

    config = timbal_config()
    engine = Engine(config, store)
    engine.history = Broken()
    result = engine.apply(stale_report(config, T0), T0)
    assert len(result.batches) == 1


def silence_with(*matchers: Matcher, hours: float = 1) -> Silence:
    return Silence("", matchers, T0, T0 + timedelta(hours=hours), "ann", "migration", T0)


def test_silence_writes_are_recorded_created_updated_and_expired(
    tmp_path: Path, history: HistoryStore
) -> None:
    silences = SilenceStore(tmp_path / "state.db", new_id=iter(["a", "unused", "b"]).__next__)
    silences.on_change = lambda what, s, when: history.record([silence_entry(what, s, when)])
    tenant = Matcher("tenant", "org_1")
    first = silences.set(silence_with(tenant), T0).stored
    silences.set(replace(silence_with(tenant, hours=2), id=first.id), at(60))  # same: update
    other = replace(silence_with(tenant, Matcher("sync_id", "s1")), id=first.id)
    second = silences.set(other, at(120)).stored  # new matchers: the old one is replaced
    silences.expire(second.id, at(180))
    silences.expire(second.id, at(240))  # already expired: nothing new
    silences.close()
    got = [(e.event, e.detail["silenceId"], e.at - T0.timestamp()) for e in recorded(history)]
    assert got == [
        ("created", "a", 0),
        ("updated", "a", 60),
        ("expired", "a", 120),
        ("created", "b", 120),
        ("expired", "b", 180),
    ]
    assert {e.tenant for e in recorded(history)} == {"org_1"}
