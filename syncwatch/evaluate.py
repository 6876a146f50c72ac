"""Pure evaluation: (syncs, thresholds, now) → per-sync state and alert conditions."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from syncwatch.config import ParagonConfig, Thresholds, TimbalConfig, format_duration, glob_match
from syncwatch.models import (
    AlertName,
    Condition,
    Listing,
    ParagonStatus,
    ParagonSync,
    Severity,
    Source,
    TimbalSync,
)


class SyncState(enum.StrEnum):
    """What `check` shows per sync; `warning`/`critical` mean an alert condition holds."""

    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"
    DISABLED = "disabled"  # disabled and not alerted on
    IGNORED = "ignored"  # an override says `ignore = true`
    UNKNOWN = "unknown"  # an upstream status we do not know: exported, not alerted on


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The verdict on one sync: its state and, when one holds, the alert condition."""

    sync: TimbalSync | ParagonSync
    state: SyncState
    condition: Condition | None = None
    ratio: float | None = None


def state_text(e: Evaluation) -> str:
    """What a sync looks like now, for a resolved alert: `now 0.3x its 5m interval`."""
    sync = e.sync
    if e.state is SyncState.IGNORED:
        return "now ignored by an override"
    if isinstance(sync, TimbalSync):
        if e.ratio is None:
            return "now disabled" if not sync.enabled else f"now {e.state}"
        text = f"now {ratio_text(e.ratio)} its {format_duration(sync.interval_secs)} interval"
        if sync.seconds_since_success is not None:
            text += f", last succeeded {age_text(sync.seconds_since_success)} ago"
        return text
    return f"now {sync.status}"


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


ThresholdResolver = Callable[[str, str, str, str | None], Thresholds | None]


def effective_thresholds(
    timbal: TimbalConfig,
) -> ThresholdResolver:
    """A resolver (org_id, connector_id, sync_id, name) → thresholds, or None if ignored.

    A sync without a name (null upstream) matches a `name` glob as the empty string, so
    only `*`-like patterns select it.
    """
    resolved = [(o, None if o.ignore else o.apply(timbal.thresholds)) for o in timbal.overrides]

    def resolve(
        org_id: str, connector_id: str, sync_id: str, name: str | None
    ) -> Thresholds | None:
        for override, thresholds in resolved:
            m = override.match
            if (
                glob_match(org_id, m.org_id)
                and glob_match(connector_id, m.connector_id)
                and glob_match(sync_id, m.sync_id)
                and glob_match(name or "", m.name)
            ):
                return thresholds
        return timbal.thresholds

    return resolve


def age_text(seconds: float) -> str:
    """An age for people: its two largest units, `14d3h`, `1h12m`, `9m47s`, `45s`."""
    rest = max(0, int(seconds))
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count or parts:
            parts.append(f"{count}{unit}")
    kept = [p for p in parts[:2] if not p.startswith("0")]
    return "".join(kept) or "0s"


def ratio_text(ratio: float) -> str:
    """`4.9x`, and `4078x` once a decimal would only add noise."""
    return f"{ratio:.1f}x" if ratio < 100 else f"{ratio:.0f}x"


def _state_for(severity: Severity) -> SyncState:
    return SyncState.CRITICAL if severity is Severity.CRITICAL else SyncState.WARNING


def _age(now: datetime, then: datetime) -> float:
    return (now - then).total_seconds()


def _timbal_condition(
    sync: TimbalSync,
    *,
    alertname: AlertName,
    severity: Severity,
    summary: str,
    description: str,
    extra: dict[str, str],
) -> Condition:
    return Condition(
        alertname=alertname,
        severity=severity,
        source=Source.TIMBAL,
        tenant=sync.org_id,
        sync_id=sync.id,
        labels={"connector_id": sync.connector_id, "name": sync.name or ""},
        annotations={"summary": summary, "description": description, **extra},
    )


def _timbal_label(sync: TimbalSync) -> str:
    named = f"{sync.name!r} " if sync.name else ""
    return f"Timbal sync {named}({sync.org_id}/{sync.id})"


