"""`syncwatch check`: one poll + evaluation, rendered as a table or JSON, Nagios exit codes."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from syncwatch.evaluate import Evaluation, Report, SyncState, evaluate_listings, source_unreachable
from syncwatch.http import make_transport
from syncwatch.models import Condition, Listing, Severity
from syncwatch.settings import Config
from syncwatch.silences import Muter
from syncwatch.sources import Poller
from syncwatch.sources.registry import rules_of


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
    return evaluate_listings(listings, rules_of(config), now or datetime.now(UTC))


Identity = tuple[str, str, str, str]
Muted = Mapping[Identity, tuple[str, ...]]


def muted_conditions(
    report: Report, muter: Muter | None = None, now: datetime | None = None
) -> dict[Identity, tuple[str, ...]]:
    """What mutes each muted condition of the report (silences, maintenance windows)."""
    if muter is None:
        return {}
    at = now or datetime.now(UTC)
    return {c.identity: by for c in report.conditions if (by := muter(c.all_labels, at))}


def _unreachable(listing: Listing) -> Condition:
    assert listing.error is not None
    return source_unreachable(
        listing.source, listing.tenant, listing.error.reason, str(listing.error)
    )


def nagios_status(report: Report, muted: Muted | None = None) -> NagiosStatus:
    """CRITICAL > UNKNOWN (a tenant unreachable) > WARNING > OK, as Icinga orders states.

    A suppressed (muted) alert is listed but not counted, as Alertmanager would not page.
    """
    muted = muted or {}
    severities = {
        e.condition.severity
        for e in report.evaluations
        if e.condition is not None and e.condition.identity not in muted
    }
    if Severity.CRITICAL in severities:
        return NagiosStatus.CRITICAL
    if any(_unreachable(listing).identity not in muted for listing in report.failures):
        return NagiosStatus.UNKNOWN
    if Severity.WARNING in severities:
        return NagiosStatus.WARNING
    return NagiosStatus.OK


def _sync_row(report: Report, e: Evaluation) -> dict[str, Any]:
    sync = e.sync
    return {
        "source": str(sync.source),
        "tenant": sync.tenant,
        "sync_id": sync.id,
        **report.rules[sync.source].check_row(e),
        "state": str(e.state),
        "alertname": None if e.condition is None else str(e.condition.alertname),
    }


def _alert_row(c: Condition, muted: Muted) -> dict[str, Any]:
    by = muted.get(c.identity, ())
    return {
        "labels": c.all_labels,
        "annotations": c.annotations,
        "severity": str(c.severity),
        # As Alertmanager's gettableAlert: `status.state` and `status.silencedBy`.
        "state": "suppressed" if by else "active",
        "silenced_by": list(by),
    }


def _key(e: Evaluation) -> tuple[str, str, str]:
    return (str(e.sync.source), e.sync.tenant, e.sync.id)


def render_json(report: Report, muted: Muted | None = None) -> str:
    muted = muted or {}
    status = nagios_status(report, muted)
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
        "syncs": [_sync_row(report, e) for e in sorted(report.evaluations, key=_key)],
        "alerts": [_alert_row(c, muted) for c in _worst_first(report.conditions)],
    }
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode()


def _worst_first(conditions: list[Condition]) -> list[Condition]:
    return sorted(conditions, key=lambda c: (-c.severity.rank, c.source, c.tenant, c.sync_id))


def plural(count: int, noun: str) -> str:
    """`1 alert`, `2 alerts`: every noun here takes a plain -s."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def render_table(report: Report, muted: Muted | None = None) -> str:
    muted = muted or {}

    def shown_state(state: str, condition: Condition | None) -> str:
        return f"{state} (SUPPRESSED)" if condition and condition.identity in muted else state

    rows = [("SOURCE", "TENANT", "SYNC", "STATE", "LAG/INTERVAL|STATUS", "REASON")]
    for e in sorted(report.evaluations, key=_key):
        source, tenant, sync_id = _key(e)
        name = getattr(e.sync, "name", None)
        shown = f"{name} ({sync_id})" if name else sync_id
        state = shown_state(e.state.upper(), e.condition)
        rows.append((source, tenant, shown, state, *report.rules[e.sync.source].check_detail(e)))
    for listing in report.failures:
        assert listing.error is not None
        rows.append(
            (
                str(listing.source),
                listing.tenant,
                "-",
                shown_state("UNREACHABLE", _unreachable(listing)),
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
    status = nagios_status(report, muted)
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no syncs"
    invalid = sum(listing.invalid_records for listing in report.listings)
    lines.append("")
    lines.append(
        f"{status.name}: {plural(len(report.evaluations), 'sync')} ({summary}); "
        f"{plural(len(report.conditions), 'alert')}"
        + (f" ({len(muted)} suppressed)" if muted else "")
        + "; "
        f"{plural(len(report.failures), 'tenant')} unreachable"
        + (f"; {plural(invalid, 'invalid record')} skipped" if invalid else "")
    )
    return "\n".join(line.rstrip() for line in lines)
