"""CaptureServer faults: notifiers down for hours, flapping, 500s, 429 storms and slow answers.

Everything is real except time: the StateStore on disk, Engine → evaluate → lifecycle →
route → outbox, the Dispatcher, and the webhook, Slack and Alertmanager notifier classes
posting over HTTP to capture servers on 127.0.0.1. Time is an injected clock moved only by
the test, which plays the daemon: a poll cycle every `cycle_every` simulated seconds, a
dispatcher pass after each cycle (the daemon wakes it on new rows) and one at every retry
time the dispatcher asks for. Nothing sleeps to synchronise.

The requirement: while a sink is down or misbehaving, detection continues and the outbox
grows; once the sink is back the outbox drains in order; nothing is lost inside the 24 h
window and drops after it are counted.
"""

from __future__ import annotations

import base64
import itertools
import random
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from syncwatch.config import AlertingConfig, TimbalConfig, TimbalOrg
from syncwatch.dispatch import BACKOFF_MAX, MAX_AGE, Dispatcher
from syncwatch.engine import Engine
from syncwatch.evaluate import Report, evaluate_listings
from syncwatch.http import make_http_client
from syncwatch.models import Listing, Source, TimbalSync
from syncwatch.notifiers.alertmanager import (
    ENDS_AT_CYCLES,
    AlertmanagerConfig,
    AlertmanagerNotifier,
)
from syncwatch.notifiers.base import DELIVERY_ID_HEADER, rfc3339
from syncwatch.notifiers.slack import SlackConfig, SlackNotifier, slack_message
from syncwatch.notifiers.webhook import WebhookConfig, WebhookNotifier, webhook_payload
from syncwatch.outbox import Batch, Capabilities, Notifier
from syncwatch.settings import Config
from syncwatch.sources.timbal.rules import TimbalRules
from syncwatch.state import StateStore
from syncwatch.store import Store
from tests.capture import Captured, CaptureServer
from tests.clock import FakeClock
from tests.delivery import deliver_due

T0 = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
MINUTE = 60.0
HOUR = 3600.0
POLL = 60.0
KINDS = ["webhook", "slack", "alertmanager"]
# The webhook with `signing = "standard-webhooks"`: the outage, 429 storm and slow sink run
# with it too (each request's signature checked with the `standardwebhooks` library).
SIGNED = "webhook-standard-webhooks"
WEBHOOKS = ("webhook", SIGNED)
NAMES = {"webhook": "hook", SIGNED: "signed-hook", "slack": "ops-slack", "alertmanager": "am"}
PATHS = {
    "webhook": "/hook",
    SIGNED: "/hook",
    "slack": "/services/T000/B000/XXXX",
    "alertmanager": "/api/v2/alerts",
}
WHSEC = "whsec_" + base64.b64encode(b"sink-faults-test-key-32-bytes!!!").decode()

# (status, sync_id) of every alert in a batch, sorted: what a receiver is told.
Signature = tuple[tuple[str, str], ...]


def dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def t(seconds: float) -> float:
    """Simulated unix time `seconds` after T0."""
    return T0.timestamp() + seconds


# --- the fleet: four syncs going stale and recovering on fixed schedules ------------------

# Each sync is stale for one period, then healthy for one, and so on: on the 60 s cycle the
# fleet changes every few minutes, so webhook and Slack get a steady trickle of batches
# while Alertmanager gets one every cycle (firing alerts are re-sent to it each cycle).
PERIOD = {"s1": 3 * HOUR, "s2": 40 * MINUTE, "s3": 25 * MINUTE, "s4": 70 * MINUTE}
PHASE = {"s1": 0.0, "s2": 10 * MINUTE, "s3": 0.0, "s4": 70 * MINUTE}


