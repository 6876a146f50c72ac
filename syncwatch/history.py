"""History: what happened to each alert, pure. Entries, filters, cursors; no I/O.

An entry is one alert transition, one delivery attempt (one entry per alert in the
batch, so an alert's history shows the attempts that carried it) or one silence write.
`history_store` keeps them in SQLite; `history_api` serves them at `/api/v1/history`.
"""

from __future__ import annotations

import base64
import binascii
import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from syncwatch.failures import redact_urls
from syncwatch.lifecycle import Alert, Identity, Transition
from syncwatch.outbox import AlertPayload, EventKind
from syncwatch.silences import Silence

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_ERROR = 500  # characters of a delivery error kept: enough to act on, never a payload
_LABELS = ("alertname", "source", "tenant", "sync_id")


class Kind(enum.StrEnum):
    TRANSITION = "transition"
    DELIVERY = "delivery"
    SILENCE = "silence"


@dataclass(frozen=True, slots=True)
class Entry:
    """One recorded thing; `detail` is small JSON-able data (severity, notifier, …)."""

    at: float  # unix seconds
    kind: Kind
    event: str  # pending/firing/changed/repeat/resolved/inactive; sent/failed/dropped; …
    alertname: str = ""
    source: str = ""
    tenant: str = ""
    sync_id: str = ""
    detail: Mapping[str, object] = field(default_factory=dict)


class HistorySink(Protocol):
    """Where the engine, the dispatcher and the silence store hand their entries."""

    def record(self, entries: Sequence[Entry]) -> None: ...

    def record_later(self, build: Callable[[], Sequence[Entry]]) -> None:
        """`build` runs on the writer: a storm's entries cost the cycle nothing to make."""


# --- transitions ----------------------------------------------------------------------


def _labelled(
    at: float, kind: Kind, event: str, labels: Mapping[str, str], detail: Mapping[str, object]
) -> Entry:
    alertname, source, tenant, sync_id = (labels.get(k, "") for k in _LABELS)
    return Entry(at, kind, event, alertname, source, tenant, sync_id, detail)


def _alert_entry(at: datetime, event: str, a: Alert) -> Entry:
    detail: dict[str, object] = {"severity": str(a.severity), "fingerprint": a.fingerprint}
    if a.muted_by:
        detail["mutedBy"] = list(a.muted_by)
    return Entry(at.timestamp(), Kind.TRANSITION, event, *a.identity, detail=detail)


def transition_entries(
    before: Mapping[Identity, Alert], result: Transition, now: datetime
) -> list[Entry]:
    """The cycle's transitions: its events, plus alerts that became or stopped pending."""
    out = [
        _alert_entry(now, "pending", a)
        for a in result.changed
        if a.status is None and a.identity not in before
    ]
    for identity in result.removed:
        old = before.get(identity)
        if old is not None and old.status is None:
            out.append(_alert_entry(now, "inactive", old))  # cleared before it fired
    out.extend(
        _alert_entry(e.at, str(e.kind), e.alert)
        for e in result.events
        if e.kind is not EventKind.ACTIVE  # a re-send to Alertmanager, not a transition
    )
    return out


# --- delivery attempts ----------------------------------------------------------------


class Outcome(enum.StrEnum):
    SENT = "sent"
    FAILED = "failed"
    DROPPED = "dropped"


@dataclass(frozen=True, slots=True)
class Attempt:
    """One delivery attempt of one outbox row, as the dispatcher saw it end."""

    at: datetime
    notifier: str
    delivery_id: str
    outcome: Outcome
    attempt: int
    alerts: Sequence[AlertPayload] = ()  # empty when the payload was never read
    status_code: int | None = None
    error: str = ""


def clean_error(text: str) -> str:
    """An error as stored: URLs cut to their host (webhook tokens live in paths), bounded."""
    text = redact_urls(text)
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 1] + "…"


