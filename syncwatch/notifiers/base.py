"""What a notifier receives (a Batch) and how it fails (DeliveryError); nothing else."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import unquote, urlsplit

import httpx
import orjson

from syncwatch.models import Severity
from syncwatch.sources.base import parse_retry_after


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


class Notifier(Protocol):
    """Small by design: bookkeeping, retries and backoff live in dispatch."""

    name: str

    async def send(self, batch: Batch) -> None:
        """Deliver the batch, or raise DeliveryError."""
        ...


DELIVERY_ID_HEADER = "X-Syncwatch-Delivery-Id"


class _Named(Protocol):
    @property
    def name(self) -> str: ...


C = TypeVar("C", bound=_Named)


class HttpNotifier(Generic[C]):
    """What HTTP notifiers share: their config entry, the shared client, a clock."""

    def __init__(
        self, config: C, client: httpx.AsyncClient, clock: Callable[[], float] = time.time
    ) -> None:
        self.name = config.name
        self.config = config
        self.client = client
        self.clock = clock


def rfc3339(value: datetime | None) -> str:
    """Alertmanager's time format; an unset endsAt is Go's zero time, as Alertmanager sends."""
    if value is None:
        return "0001-01-01T00:00:00Z"
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def split_userinfo(url: str) -> tuple[str, httpx.BasicAuth | None]:
    """`http://user:pass@host/` → (`http://host/`, basic auth): the aiohttp transport refuses
    credentials inside the URL, and a bare URL is safe to name in logs."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    bare = parts._replace(netloc=netloc).geturl()
    return bare, httpx.BasicAuth(unquote(parts.username), unquote(parts.password or ""))


async def post(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    what: str,
    clock: Callable[[], float] = time.time,
) -> httpx.Response:
    """POST and map the outcome to DeliveryError; `what` names the target (never a secret URL)."""
    target, auth = split_userinfo(url)
    try:
        response = await client.post(
            target,
            content=body,
            headers={"Content-Type": "application/json", **headers},
            auth=auth or httpx.USE_CLIENT_DEFAULT,
        )
    except httpx.TransportError as exc:
        if isinstance(exc, httpx.TimeoutException) and _really_a_timeout(exc):
            raise DeliveryError(
                f"{what}: timed out ({type(exc).__name__})", retryable=True
            ) from None
        raise DeliveryError(f"{what}: connection failed ({_why(exc)})", retryable=True) from None
    status = response.status_code
    if 200 <= status < 300:
        return response
    retry_after = parse_retry_after(response.headers.get("Retry-After"), clock())
    # Receivers' error pages often echo the request path, and a Slack or webhook URL's path
    # is its secret.
    detail = _scrub(response.text[: 200 + len(url)], url)[:200].strip().replace("\n", " ")
    retryable = status in (408, 429) or status >= 500
    raise DeliveryError(
        f"{what}: HTTP {status}" + (f" {detail!r}" if detail else ""),
        retryable=retryable,
        retry_after=retry_after if retryable else None,
        status_code=status,
    )


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and its causes, outermost first (bounded: chains can loop)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(seen) < 16 and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _really_a_timeout(exc: httpx.TimeoutException) -> bool:
    # httpx-aiohttp maps every aiohttp connection error (refused, reset…) to ConnectTimeout;
    # the original exception, kept as the cause, tells them apart.
    causes = _chain(exc)[1:]
    return not causes or any(
        isinstance(c, TimeoutError) or "Timeout" in type(c).__name__ for c in causes
    )


_OS_ERRORS = {
    ConnectionRefusedError: "connection refused",
    ConnectionResetError: "connection reset",
    ConnectionAbortedError: "connection aborted",
}


def _why(exc: httpx.TransportError) -> str:
    """A short cause for a failed connection, without the URL (it may hold a secret)."""
    chain = _chain(exc)
    for cause in chain:
        for kind, words in _OS_ERRORS.items():
            if isinstance(cause, kind):
                return words
    for cause in reversed(chain):
        if isinstance(cause, OSError) and cause.strerror:
            return f"{type(cause).__name__}: {cause.strerror}"
    return type(chain[-1]).__name__


def _scrub(text: str, url: str) -> str:
    """`text` without the URL's path, query or password (the parts that carry tokens)."""
    parts = urlsplit(url)
    secrets = {url, parts.path, parts.query, parts.password or ""}
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) > 1:  # never blank out "/" everywhere
            text = text.replace(secret, "[redacted]")
    return text
