"""Pure routing: a cycle's alert events → one batch per notifier that has something to say.

Each alert remembers, per notifier, the severity that notifier was told it fires at
(`Alert.told`). Routing compares that with the truth: a receiver hears of a firing,
routed, unmuted alert it was not told about (a mute ended, it was added by a reload), and
a resolve reaches exactly the receivers that were told it fired, muted or not.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from syncwatch.config import NotifierConfig
from syncwatch.globs import glob_match
from syncwatch.lifecycle import Alert, AlertEvent, Identity, Transition
from syncwatch.outbox import AlertPayload, AlertStatus, Batch, EventKind, NotificationReason


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


def _reason(events: Sequence[AlertEvent], still_told: int, was_told: int) -> NotificationReason:
    if events and all(e.resolved for e in events):
        return (
            NotificationReason.ALL_RESOLVED if not still_told else NotificationReason.SOME_RESOLVED
        )
    if any(e.resolved for e in events):
        return NotificationReason.SOME_RESOLVED
    if any(e.kind in (EventKind.FIRING, EventKind.CHANGED) for e in events):
        return NotificationReason.FIRST if not was_told else NotificationReason.NEW_ALERTS
    return NotificationReason.REPEAT


def told_before(config: NotifierConfig, before: Alert | None) -> str | None:
    """The severity `config` was told `before` fires at, or None if it was not told."""
    if before is None:
        return None
    if before.told is not None:
        return before.told.get(config.name)
    # Stored before silences existed: every notifier it routed to was told.
    fired = before.firing and not before.muted_by and routes(config, before)
    return str(before.severity) if fired else None


@dataclass(frozen=True, slots=True)
class Routing:
    """A cycle's batches, and what each alert's notifiers have been told once they go."""

    batches: list[Batch]
    told: dict[Identity, dict[str, str]]


@dataclass(slots=True)
class _Heard:
    """What one notifier hears this cycle, and what it knows after."""

    events: list[AlertEvent]
    active: list[Alert]  # firing, unmuted, nothing new: re-sent to Alertmanager
    told: dict[Identity, str]  # after this cycle: alert → the severity it was told
    was_told: int  # how many alerts it knew of before this cycle


def _hear(
    config: NotifierConfig,
    transition: Transition,
    previous: Mapping[Identity, Alert],
    now: datetime,
) -> _Heard:
    """The events this notifier hears about, in one pass over the alerts.

    A muted alert's events are not heard. A resolve is heard by the notifiers told the
    alert fired, whatever routes now. An alert that no longer routes here (its severity or
    labels changed) while this notifier was told it fires is resolved for this notifier:
    otherwise a `min_severity = "critical"` receiver would keep a de-escalated alert open
    forever. A firing, routed, unmuted alert this notifier was not told of (or told at
    another severity) is announced.
    """
    events = []
    mentioned: set[Identity] = set()
    was_told = 0
    for e in transition.events:
        identity = e.alert.identity
        before = previous.get(identity)
        told = told_before(config, before)
        if e.resolved:
            was_told += told is not None
            if told is not None:
                events.append(e)
                mentioned.add(identity)
        elif routes(config, e.alert):
            if not e.alert.muted_by:
                fresh = told is None and e.kind is EventKind.REPEAT
                events.append(replace(e, kind=EventKind.FIRING) if fresh else e)
                mentioned.add(identity)
        elif told is not None and before is not None:
            events.append(AlertEvent(EventKind.RESOLVED, before, e.at))
            mentioned.add(identity)
    active = []
    after: dict[Identity, str] = {}
    name = config.name
    for identity, a in transition.alerts.items():
        before = previous.get(identity)
        # told_before, inlined: this loop runs for every alert and notifier each cycle.
        if before is not None and before.told is not None:
            told = before.told.get(name)
        else:
            told = told_before(config, before)
        if told is not None:
            was_told += 1
            after[identity] = told
        if identity in mentioned or not a.firing:
            continue
        if not routes(config, a):
            if told is not None:
                # Without an event this cycle (a reload narrowed it): resolved here.
                events.append(AlertEvent(EventKind.RESOLVED, before or a, now))
        elif a.muted_by:
            continue
        elif told != a.severity:
            kind = EventKind.FIRING if told is None else EventKind.CHANGED
            events.append(AlertEvent(kind, a, now))
        else:
            active.append(a)
    return _Heard(events, active, after, was_told)


def plan(
    transition: Transition,
    previous: Mapping[Identity, Alert],
    notifiers: Sequence[NotifierConfig],
    *,
    send_resolved: bool,
    external_url: str,
    now: datetime,
    new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
) -> Routing:
    """One batch per notifier with something to say this cycle, and the told map after it."""
    batches = []
    told: dict[Identity, dict[str, str]] = {identity: {} for identity in transition.alerts}
    for config in notifiers:
        able = config.capabilities
        heard = _hear(config, transition, previous, now)
        after = heard.told
        for e in heard.events:
            if e.resolved:
                after.pop(e.alert.identity, None)  # told, or opted out of resolves
        # Alertmanager must hear about resolution even when humans opted out of it.
        events = [
            e for e in heard.events if send_resolved or able.always_resolves or not e.resolved
        ]
        payloads = [_payload(e.alert, e.kind, e.at, external_url) for e in events]
        for e in events:
            if not e.resolved:
                after[e.alert.identity] = e.alert.severity
        if able.resends_active:
            # Re-sent every cycle, the way Prometheus keeps Alertmanager's endsAt fresh; a
            # muted alert is not (Alertmanager resolves it, as for a silence of its own).
            payloads.extend(_payload(a, EventKind.ACTIVE, now, external_url) for a in heard.active)
        for identity, severity in after.items():
            told[identity][config.name] = severity
        if not payloads:
            continue
        batches.append(
            Batch(
                delivery_id=new_id(),
                notifier=config.name,
                created_at=now,
                reason=_reason(events, len(after), heard.was_told),
                alerts=tuple(payloads),
                external_url=external_url,
            )
        )
    return Routing(batches, told)


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
    return plan(
        transition,
        previous,
        notifiers,
        send_resolved=send_resolved,
        external_url=external_url,
        now=now,
        new_id=new_id,
    ).batches
