"""What a Paragon sync means: its status, its metrics, its `check` columns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from syncwatch.config import ParagonConfig, format_duration
from syncwatch.evaluate import (
    Evaluation,
    SyncFacts,
    SyncState,
    age_text,
    seconds_between,
    state_for,
)
from syncwatch.exposition import Family, escape, lines
from syncwatch.models import AlertName, Condition, ParagonStatus, ParagonSync, Severity, Source

PARAGON_STATUSES = [s.value for s in ParagonStatus]


@dataclass(frozen=True, slots=True)
class ParagonRules:
    disabled_severity: Severity | None
    initializing_grace: float
    idle_stale_after: float | None

    @classmethod
    def from_config(cls, config: ParagonConfig) -> ParagonRules:
        severity = (
            None if config.disabled_severity == "none" else Severity(config.disabled_severity)
        )
        return cls(severity, config.initializing_grace, config.idle_stale_after)

    def evaluate(self, sync: ParagonSync, now: datetime) -> Evaluation:
        return evaluate_paragon(sync, self, now)

    def describe(self, e: Evaluation) -> str:
        if e.state is SyncState.IGNORED:
            return "now ignored by an override"
        return f"now {_paragon(e).status}"

    def families(self, evaluations: Sequence[Evaluation]) -> list[Family]:
        return paragon_families(evaluations)

    def facts(self, e: Evaluation, now: datetime) -> SyncFacts:
        sync = _paragon(e)
        last = sync.last_synced_at
        lag = None if last is None else max(0.0, seconds_between(now, last))
        return SyncFacts(f"{sync.integration} {sync.pipeline}", last, lag)

    def check_row(self, e: Evaluation) -> dict[str, Any]:
        sync = _paragon(e)
        return {
            "integration": sync.integration,
            "pipeline": sync.pipeline,
            "status": sync.status,
            "reason": sync.reason,
        }

    def check_detail(self, e: Evaluation) -> tuple[str, str]:
        sync = _paragon(e)
        return sync.status, sync.reason or ""


def _paragon(e: Evaluation) -> ParagonSync:
    # evaluate_listings hands these rules only Paragon's records.
    return cast(ParagonSync, e.sync)


def _paragon_condition(
    sync: ParagonSync,
    alertname: AlertName,
    severity: Severity,
    summary: str,
    description: str,
) -> Condition:
    annotations = {"summary": summary, "description": description, "status": sync.status}
    if sync.reason:
        annotations["reason"] = sync.reason
    return Condition(
        alertname=alertname,
        severity=severity,
        source=Source.PARAGON,
        tenant=sync.user_id,
        sync_id=sync.id,
        labels={"integration": sync.integration, "pipeline": sync.pipeline},
        annotations=annotations,
    )


def evaluate_paragon(sync: ParagonSync, rules: ParagonRules, now: datetime) -> Evaluation:
    """SyncErrored / SyncDisabled / SyncStuckInitializing / SyncIdleStale for one Paragon sync."""
    what = f"Paragon {sync.integration} {sync.pipeline} sync {sync.id} of user {sync.user_id}"
    # PRODUCT §3: statuses match case-insensitively, whoever built the ParagonSync.
    status = sync.status.strip().upper()
    if status == ParagonStatus.ERRORED:
        condition = _paragon_condition(
            sync,
            AlertName.SYNC_ERRORED,
            Severity.CRITICAL,
            f"{what} is ERRORED: {sync.reason or 'no reason given'}",
            "Paragon suspended this sync after an error; it will not resume by itself. "
            "Check the Connected User's credential and Paragon's webhook events.",
        )
        return Evaluation(sync, SyncState.CRITICAL, condition)
    if status == ParagonStatus.DISABLED:
        if rules.disabled_severity is None:
            return Evaluation(sync, SyncState.DISABLED)
        condition = _paragon_condition(
            sync,
            AlertName.SYNC_DISABLED,
            rules.disabled_severity,
            f"{what} is DISABLED",
            "The sync was paused with Paragon's Disable a Sync endpoint; "
            "data is not flowing until it is re-enabled.",
        )
        return Evaluation(sync, state_for(rules.disabled_severity), condition)
    if status == ParagonStatus.INITIALIZING:
        if sync.date_created is not None:
            age = seconds_between(now, sync.date_created)
            if age > rules.initializing_grace:
                condition = _paragon_condition(
                    sync,
                    AlertName.SYNC_STUCK_INITIALIZING,
                    Severity.WARNING,
                    f"{what} has been INITIALIZING for {age_text(age)}",
                    f"Created {sync.date_created.isoformat()}; its first run has not "
                    f"started within the {format_duration(rules.initializing_grace)} grace.",
                )
                return Evaluation(sync, SyncState.WARNING, condition)
        return Evaluation(sync, SyncState.OK)
    if status == ParagonStatus.IDLE:
        since = sync.last_synced_at or sync.date_created
        if rules.idle_stale_after is not None and since is not None:
            age = seconds_between(now, since)
            if age > rules.idle_stale_after:
                condition = _paragon_condition(
                    sync,
                    AlertName.SYNC_IDLE_STALE,
                    Severity.WARNING,
                    f"{what} is IDLE and last synced {age_text(age)} ago",
                    f"summary.lastSyncedAt is "
                    f"{sync.last_synced_at.isoformat() if sync.last_synced_at else 'unset'}; "
                    f"expected a completed sync within "
                    f"{format_duration(rules.idle_stale_after)}.",
                )
                return Evaluation(sync, SyncState.WARNING, condition)
        return Evaluation(sync, SyncState.OK)
    if status == ParagonStatus.ACTIVE:
        return Evaluation(sync, SyncState.OK)
    return Evaluation(sync, SyncState.UNKNOWN)


def paragon_families(evaluations: Sequence[Evaluation]) -> list[Family]:
    """The syncwatch_paragon_sync_* families of one snapshot."""
    syncs = [_paragon(e) for e in evaluations]
    status: list[str] = []
    info: list[str] = []
    for s in syncs:
        integration, pipeline = escape(s.integration), escape(s.pipeline)
        sync, user = escape(s.id), escape(s.user_id)
        before = (
            f'syncwatch_paragon_sync_status{{integration="{integration}",'
            f'pipeline="{pipeline}",status="'
        )
        after = f'",sync_id="{sync}",user_id="{user}"}} '
        status.extend(
            f"{before}{known}{after}{'1.0' if s.status == known else '0.0'}\n"
            for known in PARAGON_STATUSES
        )
        if s.status not in PARAGON_STATUSES:
            # An unknown upstream status is carried as its own value, never dropped.
            status.append(f"{before}{escape(s.status)}{after}1.0\n")
        info.append(
            "syncwatch_paragon_sync_info"
            f'{{configuration_name="{escape(s.configuration_name or "")}",'
            f'credential_id="{escape(s.credential_id or "")}",integration="{integration}",'
            f'pipeline="{pipeline}",sync_id="{sync}",user_id="{user}"}} 1.0\n'
        )
    return [
        Family(
            "syncwatch_paragon_sync_status",
            "1 for the sync's current status, 0 for the others (a state set).",
            "gauge",
            lines(status),
        ),
        Family(
            "syncwatch_paragon_sync", "Descriptive labels of a Paragon sync.", "info", lines(info)
        ),
    ]