def evaluate_timbal(sync: TimbalSync, thresholds: Thresholds | None, now: datetime) -> Evaluation:
    """SyncStale / SyncNeverSucceeded / SyncDisabled for one Timbal sync."""
    if thresholds is None:
        return Evaluation(sync, SyncState.IGNORED)
    if not sync.enabled:
        if not thresholds.alert_on_disabled:
            return Evaluation(sync, SyncState.DISABLED)
        condition = _timbal_condition(
            sync,
            alertname=AlertName.SYNC_DISABLED,
            severity=Severity.WARNING,
            summary=f"{_timbal_label(sync)} is disabled",
            description=f"Connector {sync.connector_id} sync {sync.id} has enabled=false "
            "upstream; it will not run until re-enabled.",
            extra={"interval_secs": str(sync.interval_secs), "status": "disabled"},
        )
        return Evaluation(sync, SyncState.WARNING, condition)

    if sync.seconds_since_success is None:
        alertname = AlertName.SYNC_NEVER_SUCCEEDED
        lag = max(0.0, _age(now, sync.created_at))
    else:
        alertname = AlertName.SYNC_STALE
        # int64 without a minimum: a negative lag is the upstream's clock skew, i.e. fresh.
        lag = max(0.0, float(sync.seconds_since_success))
    ratio = lag / sync.interval_secs

    severity: Severity | None = None
    if lag >= thresholds.min_stale_seconds:
        if ratio >= thresholds.critical_ratio:
            severity = Severity.CRITICAL
        elif ratio >= thresholds.warn_ratio:
            severity = Severity.WARNING
    if severity is None:
        return Evaluation(sync, SyncState.OK, ratio=ratio)

    interval = format_duration(sync.interval_secs)
    lagged = age_text(lag)
    if alertname is AlertName.SYNC_STALE:
        summary = (
            f"{_timbal_label(sync)} last succeeded {lagged} ago, "
            f"{ratio_text(ratio)} its {interval} interval"
        )
        description = (
            f"Connector {sync.connector_id} ({sync.source_kind} {sync.source_table} -> "
            f"{sync.dest_table}) has not completed a run for {lagged}; "
            f"last state {sync.last_state or 'unknown'}. Threshold: {severity} at "
            f"{_threshold(thresholds, severity):g}x the interval."
        )
    else:
        summary = (
            f"{_timbal_label(sync)} has never succeeded, created {lagged} ago, "
            f"{ratio_text(ratio)} its {interval} interval"
        )
        description = (
            f"Connector {sync.connector_id} ({sync.source_kind} {sync.source_table} -> "
            f"{sync.dest_table}) was created {sync.created_at.isoformat()} and has no "
            f"successful run; last state {sync.last_state or 'unknown'}."
        )
    extra = {
        "seconds_since_success": ""
        if sync.seconds_since_success is None
        else str(sync.seconds_since_success),
        "interval_secs": str(sync.interval_secs),
        "ratio": f"{ratio:.2f}",
    }
    if sync.last_state:
        extra["status"] = sync.last_state
    condition = _timbal_condition(
        sync,
        alertname=alertname,
        severity=severity,
        summary=summary,
        description=description,
        extra=extra,
    )
    return Evaluation(sync, _state_for(severity), condition, ratio)


def _threshold(thresholds: Thresholds, severity: Severity) -> float:
    return thresholds.critical_ratio if severity is Severity.CRITICAL else thresholds.warn_ratio


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
        return Evaluation(sync, _state_for(rules.disabled_severity), condition)
    if status == ParagonStatus.INITIALIZING:
        if sync.date_created is not None:
            age = _age(now, sync.date_created)
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
            age = _age(now, since)
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


def source_unreachable(source: Source, tenant: str, reason: str, message: str) -> Condition:
    """The condition raised when a tenant's listing keeps failing."""
    return Condition(
        alertname=AlertName.SOURCE_UNREACHABLE,
        severity=Severity.CRITICAL,
        source=source,
        tenant=tenant,
        sync_id="",
        labels={"reason": reason},
        annotations={
            "summary": f"{source.capitalize()} listing for {tenant} is failing: {reason}",
            "description": message,
            "reason": reason,
        },
    )


@dataclass(frozen=True, slots=True)
class Report:
    """One poll, evaluated: every sync's verdict, every failed tenant, every condition."""

    evaluations: list[Evaluation]
    failures: list[Listing]
    listings: list[Listing]

    @property
    def conditions(self) -> list[Condition]:
        """Sync conditions, then a SourceUnreachable per failed tenant (no threshold here)."""
        found = [e.condition for e in self.evaluations if e.condition is not None]
        for listing in self.failures:
            assert listing.error is not None
            found.append(
                source_unreachable(
                    listing.source, listing.tenant, listing.error.reason, str(listing.error)
                )
            )
        return found


def evaluate_listings(
    listings: Iterable[Listing],
    resolve: ThresholdResolver | None,
    rules: ParagonRules | None,
    now: datetime,
) -> Report:
    """Evaluate every sync of every healthy listing; failed listings are reported as such.

    Ages from upstream timestamps are judged by the upstream's clock (the listing's `Date`
    header) when it sent one, so a step of our own clock raises no alert; `now` otherwise.
    """
    evaluations: list[Evaluation] = []
    failures: list[Listing] = []
    listings = list(listings)
    for listing in listings:
        if listing.error is not None:
            failures.append(listing)
            continue
        moment = listing.upstream_now or now
        found = [_evaluate(sync, resolve, rules, moment) for sync in listing.syncs]
        evaluations.extend(_worst_per_sync(found) if listing.duplicates else found)
    return Report(evaluations, failures, listings)


def _evaluate(
    sync: TimbalSync | ParagonSync,
    resolve: ThresholdResolver | None,
    rules: ParagonRules | None,
    now: datetime,
) -> Evaluation:
    if isinstance(sync, TimbalSync):
        assert resolve is not None
        return evaluate_timbal(
            sync, resolve(sync.org_id, sync.connector_id, sync.id, sync.name or ""), now
        )
    assert rules is not None
    return evaluate_paragon(sync, rules, now)


def _badness(evaluation: Evaluation) -> tuple[int, float]:
    severity = 0 if evaluation.condition is None else evaluation.condition.severity.rank
    return (severity, -1.0 if evaluation.ratio is None else evaluation.ratio)


def _worst_per_sync(evaluations: list[Evaluation]) -> list[Evaluation]:
    """One verdict per sync id of a listing with duplicates: the worst, in first-seen order."""
    worst: dict[str, Evaluation] = {}
    for evaluation in evaluations:
        kept = worst.get(evaluation.sync.id)
        if kept is None or _badness(evaluation) > _badness(kept):
            worst[evaluation.sync.id] = evaluation
    return list(worst.values())
