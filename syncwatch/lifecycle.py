"""Pure alert lifecycle: (alerts, conditions, tenant outcomes, now) → new alerts + events.

inactive → pending (`for`) → firing → resolved (after `keep_firing_for`). While a tenant's
listing fails, its sync alerts are held: neither resolved nor re-notified. So are the alerts
of a sync that is listed but whose record failed validation this cycle: only an id absent
from a healthy listing is gone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol

from syncwatch.config import AlertingConfig
from syncwatch.evaluate import source_unreachable
from syncwatch.models import AlertName, Condition, Severity, Source
from syncwatch.outbox import AlertStatus, EventKind
from syncwatch.silences import Muter

Identity = tuple[str, str, str, str]  # (alertname, source, tenant, sync_id)
TenantKey = tuple[str, str]  # (source, tenant)


def fingerprint(identity: Identity) -> str:
    """Stable per identity, so a severity change keeps the fingerprint receivers de-dup on."""
    return hashlib.sha256("\x00".join(identity).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Alert:
    """A pending or firing alert. Resolved alerts leave the table."""

    alertname: str
    source: str
    tenant: str
    sync_id: str
    severity: Severity
    status: AlertStatus | None  # None while pending; FIRING once fired
    labels: dict[str, str]
    annotations: dict[str, str]
    active_since: datetime  # condition first held (pending start)
    fired_at: datetime | None = None  # startsAt
    last_notified_at: datetime | None = None
    cleared_since: datetime | None = None  # condition absent since (keep_firing_for)
    # Notifier name → the severity it was last told this alert fires at (routing keeps it).
    # None: not known (a database from before silences): every notifier it routes to.
    told: Mapping[str, str] | None = None
    # What mutes it this cycle (silence ids, maintenance names); recomputed, never stored.
    muted_by: tuple[str, ...] = field(default=(), compare=False)

    @property
    def identity(self) -> Identity:
        return (self.alertname, self.source, self.tenant, self.sync_id)

    @property
    def tenant_key(self) -> TenantKey:
        return (self.source, self.tenant)

    @property
    def firing(self) -> bool:
        return self.status is AlertStatus.FIRING

    @property
    def state(self) -> str:
        """`pending`, `firing`, or `suppressed` (firing, but muted), as in
        `syncwatch_alert{state=...}` and /api/v1/alerts."""
        if not self.firing:
            return "pending"
        return "suppressed" if self.muted_by else "firing"

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.identity)


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """Something to notify: an alert fired, changed severity, repeated or resolved."""

    kind: EventKind
    alert: Alert
    at: datetime

    @property
    def resolved(self) -> bool:
        return self.kind is EventKind.RESOLVED


@dataclass(frozen=True, slots=True)
class TenantOutcome:
    """How one tenant's listing went this cycle; `sync_ids` only when it succeeded.

    `invalid_ids`: syncs listed but unreadable this cycle (their record failed validation).
    """

    source: Source
    tenant: str
    ok: bool
    sync_ids: frozenset[str] = frozenset()
    reason: str = ""
    message: str = ""
    invalid_ids: frozenset[str] = frozenset()

    @property
    def key(self) -> TenantKey:
        return (self.source, self.tenant)


@dataclass(frozen=True, slots=True)
class Rules:
    for_: float = 0.0
    keep_firing_for: float = 0.0
    repeat_interval: float = 4 * 3600.0
    source_failure_threshold: int = 3

    @classmethod
    def from_config(cls, config: AlertingConfig) -> Rules:
        return cls(
            config.for_,
            config.keep_firing_for,
            config.repeat_interval,
            config.source_failure_threshold,
        )


@dataclass(frozen=True, slots=True)
class Transition:
    """The outcome of one cycle; `changed` and `removed` are what the store must write."""

    alerts: dict[Identity, Alert]
    failures: dict[TenantKey, int]
    events: list[AlertEvent]
    changed: list[Alert]
    removed: list[Identity]
    failures_changed: dict[TenantKey, int]


def _seconds(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds()


def _tenants(
    failures: Mapping[TenantKey, int], outcomes: Iterable[TenantOutcome], rules: Rules
) -> tuple[
    dict[TenantKey, int], dict[TenantKey, int], dict[TenantKey, frozenset[str]], list[Condition]
]:
    """Failure counts after this cycle, what changed, listed sync ids, SourceUnreachables."""
    new_failures = dict(failures)
    changed: dict[TenantKey, int] = {}
    listed: dict[TenantKey, frozenset[str]] = {}
    unreachable: list[Condition] = []
    outcomes = list(outcomes)
    # A tenant no longer polled (config, shard) forgets its failures: were it watched again,
    # SourceUnreachable must wait for a fresh run of source_failure_threshold failures.
    for key in failures.keys() - {o.key for o in outcomes}:
        del new_failures[key]
        changed[key] = 0
    for outcome in outcomes:
        count = 0 if outcome.ok else failures.get(outcome.key, 0) + 1
        if count != failures.get(outcome.key, 0):
            changed[outcome.key] = count
        if outcome.ok:
            new_failures.pop(outcome.key, None)
            listed[outcome.key] = outcome.sync_ids
            continue
        new_failures[outcome.key] = count
        if count >= rules.source_failure_threshold:
            unreachable.append(
                source_unreachable(outcome.source, outcome.tenant, outcome.reason, outcome.message)
            )
    return new_failures, changed, listed, unreachable


def transition(
    alerts: Mapping[Identity, Alert],
    failures: Mapping[TenantKey, int],
    *,
    conditions: Iterable[Condition],
    outcomes: Iterable[TenantOutcome],
    rules: Rules,
    now: datetime,
    muter: Muter | None = None,
) -> Transition:
    """Advance every alert by one cycle. Pure: no I/O, no clock.

    A muted alert (`muter` names what mutes it) keeps its lifecycle but fires, changes and
    repeats silently: no event, and `last_notified_at` untouched, so once the mute ends it
    is notified (FIRING if it never was) or repeats on the clock of what was really sent.
    Resolutions are never muted: routing sends them to whoever was told it fired.
    """

    def mutes(labels: Mapping[str, str]) -> tuple[str, ...]:
        return () if muter is None else muter(labels, now)

    def remuted(old: Alert) -> Alert:
        muted = mutes(old.labels)
        return old if muted == old.muted_by else replace(old, muted_by=muted)

    outcomes = list(outcomes)
    new_failures, failures_changed, listed, unreachable = _tenants(failures, outcomes, rules)
    held = {o.key for o in outcomes if not o.ok}
    unreadable = {o.key: o.invalid_ids for o in outcomes if o.ok and o.invalid_ids}
    current: dict[Identity, Condition] = {c.identity: c for c in conditions}
    current.update((c.identity, c) for c in unreachable)

    result: dict[Identity, Alert] = {}
    events: list[AlertEvent] = []
    changed: list[Alert] = []
    removed: list[Identity] = []

    def keep(old: Alert | None, new: Alert, *, persist: bool) -> None:
        result[new.identity] = new
        if persist or old is None:
            changed.append(new)

    for identity, old in alerts.items():
        if identity in current:
            cond = current.pop(identity)
            muted = mutes(cond.all_labels)
            _advance(old, cond, muted, rules=rules, now=now, keep=keep, events=events)
            continue
        is_sync_alert = old.alertname != AlertName.SOURCE_UNREACHABLE
        if is_sync_alert and (
            old.tenant_key in held or old.sync_id in unreadable.get(old.tenant_key, ())
        ):
            # No data for this tenant, or for this sync: hold the alert exactly as it is.
            result[identity] = remuted(old)
            continue
        gone = (
            is_sync_alert and old.tenant_key in listed and old.sync_id not in listed[old.tenant_key]
        )
        # Neither listed nor failing: the tenant is no longer polled at all. That holds for a
        # SourceUnreachable too, which would otherwise linger and resolve with its old text.
        unwatched = old.tenant_key not in listed and old.tenant_key not in held
        if not old.firing:
            removed.append(identity)
            continue
        if gone or unwatched:
            why = (
                "The sync is no longer listed upstream (deleted or filtered out)."
                if gone
                else "The tenant is no longer watched by this syncwatch (config or shard)."
            )
            resolved = replace(old, annotations={**old.annotations, "description": why})
            events.append(AlertEvent(EventKind.RESOLVED, resolved, now))
            removed.append(identity)
            continue
        cleared_since = old.cleared_since or now
        if _seconds(now, cleared_since) >= rules.keep_firing_for:
            events.append(AlertEvent(EventKind.RESOLVED, old, now))
            removed.append(identity)
        elif old.cleared_since is None:
            keep(old, replace(remuted(old), cleared_since=now), persist=True)
        else:
            result[identity] = remuted(old)

    for cond in current.values():
        _advance(None, cond, mutes(cond.all_labels), rules=rules, now=now, keep=keep, events=events)

    return Transition(result, new_failures, events, changed, removed, failures_changed)


def _advance(
    old: Alert | None,
    cond: Condition,
    muted: tuple[str, ...],
    *,
    rules: Rules,
    now: datetime,
    keep: _Keep,
    events: list[AlertEvent],
) -> None:
    """The condition holds this cycle: start pending, fire, escalate, repeat or carry on."""
    if old is None:
        alert = Alert(
            alertname=cond.alertname,
            source=cond.source,
            tenant=cond.tenant,
            sync_id=cond.sync_id,
            severity=cond.severity,
            status=None,
            labels=cond.all_labels,
            annotations=cond.annotations,
            active_since=now,
            muted_by=muted,
        )
    else:
        alert = replace(
            old,
            severity=cond.severity,
            labels=cond.all_labels,
            annotations=cond.annotations,
            cleared_since=None,
            muted_by=muted,
        )
    persist = old is None or old.cleared_since is not None or old.severity != cond.severity

    if not alert.firing:
        if _seconds(now, alert.active_since) >= rules.for_:
            alert = replace(alert, status=AlertStatus.FIRING, fired_at=now)
            if not muted:
                alert = replace(alert, last_notified_at=now)
                events.append(AlertEvent(EventKind.FIRING, alert, now))
            persist = True
        keep(old, alert, persist=persist)
        return

    assert old is not None
    last = alert.last_notified_at
    if muted:
        pass  # fires on silently; nothing notified, so no notification clock moves
    elif last is None:
        # Fired (or escalated) while muted and never notified: the mute ended, announce it.
        alert = replace(alert, last_notified_at=now)
        events.append(AlertEvent(EventKind.FIRING, alert, now))
        persist = True
    elif old.severity != cond.severity:
        alert = replace(alert, last_notified_at=now)
        events.append(AlertEvent(EventKind.CHANGED, alert, now))
    elif _seconds(now, last) >= rules.repeat_interval:
        alert = replace(alert, last_notified_at=now)
        events.append(AlertEvent(EventKind.REPEAT, alert, now))
        persist = True
    keep(old, alert, persist=persist)


class _Keep(Protocol):
    def __call__(self, old: Alert | None, new: Alert, *, persist: bool) -> None: ...
