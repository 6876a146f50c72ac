"""Delivery and state at run time: one loop per notifier, a stepped wall clock, a sick disk.

Real parts: the StateStore on disk behind the Store, the Engine, the Dispatcher and the
Slack and webhook notifiers posting to capture servers on 127.0.0.1. Time is a FakeClock
moved by the test; the receivers keep real time. Waiting for real I/O polls with a deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from syncwatch.config import AlertingConfig, TimbalConfig, TimbalOrg
from syncwatch.dispatch import Dispatcher
from syncwatch.engine import Engine
from syncwatch.http import make_http_client
from syncwatch.notifiers.base import DELIVERY_ID_HEADER
from syncwatch.notifiers.slack import SlackConfig, SlackNotifier
from syncwatch.notifiers.webhook import WebhookConfig, WebhookNotifier
from syncwatch.outbox import (
    AlertPayload,
    AlertStatus,
    Batch,
    EventKind,
    NotificationReason,
    Notifier,
)
from syncwatch.settings import Config
from syncwatch.state import StateStore
from syncwatch.store import Store
from tests.capture import CaptureServer
from tests.clock import FakeClock
from tests.delivery import deliver_due
from tests.test_sink_faults import poll_report

T0 = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
MINUTE = 60.0
HOUR = 3600.0
DAY = 24 * HOUR


async def eventually(check: Callable[[], object], within: float = 10.0) -> None:
    """Poll `check` (real I/O in flight) until it holds, or fail at the deadline."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s")
        await asyncio.sleep(0.002)


def queued(delivery_id: str, notifier: str, created_at: datetime = T0) -> Batch:
    payload = AlertPayload(
        status=AlertStatus.FIRING,
        event=EventKind.FIRING,
        labels={"alertname": "SyncStale", "severity": "warning", "sync_id": delivery_id},
        annotations={"summary": f"{delivery_id} is stale"},
        starts_at=created_at,
        ends_at=None,
        fingerprint="f" * 16,
    )
    return Batch(delivery_id, notifier, created_at, NotificationReason.FIRST, (payload,))


def ids(sink: CaptureServer) -> list[str]:
    return [r.header(DELIVERY_ID_HEADER) or "" for r in sink.requests]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with make_http_client(timeout=5.0, max_connections=8) as c:
        yield c


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def store(db: Path) -> Iterator[Store]:
    s = Store(StateStore(db))
    yield s
    s.close()


@pytest.fixture
def slack_sink() -> Iterator[CaptureServer]:
    with CaptureServer() as server:
        yield server


@pytest.fixture
def hook_sink() -> Iterator[CaptureServer]:
    with CaptureServer() as server:
        yield server


def slack(sink: CaptureServer, client: httpx.AsyncClient, clock: FakeClock) -> SlackNotifier:
    entry = SlackConfig(name="ops-slack", type="slack", webhook_url=f"{sink.url}/services/T/B/X")
    return SlackNotifier(entry, client, clock)


def hook(sink: CaptureServer, client: httpx.AsyncClient, clock: FakeClock) -> WebhookNotifier:
    return WebhookNotifier(
        WebhookConfig(name="hook", type="webhook", url=f"{sink.url}/hook"), client, clock
    )


async def until_sleeping_or(clock: FakeClock, done: Callable[[], bool]) -> None:
    """Until the dispatcher is waiting on the fake clock (or `done`)."""
    await eventually(lambda: done() or clock.next_wake() is not None)


# --- item 6: one delivery loop per notifier -----------------------------------------------


async def test_slack_at_one_message_a_second_does_not_hold_up_the_webhook(
    store: Store, slack_sink: CaptureServer, hook_sink: CaptureServer, client: httpx.AsyncClient
) -> None:
    clock = FakeClock(T0)
    notifiers: dict[str, Notifier] = {
        "ops-slack": slack(slack_sink, client, clock),
        "hook": hook(hook_sink, client, clock),
    }
    d = Dispatcher(store, notifiers, clock=clock)
    stop = asyncio.Event()
    running = asyncio.create_task(d.run(stop))
    try:
        store.enqueue([queued(f"slack-{i:02d}", "ops-slack") for i in range(50)])
        d.wake()
        # Slack sent one message and now waits out its second.
        await until_sleeping_or(clock, lambda: False)
        assert len(slack_sink.requests) == 1
        start = clock.monotonic()

        # Meanwhile a cycle queues webhook rows and wakes the dispatcher, as the daemon does.
        store.enqueue([queued(f"hook-{i}", "hook") for i in range(6)])
        d.wake()
        await eventually(lambda: len(hook_sink.requests) == 6)
        assert clock.monotonic() == start, "the webhook waited for Slack's clock"
        assert len(slack_sink.requests) == 1
        assert ids(hook_sink) == [f"hook-{i}" for i in range(6)]

        # Slack keeps its own pace: one message a second, all 50 in order.
        while len(slack_sink.requests) < 50:
            await until_sleeping_or(clock, lambda: len(slack_sink.requests) == 50)
            if (wake := clock.next_wake()) is not None:
                clock.advance(wake)
        assert clock.monotonic() - start == pytest.approx(49.0)
        assert ids(slack_sink) == [f"slack-{i:02d}" for i in range(50)]
        # The sink has the 50th request before the dispatcher has its answer: await the ack.
        await eventually(lambda: d.outcomes[("ops-slack", "sent")] == 50)
        assert store.pending() == {}
    finally:
        stop.set()
        await asyncio.wait_for(running, 5)


