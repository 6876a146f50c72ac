"""`syncwatch check`: one poll + evaluation, rendered as a table or JSON, Nagios exit codes."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from syncwatch.config import format_duration
from syncwatch.config.load import Config
from syncwatch.evaluate import (
    Evaluation,
    ParagonRules,
    Report,
    SyncState,
    effective_thresholds,
    evaluate_listings,
)
from syncwatch.http import make_transport
from syncwatch.models import Condition, ParagonSync, Severity, TimbalSync
from syncwatch.sources import Poller


class NagiosStatus(enum.IntEnum):
    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


async def poll_and_evaluate(
    config: Config,
    now: datetime | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Report:
    """One poll of every tenant, evaluated against the configured thresholds."""
    if transport is None:
        transport = make_transport(
            max_connections=config.daemon.concurrency, ca_bundle=config.daemon.ca_bundle
        )
    async with transport:
        listings = await Poller(config, transport, clock=lambda: now or datetime.now(UTC)).poll()
    return evaluate_listings(
        listings,
        effective_thresholds(config.timbal) if config.timbal else None,
        ParagonRules.from_config(config.paragon) if config.paragon else None,
        now or datetime.now(UTC),
    )


def nagios_status(report: Report) -> NagiosStatus:
    """CRITICAL > UNKNOWN (a tenant unreachable) > WARNING > OK, as Icinga orders states."""
    severities = {e.condition.severity for e in report.evaluations if e.condition is not None}
    if Severity.CRITICAL in severities:
        return NagiosStatus.CRITICAL
    if report.failures:
        return NagiosStatus.UNKNOWN
    if Severity.WARNING in severities:
        return NagiosStatus.WARNING
    return NagiosStatus.OK


def _sync_row(e: Evaluation) -> dict[str, Any]:
    sync = e.sync
    row: dict[str, Any]
    if isinstance(sync, TimbalSync):
        row = {
            "source": "timbal",
            "tenant": sync.org_id,
            "sync_id": sync.id,
            "connector_id": sync.connector_id,
            "name": sync.name,
            "enabled": sync.enabled,
            "last_state": sync.last_state,
            "seconds_since_success": sync.seconds_since_success,
            "interval_secs": sync.interval_secs,
            "ratio": None if e.ratio is None else round(e.ratio, 3),
        }
    else:
        row = {
            "source": "paragon",
            "tenant": sync.user_id,
            "sync_id": sync.id,
            "integration": sync.integration,
            "pipeline": sync.pipeline,
            "status": sync.status,
            "reason": sync.reason,
        }
    row["state"] = str(e.state)
    row["alertname"] = None if e.condition is None else str(e.condition.alertname)
    return row


def _alert_row(c: Condition) -> dict[str, Any]:
    return {"labels": c.all_labels, "annotations": c.annotations, "severity": str(c.severity)}


def _key(e: Evaluation) -> tuple[str, str, str]:
    sync = e.sync
    tenant = sync.org_id if isinstance(sync, TimbalSync) else sync.user_id
    source = "timbal" if isinstance(sync, TimbalSync) else "paragon"
    return (source, tenant, sync.id)


def render_json(report: Report) -> str:
    status = nagios_status(report)
    doc = {
        "status": status.name,
        "exit_code": int(status),
        "sources": [
            {
                "source": str(listing.source),
                "tenant": listing.tenant,
                "up": listing.ok,
                "reason": None if listing.error is None else str(listing.error.reason),
                "error": None if listing.error is None else str(listing.error),
                "syncs": len(listing.syncs),
                "invalid_records": listing.invalid_records,
            }
            for listing in report.listings
        ],
        "syncs": [_sync_row(e) for e in sorted(report.evaluations, key=_key)],
        "alerts": [_alert_row(c) for c in _worst_first(report.conditions)],
    }
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode()


def _worst_first(conditions: list[Condition]) -> list[Condition]:
    return sorted(conditions, key=lambda c: (-c.severity.rank, c.source, c.tenant, c.sync_id))


def _detail(e: Evaluation) -> tuple[str, str]:
    """(lag/interval or status, reason) columns for one sync."""
    sync = e.sync
    if isinstance(sync, ParagonSync):
        return sync.status, sync.reason or ""
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


def plural(count: int, noun: str) -> str:
    """`1 alert`, `2 alerts`: every noun here takes a plain -s."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def render_table(report: Report) -> str:
    rows = [("SOURCE", "TENANT", "SYNC", "STATE", "LAG/INTERVAL|STATUS", "REASON")]
    for e in sorted(report.evaluations, key=_key):
        source, tenant, sync_id = _key(e)
        name = getattr(e.sync, "name", None)
        shown = f"{name} ({sync_id})" if name else sync_id
        rows.append((source, tenant, shown, e.state.upper(), *_detail(e)))
    for listing in report.failures:
        assert listing.error is not None
        rows.append(
            (
                str(listing.source),
                listing.tenant,
                "-",
                "UNREACHABLE",
                str(listing.error.reason),
                str(listing.error),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1] for r in rows
    ]
    counts: dict[SyncState, int] = {}
    for e in report.evaluations:
        counts[e.state] = counts.get(e.state, 0) + 1
    status = nagios_status(report)
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no syncs"
    invalid = sum(listing.invalid_records for listing in report.listings)
    lines.append("")
    lines.append(
        f"{status.name}: {plural(len(report.evaluations), 'sync')} ({summary}); "
        f"{plural(len(report.conditions), 'alert')}; "
        f"{plural(len(report.failures), 'tenant')} unreachable"
        + (f"; {plural(invalid, 'invalid record')} skipped" if invalid else "")
    )
    return "\n".join(line.rstrip() for line in lines)
