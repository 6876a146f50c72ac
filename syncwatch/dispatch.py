"""Delivering the outbox: one loop per notifier, in order, with retries and backoff."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from syncwatch.clock import SYSTEM, Clock, wait_for_event
from syncwatch.history import Attempt, HistorySink, Outcome, attempt_entries
from syncwatch.outbox import (
    AlertPayload,
    AlertStatus,
    Batch,
    DeliveryError,
    EventKind,
    NotificationReason,
    Notifier,
)
from syncwatch.store import Row, Store, StoreUnavailableError

log = structlog.get_logger("syncwatch.dispatch")

MAX_AGE = 24 * 3600.0  # then a notification is dropped with an error log
BACKOFF_INITIAL = 5.0
BACKOFF_MAX = 600.0


@dataclass(slots=True)
class _Timing:
    """A row's schedule on the monotonic clock, fixed when the dispatcher first sees it."""

    due: float  # next attempt
    expires: float  # end of its max_age window


class Dispatcher:
    """Delivers the outbox: one loop per notifier, in order, with backoff, never blocking
    polling; a slow, hung or rate-limited notifier holds up only its own queue."""

    def __init__(
        self,
        store: Store,
        notifiers: Mapping[str, Notifier],
        *,
        send_timeout: float = 30.0,
        max_age: float = MAX_AGE,
        backoff_initial: float = BACKOFF_INITIAL,
        backoff_max: float = BACKOFF_MAX,
        clock: Clock = SYSTEM,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self._notifiers = dict(notifiers)
        self.send_timeout = send_timeout
        self.max_age = max_age
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.clock = clock
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not crypto
        self.outcomes: Counter[tuple[str, str]] = Counter()  # (notifier, sent|failed|dropped)
        self._last_sent: dict[str, float] = {}  # monotonic
        self._timing: dict[str, _Timing] = {}  # delivery id → schedule
        self._wakes: dict[str, asyncio.Event] = {}
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._stop: asyncio.Event | None = None
        self.history: HistorySink | None = None  # where each attempt's outcome is recorded

    @property
    def notifiers(self) -> dict[str, Notifier]:
        return self._notifiers

    @notifiers.setter
    def notifiers(self, notifiers: Mapping[str, Notifier]) -> None:
        """SIGHUP: new notifiers get a loop, removed ones lose theirs and their rows."""
        self._notifiers = dict(notifiers)
        if self._stop is not None:
            self._start_loops()

    @property
    def pending_counts(self) -> dict[str, int]:
        """Undelivered rows per notifier (read by the metrics collector)."""
        return self.store.pending()

    def wake(self, notifier: str | None = None) -> None:
        """New rows were queued: look at the outbox now rather than at the next timer."""
        for name, event in self._wakes.items():
            if notifier is None or name == notifier:
                event.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set; in-flight deliveries finish or are cancelled."""
        self._stop = stop
        self._start_loops()
        try:
            await stop.wait()
            self.wake()
            await asyncio.gather(*self._loops.values(), return_exceptions=True)
        finally:
            for task in self._loops.values():
                task.cancel()
            self._loops.clear()
            self._stop = None

    def _start_loops(self) -> None:
        for name in list(self._loops):
            if name not in self._notifiers:
                self._loops.pop(name).cancel()
                self._wakes.pop(name, None)
        self.drop_unconfigured()
        for name in self._notifiers:
            if name not in self._loops:
                self._wakes[name] = asyncio.Event()
                self._loops[name] = asyncio.create_task(self._loop(name), name=f"deliver-{name}")

    async def _loop(self, notifier: str) -> None:
        stop, wake = self._stop, self._wakes[notifier]
        assert stop is not None
        while not stop.is_set():
            # Cleared before the queue is read: a wake that comes during the drain is kept.
            wake.clear()
            try:
                delay = await self.drain(notifier)
            except Exception as exc:  # nobody awaits this task until shutdown
                # A dead loop would silently stop this notifier's deliveries; log, retry later.
                log.error(
                    "dispatch_failed",
                    notifier=notifier,
                    error=f"{type(exc).__name__}: {exc}",
                    exc_info=exc,
                )
                delay = self.backoff_initial
            if stop.is_set():
                return
            await wait_for_event(self.clock, wake, delay)

    def drop_unconfigured(self) -> None:
        """Drop the rows of notifiers no longer configured (at start and on SIGHUP)."""
        for name in self.store.notifiers():
            if name not in self._notifiers:
                # Even a row waiting for its retry: nothing will ever deliver it.
                while (row := self.store.head(name)) is not None:
                    self._drop(row, "notifier is no longer configured", _fields(row))

    def _schedule(self, row: Row) -> _Timing:
        timing = self._timing.get(row.delivery_id)
        if timing is None:
            now, wall = self.clock.monotonic(), self.clock.wall()
            if row.created_mono is not None:
                created = row.created_mono
            else:
                # Queued before this process started: aged by the wall clock, once.
                created = now - max(0.0, wall - row.created_at.timestamp())
            expires = created + self.max_age
            wait = row.next_attempt_at.timestamp() - wall
            due = created if row.attempts == 0 else now + min(max(0.0, wait), expires - now)
            timing = self._timing[row.delivery_id] = _Timing(due, expires)
        return timing

    async def drain(self, notifier: str) -> float | None:
        """One pass of a notifier's loop: deliver its rows in order until one is not yet due
        (returns the seconds until it is) or the queue is empty (None)."""
        while self._stop is None or not self._stop.is_set():
            row = self.store.head(notifier)
            if row is None:
                return None
            if row.held:
                # Its cycle is being committed: a crash now must not find it sent but unstored.
                await self.store.flush()
                continue
            fields = _fields(row)
            if notifier not in self._notifiers:
                self._drop(row, "notifier is no longer configured", fields)
                continue
            timing = self._schedule(row)
            now = self.clock.monotonic()
            if now - timing.expires > 0:
                # E.g. syncwatch itself was down: after max_age the notification is stale.
                self._drop(row, f"older than {self.max_age / 3600:g}h", fields)
                continue
            if timing.due > now:
                return timing.due - now
            spacing = self._spacing(notifier, now)
            if spacing > 0:
                await self.clock.sleep(spacing)
            try:
                payload = await self.store.payload(row.delivery_id)
            except StoreUnavailableError as exc:
                log.warning("notification_deferred", error=str(exc), **fields)
                return self.backoff_initial
            retry_at = await self._deliver(row, payload)
            if retry_at is not None:
                # Rescheduled: one attempt per pass, so `Retry-After: 0` cannot spin here.
                return max(0.0, retry_at - self.clock.monotonic())
        return None

    def _spacing(self, notifier: str, now: float) -> float:
        configured = self._notifiers.get(notifier)
        min_interval = 0.0 if configured is None else configured.capabilities.min_interval
        last = self._last_sent.get(notifier)
        # Monotonic, and never more than one interval: a stepped clock cannot stall it.
        return 0.0 if last is None else min(min_interval, max(0.0, last + min_interval - now))

    async def _deliver(self, row: Row, payload: bytes) -> float | None:
        """One attempt; the retry time (monotonic) when the row stays queued, else None."""
        notifier = self._notifiers.get(row.notifier)
        fields = _fields(row)
        if notifier is None:
            self._drop(row, "notifier is no longer configured", fields)
            return None
        try:
            batch = Batch.from_json(payload)
        except (ValueError, KeyError, TypeError) as exc:
            # A payload that cannot be read never will be; it must not block the queue.
            self._drop(row, f"unreadable payload: {type(exc).__name__}: {exc}", fields)
            return None
        try:
            async with asyncio.timeout(self.send_timeout):
                await notifier.send(batch)
        except DeliveryError as exc:
            return self._failed(row, exc, fields, batch)
        except TimeoutError:
            error = DeliveryError(f"no answer within {self.send_timeout:g}s", retryable=True)
            return self._failed(row, error, fields, batch)
        except Exception as exc:  # a notifier bug must not kill delivery
            error = DeliveryError(f"{type(exc).__name__}: {exc}", retryable=True)
            return self._failed(row, error, fields, batch)
        # First the acknowledgement, before any bookkeeping: the window in which a crash
        # re-sends a delivered row (under the same id) is this store write.
        self.store.ack(row.delivery_id)
        self._timing.pop(row.delivery_id, None)
        self._last_sent[row.notifier] = self.clock.monotonic()
        self.outcomes[(row.notifier, "sent")] += 1
        self._record(row, Outcome.SENT, batch)
        log.info("notification_sent", alerts=len(batch.alerts), reason=str(batch.reason), **fields)
        return None

    def _failed(
        self, row: Row, exc: DeliveryError, fields: dict[str, object], batch: Batch
    ) -> float | None:
        """Count the failure; drop the row (None) or reschedule it (the retry time)."""
        now = self.clock.monotonic()
        self._last_sent[row.notifier] = now
        self.outcomes[(row.notifier, "failed")] += 1
        self._record(row, Outcome.FAILED, batch, str(exc), exc.status_code)
        if not exc.retryable:
            self._drop(row, f"permanent failure: {exc}", fields, batch)
            return None
        if exc.retry_after is not None:
            delay = exc.retry_after
        else:
            # Full jitter: replicas and notifiers recovering together do not stampede.
            # The exponent is capped: after thousands of Retry-After attempts, 2**attempts
            # would overflow a float.
            ceiling = min(self.backoff_max, self.backoff_initial * 2.0 ** min(row.attempts, 64))
            delay = self.rng.uniform(ceiling / 2, ceiling)
        timing = self._schedule(row)
        if now >= timing.expires:
            self._drop(row, f"still failing after {self.max_age / 3600:g}h: {exc}", fields, batch)
            return None
        # The last retry is made at the end of the window, not skipped because it would fall
        # past it: a sink back in those final minutes still gets the notification.
        delay = min(delay, timing.expires - now)
        # The stored time is for a restart (wall clock); this process keeps the monotonic one
        # (the same delay, as rounded to the stored microseconds).
        wall = self.clock.wall()
        next_at = datetime.fromtimestamp(wall, UTC) + timedelta(seconds=delay)
        timing.due = now + (next_at.timestamp() - wall)
        self.store.reschedule(row.delivery_id, next_at, str(exc))
        log.warning(
            "notification_failed",
            error=str(exc),
            status_code=exc.status_code,
            retry_in=round(delay, 3),
            **fields,
        )
        return timing.due

    def _drop(
        self, row: Row, why: str, fields: dict[str, object], batch: Batch | None = None
    ) -> None:
        self.store.drop(row.delivery_id)
        self._timing.pop(row.delivery_id, None)
        self.outcomes[(row.notifier, "dropped")] += 1
        self._record(row, Outcome.DROPPED, batch, why)
        log.error("notification_dropped", error=why, **fields)

    def _record(
        self,
        row: Row,
        outcome: Outcome,
        batch: Batch | None,
        error: str = "",
        status_code: int | None = None,
    ) -> None:
        if self.history is None:
            return
        at = datetime.fromtimestamp(self.clock.wall(), UTC)
        alerts = () if batch is None else batch.alerts
        attempt = row.attempts + 1
        done = Attempt(
            at, row.notifier, row.delivery_id, outcome, attempt, alerts, status_code, error
        )
        try:
            self.history.record_later(lambda: attempt_entries(done))
        except Exception as exc:  # history is a record, never a reason to stop delivering
            log.error("history_record_failed", error=f"{type(exc).__name__}: {exc}")


def _fields(row: Row) -> dict[str, object]:
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