def stale_at(seconds: float) -> frozenset[str]:
    """The syncs that are stale `seconds` after T0."""
    return frozenset(
        s for s, period in PERIOD.items() if int((seconds + PHASE[s]) // period) % 2 == 0
    )


def timbal_sync(sync_id: str, now: datetime, stale: bool) -> TimbalSync:
    lag = 1200 if stale else 60  # 2x its 10-minute interval (warning), or fresh
    return TimbalSync(
        org_id="org_1",
        id=sync_id,
        connector_id=f"c-{sync_id}",
        name=f"table-{sync_id}",
        source_kind="postgres",
        source_table=f"public.{sync_id}",
        dest_table=f"raw.{sync_id}",
        interval_secs=600,
        enabled=True,
        seconds_since_success=lag,
        last_success_at=now - timedelta(seconds=lag),
        last_run_at=now - timedelta(seconds=30),
        last_state="running",
        created_at=datetime(2024, 1, 1, tzinfo=UTC),
        updated_at=datetime(2024, 1, 1, tzinfo=UTC),
    )


def poll_report(config: Config, now: datetime, stale: frozenset[str]) -> Report:
    """One poll of org_1, evaluated the way the daemon does it."""
    assert config.timbal is not None
    syncs = [timbal_sync(s, now, s in stale) for s in sorted(PERIOD)]
    listing = Listing(source=Source.TIMBAL, tenant="org_1", syncs=syncs)
    return evaluate_listings(
        [listing], {Source.TIMBAL: TimbalRules.from_config(config.timbal)}, now
    )


def expected_signature(kind: str, before: frozenset[str], now: frozenset[str]) -> Signature:
    """What one cycle must tell this notifier, from the schedule alone."""
    # Alertmanager hears every firing alert each cycle; humans only hear what changed.
    firing = now if kind == "alertmanager" else now - before
    return tuple(sorted([("firing", s) for s in firing] + [("resolved", s) for s in before - now]))


def batch_signature(batch: Batch) -> Signature:
    return tuple(sorted((str(a.status), a.labels["sync_id"]) for a in batch.alerts))


# --- a sink that can go down and come back on the same address -----------------------------


@pytest.fixture
def sink() -> Iterator[CaptureServer]:
    server = CaptureServer().start()
    yield server
    server.close()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with make_http_client(timeout=5.0, max_connections=4) as c:
        yield c


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def store(db: Path) -> Iterator[Store]:
    s = Store(StateStore(db))
    yield s
    s.close()


def outbox(db: Path, notifier: str) -> list[tuple[str, int, str | None]]:
    """(delivery_id, attempts, last_error) of every queued row, in queue order."""
    with closing(sqlite3.connect(db)) as conn:
        rows: list[tuple[str, int, str | None]] = conn.execute(
            "SELECT delivery_id, attempts, last_error FROM outbox WHERE notifier=? ORDER BY seq",
            (notifier,),
        ).fetchall()
    return rows


# --- the simulated daemon -----------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """One request as the receiver saw it, with the simulated time of the pass that sent it."""

    request: Captured
    at: float

    @property
    def delivery_id(self) -> str:
        value = self.request.header(DELIVERY_ID_HEADER)
        assert value, "every notification carries its delivery id"
        return value


class Sim:
    """Engine + real notifier + Dispatcher on one store, driven through simulated time."""

    def __init__(
        self,
        kind: str,
        store: Store,
        sink: CaptureServer,
        client: httpx.AsyncClient,
        *,
        cycle_every: float = POLL,
        send_timeout: float = 30.0,
        slack_pacing: bool = False,
        seed: int = 7,
    ) -> None:
        self.kind = kind
        self.name = NAMES[kind]
        self.store = store
        self.sink = sink
        # Sleeps (Slack's spacing) move simulated time at once.
        self.clock = FakeClock(T0, autojump=True)
        url = f"{sink.url}{PATHS[kind]}" if kind != "alertmanager" else sink.url
        notifier: Notifier
        entry: WebhookConfig | SlackConfig | AlertmanagerConfig
        if kind in WEBHOOKS:
            signing: dict[str, Any] = (
                {"signing": "standard-webhooks", "secret": WHSEC} if kind == SIGNED else {}
            )
            hook = WebhookConfig(name=self.name, type="webhook", url=url, **signing)
            notifier, entry = WebhookNotifier(hook, client, self.clock), hook
        elif kind == "slack":
            slack_entry = SlackConfig(name=self.name, type="slack", webhook_url=url)
            slack = SlackNotifier(slack_entry, client, self.clock)
            if not slack_pacing:
                # Slack's one-message-a-second spacing would move the clock inside a pass, and
                # every check here is per pass. It is kept, and checked, in
                # test_slack_backlog_drains_at_slacks_pace.
                slack.capabilities = Capabilities()
            notifier, entry = slack, slack_entry
        else:
            am = AlertmanagerConfig(name=self.name, type="alertmanager", urls=[url])
            notifier, entry = AlertmanagerNotifier(am, client, POLL, self.clock), am
        self.config = Config(
            timbal=TimbalConfig(api_key="test-key", orgs=[TimbalOrg(id="org_1")]),
            # No repeats inside these runs: each batch is exactly one change of the fleet.
            alerting=AlertingConfig(repeat_interval=100 * HOUR),
            notifiers=[entry],
        )
        ids = itertools.count(1)
        self.engine = Engine(self.config, store, new_id=lambda: f"{kind}-{next(ids):05d}")
        self.dispatcher = Dispatcher(
            store,
            {self.name: notifier},
            send_timeout=send_timeout,
            clock=self.clock,
            rng=random.Random(seed),
        )
        self.cycle_every = cycle_every
        self.next_cycle = self.clock.now
        self.next_retry: float | None = None
        self.stale_before: frozenset[str] = frozenset()
        self.enqueued: list[Batch] = []  # every batch the engine produced, in order
        self.expected: dict[str, Signature] = {}  # delivery id → what the schedule says
        self.sent: list[Sent] = []  # parallel to sink.requests
        self.failures: list[tuple[float, float]] = []  # (attempt time, retry scheduled in)
        self.drops: list[float] = []  # when rows were dropped
        self.pending_after_cycle: list[int] = []

    def outcome(self, what: str) -> int:
        return self.dispatcher.outcomes[(self.name, what)]

    def pending(self) -> int:
        return self.store.pending().get(self.name, 0)

    def cycle(self) -> None:
        """One poll cycle at the current time: evaluate, transition, route, enqueue."""
        now = self.clock.now
        stale = stale_at(now - T0.timestamp())
        result = self.engine.apply(poll_report(self.config, dt(now), stale), dt(now))
        want = expected_signature(self.kind, self.stale_before, stale)
        if want:
            (batch,) = result.batches
            assert batch_signature(batch) == want, dt(now)
            assert batch.notifier == self.name
            assert batch.created_at == dt(now)
            self.enqueued.append(batch)
            self.expected[batch.delivery_id] = want
        else:
            assert result.batches == [], dt(now)
        self.stale_before = stale
        self.pending_after_cycle.append(self.pending())

    async def deliver(self) -> float | None:
        """One dispatcher pass at the current time; records what the receiver saw."""
        seen = len(self.sink.requests)
        failed, dropped = self.outcome("failed"), self.outcome("dropped")
        wait = await deliver_due(self.dispatcher)
        now = self.clock.now
        self.sent.extend(Sent(r, now) for r in self.sink.requests[seen:])
        head = self.store.head(self.name)
        # None means idle: then nothing is queued, and anything queued has a retry time.
        assert (wait is None) is (head is None)
        self.next_retry = None if head is None else head.next_attempt_at.timestamp()
        if head is not None:
            assert self.next_retry is not None
            assert wait == pytest.approx(self.next_retry - now, abs=1e-5)
            # One rescheduling failure per pass; a failure that drops moves on to the next row.
            drops = self.outcome("dropped") - dropped
            assert self.outcome("failed") - failed <= 1 + drops, "one retry scheduled per pass"
        if self.outcome("failed") > failed and head is not None:
            # A failure that dropped its row moved on; one that kept it rescheduled the head.
            assert head.attempts >= 1
            self.failures.append((now, head.next_attempt_at.timestamp() - now))
        self.drops.extend([now] * (self.outcome("dropped") - dropped))
        assert self.dispatcher.pending_counts.get(self.name, 0) == self.pending()
        return wait

    async def run(self, until: float, *, cycles: bool = True, max_steps: int = 5000) -> None:
        """Play the daemon up to `until`: cycles on schedule, passes after each and at retries."""
        if not cycles:
            self.next_cycle = float("inf")
        elif self.next_cycle == float("inf"):
            self.next_cycle = self.clock.now
        for _ in range(max_steps):
            due = min(self.next_cycle, float("inf") if self.next_retry is None else self.next_retry)
            if due > until:
                self.clock.now = max(self.clock.now, until)
                return
            self.clock.now = max(self.clock.now, due)
            if self.next_cycle <= self.clock.now:
                self.cycle()
                self.next_cycle += self.cycle_every
            await self.deliver()
        raise AssertionError(f"simulation did not reach {dt(until)} in {max_steps} steps")


# --- what the receiver got ----------------------------------------------------------------


def slack_signature(body: dict[str, Any]) -> Signature:
    """(status, sync_id) of each alert line of a Slack message, from the message alone."""
    got = []
    for block in body["blocks"]:
        if block["type"] != "section":
            continue
        for line in block["text"]["text"].splitlines():
            m = re.search(r"\(org_1/(s\d)\)", line)
            if m:
                resolved = line.startswith(":white_check_mark:")
                got.append(("resolved" if resolved else "firing", m.group(1)))
    return tuple(sorted(got))


def check_body(sim: Sim, sent: Sent, batch: Batch) -> None:
    """The request is the stored batch rendered for this receiver, telling what it should."""
    request = sent.request
    assert request.method == "POST"
    assert request.path == PATHS[sim.kind]
    body = request.json()
    if sim.kind in WEBHOOKS:
        assert body == webhook_payload(batch)
        got = tuple(sorted((a["status"], a["labels"]["sync_id"]) for a in body["alerts"]))
    elif sim.kind == "slack":
        assert body == slack_message(batch)
        got = slack_signature(body)
    else:
        # endsAt of a firing alert is fresh at send time, even for a row queued for hours.
        ends_firing = rfc3339(dt(sent.at + ENDS_AT_CYCLES * POLL))
        assert [a["labels"] for a in body] == [a.labels for a in batch.alerts]
        assert [a["startsAt"] for a in body] == [rfc3339(a.starts_at) for a in batch.alerts]
        statuses = []
        for a in body:
            resolved = a["endsAt"] != ends_firing
            if resolved:
                assert a["endsAt"] == rfc3339(batch.created_at)
            statuses.append(("resolved" if resolved else "firing", a["labels"]["sync_id"]))
        got = tuple(sorted(statuses))
    assert got == sim.expected[batch.delivery_id], batch.delivery_id
    if sim.kind == SIGNED:
        check_standard_webhooks(sent)


def check_standard_webhooks(sent: Sent) -> None:
    """What a Standard Webhooks receiver checks, with the spec's `standardwebhooks` library.

    The receiver lives on the simulated clock (these runs span hours), and the library's
    `verify` reads the real one; so its own `sign` recomputes the v1 signature over
    "{id}.{timestamp}.{body}" and the timestamp is held to the library's 5-minute tolerance
    on the receiver's clock: it is the attempt's own time, a retry is re-signed."""
    request = sent.request
    msg_id = request.header("webhook-id")
    stamp = request.header("webhook-timestamp")
    signature = request.header("webhook-signature")
    assert msg_id is not None
    assert stamp is not None
    assert signature is not None
    assert msg_id == sent.delivery_id  # stable across retries: receivers de-duplicate on it
    assert abs(int(stamp) - sent.at) <= 5 * MINUTE
    assert int(stamp) == int(sent.at)
    expected = Webhook(WHSEC).sign(msg_id, dt(int(stamp)), request.body.decode())
    assert expected in signature.split(" ")
    assert request.header("X-Syncwatch-Signature") is None


def check_drained_in_order(sim: Sim, accepted: list[Sent], batches: list[Batch]) -> None:
    """Accepted requests are exactly `batches`, in outbox order, each the batch it names."""
    assert [s.delivery_id for s in accepted] == [b.delivery_id for b in batches]
    for sent, batch in zip(accepted, batches, strict=True):
        check_body(sim, sent, batch)
        assert sent.at >= batch.created_at.timestamp()
        assert sent.at - batch.created_at.timestamp() <= MAX_AGE


def check_same_content_per_delivery_id(sim: Sim) -> None:
    """A retried notification is the same notification: receivers can de-duplicate by id."""
    if sim.kind == SIGNED:
        for sent in sim.sent:  # every attempt, the failed ones too, is signed for its time
            check_standard_webhooks(sent)
    for delivery_id, group in itertools.groupby(
        sorted(sim.sent, key=lambda s: s.delivery_id), key=lambda s: s.delivery_id
    ):
        bodies = [s.request.json() for s in group]
        if sim.kind == "alertmanager":  # endsAt of firing alerts is computed at send time
            bodies = [[a["labels"] for a in b] for b in bodies]
        assert all(b == bodies[0] for b in bodies), delivery_id


# --- (a) a long outage --------------------------------------------------------------------


@pytest.mark.parametrize("kind", [*KINDS, SIGNED])
async def test_six_hour_outage_queues_everything_and_drains_it_in_order(
    kind: str, store: Store, db: Path, sink: CaptureServer, client: httpx.AsyncClient
) -> None:
    sim = Sim(kind, store, sink, client)

    # Healthy for half an hour: each batch goes out in the pass after its cycle.
    await sim.run(t(30 * MINUTE))
    before = len(sim.enqueued)
    assert before >= 2
    check_drained_in_order(sim, sim.sent, sim.enqueued)
    assert [s.at for s in sim.sent] == [b.created_at.timestamp() for b in sim.enqueued]
    assert store.pending() == {}

    # Down (connection refused) for six hours of polling.
    sink.stop()
    cycles_before = len(sim.pending_after_cycle)
    await sim.run(t(30 * MINUTE + 6 * HOUR))
    queued = sim.enqueued[before:]
    # Detection went on: every cycle's changes were evaluated and queued (checked per cycle).
    assert len(queued) >= (300 if kind == "alertmanager" else 20)
    assert len(sim.sent) == before  # nothing reached anyone
    # The outbox grew by one row per batch and holds them in creation order.
    growth = sim.pending_after_cycle[cycles_before:]
    assert growth == sorted(growth)
    assert growth[-1] == len(queued)
    rows = outbox(db, sim.name)
    assert [r[0] for r in rows] == [b.delivery_id for b in queued]
    # Only the head was tried, over and over, and never less often than every backoff_max.
    assert rows[0][1] == sim.outcome("failed") == len(sim.failures) >= 6 * HOUR / BACKOFF_MAX
    assert all(r[1] == 0 for r in rows[1:])
    assert "connection" in (rows[0][2] or "")
    attempts = [at for at, _ in sim.failures]
    assert attempts[0] == queued[0].created_at.timestamp()  # tried in its own cycle's pass
    assert max(b - a for a, b in itertools.pairwise(attempts)) <= BACKOFF_MAX + 1e-3
    assert (sim.outcome("sent"), sim.outcome("dropped")) == (before, 0)

    # Back: the whole backlog goes out at the next retry, in order, then polling carries on.
    sink.start()
    back = sim.clock.now
    await sim.run(back + 30 * MINUTE)
    after = sim.sent[before:]
    assert after[0].at - back <= BACKOFF_MAX
    assert all(s.at == after[0].at for s in after[: len(queued)])  # one pass drains it all
    check_drained_in_order(sim, after, sim.enqueued[before:])
    assert len({s.delivery_id for s in sim.sent}) == len(sim.sent) == len(sim.enqueued)
    assert store.pending() == {}
    assert outbox(db, sim.name) == []
    assert sim.outcome("sent") == len(sim.enqueued)
    assert sim.outcome("dropped") == 0
    assert sim.outcome("failed") == len(sim.failures)


# --- (b) an outage longer than the 24 h window ----------------------------------------------


# Slack takes the webhook's path through the dispatcher (one batch per change of the fleet);
# its delivery after an outage is covered by the six-hour outage above.
@pytest.mark.parametrize("kind", ["webhook", "alertmanager"])
async def test_outage_beyond_24h_drops_and_counts_only_rows_past_their_window(
    kind: str, store: Store, db: Path, sink: CaptureServer, client: httpx.AsyncClient
) -> None:
    sim = Sim(kind, store, sink, client, cycle_every=30 * MINUTE)
    sink.stop()  # down from the start, for 25 hours
    back = t(25 * HOUR + 5 * MINUTE)
    await sim.run(back, max_steps=20_000)

    assert sim.sent == []
    created = {b.delivery_id: b.created_at.timestamp() for b in sim.enqueued}
    ids = [b.delivery_id for b in sim.enqueued]
    queued = [r[0] for r in outbox(db, sim.name)]
    dropped = sim.outcome("dropped")
    # Dropped rows are the oldest ones, counted once each; the rest wait in order.
    assert dropped == len(sim.drops) == len(ids) - len(queued) > 0
    assert queued == ids[dropped:]
    # A row older than 24 h is never kept; a dropped row was (at least nearly) 24 h old.
    assert all(back - created[i] <= MAX_AGE for i in queued)
    assert all(back - created[i] > MAX_AGE - BACKOFF_MAX for i in ids[:dropped])
    assert all(at >= t(MAX_AGE - BACKOFF_MAX) for at in sim.drops)
    assert sim.outcome("sent") == 0

    sink.start()
    await sim.run(back + 30 * MINUTE)
    # Everything inside the window was delivered, in order, exactly once, never past 24 h.
    check_drained_in_order(sim, sim.sent, sim.enqueued[dropped:])
    # Nothing that still had backoff_max of its window left was lost. (The last backoff_max
    # of the window: see test_a_queued_row_is_kept_until_its_24h_are_up.)
    delivered = {s.delivery_id for s in sim.sent}
    assert all(i in delivered for i in ids if back - created[i] < MAX_AGE - BACKOFF_MAX)
    assert sim.outcome("sent") == len(sim.enqueued) - dropped
    assert sim.outcome("dropped") == dropped  # nothing more after the sink came back
    assert store.pending() == {}


async def test_a_queued_row_is_kept_until_its_24h_are_up(
    store: Store, sink: CaptureServer, client: httpx.AsyncClient
) -> None:
    sim = Sim("webhook", store, sink, client)
    sink.stop()
    await sim.run(t(0))  # one cycle: one batch
    (batch,) = sim.enqueued
    created = batch.created_at.timestamp()
    await sim.run(created + MAX_AGE + HOUR, cycles=False, max_steps=1000)
    assert sim.outcome("dropped") == 1
    (drop_at,) = sim.drops
    assert drop_at - created >= MAX_AGE, (
        f"dropped at {drop_at - created:.0f}s, {created + MAX_AGE - drop_at:.0f}s before its "
        "24 h were up"
    )


# --- (c) a flapping sink ------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_flapping_sink_gets_everything_exactly_once_in_order(
    kind: str, store: Store, db: Path, sink: CaptureServer, client: httpx.AsyncClient
) -> None:
    rng = random.Random(1234)
    script = [200 if rng.random() < 0.5 else rng.choice([500, 502, 503, 504]) for _ in range(600)]
    for code in script:
        sink.reply(code, "ok" if code == 200 else f"upstream error {code}")
    sim = Sim(kind, store, sink, client)

    # 5xx/200 flapping all along, plus two spells of refused connections.
    await sim.run(t(30 * MINUTE))
    sink.stop()
    await sim.run(t(38 * MINUTE))
    sink.start()
    await sim.run(t(55 * MINUTE))
    sink.stop()
    await sim.run(t(60 * MINUTE))
    sink.start()
    await sim.run(t(75 * MINUTE))
    await sim.run(t(2 * HOUR), cycles=False)  # let the last retries through

    def status(i: int) -> int:
        return script[i] if i < len(script) else 200

    assert len(sim.sent) < len(script)  # every request got a scripted answer
    assert any(status(i) != 200 for i in range(len(sim.sent)))
    accepted = [s for i, s in enumerate(sim.sent) if status(i) == 200]
    check_drained_in_order(sim, accepted, sim.enqueued)
    # Every run of requests for one row ends with its single 200: the head is retried until
    # accepted and never skipped, and nothing is sent again once accepted.
    runs = [
        (k, [status(i) for i, _ in g])
        for k, g in itertools.groupby(enumerate(sim.sent), key=lambda p: p[1].delivery_id)
    ]
    assert [k for k, _ in runs] == [b.delivery_id for b in sim.enqueued]
    for delivery_id, statuses in runs:
        assert statuses[-1] == 200, delivery_id
        assert all(s >= 500 for s in statuses[:-1]), delivery_id
    check_same_content_per_delivery_id(sim)
    assert sim.outcome("sent") == len(sim.enqueued)
    assert sim.outcome("failed") == len(sim.failures) >= len(sim.sent) - len(accepted)
    assert sim.outcome("dropped") == 0
    assert store.pending() == {}
    assert outbox(db, sim.name) == []


