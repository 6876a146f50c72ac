"""What the lifecycle hands to delivery: alert payloads, batches, and the notifier contract.

Core types: lifecycle, state, dispatch and every notifier speak these; none of them needs
a notifier module to do so.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import orjson

from syncwatch.models import Severity


class AlertStatus(enum.StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


class EventKind(enum.StrEnum):
    """Why an alert is in a batch."""

    FIRING = "firing"  # newly firing
    CHANGED = "changed"  # severity changed while firing
    REPEAT = "repeat"  # still firing after repeat_interval
    RESOLVED = "resolved"
    ACTIVE = "active"  # still firing, re-sent every cycle (Alertmanager only)


class NotificationReason(enum.StrEnum):
    """Alertmanager webhook v4 `notification_reason` values."""

    FIRST = "first notification"
    NEW_ALERTS = "new alerts added"
    SOME_RESOLVED = "some alerts resolved"
    ALL_RESOLVED = "all alerts resolved"
    REPEAT = "repeat interval elapsed"


@dataclass(frozen=True, slots=True)
class AlertPayload:
    """One alert as notified: the Alertmanager alert shape plus why it is included."""

    status: AlertStatus
    event: EventKind
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    ends_at: datetime | None
    fingerprint: str
    generator_url: str = ""

    @property
    def severity(self) -> Severity:
        return Severity(self.labels.get("severity", Severity.WARNING))

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "")


@dataclass(frozen=True, slots=True)
class Batch:
    """One message for one notifier: every alert event routed to it in one cycle."""

    delivery_id: str  # stable across retries: X-Syncwatch-Delivery-Id
    notifier: str
    created_at: datetime
    reason: NotificationReason
    alerts: tuple[AlertPayload, ...]
    external_url: str = ""
    test: bool = False  # `syncwatch test-notify`: receivers must see it is a test
    group_labels: dict[str, str] = field(default_factory=dict)

    @property
    def firing(self) -> list[AlertPayload]:
        return [a for a in self.alerts if a.status is AlertStatus.FIRING]

    @property
    def resolved(self) -> list[AlertPayload]:
        return [a for a in self.alerts if a.status is AlertStatus.RESOLVED]

    def to_json(self) -> bytes:
        """The outbox row payload."""
        return orjson.dumps(
            {
                "delivery_id": self.delivery_id,
                "notifier": self.notifier,
                "created_at": self.created_at,
                "reason": self.reason,
                "external_url": self.external_url,
                "test": self.test,
                "group_labels": self.group_labels,
                "alerts": [
                    {
                        "status": a.status,
                        "event": a.event,
                        "labels": a.labels,
                        "annotations": a.annotations,
                        "starts_at": a.starts_at,
                        "ends_at": a.ends_at,
                        "fingerprint": a.fingerprint,
                        "generator_url": a.generator_url,
                    }
                    for a in self.alerts
                ],
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> Batch:
        data: dict[str, Any] = orjson.loads(raw)
        return cls(
            delivery_id=data["delivery_id"],
            notifier=data["notifier"],
            created_at=datetime.fromisoformat(data["created_at"]),
            reason=NotificationReason(data["reason"]),
            external_url=data["external_url"],
            test=data["test"],
            group_labels=data.get("group_labels", {}),
            alerts=tuple(
                AlertPayload(
                    status=AlertStatus(a["status"]),
                    event=EventKind(a["event"]),
                    labels=a["labels"],
                    annotations=a["annotations"],
                    starts_at=datetime.fromisoformat(a["starts_at"]),
                    ends_at=None if a["ends_at"] is None else datetime.fromisoformat(a["ends_at"]),
                    fingerprint=a["fingerprint"],
                    generator_url=a["generator_url"],
                )
                for a in data["alerts"]
            ),
        )


class DeliveryError(Exception):
    """A failed delivery; dispatch decides about retries from `retryable`/`retry_after`."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.status_code = status_code


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What routing and delivery must know of a notifier kind, as data (one per kind)."""

    always_resolves: bool = False  # hears every resolve, even with send_resolved = false
    resends_active: bool = False  # every firing alert goes out again every cycle
    min_interval: float = 0.0  # seconds between two messages to one notifier


class Notifier(Protocol):
    """Small by design: bookkeeping, retries and backoff live in dispatch."""

    name: str
    capabilities: Capabilities

    async def send(self, batch: Batch) -> None:
        """Deliver the batch, or raise DeliveryError."""
        ...


def worst_first(a: AlertPayload) -> tuple[int, int, str, str, str]:
    """Sort key of the messages that list alerts: firing before resolved, critical first."""
    return (
        0 if a.status is AlertStatus.FIRING else 1,
        -a.severity.rank,
        a.alertname,
        a.labels.get("tenant", ""),
        a.labels.get("sync_id", ""),
    )