def attempt_entries(attempt: Attempt) -> list[Entry]:
    detail: dict[str, object] = {
        "notifier": attempt.notifier,
        "deliveryId": attempt.delivery_id,
        "attempt": attempt.attempt,
    }
    if attempt.status_code is not None:
        detail["statusCode"] = attempt.status_code
    if attempt.error:
        detail["error"] = clean_error(attempt.error)
    at, event = attempt.at.timestamp(), str(attempt.outcome)
    if not attempt.alerts:
        return [Entry(at, Kind.DELIVERY, event, detail=detail)]
    return [
        _labelled(
            at,
            Kind.DELIVERY,
            event,
            a.labels,
            {**detail, "fingerprint": a.fingerprint, "alertEvent": str(a.event)},
        )
        for a in attempt.alerts
    ]


# --- silences -------------------------------------------------------------------------


def silence_entry(event: str, s: Silence, at: datetime) -> Entry:
    """`created`, `updated` or `expired`; labels from the silence's `=` matchers, if any."""
    exact = {m.name: m.value for m in s.matchers if m.is_equal and not m.is_regex}
    detail: dict[str, object] = {
        "silenceId": s.id,
        "createdBy": s.created_by,
        "comment": s.comment,
        "matchers": [str(m) for m in s.matchers],
        "startsAt": s.starts_at.isoformat(),
        "endsAt": s.ends_at.isoformat(),
    }
    if s.ack is not None:  # an acknowledgement of one alert: say which
        detail["ackOf"] = {"fingerprint": s.ack.fingerprint, "severity": s.ack.severity}
    return _labelled(at.timestamp(), Kind.SILENCE, event, exact, detail)


def ended_between(silences: Iterable[Silence], since: datetime, now: datetime) -> list[Silence]:
    """Silences whose end time passed in (since, now] by itself, not by DELETE (which
    sets updated_at = ends_at, and is recorded when it happens)."""
    return [s for s in silences if since < s.ends_at <= now and s.updated_at < s.ends_at]


# --- queries --------------------------------------------------------------------------


class BadQueryError(ValueError):
    """A query parameter that cannot be used; the message names it."""


@dataclass(frozen=True, slots=True)
class Query:
    tenant: str = ""
    sync_id: str = ""
    alertname: str = ""
    since: float | None = None  # at >= since
    until: float | None = None  # at < until
    limit: int = DEFAULT_LIMIT
    before: int | None = None  # the cursor: entries older than this one


def encode_cursor(entry_id: int) -> str:
    return base64.urlsafe_b64encode(f"h1:{entry_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    bad = BadQueryError("cursor: not a cursor from this endpoint's nextCursor")
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise bad from None
    version, _, number = text.partition(":")
    if version != "h1" or not number.isdigit():
        raise bad
    return int(number)


def _time(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise BadQueryError(f"{name}: not an RFC 3339 time or unix seconds: {text!r}") from None
    if parsed.tzinfo is None:
        raise BadQueryError(f"{name}: give a time zone (e.g. Z): {text!r}")
    return parsed.timestamp()


def parse_query(params: Mapping[str, str]) -> Query:
    """`tenant`, `sync_id`, `alertname`, `since`, `until`, `limit`, `cursor`; others refused."""
    known = {"tenant", "sync_id", "alertname", "since", "until", "limit", "cursor"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise BadQueryError(
            f"{unknown[0]}: unknown parameter; use one of {', '.join(sorted(known))}"
        )
    limit = DEFAULT_LIMIT
    if (raw := params.get("limit")) is not None:
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
            raise BadQueryError(f"limit: a whole number from 1 to {MAX_LIMIT}: {raw!r}")
        limit = int(raw)
    since = None if not params.get("since") else _time("since", params["since"])
    until = None if not params.get("until") else _time("until", params["until"])
    cursor = params.get("cursor")
    return Query(
        tenant=params.get("tenant", ""),
        sync_id=params.get("sync_id", ""),
        alertname=params.get("alertname", ""),
        since=since,
        until=until,
        limit=limit,
        before=None if not cursor else decode_cursor(cursor),
    )


def entry_json(e: Entry) -> dict[str, object]:
    labels = {
        k: v
        for k, v in zip(_LABELS, (e.alertname, e.source, e.tenant, e.sync_id), strict=True)
        if v
    }
    at = datetime.fromtimestamp(e.at, UTC).isoformat()
    return {"at": at, "type": str(e.kind), "event": e.event, "labels": labels, **e.detail}
