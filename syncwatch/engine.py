"""One cycle's bookkeeping: evaluated report → lifecycle transition → outbox, atomically."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from syncwatch import logs
from syncwatch.clock import StepDetector
from syncwatch.config import AlertingConfig, NotifierConfig
from syncwatch.evaluate import Report
from syncwatch.history import HistorySink, transition_entries
from syncwatch.lifecycle import (
    Alert,
    AlertEvent,
    Identity,
    Rules,
    TenantKey,
    TenantOutcome,
    Transition,
    transition,
)
from syncwatch.models import AlertName
from syncwatch.outbox import Batch, EventKind
from syncwatch.routing import plan
from syncwatch.silences import Muter
from syncwatch.store import Store

log = structlog.get_logger("syncwatch.engine")


@dataclass(frozen=True, slots=True)
class CycleResult:
    batches: list[Batch]
    rows_written: int


def outcomes_of(report: Report) -> list[TenantOutcome]:
    return [
        TenantOutcome(
            source=listing.source,
            tenant=listing.tenant,
            ok=listing.ok,
            sync_ids=frozenset(s.id for s in listing.syncs),
            reason="" if listing.error is None else str(listing.error.reason),
            message="" if listing.error is None else str(listing.error),
            invalid_ids=listing.invalid_ids,
        )
        for listing in report.listings
    ]


class EngineConfig(Protocol):
    """What the engine reads of the whole config (`settings.Config` is one): the engine
    sits below the registries, so it names the core's section types, not `Config`."""

    @property
    def alerting(self) -> AlertingConfig: ...

    @property
    def notifiers(self) -> Sequence[NotifierConfig]: ...