# --- (d) a 429 storm ------------------------------------------------------------------------

RETRY_AFTER = [1, 30, 120, 7, 600, 45, 3600, 90, 15, 300]


@pytest.mark.parametrize("kind", [*KINDS, SIGNED])
async def test_429_storm_honours_retry_after_exactly_then_drains(
    kind: str, store: Store, db: Path, sink: CaptureServer, client: httpx.AsyncClient
) -> None:
    for seconds in RETRY_AFTER:
        sink.reply(429, "rate limited", headers={"Retry-After": str(seconds)})
    sim = Sim(kind, store, sink, client)
    await sim.run(t(95 * MINUTE))

    storm = len(RETRY_AFTER)
    first = sim.enqueued[0]
    # Each 429 scheduled the retry exactly Retry-After later, and it happened exactly then:
    # the cycles in between (every 60 s) woke the dispatcher without an early attempt.
    assert len(sim.failures) == sim.outcome("failed") == storm
    assert [gap for _, gap in sim.failures] == pytest.approx(RETRY_AFTER, abs=1e-5)
    assert [s.delivery_id for s in sim.sent[: storm + 1]] == [first.delivery_id] * (storm + 1)
    gaps = [b.at - a.at for a, b in itertools.pairwise(sim.sent[: storm + 1])]
    assert gaps == pytest.approx(RETRY_AFTER, abs=1e-5)
    assert sim.sent[0].at == first.created_at.timestamp()

    # The storm lasted over 80 minutes of polling; the backlog went out in one pass after it.
    over = sim.sent[storm].at
    backlog = [b for b in sim.enqueued if b.created_at.timestamp() <= over]
    assert over - first.created_at.timestamp() == pytest.approx(sum(RETRY_AFTER), abs=1e-3)
    assert len(backlog) >= (80 if kind == "alertmanager" else 4)
    assert max(sim.pending_after_cycle) >= len(backlog) - 1
    assert [s.at for s in sim.sent[storm : storm + len(backlog)]] == [over] * len(backlog)
    check_drained_in_order(sim, sim.sent[storm:], sim.enqueued)
    check_same_content_per_delivery_id(sim)
    assert sim.outcome("sent") == len(sim.enqueued)
    assert sim.outcome("dropped") == 0
    assert store.pending() == {}