async def test_a_hung_notifier_holds_up_only_its_own_queue(
    store: Store, hook_sink: CaptureServer, client: httpx.AsyncClient
) -> None:
    clock = FakeClock(T0)
    with CaptureServer() as hung_sink:
        hung_sink.reply(200, delay=30)  # answers long after the test is over
        hung_entry = WebhookConfig(name="hung", type="webhook", url=f"{hung_sink.url}/hook")
        notifiers: dict[str, Notifier] = {
            "hung": WebhookNotifier(hung_entry, client, clock),
            "hook": hook(hook_sink, client, clock),
        }
        d = Dispatcher(store, notifiers, clock=clock, send_timeout=60)
        stop = asyncio.Event()
        running = asyncio.create_task(d.run(stop))
        try:
            store.enqueue([queued("hung-1", "hung")])
            d.wake()
            await eventually(lambda: len(hung_sink.requests) == 1)
            for wave in range(3):  # three cycles' worth, each woken separately
                store.enqueue([queued(f"hook-{wave}", "hook")])
                d.wake()
                # Acknowledged, not only received: the ack comes after the sink has the request.
                await eventually(lambda: d.outcomes[("hook", "sent")] == wave + 1)  # noqa: B023
            assert ids(hook_sink) == ["hook-0", "hook-1", "hook-2"]
            assert store.pending() == {"hung": 1}
        finally:
            stop.set()
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running


async def test_sighup_starts_and_stops_delivery_loops(
    store: Store, hook_sink: CaptureServer, client: httpx.AsyncClient
) -> None:
    clock = FakeClock(T0)
    d = Dispatcher(store, {}, clock=clock)
    stop = asyncio.Event()
    running = asyncio.create_task(d.run(stop))
    try:
        store.enqueue([queued("hook-1", "hook")])
        d.notifiers = {"hook": hook(hook_sink, client, clock)}  # what reload() does
        # Acknowledged, not only received: a row in flight would be dropped with the notifier.
        await eventually(lambda: d.outcomes[("hook", "sent")] == 1)
        assert ids(hook_sink) == ["hook-1"]
        store.enqueue([queued("hook-2", "hook")])
        d.notifiers = {}
        assert store.pending() == {}  # a removed notifier's rows are dropped, and counted
        assert d.outcomes[("hook", "dropped")] == 1
    finally:
        stop.set()
        await asyncio.wait_for(running, 5)


# --- items 7 and 8: a stepped wall clock in the dispatcher ---------------------------------


async def test_a_backward_step_does_not_stall_slack_spacing(
    store: Store, slack_sink: CaptureServer, client: httpx.AsyncClient
) -> None:
    clock = FakeClock(T0, autojump=True)
    d = Dispatcher(store, {"ops-slack": slack(slack_sink, client, clock)}, clock=clock)
    store.enqueue([queued("slack-1", "ops-slack")])
    await deliver_due(d)
    clock.step(-HOUR)
    store.enqueue([queued("slack-2", "ops-slack", T0 - timedelta(hours=1))])
    store.enqueue([queued("slack-3", "ops-slack", T0 - timedelta(hours=1))])
    await deliver_due(d)
    assert ids(slack_sink) == ["slack-1", "slack-2", "slack-3"]
    # Two spacing waits of at most Slack's one second, not the hour the wall clock lost.
    assert max(clock.slept) <= 1.0
    assert sum(clock.slept) <= 2.0


@pytest.mark.parametrize("step", [-HOUR, DAY], ids=["minus-1h", "plus-1d"])
async def test_a_row_waiting_for_retry_is_retried_on_time_across_a_step(
    step: float, store: Store, hook_sink: CaptureServer, client: httpx.AsyncClient
) -> None:
    clock = FakeClock(T0, autojump=True)
    hook_sink.reply(429, "slow down", headers={"Retry-After": "300"})
    d = Dispatcher(store, {"hook": hook(hook_sink, client, clock)}, clock=clock)
    store.enqueue([queued("hook-1", "hook")])
    assert await deliver_due(d) == pytest.approx(300)
    clock.step(step)
    clock.advance(299)
    await deliver_due(d)
    assert len(hook_sink.requests) == 1  # not early (a +1 day step is no reason)
    clock.advance(1)
    assert await deliver_due(d) is None
    # Retried exactly 300 s later, not dropped as "older than 24h", not an hour late.
    assert ids(hook_sink) == ["hook-1", "hook-1"]
    assert d.outcomes == {("hook", "failed"): 1, ("hook", "sent"): 1}


