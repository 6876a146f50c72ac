"""What a Timbal sync means: staleness against its interval, its metrics, its `check` columns."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from syncwatch.config import Thresholds, TimbalConfig, format_duration
from syncwatch.evaluate import (
    Evaluation,
    Limits,
    SyncFacts,
    SyncState,
    age_text,
    ratio_text,
    seconds_between,
    state_for,
)
from syncwatch.exposition import Family, escape, lines, value
from syncwatch.globs import glob_match
from syncwatch.models import AlertName, Condition, Severity, Source, TimbalSync

ThresholdResolver = Callable[[str, str, str, str | None], Thresholds | None]
# The same lookup with where the thresholds came from, for the status page.
LimitsResolver = Callable[[str, str, str, str | None], tuple[Thresholds | None, Limits | None]]


def _limits(thresholds: Thresholds, origin: str) -> Limits:
    return Limits(thresholds.warn_ratio, thresholds.critical_ratio, origin)


def resolve_limits(timbal: TimbalConfig) -> LimitsResolver:
    """A resolver (org_id, connector_id, sync_id, name) → (thresholds or None if ignored, limits).

    The first override whose globs all match decides; a sync without a name (null upstream)
    matches a `name` glob as the empty string, so only `*`-like patterns select it.
    """
    default = (timbal.thresholds, _limits(timbal.thresholds, "default"))
    resolved: list[tuple[Any, tuple[Thresholds | None, Limits | None]]] = []
    for i, o in enumerate(timbal.overrides):
        thresholds = None if o.ignore else o.apply(timbal.thresholds)
        limits = None if thresholds is None else _limits(thresholds, f"overrides[{i}]")
        resolved.append((o.match, (thresholds, limits)))

    def resolve(
        org_id: str, connector_id: str, sync_id: str, name: str | None
    ) -> tuple[Thresholds | None, Limits | None]:
        for m, found in resolved:
            if (
                glob_match(org_id, m.org_id)
                and glob_match(connector_id, m.connector_id)
                and glob_match(sync_id, m.sync_id)
                and glob_match(name or "", m.name)
            ):
                return found
        return default

    return resolve


def effective_thresholds(timbal: TimbalConfig) -> ThresholdResolver:
    """A resolver (org_id, connector_id, sync_id, name) → thresholds, or None if ignored."""
    resolve = resolve_limits(timbal)
    return lambda org_id, connector_id, sync_id, name: resolve(org_id, connector_id, sync_id, name)[
        0
    ]


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


def evaluate_timbal(
    sync: TimbalSync, thresholds: Thresholds | None, now: datetime, limits: Limits | None = None
) -> Evaluation:
    """SyncStale / SyncNeverSucceeded / SyncDisabled for one Timbal sync.

    `limits` (the lines the ratio is judged against, and their origin) is carried on the
    evaluation for the status page; it does not change the verdict.
    """
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
        lag = max(0.0, seconds_between(now, sync.created_at))
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
        return Evaluation(sync, SyncState.OK, ratio=ratio, limits=limits)

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
    return Evaluation(sync, state_for(severity), condition, ratio, limits)


def _threshold(thresholds: Thresholds, severity: Severity) -> float:
    return thresholds.critical_ratio if severity is Severity.CRITICAL else thresholds.warn_ratio


def _timbal(e: Evaluation) -> TimbalSync:
    # evaluate_listings hands these rules only Timbal's records.
    return cast(TimbalSync, e.sync)


def timbal_state_text(e: Evaluation) -> str:
    """What a Timbal sync looks like now: `now 0.3x its 5m interval, last succeeded 1m ago`."""
    sync = _timbal(e)
    if e.state is SyncState.IGNORED:
        return "now ignored by an override"
    if e.ratio is None:
        return "now disabled" if not sync.enabled else f"now {e.state}"
    text = f"now {ratio_text(e.ratio)} its {format_duration(sync.interval_secs)} interval"
    if sync.seconds_since_success is not None:
        text += f", last succeeded {age_text(sync.seconds_since_success)} ago"
    return text


def timbal_families(evaluations: Sequence[Evaluation]) -> list[Family]:
    """The syncwatch_timbal_sync_* families of one snapshot."""
    sss, interval, ratio, enabled, last, info = ([] for _ in range(6))
    for e in evaluations:
        s = _timbal(e)
        connector, name = escape(s.connector_id), escape(s.name or "")
        org, sync = escape(s.org_id), escape(s.id)
        labels = f'{{connector_id="{connector}",name="{name}",org_id="{org}",sync_id="{sync}"}} '
        interval.append(f"syncwatch_timbal_sync_interval_seconds{labels}{value(s.interval_secs)}\n")
        enabled.append(f"syncwatch_timbal_sync_enabled{labels}{'1.0' if s.enabled else '0.0'}\n")
        if s.seconds_since_success is not None:
            sss.append(
                f"syncwatch_timbal_sync_seconds_since_success{labels}"
                f"{value(s.seconds_since_success)}\n"
            )
        shown = e.ratio
        if shown is None and s.seconds_since_success is not None:
            shown = max(0, s.seconds_since_success) / s.interval_secs
        if shown is not None:
            ratio.append(f"syncwatch_timbal_sync_staleness_ratio{labels}{value(shown)}\n")
        if s.last_success_at is not None:
            last.append(
                f"syncwatch_timbal_sync_last_success_timestamp_seconds{labels}"
                f"{value(s.last_success_at.timestamp())}\n"
            )
        info.append(
            f'syncwatch_timbal_sync_info{{connector_id="{connector}",'
            f'dest_table="{escape(s.dest_table)}",last_state="{escape(s.last_state or "")}",'
            f'name="{name}",org_id="{org}",source_kind="{escape(s.source_kind)}",'
            f'source_table="{escape(s.source_table)}",sync_id="{sync}"}} 1.0\n'
        )
    return [
        Family(
            "syncwatch_timbal_sync_seconds_since_success",
            "Seconds since the sync last succeeded, as reported by Timbal.",
            "gauge",
            lines(sss),
        ),
        Family(
            "syncwatch_timbal_sync_interval_seconds",
            "The sync's schedule interval.",
            "gauge",
            lines(interval),
        ),
        Family(
            "syncwatch_timbal_sync_staleness_ratio",
            "seconds_since_success / interval_secs (age / interval if never succeeded).",
            "gauge",
            lines(ratio),
        ),
        Family(
            "syncwatch_timbal_sync_enabled",
            "1 if the sync is enabled upstream.",
            "gauge",
            lines(enabled),
        ),
        Family(
            "syncwatch_timbal_sync_last_success_timestamp_seconds",
            "When the sync last succeeded (unix seconds); absent if it never has.",
            "gauge",
            lines(last),
        ),
        Family(
            "syncwatch_timbal_sync", "Descriptive labels of a Timbal sync.", "info", lines(info)
        ),
    ]


@dataclass(frozen=True, slots=True)
class TimbalRules:
    """Timbal's SourceRules: each sync judged by the thresholds its overrides resolve to."""

    resolve: LimitsResolver

    @classmethod
    def from_config(cls, config: TimbalConfig) -> TimbalRules:
        return cls(resolve_limits(config))

    def evaluate(self, sync: TimbalSync, now: datetime) -> Evaluation:
        thresholds, limits = self.resolve(sync.org_id, sync.connector_id, sync.id, sync.name)
        return evaluate_timbal(sync, thresholds, now, limits)

    def describe(self, e: Evaluation) -> str:
        return timbal_state_text(e)

    def families(self, evaluations: Sequence[Evaluation]) -> list[Family]:
        return timbal_families(evaluations)

    def facts(self, e: Evaluation, _now: datetime) -> SyncFacts:
        sync = _timbal(e)
        lag = sync.seconds_since_success
        return SyncFacts(
            sync.name or sync.id, sync.last_success_at, None if lag is None else float(lag)
        )

    def check_row(self, e: Evaluation) -> dict[str, Any]:
        sync = _timbal(e)
        return {
            "connector_id": sync.connector_id,
            "name": sync.name,
            "enabled": sync.enabled,
            "last_state": sync.last_state,
            "seconds_since_success": sync.seconds_since_success,
            "interval_secs": sync.interval_secs,
            "ratio": None if e.ratio is None else round(e.ratio, 3),
        }

    def check_detail(self, e: Evaluation) -> tuple[str, str]:
        sync = _timbal(e)
        lag = (
            "never"
            if sync.seconds_since_success is None
            else format_duration(sync.seconds_since_success)
        )
        ratio = "" if e.ratio is None else f" ({e.ratio:.1f}x)"
        note = "" if sync.enabled else "enabled=false"
        if e.condition is not None:
            note = str(e.condition.alertname)
        return f"{lag}/{format_duration(sync.interval_secs)}{ratio}", note