@pytest.mark.parametrize(
    "kind",
    ["webhook", "slack", "alertmanager"],
)
async def test_retry_after_zero_means_retry_now(
    kind: str, store: Store, sink: CaptureServer, client: httpx.AsyncClient
) -> None:
    sink.reply(429, "rate limited", headers={"Retry-After": "0"})
    sim = Sim(kind, store, sink, client)
    await sim.run(t(0))
    assert sim.failures == [(t(0), 0.0)]
    await sim.run(t(0), cycles=False)  # the retry is due now: no clock movement needed
    assert [s.delivery_id for s in sim.sent] == [sim.enqueued[0].delivery_id] * 2
    assert store.pending() == {}


# --- (e) answers slower than the send timeout -----------------------------------------------


@pytest.mark.parametrize("kind", [*KINDS, SIGNED])
async def test_sink_slower_than_the_send_timeout_is_retried_with_the_same_delivery_id(
    kind: str, store: Store, db: Path, sink: CaptureServer, client: httpx.AsyncClient
) -> None:
    slow = 2
    for _ in range(slow):
        sink.reply(200, "ok", delay=5.0)  # would succeed, but long after send_timeout
    # Well above what a prompt answer takes on a loaded machine (0.2 s was not: a 200 with
    # no delay once took longer), well below the slow answers' 5 s.
    sim = Sim(kind, store, sink, client, send_timeout=1.0)

    started = time.monotonic()
    await sim.run(t(0))
    elapsed = time.monotonic() - started
    # Far below the answer's 5 s, whatever the machine's load: it gave up at send_timeout.
    assert 0.99 <= elapsed < 5.0, "the dispatcher gave up at send_timeout, not at the answer"
    ((delivery_id, attempts, error),) = outbox(db, sim.name)
    assert (delivery_id, attempts) == (sim.enqueued[0].delivery_id, 1)
    assert error == "no answer within 1s"
    assert sim.outcome("failed") == 1

    await sim.run(t(30 * MINUTE))
    assert sim.outcome("failed") == len(sim.failures) == slow
    ids = [s.delivery_id for s in sim.sent]
    # The receiver saw the slow attempts too, all under the head's delivery id...
    assert ids[:slow] == [sim.enqueued[0].delivery_id] * slow
    # ...so de-duplicating by delivery id leaves each notification once, in order.
    assert list(dict.fromkeys(ids)) == [b.delivery_id for b in sim.enqueued]
    check_drained_in_order(sim, sim.sent[slow:], sim.enqueued)
    check_same_content_per_delivery_id(sim)
    assert sim.outcome("sent") == len(sim.enqueued) >= 2
    assert sim.outcome("dropped") == 0
    assert store.pending() == {}


# --- Slack's own pace after an outage -------------------------------------------------------


async def test_slack_backlog_drains_at_slacks_pace(
    store: Store, sink: CaptureServer, client: httpx.AsyncClient
) -> None:
    sim = Sim("slack", store, sink, client, slack_pacing=True)
    sink.stop()
    await sim.run(t(26 * MINUTE))
    assert len(sim.enqueued) == 2
    sink.start()
    await sim.run(t(40 * MINUTE), cycles=False)
    check_drained_in_order(sim, sim.sent, sim.enqueued)
    assert len(sim.sent) == 2
    # Both went out in one pass, a second apart on the dispatcher's clock: Slack allows one
    # message a second, and the dispatcher waited exactly that long, once, between them.
    assert [s for s in sim.clock.slept if s > 0] == [pytest.approx(1.0)]