class Engine:
    """Holds the current alerts in memory and the durable copy in the store."""

    def __init__(
        self,
        config: EngineConfig,
        store: Store,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
        muter: Muter | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self._new_id = new_id
        # What mutes an alert (silences, maintenance windows); `apply` may pass a fresh one.
        self.muter = muter
        self.steps = StepDetector()
        self.history: HistorySink | None = None  # where each cycle's transitions are recorded
        self.alerts: dict[Identity, Alert]
        self.failures: dict[TenantKey, int]
        self.alerts, self.failures = store.load()

    def reconfigure(self, config: EngineConfig) -> None:
        self.config = config

    def observe_clock(self, wall: float, monotonic: float) -> float:
        """Each cycle's clock readings; on a step of the wall clock, re-base (returns it)."""
        step = self.steps.observe(wall, monotonic)
        if step:
            log.warning("clock_step", offset=round(step, 3), alerts_rebased=len(self.alerts))
            self.shift(step)
        return step

    def shift(self, offset: float) -> None:
        """The wall clock stepped by `offset` s: move every alert's times with it.

        `for`, `keep_firing_for` and `repeat_interval` are measured between these times and
        the cycle's wall clock; moved along, each keeps the time it had already run (a +1 day
        step neither repeats nor resolves early, a -1 h step delays nothing), and a resolved
        alert's endsAt is never before its startsAt (which Alertmanager would reject).
        """
        delta = timedelta(seconds=offset)

        def moved(t: datetime | None) -> datetime | None:
            return None if t is None else t + delta

        self.alerts = {
            identity: replace(
                a,
                active_since=a.active_since + delta,
                fired_at=moved(a.fired_at),
                last_notified_at=moved(a.last_notified_at),
                cleared_since=moved(a.cleared_since),
            )
            for identity, a in self.alerts.items()
        }
        self.store.write_alerts(list(self.alerts.values()))
        self.store.shift(offset)

    def apply(
        self,
        report: Report,
        now: datetime,
        created_mono: float | None = None,
        muter: Muter | None = None,
    ) -> CycleResult:
        """Advance the lifecycle and journal transitions with their notifications in one go.

        The write is one transaction; `Store.flush` commits it (the daemon awaits that before
        the cycle's notifications may go out). `created_mono`: the monotonic time of `now`.
        `muter`: this cycle's (else the engine's): a muted alert is not notified firing.
        """
        alerting = self.config.alerting
        result = transition(
            self.alerts,
            self.failures,
            conditions=[e.condition for e in report.evaluations if e.condition is not None],
            outcomes=outcomes_of(report),
            rules=Rules.from_config(alerting),
            now=now,
            muter=_fail_open(muter or self.muter),
        )
        result = replace(result, events=_with_resolution(result.events, report))
        routing = plan(
            result,
            self.alerts,
            self.config.notifiers,
            send_resolved=alerting.send_resolved,
            external_url=alerting.external_url,
            now=now,
            new_id=self._new_id,
        )
        result, batches = _with_told(result, routing.told, now), routing.batches
        rows = self.store.commit_cycle(result, batches, created_mono)
        self._record(result, now)
        # A console notifier already prints each event on the terminal the logs go to.
        shown = logs.for_humans() and any(n.type == "console" for n in self.config.notifiers)
        emit = log.debug if shown else log.info
        for event in result.events:
            a = event.alert
            emit(
                "alert_transition",
                kind=str(event.kind),
                alertname=a.alertname,
                severity=str(a.severity),
                source=a.source,
                tenant=a.tenant,
                sync_id=a.sync_id,
                summary=a.annotations.get("summary", ""),
            )
        self.alerts, self.failures = result.alerts, result.failures
        return CycleResult(batches, rows)

    def _record(self, result: Transition, now: datetime) -> None:
        if self.history is None or not (result.events or result.changed or result.removed):
            return
        try:
            before = self.alerts  # replaced, never mutated: safe to read on the writer
            self.history.record_later(lambda: transition_entries(before, result, now))
        except Exception as exc:  # history is a record, never a reason to fail a cycle
            log.error("history_record_failed", error=f"{type(exc).__name__}: {exc}")


def _fail_open(muter: Muter | None) -> Muter | None:
    """A muter that fails mutes nothing: a broken silence must never silence an alert."""
    if muter is None:
        return None
    failed: list[str] = []

    def guarded(labels: Mapping[str, str], now: datetime) -> tuple[str, ...]:
        try:
            return muter(labels, now)
        except Exception as exc:  # any bug in a muter: notify, and say so once a cycle
            if not failed:
                failed.append(type(exc).__name__)
                log.error(
                    "muter_failed",
                    error=f"{type(exc).__name__}: {exc}",
                    hint="alerts are notified as if not silenced this cycle",
                )
            return ()

    return guarded


def _with_told(
    result: Transition, told: Mapping[Identity, dict[str, str]], now: datetime
) -> Transition:
    """What each notifier was told goes into the alerts, and is stored where it changed.

    An alert first told by routing alone (its mute ended while its tenant was held) has
    been notified now: its repeat clock starts, and the lifecycle does not announce it again.
    """
    alerts = dict(result.alerts)
    changed = {a.identity: a for a in result.changed}
    for identity, now_told in told.items():
        a = alerts[identity]
        first = a.last_notified_at is None and bool(now_told)
        if a.told != now_told or first:
            notified = now if first else a.last_notified_at
            new = replace(a, told=now_told, last_notified_at=notified)
            alerts[identity] = changed[identity] = new
    return replace(result, alerts=alerts, changed=list(changed.values()))


def _with_resolution(events: list[AlertEvent], report: Report) -> list[AlertEvent]:
    """Resolved alerts keep their last firing annotations (as Alertmanager does) and say,
    in `resolution`, what the sync or tenant looks like now."""
    now_of = {(str(e.sync.source), e.sync.tenant, e.sync.id): e for e in report.evaluations}
    healthy = {(str(listing.source), listing.tenant) for listing in report.listings if listing.ok}
    out = []
    for event in events:
        a = event.alert
        text = ""
        if event.kind is EventKind.RESOLVED:
            if a.alertname == AlertName.SOURCE_UNREACHABLE:
                text = "the listing succeeds again" if a.tenant_key in healthy else ""
            elif (found := now_of.get((a.source, a.tenant, a.sync_id))) is not None:
                text = report.describe(found)
        annotations = {**a.annotations, "resolution": text} if text else a.annotations
        out.append(replace(event, alert=replace(a, annotations=annotations)) if text else event)
    return out
