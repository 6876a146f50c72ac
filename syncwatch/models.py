"""Plain frozen data that flows from sources through evaluation to alerts."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar


class Source(enum.StrEnum):
    TIMBAL = "timbal"
    PARAGON = "paragon"


class Severity(enum.StrEnum):
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """Order for comparisons: critical outranks warning."""
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.WARNING: 1, Severity.CRITICAL: 2}


class ParagonStatus(enum.StrEnum):
    INITIALIZING = "INITIALIZING"
    ACTIVE = "ACTIVE"
    IDLE = "IDLE"
    DISABLED = "DISABLED"
    ERRORED = "ERRORED"


class AlertName(enum.StrEnum):
    SYNC_STALE = "SyncStale"
    SYNC_NEVER_SUCCEEDED = "SyncNeverSucceeded"
    SYNC_DISABLED = "SyncDisabled"
    SYNC_ERRORED = "SyncErrored"
    SYNC_STUCK_INITIALIZING = "SyncStuckInitializing"
    SYNC_IDLE_STALE = "SyncIdleStale"
    SOURCE_UNREACHABLE = "SourceUnreachable"


@dataclass(frozen=True, slots=True)
class TimbalSync:
    """One Timbal connector sync, as listed by `GET /orgs/{org_id}/connectors/syncs`."""

    source: ClassVar[Source] = Source.TIMBAL
    org_id: str
    id: str
    connector_id: str
    name: str | None
    source_kind: str
    source_table: str
    dest_table: str
    interval_secs: int
    enabled: bool
    seconds_since_success: int | None
    last_success_at: datetime | None
    last_run_at: datetime | None
    last_state: str | None
    created_at: datetime
    updated_at: datetime | None  # carried from upstream; nothing relies on it

    @property
    def tenant(self) -> str:
        return self.org_id


@dataclass(frozen=True, slots=True)
class ParagonSync:
    """One Paragon managed sync of a Connected User, as listed by `GET /api/syncs`."""

    source: ClassVar[Source] = Source.PARAGON
    user_id: str
    id: str
    integration: str
    pipeline: str
    # Upper-cased upstream value; an unknown status is carried as-is, never rejected.
    status: str
    reason: str | None = None
    configuration_name: str | None = None
    credential_id: str | None = None
    date_created: datetime | None = None
    date_updated: datetime | None = None
    # From Get Sync's `summary.lastSyncedAt`, fetched only when idle_stale_after is set.
    last_synced_at: datetime | None = None

    @property
    def tenant(self) -> str:
        return self.user_id


@dataclass(frozen=True, slots=True)
class Condition:
    """An alert condition that holds now; the lifecycle turns these into alerts."""

    alertname: AlertName
    severity: Severity
    source: Source
    tenant: str
    sync_id: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def identity(self) -> tuple[str, str, str, str]:
        """Alert identity: a severity change on the same identity is the same alert."""
        return (self.alertname, self.source, self.tenant, self.sync_id)

    @property
    def all_labels(self) -> dict[str, str]:
        """The full label set as sent to receivers."""
        return {
            "alertname": self.alertname,
            "severity": self.severity,
            "source": self.source,
            "tenant": self.tenant,
            "sync_id": self.sync_id,
            **self.labels,
        }


# --- one tenant's listing, and why it failed ---------------------------------------------


class Reason(enum.StrEnum):
    """Why a tenant's listing failed: the `reason` label of SourceUnreachable and metrics."""

    TIMEOUT = "timeout"
    CONNECT = "connect_error"
    TLS = "tls"
    HTTP_3XX = "http_3xx"
    HTTP_401 = "http_401"
    HTTP_403 = "http_403"
    HTTP_404 = "http_404"
    HTTP_429 = "http_429"
    HTTP_4XX = "http_4xx"
    HTTP_5XX = "http_5xx"
    INVALID_RESPONSE = "invalid_response"
    BODY_TOO_LARGE = "body_too_large"
    SCHEMA_MISMATCH = "schema_mismatch"
    INTERNAL = "internal_error"


_HINTS = {
    Reason.TIMEOUT: "the upstream did not answer within daemon.request_timeout",
    Reason.CONNECT: "check base_url and network reachability (DNS, firewall, proxy)",
    Reason.TLS: "certificate verification failed; set daemon.ca_bundle for a private CA",
    Reason.HTTP_3XX: "redirects are not followed; set base_url to the API's own address",
    Reason.HTTP_404: "check base_url and the tenant id",
    Reason.HTTP_429: "rate limited; lower daemon.concurrency or raise daemon.poll_interval",
    Reason.HTTP_4XX: "the upstream rejected the request",
    Reason.HTTP_5XX: "the upstream is failing; nothing to fix on our side if it persists briefly",
    Reason.INVALID_RESPONSE: "the body is not JSON (a proxy error page or a truncated body?)",
    Reason.BODY_TOO_LARGE: "raise daemon.max_body_size if this listing is genuinely that big",
    Reason.SCHEMA_MISMATCH: "valid JSON but not the documented listing; check base_url",
    Reason.INTERNAL: "an unexpected error in syncwatch (a bug): please report the log line",
}

RETRYABLE = frozenset({Reason.TIMEOUT, Reason.CONNECT, Reason.HTTP_429, Reason.HTTP_5XX})


class SourceError(Exception):
    """A tenant's listing failed; the message names source, tenant, status and a hint."""

    def __init__(
        self,
        source: Source,
        tenant: str,
        reason: Reason,
        detail: str,
        *,
        status_code: int | None = None,
        retry_after: float | None = None,
        hint: str | None = None,
        date: str | None = None,
    ) -> None:
        self.source = source
        self.tenant = tenant
        self.reason = reason
        self.status_code = status_code
        self.retry_after = retry_after
        self.date = date  # the answer's `Date` header: the upstream's clock, when it answered
        self.hint = hint or _HINTS.get(reason, "")
        message = f"{source} {tenant}: {detail}"
        super().__init__(f"{message} ({self.hint})" if self.hint else message)

    @property
    def retryable(self) -> bool:
        return self.reason in RETRYABLE


@dataclass(frozen=True, slots=True)
class Listing:
    """One tenant's syncs from one poll; `error` set means the listing failed as a whole.

    `syncs` may hold more than one record of a sync id (an upstream duplicate, counted in
    `duplicates`): evaluation keeps the worst. `invalid_ids` are the ids of records that
    failed validation: listed, so not deleted, but unreadable this cycle.
    """

    source: Source
    tenant: str
    syncs: Sequence[TimbalSync | ParagonSync] = ()
    invalid_records: int = 0
    error: SourceError | None = None
    duration: float = 0.0
    invalid_ids: frozenset[str] = frozenset()
    duplicates: int = 0
    duplicate_ids: tuple[str, ...] = ()
    unrequested: int = 0  # records for a connector/credential not asked for: dropped
    # The upstream's clock (its `Date` header) and ours minus it, when the header was there.
    upstream_now: datetime | None = None
    clock_skew: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None
