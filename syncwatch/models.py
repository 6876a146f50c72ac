"""Plain frozen data that flows from sources through evaluation to alerts."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


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


@dataclass(frozen=True, slots=True)
class ParagonSync:
    """One Paragon managed sync of a Connected User, as listed by `GET /api/syncs`."""

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