async def test_the_24h_window_is_measured_on_the_monotonic_clock(
    store: Store, hook_sink: CaptureServer, client: httpx.AsyncClient
) -> None:
    clock = FakeClock(T0, autojump=True)
    hook_sink.default = hook_sink.default.__class__(status=503)
    d = Dispatcher(store, {"hook": hook(hook_sink, client, clock)}, clock=clock)
    store.enqueue([queued("hook-1", "hook")])
    clock.step(-2 * DAY)  # the wall clock says the row is from the future
    elapsed = 0.0
    while store.pending():
        wait = await deliver_due(d)
        if wait is None:
            break
        clock.advance(wait)
        elapsed += wait
    # Dropped when its 24 h were up by the monotonic clock, whatever the wall clock said.
    assert elapsed == pytest.approx(DAY)
    assert d.outcomes[("hook", "dropped")] == 1


# --- item 8: lifecycle durations across a step -------------------------------------------


class Cycles:
    """Engine cycles every minute on a FakeClock, org_1's sync s1 stale or not."""

    def __init__(self, store: Store, **alerting: object) -> None:
        self.clock = FakeClock(T0)
        self.config = Config(
            timbal=TimbalConfig(api_key="k", orgs=[TimbalOrg(id="org_1")]),
            alerting=AlertingConfig(**alerting),
            notifiers=[WebhookConfig(name="hook", type="webhook", url="http://127.0.0.1:9/")],
        )
        numbers = itertools.count(1)
        self.engine = Engine(self.config, store, new_id=lambda: f"d{next(numbers)}")
        self.store = store
        self.events: list[tuple[float, EventKind]] = []  # (monotonic seconds since T0, kind)
        self._start = self.clock.monotonic()

    def run(self, minutes: int, *, stale: bool) -> None:
        for _ in range(minutes):
            self.clock.advance(MINUTE)
            wall, mono = self.clock.wall(), self.clock.monotonic()
            self.engine.observe_clock(wall, mono)
            now = datetime.fromtimestamp(wall, UTC)
            report = poll_report(self.config, now, frozenset({"s1"} if stale else ()))
            result = self.engine.apply(report, now, created_mono=mono)
            self.events.extend(
                (mono - self._start, a.event) for b in result.batches for a in b.alerts
            )


@pytest.mark.parametrize("step", [-HOUR, DAY], ids=["minus-1h", "plus-1d"])
def test_repeat_interval_survives_a_step(step: float, store: Store) -> None:
    c = Cycles(store, repeat_interval=HOUR)
    c.run(1, stale=True)
    c.run(20, stale=True)
    with capture_logs() as logs:
        c.clock.step(step)
        c.run(60, stale=True)
    assert [e for e in logs if e["event"] == "clock_step"] == [
        {"event": "clock_step", "offset": step, "alerts_rebased": 1, "log_level": "warning"}
    ]
    # Fired at 1 min; repeated 60 min later, neither at the step nor an hour late.
    assert c.events == [(60.0, EventKind.FIRING), (3660.0, EventKind.REPEAT)]


@pytest.mark.parametrize("step", [-HOUR, DAY], ids=["minus-1h", "plus-1d"])
def test_keep_firing_for_and_for_survive_a_step(step: float, store: Store) -> None:
    c = Cycles(store, **{"for": 10 * MINUTE, "keep_firing_for": 10 * MINUTE})
    c.run(5, stale=True)
    c.clock.step(step)  # halfway through `for`
    c.run(10, stale=True)
    c.run(5, stale=False)
    c.clock.step(step)  # halfway through keep_firing_for
    c.run(10, stale=False)
    # Pending from 1 min, fired at 11 min; clear from 16 min, resolved at 26 min.
    assert c.events == [(660.0, EventKind.FIRING), (1560.0, EventKind.RESOLVED)]


def test_a_step_is_stored_so_a_restart_keeps_the_durations(db: Path, store: Store) -> None:
    c = Cycles(store, repeat_interval=HOUR)
    c.run(1, stale=True)
    c.clock.step(DAY)
    c.run(1, stale=True)
    store.close()
    with closing(sqlite3.connect(db)) as conn:
        (notified,) = conn.execute("SELECT last_notified_at FROM alerts").fetchone()
        (created,) = conn.execute("SELECT created_at FROM outbox").fetchone()
    # Stored in the new clock's terms: a restart sees a 1-minute-old alert and row.
    assert notified == pytest.approx(T0.timestamp() + MINUTE + DAY)
    assert created == pytest.approx(T0.timestamp() + MINUTE + DAY)


def test_small_differences_between_the_clocks_are_no_step(store: Store) -> None:
    c = Cycles(store, repeat_interval=HOUR)
    with capture_logs() as logs:
        c.run(1, stale=True)
        for _ in range(60):
            c.clock.step(0.01)  # NTP slewing: far below the tolerance
            c.run(1, stale=True)
    assert not [e for e in logs if e["event"] == "clock_step"]
    assert c.events == [(60.0, EventKind.FIRING), (3660.0, EventKind.REPEAT)]
