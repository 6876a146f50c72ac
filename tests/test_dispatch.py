"""Specs for routing alert events into batches and for the durable, retrying dispatcher."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from syncwatch.config import NotifierConfig
from syncwatch.dispatch import Dispatcher, make_test_batch, send_test
from syncwatch.lifecycle import Alert, Identity, Rules, TenantOutcome, Transition, transition
from syncwatch.models import AlertName, Condition, Severity, Source
from syncwatch.notifiers.alertmanager import AlertmanagerConfig as AlertmanagerNotifier
from syncwatch.notifiers.console import ConsoleConfig as ConsoleNotifier
from syncwatch.notifiers.webhook import WebhookConfig as WebhookNotifier
from syncwatch.outbox import (
    AlertPayload,
    AlertStatus,
    Batch,
    Capabilities,
    DeliveryError,
    EventKind,
    NotificationReason,
)
from syncwatch.routing import route
from syncwatch.state import StateStore
from syncwatch.store import Store
from tests.clock import FakeClock
from tests.delivery import deliver_due
from tests.test_runtime import eventually

T0 = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
HOUR = 3600.0
WARN, CRIT = Severity.WARNING, Severity.CRITICAL


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# --- routing ----------------------------------------------------------------------------


def console(name: str = "console", **kw: object) -> ConsoleNotifier:
    return ConsoleNotifier(name=name, type="console", **kw)


def webhook(name: str = "hook", **kw: object) -> WebhookNotifier:
    return WebhookNotifier(
        name=name,
        type="webhook",
        url="https://hooks.example.com/syncwatch",
        **kw,
    )


def alertmanager(name: str = "am", **kw: object) -> AlertmanagerNotifier:
    return AlertmanagerNotifier(
        name=name,
        type="alertmanager",
        urls=["http://alertmanager-0:9093"],
        **kw,
    )


def stale(
    sync_id: str = "s1",
    severity: Severity = WARN,
    *,
    tenant: str = "org_1",
    name: str = "billing-daily",
) -> Condition:
    return Condition(
        alertname=AlertName.SYNC_STALE,
        severity=severity,
        source=Source.TIMBAL,
        tenant=tenant,
        sync_id=sync_id,
        labels={"connector_id": "c1", "name": name},
        annotations={"summary": f"{sync_id} is stale"},
    )


LISTED = (
    TenantOutcome(Source.TIMBAL, "org_1", ok=True, sync_ids=frozenset(f"s{i}" for i in range(10))),
)


def step(previous: dict[Identity, Alert], conditions: Sequence[Condition], t: float) -> Transition:
    return transition(
        previous,
        {},
        conditions=conditions,
        outcomes=LISTED,
        rules=Rules(repeat_interval=4 * HOUR),
        now=at(t),
    )


def firing(*conditions: Condition) -> dict[Identity, Alert]:
    """The alerts after one cycle in which `conditions` fired (at T0)."""
    return step({}, conditions, 0).alerts


def batches_for(
    previous: dict[Identity, Alert],
    conditions: Sequence[Condition],
    notifiers: Sequence[NotifierConfig],
    *,
    t: float = 60,
    send_resolved: bool = True,
    external_url: str = "",
) -> dict[str, Batch]:
    result = step(previous, conditions, t)
    ids = iter(range(1000))
    batches = route(
        result,
        previous,
        notifiers,
        send_resolved=send_resolved,
        external_url=external_url,
        now=at(t),
        new_id=lambda: f"d{next(ids)}",
    )
    by_notifier = {b.notifier: b for b in batches}
    assert len(by_notifier) == len(batches), "more than one batch for a notifier"
    return by_notifier


def events(b: Batch) -> list[tuple[EventKind, str]]:
    return [(a.event, a.labels["sync_id"]) for a in b.alerts]


@pytest.mark.parametrize(
    ("min_severity", "severity", "routed"),
    [
        pytest.param(WARN, WARN, True, id="warning-to-warning"),
        pytest.param(WARN, CRIT, True, id="critical-to-warning"),
        pytest.param(CRIT, WARN, False, id="warning-not-to-critical"),
        pytest.param(CRIT, CRIT, True, id="critical-to-critical"),
    ],
)
def test_min_severity_admits_only_severe_enough_alerts(
    min_severity: Severity, severity: Severity, routed: bool
) -> None:
    got = batches_for({}, [stale(severity=severity)], [console(min_severity=min_severity)])
    assert ("console" in got) is routed


@pytest.mark.parametrize(
    ("match", "routed"),
    [
        pytest.param({}, True, id="no-match-table"),
        pytest.param({"source": "timbal"}, True, id="exact-label"),
        pytest.param({"source": "paragon"}, False, id="other-source"),
        pytest.param({"name": "billing-*"}, True, id="glob"),
        pytest.param({"name": "Billing-*"}, False, id="glob-is-case-sensitive"),
        pytest.param({"name": "billing-*", "tenant": "org_2"}, False, id="every-glob-must-match"),
        pytest.param({"tenant": "org_[12]", "sync_id": "s?"}, True, id="character-classes"),
        pytest.param({"integration": "x*"}, False, id="absent-label-is-empty"),
    ],
)
def test_match_globs_route_by_label(match: dict[str, str], routed: bool) -> None:
    got = batches_for({}, [stale()], [console(match=match)])
    assert ("console" in got) is routed


@pytest.mark.parametrize(
    ("notifier", "gets_resolved"),
    [
        pytest.param(console(), False, id="console"),
        pytest.param(webhook(), False, id="webhook"),
        pytest.param(alertmanager(), True, id="alertmanager"),
    ],
)
def test_send_resolved_false_drops_resolved_events_except_for_alertmanager(
    notifier: NotifierConfig, gets_resolved: bool
) -> None:
    got = batches_for(firing(stale()), [], [notifier], send_resolved=False)
    if gets_resolved:
        assert events(got[notifier.name]) == [(EventKind.RESOLVED, "s1")]
    else:
        assert got == {}


def test_send_resolved_false_keeps_the_firing_part_of_a_mixed_cycle() -> None:
    got = batches_for(firing(stale("s1")), [stale("s2")], [console()], send_resolved=False)
    assert events(got["console"]) == [(EventKind.FIRING, "s2")]


def test_alertmanager_batch_re_includes_every_firing_alert_as_active() -> None:
    previous = firing(stale("s1"), stale("s2"), stale("s3"))
    got = batches_for(
        previous, [stale("s1"), stale("s2", CRIT), stale("s4")], [alertmanager(), console()]
    )
    assert sorted(events(got["am"])) == sorted(
        [
            (EventKind.CHANGED, "s2"),
            (EventKind.RESOLVED, "s3"),
            (EventKind.FIRING, "s4"),
            (EventKind.ACTIVE, "s1"),
        ]
    )
    assert EventKind.ACTIVE not in {e for e, _ in events(got["console"])}


def test_alertmanager_hears_a_quiet_cycle_but_humans_do_not() -> None:
    previous = firing(stale("s1"), stale("s2"))
    got = batches_for(previous, [stale("s1"), stale("s2")], [alertmanager(), console()])
    assert set(got) == {"am"}
    assert events(got["am"]) == [(EventKind.ACTIVE, "s1"), (EventKind.ACTIVE, "s2")]
    assert all(a.status is AlertStatus.FIRING and a.ends_at is None for a in got["am"].alerts)


def test_alertmanager_is_not_sent_pending_alerts() -> None:
    pending = transition(
        {}, {}, conditions=[stale()], outcomes=LISTED, rules=Rules(for_=HOUR), now=T0
    )
    assert route(pending, {}, [alertmanager()], send_resolved=True, external_url="", now=T0) == []


@pytest.mark.parametrize(
    ("previous", "conditions", "t", "reason"),
    [
        pytest.param({}, [stale("s1")], 60, NotificationReason.FIRST, id="first-notification"),
        pytest.param(
            firing(stale("s1")),
            [stale("s1"), stale("s2")],
            60,
            NotificationReason.NEW_ALERTS,
            id="new-alerts-added",
        ),
        pytest.param(
            firing(stale("s1"), stale("s2")),
            [stale("s1")],
            60,
            NotificationReason.SOME_RESOLVED,
            id="some-alerts-resolved",
        ),
        pytest.param(
            firing(stale("s1"), stale("s2")),
            [],
            60,
            NotificationReason.ALL_RESOLVED,
            id="all-alerts-resolved",
        ),
        pytest.param(
            firing(stale("s1")),
            [stale("s1")],
            4 * HOUR,
            NotificationReason.REPEAT,
            id="repeat-interval-elapsed",
        ),
    ],
)
def test_notification_reason(
    previous: dict[Identity, Alert],
    conditions: list[Condition],
    t: float,
    reason: NotificationReason,
) -> None:
    got = batches_for(previous, conditions, [console()], t=t)
    assert got["console"].reason is reason


def test_one_batch_per_notifier_per_cycle_with_every_routed_event() -> None:
    previous = firing(stale("s1"), stale("s2"))
    conditions = [stale("s2", CRIT), stale("s3"), stale("s4", CRIT)]
    got = batches_for(
        previous, conditions, [console("all"), console("pager", min_severity=CRIT), webhook()]
    )
    assert sorted(got) == ["all", "hook", "pager"]
    assert sorted(events(got["all"])) == sorted(
        [
            (EventKind.RESOLVED, "s1"),
            (EventKind.CHANGED, "s2"),
            (EventKind.FIRING, "s3"),
            (EventKind.FIRING, "s4"),
        ]
    )
    assert events(got["hook"]) == events(got["all"])
    assert sorted(events(got["pager"])) == [(EventKind.CHANGED, "s2"), (EventKind.FIRING, "s4")]
    assert len({b.delivery_id for b in got.values()}) == 3


@pytest.mark.parametrize(
    ("previous", "conditions", "notifier", "send_resolved"),
    [
        pytest.param({}, [], console(), True, id="nothing-happens"),
        pytest.param(firing(stale()), [stale()], console(), True, id="steady-firing"),
        pytest.param({}, [stale()], console(min_severity=CRIT), True, id="not-routed"),
        pytest.param(firing(stale()), [], console(), False, id="only-resolved-unwanted"),
        pytest.param({}, [], alertmanager(), True, id="alertmanager-nothing-firing"),
    ],
)
def test_no_batch_when_there_is_nothing_to_say(
    previous: dict[Identity, Alert],
    conditions: list[Condition],
    notifier: NotifierConfig,
    send_resolved: bool,
) -> None:
    assert batches_for(previous, conditions, [notifier], send_resolved=send_resolved) == {}


def test_deescalated_alert_resolves_for_a_notifier_it_no_longer_routes_to() -> None:
    previous = firing(stale("s1", CRIT))
    pager = console("pager", min_severity=CRIT)
    got = batches_for(previous, [stale("s1", WARN)], [pager, console("all")])
    (resolved,) = got["pager"].alerts
    assert (resolved.status, resolved.severity) == (AlertStatus.RESOLVED, CRIT)
    assert got["pager"].reason is NotificationReason.ALL_RESOLVED
    assert events(got["all"]) == [(EventKind.CHANGED, "s1")]


def test_payloads_carry_the_alertmanager_alert_shape() -> None:
    got = batches_for(
        firing(stale("s1")), [stale("s2")], [console()], t=90, external_url="https://sw.example"
    )
    resolved, fired = sorted(got["console"].alerts, key=lambda a: a.labels["sync_id"])
    assert (resolved.status, resolved.starts_at, resolved.ends_at) == (
        AlertStatus.RESOLVED,
        T0,
        at(90),
    )
    assert (fired.status, fired.starts_at, fired.ends_at) == (AlertStatus.FIRING, at(90), None)
    assert fired.labels == stale("s2").all_labels
    assert fired.generator_url.startswith("https://sw.example")
    assert got["console"].external_url == "https://sw.example"
    assert got["console"].created_at == at(90)


# --- the dispatcher ---------------------------------------------------------------------


def clock_at(start: datetime = T0) -> FakeClock:
    """Injected wall and monotonic clocks, moved only by the test (sleeps jump)."""
    return FakeClock(start, autojump=True)


class RecordingNotifier:
    """A stand-in for an external sink: raises the scripted errors in turn, then accepts."""

    def __init__(
        self, name: str, script: Sequence[BaseException] = (), *, forever: bool = False
    ) -> None:
        self.name = name
        self.capabilities = Capabilities()
        self.script = list(script)
        self.forever = forever  # keep raising the last scripted error
        self.attempts: list[str] = []
        self.delivered: list[Batch] = []
        self.gate: asyncio.Event | None = None

    async def send(self, batch: Batch) -> None:
        self.attempts.append(batch.delivery_id)
        if self.gate is not None:
            await self.gate.wait()
        if self.script:
            exc = self.script[0] if self.forever else self.script.pop(0)
            raise exc
        self.delivered.append(batch)

    @property
    def delivered_ids(self) -> list[str]:
        return [b.delivery_id for b in self.delivered]


def retryable(retry_after: float | None = None) -> DeliveryError:
    return DeliveryError("HTTP 503", retryable=True, retry_after=retry_after, status_code=503)


def queued(delivery_id: str, notifier: str = "ops", created_at: datetime = T0) -> Batch:
    payload = AlertPayload(
        status=AlertStatus.FIRING,
        event=EventKind.FIRING,
        labels={"alertname": "SyncStale", "severity": "warning", "sync_id": delivery_id},
        annotations={"summary": "stale"},
        starts_at=created_at,
        ends_at=None,
        fingerprint="f" * 16,
    )
    return Batch(delivery_id, notifier, created_at, NotificationReason.FIRST, (payload,))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(StateStore(tmp_path / "state.db"))
    yield s
    s.close()


def dispatcher(
    store: Store, clock: FakeClock, *notifiers: RecordingNotifier, seed: int = 0, **kw: float
) -> Dispatcher:
    return Dispatcher(
        store,
        {n.name: n for n in notifiers},
        clock=clock,
        rng=random.Random(seed),
        **kw,
    )


async def test_success_acks_the_row(store: Store) -> None:
    ops = RecordingNotifier("ops")
    store.enqueue([queued("d1")])
    d = dispatcher(store, clock_at(), ops)
    assert await deliver_due(d) is None
    assert ops.delivered_ids == ["d1"]
    assert store.head("ops") is None
    assert d.outcomes == {("ops", "sent"): 1}
    assert d.pending_counts == {}


async def test_delivered_batch_is_the_stored_one(store: Store) -> None:
    ops = RecordingNotifier("ops")
    store.enqueue([queued("d1")])
    await deliver_due(dispatcher(store, clock_at(), ops))
    assert ops.delivered == [queued("d1")]


@pytest.mark.parametrize("seed", [0, 1, 2, 42], ids=lambda s: f"seed-{s}")
async def test_retryable_failure_backs_off_exponentially_within_half_to_full_ceiling(
    seed: int, store: Store
) -> None:
    clock = clock_at()
    ops = RecordingNotifier("ops", [retryable()], forever=True)
    store.enqueue([queued("d1")])
    d = dispatcher(store, clock, ops, seed=seed, backoff_initial=5, backoff_max=600)
    for attempt in range(10):
        wait = await deliver_due(d)
        row = store.head("ops")
        assert row is not None
        delay = row.next_attempt_at.timestamp() - clock.now
        ceiling = min(600.0, 5.0 * 2**attempt)
        assert ceiling / 2 <= delay <= ceiling, (attempt, delay)
        assert wait == pytest.approx(delay)
        assert row.attempts == attempt + 1
        clock.now = row.next_attempt_at.timestamp()
    assert d.outcomes == {("ops", "failed"): 10}


@pytest.mark.parametrize("retry_after", [0.5, 7.0, 120.0, 3600.0], ids=lambda s: f"{s:g}s")
async def test_retry_after_is_honoured_exactly(retry_after: float, store: Store) -> None:
    clock = clock_at()
    ops = RecordingNotifier("ops", [retryable(retry_after)])
    store.enqueue([queued("d1")])
    d = dispatcher(store, clock, ops)
    assert await deliver_due(d) == pytest.approx(retry_after)
    row = store.head("ops")
    assert row is not None
    assert row.next_attempt_at == T0 + timedelta(seconds=retry_after)

    clock.now += retry_after - 0.01
    await deliver_due(d)
    assert ops.attempts == ["d1"]  # not before
    clock.set(row.next_attempt_at)
    await deliver_due(d)
    assert ops.delivered_ids == ["d1"]


async def test_retry_after_zero_makes_one_attempt_per_pass(store: Store) -> None:
    ops = RecordingNotifier("ops", [retryable(0)], forever=True)
    store.enqueue([queued("d1")])
    d = dispatcher(store, clock_at(), ops)
    assert await deliver_due(d) == 0
    assert ops.attempts == ["d1"]


async def test_per_notifier_fifo_order_is_kept_through_failures(store: Store) -> None:
    clock = clock_at()
    ops = RecordingNotifier("ops", [retryable(10), retryable(), retryable(30)])
    store.enqueue([queued("d1"), queued("d2"), queued("d3")])
    d = dispatcher(store, clock, ops)
    for _ in range(10):
        await deliver_due(d)
        clock.now += 60
    assert ops.attempts == ["d1", "d1", "d1", "d1", "d2", "d3"]
    assert ops.delivered_ids == ["d1", "d2", "d3"]


async def test_later_rows_wait_while_the_head_is_backing_off(store: Store) -> None:
    clock = clock_at()
    ops = RecordingNotifier("ops", [retryable(300)])
    store.enqueue([queued("d1"), queued("d2")])
    d = dispatcher(store, clock, ops)
    await deliver_due(d)
    clock.now += 299
    await deliver_due(d)
    assert ops.attempts == ["d1"]
    assert ops.delivered == []


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(DeliveryError("HTTP 400", retryable=False, status_code=400), id="http-400"),
        pytest.param(DeliveryError("HTTP 404", retryable=False, status_code=404), id="http-404"),
    ],
)
async def test_non_retryable_failure_drops_the_row_at_once(
    error: DeliveryError, store: Store
) -> None:
    ops = RecordingNotifier("ops", [error])
    store.enqueue([queued("d1"), queued("d2")])
    d = dispatcher(store, clock_at(), ops)
    await deliver_due(d)
    assert ops.attempts == ["d1", "d2"]
    assert ops.delivered_ids == ["d2"]
    assert store.pending() == {}
    assert d.outcomes == {("ops", "failed"): 1, ("ops", "dropped"): 1, ("ops", "sent"): 1}


@pytest.mark.parametrize(
    ("age", "script", "delivered", "dropped"),
    [
        pytest.param(24 * HOUR - 1, [], True, False, id="just-inside-max-age-is-sent"),
        pytest.param(24 * HOUR + 1, [], False, True, id="stale-before-any-attempt"),
        pytest.param(
            23 * HOUR, [retryable(2 * HOUR)], False, False, id="retry-past-max-age-is-kept"
        ),
    ],
)
async def test_row_older_than_max_age_is_dropped(
    age: float,
    script: list[DeliveryError],
    delivered: bool,
    dropped: bool,
    store: Store,
) -> None:
    clock = clock_at(at(age))
    ops = RecordingNotifier("ops", script)
    store.enqueue([queued("d1")])
    d = dispatcher(store, clock, ops, max_age=24 * HOUR)
    await deliver_due(d)
    assert bool(ops.delivered) is delivered
    assert d.outcomes[("ops", "dropped")] == int(dropped)
    assert (store.head("ops") is None) is (delivered or dropped)


async def test_the_last_retry_is_made_at_the_end_of_the_window(store: Store) -> None:
    # Created at t=0; at 23h a failure asks for 2h: the retry is moved to 24h, not skipped.
    clock = clock_at(at(23 * HOUR))
    ops = RecordingNotifier("ops", [retryable(2 * HOUR), retryable(2 * HOUR)])
    store.enqueue([queued("d1")])
    d = dispatcher(store, clock, ops, max_age=24 * HOUR)
    assert await deliver_due(d) == pytest.approx(HOUR)
    head = store.head("ops")
    assert head is not None
    assert head.next_attempt_at == at(24 * HOUR)
    clock.set(at(24 * HOUR))
    await deliver_due(d)  # the final attempt fails too: now it is dropped
    assert d.outcomes[("ops", "failed")] == 2
    assert not ops.delivered
    assert d.outcomes[("ops", "dropped")] == 1
    assert store.head("ops") is None


@pytest.mark.parametrize("waiting_for_retry", [False, True], ids=["due", "waiting-for-retry"])
async def test_rows_of_a_notifier_removed_from_config_are_dropped(
    waiting_for_retry: bool, store: Store
) -> None:
    ops = RecordingNotifier("ops")
    store.enqueue([queued("g1", "gone"), queued("g2", "gone"), queued("d1", "ops")])
    if waiting_for_retry:
        store.reschedule("g1", at(HOUR), "HTTP 503")
    d = dispatcher(store, clock_at(), ops)
    await deliver_due(d)
    assert store.pending() == {}
    assert ops.delivered_ids == ["d1"]
    assert d.outcomes == {("gone", "dropped"): 2, ("ops", "sent"): 1}


async def test_a_failing_notifier_does_not_block_another(store: Store) -> None:
    slow = RecordingNotifier("slow", [retryable()], forever=True)
    fast = RecordingNotifier("fast")
    store.enqueue([queued("s1", "slow"), queued("f1", "fast"), queued("f2", "fast")])
    d = dispatcher(store, clock_at(), slow, fast)
    await deliver_due(d)
    assert fast.delivered_ids == ["f1", "f2"]
    assert store.pending() == {"slow": 1}


async def test_a_hanging_notifier_does_not_block_another(store: Store) -> None:
    hung = RecordingNotifier("hung")
    hung.gate = asyncio.Event()
    fast = RecordingNotifier("fast")
    store.enqueue([queued("h1", "hung"), queued("f1", "fast"), queued("f2", "fast")])
    d = dispatcher(store, clock_at(), hung, fast)
    delivering = asyncio.create_task(deliver_due(d))
    # A payload may be read back on the store's thread: poll with a deadline.
    await eventually(lambda: len(fast.delivered) == 2)
    assert fast.delivered_ids == ["f1", "f2"]
    assert hung.attempts == ["h1"]
    assert hung.delivered == []
    hung.gate.set()
    await delivering
    assert hung.delivered_ids == ["h1"]


async def test_an_unexpected_notifier_exception_is_a_retryable_failure(
    store: Store,
) -> None:
    clock = clock_at()
    ops = RecordingNotifier("ops", [RuntimeError("bug in a notifier")])
    store.enqueue([queued("d1")])
    d = dispatcher(store, clock, ops)
    wait = await deliver_due(d)
    assert wait is not None
    assert d.outcomes == {("ops", "failed"): 1}
    clock.now += wait
    await deliver_due(d)
    assert ops.delivered_ids == ["d1"]


def reopened(store: Store, tmp_path: Path, sql: str, *args: object) -> Store:
    """`store` closed, `sql` run on its file, and the store opened again (a restart)."""
    store.close()
    with closing(sqlite3.connect(tmp_path / "state.db")) as db, db:
        db.execute(sql, args)
    return Store(StateStore(tmp_path / "state.db"))


async def test_backoff_stays_capped_after_thousands_of_attempts(
    store: Store, tmp_path: Path
) -> None:
    clock = clock_at()
    store.enqueue([queued("d1")])
    store = reopened(store, tmp_path, "UPDATE outbox SET attempts = 5000")
    d = dispatcher(store, clock, RecordingNotifier("ops", [retryable()]), backoff_max=600)
    wait = await deliver_due(d)
    store.close()
    assert wait is not None
    assert 300 <= wait <= 600


async def test_an_unreadable_payload_is_dropped_without_blocking_the_queue(
    store: Store, tmp_path: Path
) -> None:
    ops = RecordingNotifier("ops")
    store.enqueue([queued("d1"), queued("d2")])
    sql = "UPDATE outbox SET payload = ? WHERE delivery_id = 'd1'"
    store = reopened(store, tmp_path, sql, b"{not json")
    d = dispatcher(store, clock_at(), ops)
    await deliver_due(d)
    store.close()
    assert ops.delivered_ids == ["d2"]
    assert d.outcomes == {("ops", "dropped"): 1, ("ops", "sent"): 1}


async def test_run_delivers_what_is_queued_and_stops_when_asked(store: Store) -> None:
    ops = RecordingNotifier("ops")
    d = dispatcher(store, clock_at(), ops)
    stop = asyncio.Event()
    running = asyncio.create_task(d.run(stop))
    store.enqueue([queued("d1")])
    d.wake()
    await eventually(lambda: ops.delivered)
    assert ops.delivered_ids == ["d1"]
    stop.set()
    await asyncio.wait_for(running, 5)


async def test_run_survives_a_failing_store_until_stopped(store: Store) -> None:
    store.enqueue([queued("d1")])
    await store.flush()  # the payload now lives only in the database
    d = dispatcher(store, clock_at(), RecordingNotifier("ops"), backoff_initial=3600)
    store.db.close()  # every read of the payload now fails inside the store
    stop = asyncio.Event()
    running = asyncio.create_task(d.run(stop))
    for _ in range(10):
        await asyncio.sleep(0)
    assert not running.done()
    stop.set()
    await asyncio.wait_for(running, 5)


# --- test notifications -----------------------------------------------------------------


def test_make_test_batch_is_clearly_marked_as_a_test() -> None:
    b = make_test_batch("ops", T0, "https://sw.example")
    assert b.test is True
    assert b.notifier == "ops"
    assert b.created_at == T0
    (alert,) = b.alerts
    assert alert.status is AlertStatus.FIRING
    assert alert.annotations["summary"].startswith("[TEST]")
    assert alert.labels["test"] == "true"
    assert Batch.from_json(b.to_json()) == b


def test_test_batches_get_fresh_delivery_ids() -> None:
    assert make_test_batch("ops", T0).delivery_id != make_test_batch("ops", T0).delivery_id


@pytest.mark.parametrize(
    ("error", "reported"),
    [
        pytest.param(None, None, id="delivered"),
        pytest.param(DeliveryError("HTTP 403", retryable=False), "HTTP 403", id="delivery-error"),
        pytest.param(RuntimeError("boom"), "RuntimeError: boom", id="unexpected-error"),
    ],
)
async def test_send_test_sends_one_test_batch_through_each_notifier(
    error: BaseException | None, reported: str | None
) -> None:
    flaky = RecordingNotifier("flaky", [] if error is None else [error])
    good = RecordingNotifier("good")
    results = await send_test({"flaky": flaky, "good": good}, T0)
    assert results == {"flaky": reported, "good": None}
    (sent,) = good.delivered
    assert sent.test is True
    assert sent.notifier == "good"
    (attempt,) = flaky.attempts
    assert attempt.startswith("test-")
