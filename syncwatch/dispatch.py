"""Routing alert events into per-notifier batches, and delivering the outbox with retries."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

import structlog

from syncwatch.config import AlertmanagerNotifier, glob_match
from syncwatch.config import Notifier as NotifierConfig
from syncwatch.lifecycle import Alert, AlertEvent, Identity, Transition
from syncwatch.notifiers.base import (
    AlertPayload,
    AlertStatus,
    Batch,
    DeliveryError,
    EventKind,
    NotificationReason,
    Notifier,
)
from syncwatch.state import OutboxRow, StateStore

log = structlog.get_logger("syncwatch.dispatch")

MAX_AGE = 24 * 3600.0  # then a notification is dropped with an error log
BACKOFF_INITIAL = 5.0
BACKOFF_MAX = 600.0


def routes(config: NotifierConfig, alert: Alert) -> bool:
    """`min_severity` and every `match` label glob admit this alert."""
    if alert.severity.rank < config.min_severity.rank:
        return False
    return all(glob_match(alert.labels.get(k, ""), pat) for k, pat in config.match.items())


def _payload(alert: Alert, kind: EventKind, at: datetime, external_url: str) -> AlertPayload:
    resolved = kind is EventKind.RESOLVED
    return AlertPayload(
        status=AlertStatus.RESOLVED if resolved else AlertStatus.FIRING,
        event=kind,
        labels=alert.labels,
        annotations=alert.annotations,
        starts_at=alert.fired_at or alert.active_since,
        ends_at=at if resolved else None,
        fingerprint=alert.fingerprint,
        generator_url=f"{external_url}/api/v1/alerts" if external_url else "",
    )


def _reason(events: Sequence[AlertEvent], still_firing: int, was_firing: int) -> NotificationReason:
    if events and all(e.resolved for e in events):
        return (
            NotificationReason.ALL_RESOLVED
            if not still_firing
            else (NotificationReason.SOME_RESOLVED)
        )
    if any(e.resolved for e in events):
        return NotificationReason.SOME_RESOLVED
    if any(e.kind in (EventKind.FIRING, EventKind.CHANGED) for e in events):
        return NotificationReason.FIRST if not was_firing else NotificationReason.NEW_ALERTS
    return NotificationReason.REPEAT


def _routed_events(
    config: NotifierConfig, events: Sequence[AlertEvent], previous: Mapping[Identity, Alert]
) -> list[AlertEvent]:
    """The events this notifier hears about.

    An alert whose severity (or labels) changed so that it no longer routes here, while its
    previous version was firing here, is resolved for this notifier: otherwise a
    `min_severity = "critical"` receiver would keep a de-escalated alert open forever.
    """
    routed = []
    for e in events:
        if routes(config, e.alert):
            routed.append(e)
            continue
        before = previous.get(e.alert.identity)
        if not e.resolved and before is not None and before.firing and routes(config, before):
            routed.append(AlertEvent(EventKind.RESOLVED, before, e.at))
    return routed


def route(
    transition: Transition,
    previous: Mapping[Identity, Alert],
    notifiers: Sequence[NotifierConfig],
    *,
    send_resolved: bool,
    external_url: str,
    now: datetime,
    new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
) -> list[Batch]:
    """One batch per notifier with something to say this cycle."""
    batches = []
    for config in notifiers:
        is_am = isinstance(config, AlertmanagerNotifier)
        # Alertmanager must hear about resolution even when humans opted out of it.
        events = [
            e
            for e in _routed_events(config, transition.events, previous)
            if send_resolved or is_am or not e.resolved
        ]
        payloads = [_payload(e.alert, e.kind, e.at, external_url) for e in events]
        firing_now = [a for a in transition.alerts.values() if a.firing and routes(config, a)]
        if is_am:
            # Re-sent every cycle, the way Prometheus keeps Alertmanager's endsAt fresh.
            mentioned = {e.alert.identity for e in events}
            payloads.extend(
                _payload(a, EventKind.ACTIVE, now, external_url)
                for a in firing_now
                if a.identity not in mentioned
            )
        if not payloads:
            continue
        was_firing = sum(1 for a in previous.values() if a.firing and routes(config, a))
        batches.append(
            Batch(
                delivery_id=new_id(),
                notifier=config.name,
                created_at=now,
                reason=_reason(events, len(firing_now), was_firing),
                alerts=tuple(payloads),
                external_url=external_url,
            )
        )
    return batches


class Dispatcher:
    """Delivers the outbox: in order per notifier, with backoff, never blocking polling."""

    def __init__(
        self,
        store: StateStore,
        notifiers: Mapping[str, Notifier],
        *,
        send_timeout: float = 30.0,
        max_age: float = MAX_AGE,
        backoff_initial: float = BACKOFF_INITIAL,
        backoff_max: float = BACKOFF_MAX,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.notifiers = dict(notifiers)
        self.send_timeout = send_timeout
        self.max_age = max_age
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.clock = clock
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not crypto
        self.outcomes: Counter[tuple[str, str]] = Counter()  # (notifier, sent|failed|dropped)
        self._wake = asyncio.Event()
        self._last_sent: dict[str, float] = {}
        self.pending_counts: dict[str, int] = {}

    def refresh_pending(self) -> None:
        """Re-count the outbox per notifier (read by the metrics collector)."""
        self.pending_counts = self.store.pending()

    def wake(self) -> None:
        """New rows were committed: look at the outbox now rather than at the next timer."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set; an in-flight delivery finishes or is cancelled."""
        while not stop.is_set():
            try:
                delay = await self.deliver_due()
            except Exception as exc:  # nobody awaits this task until shutdown
                # A dead dispatcher would silently stop every delivery; log, retry later.
                log.error("dispatch_failed", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
                delay = self.backoff_initial
            self._wake.clear()
            waits = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
            try:
                await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()

    async def deliver_due(self) -> float | None:
        """Deliver every due row; returns seconds until the next retry is due (None: idle)."""
        heads = self.store.heads()
        if not heads:
            return None
        results = await asyncio.gather(*(self._drain(row.notifier) for row in heads))
        self.refresh_pending()
        pending = [r for r in results if r is not None]
        return min(pending) if pending else None

    async def _drain(self, notifier: str) -> float | None:
        """Deliver this notifier's rows in order until one is not yet due or the queue is empty."""
        while True:
            row = self.store.head(notifier)
            if row is None:
                return None
            now = self.clock()
            fields = _fields(row)
            if notifier not in self.notifiers:
                # Even a row waiting for its retry: nothing will ever deliver it.
                self._drop(row, "notifier is no longer configured", fields)
                continue
            if now - row.created_at.timestamp() > self.max_age:
                # E.g. syncwatch itself was down: after max_age the notification is stale.
                self._drop(row, f"older than {self.max_age / 3600:g}h", fields)
                continue
            wait = row.next_attempt_at.timestamp() - now
            if wait > 0:
                return wait
            spacing = self._spacing(notifier, now)
            if spacing > 0:
                await asyncio.sleep(spacing)
            retry_at = await self._deliver(row)
            if retry_at is not None:
                # Rescheduled: one attempt per pass, so `Retry-After: 0` cannot spin here.
                return max(0.0, retry_at - self.clock())

    def _spacing(self, notifier: str, now: float) -> float:
        min_interval = float(getattr(self.notifiers.get(notifier), "min_interval", 0.0))
        last = self._last_sent.get(notifier)
        return 0.0 if last is None else max(0.0, last + min_interval - now)

    async def _deliver(self, row: OutboxRow) -> float | None:
        """One attempt; the retry time (unix seconds) when the row stays queued, else None."""
        notifier = self.notifiers.get(row.notifier)
        fields = _fields(row)
        if notifier is None:
            self._drop(row, "notifier is no longer configured", fields)
            return None
        try:
            batch = row.batch()
        except (ValueError, KeyError, TypeError) as exc:
            # A payload that cannot be read never will be; it must not block the queue.
            self._drop(row, f"unreadable payload: {type(exc).__name__}: {exc}", fields)
            return None
        try:
            async with asyncio.timeout(self.send_timeout):
                await notifier.send(batch)
        except DeliveryError as exc:
            return self._failed(row, exc, fields)
        except TimeoutError:
            error = DeliveryError(f"no answer within {self.send_timeout:g}s", retryable=True)
            return self._failed(row, error, fields)
        except Exception as exc:  # a notifier bug must not kill delivery
            error = DeliveryError(f"{type(exc).__name__}: {exc}", retryable=True)
            return self._failed(row, error, fields)
        self._last_sent[row.notifier] = self.clock()
        self.store.ack(row.delivery_id)
        self.outcomes[(row.notifier, "sent")] += 1
        log.info("notification_sent", alerts=len(batch.alerts), reason=str(batch.reason), **fields)
        return None

    def _failed(
        self, row: OutboxRow, exc: DeliveryError, fields: dict[str, object]
    ) -> float | None:
        """Count the failure; drop the row (None) or reschedule it (the retry time)."""
        self._last_sent[row.notifier] = self.clock()
        self.outcomes[(row.notifier, "failed")] += 1
        now = self.clock()
        if not exc.retryable:
            self._drop(row, f"permanent failure: {exc}", fields)
            return None
        if exc.retry_after is not None:
            delay = exc.retry_after
        else:
            # Full jitter: replicas and notifiers recovering together do not stampede.
            # The exponent is capped: after thousands of Retry-After attempts, 2**attempts
            # would overflow a float.
            ceiling = min(self.backoff_max, self.backoff_initial * 2.0 ** min(row.attempts, 64))
            delay = self.rng.uniform(ceiling / 2, ceiling)
        expires = row.created_at.timestamp() + self.max_age
        if now >= expires:
            self._drop(row, f"still failing after {self.max_age / 3600:g}h: {exc}", fields)
            return None
        # The last retry is made at the end of the window, not skipped because it would fall
        # past it: a sink back in those final minutes still gets the notification.
        delay = min(delay, expires - now)
        next_at = datetime.fromtimestamp(now, UTC) + timedelta(seconds=delay)
        self.store.reschedule(row.delivery_id, next_at, str(exc))
        log.warning(
            "notification_failed",
            error=str(exc),
            status_code=exc.status_code,
            retry_in=round(delay, 3),
            **fields,
        )
        return next_at.timestamp()

    def _drop(self, row: OutboxRow, why: str, fields: dict[str, object]) -> None:
        self.store.drop(row.delivery_id)
        self.outcomes[(row.notifier, "dropped")] += 1
        log.error("notification_dropped", error=why, **fields)


def _fields(row: OutboxRow) -> dict[str, object]:
    return {"notifier": row.notifier, "delivery_id": row.delivery_id, "attempt": row.attempts + 1}


def make_test_batch(notifier: str, now: datetime, external_url: str = "") -> Batch:
    """A clearly marked test alert: `syncwatch test-notify` sends it through one notifier."""
    labels = {
        "alertname": "SyncwatchTestNotification",
        "severity": "warning",
        "source": "syncwatch",
        "tenant": "test",
        "sync_id": "test",
        "test": "true",
    }
    alert = AlertPayload(
        status=AlertStatus.FIRING,
        event=EventKind.FIRING,
        labels=labels,
        annotations={
            "summary": "[TEST] syncwatch test notification: no action needed",
            "description": f"Sent by `syncwatch test-notify` to the notifier {notifier!r} "
            "to check that delivery works.",
        },
        starts_at=now,
        ends_at=None,
        fingerprint="test",
        generator_url=external_url,
    )
    return Batch(
        delivery_id=f"test-{uuid.uuid4().hex}",
        notifier=notifier,
        created_at=now,
        reason=NotificationReason.FIRST,
        alerts=(alert,),
        external_url=external_url,
        test=True,
    )


async def send_test(
    notifiers: Mapping[str, Notifier], now: datetime, external_url: str = ""
) -> dict[str, str | None]:
    """Send a test batch through each notifier at once; name → None (delivered) or the error."""

    async def one(name: str, notifier: Notifier) -> str | None:
        try:
            await notifier.send(make_test_batch(name, now, external_url))
        except DeliveryError as exc:
            return str(exc)
        except Exception as exc:  # one broken notifier must not hide the others' results
            return f"{type(exc).__name__}: {exc}"
        return None

    results = await asyncio.gather(*(one(n, x) for n, x in notifiers.items()))
    return dict(zip(notifiers, results, strict=True))
