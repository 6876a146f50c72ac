"""Pure routing: a cycle's alert events → one batch per notifier that has something to say."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from syncwatch.config import NotifierConfig, glob_match
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
        able = config.capabilities
        # Alertmanager must hear about resolution even when humans opted out of it.
        events = [
            e
            for e in _routed_events(config, transition.events, previous)
            if send_resolved or able.always_resolves or not e.resolved
        ]
        payloads = [_payload(e.alert, e.kind, e.at, external_url) for e in events]
        firing_now = [a for a in transition.alerts.values() if a.firing and routes(config, a)]
        if able.resends_active:
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
