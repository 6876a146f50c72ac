"""An alert as a row of the state database's `alerts` table, and back."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from syncwatch.lifecycle import Alert
from syncwatch.models import Severity
from syncwatch.outbox import AlertStatus
from syncwatch.sqldb import upsert

COLUMNS = (
    "alertname, source, tenant, sync_id, severity, status, labels, annotations,"
    " active_since, fired_at, last_notified_at, cleared_since, told"
)
SELECT = f"SELECT {COLUMNS} FROM alerts"  # noqa: S608 - a constant
KEY = ("alertname", "source", "tenant", "sync_id")
UPSERT = upsert("alerts", tuple(c.strip() for c in COLUMNS.split(",")), KEY)


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def alert_row(a: Alert) -> tuple[object, ...]:
    return (
        a.alertname,
        a.source,
        a.tenant,
        a.sync_id,
        str(a.severity),
        None if a.status is None else str(a.status),
        orjson.dumps(a.labels),
        orjson.dumps(a.annotations),
        a.active_since.timestamp(),
        _ts(a.fired_at),
        _ts(a.last_notified_at),
        _ts(a.cleared_since),
        # NULL (a row from before silences): not known which notifiers were told.
        None if a.told is None else orjson.dumps(dict(a.told)),
    )


def alert_of(row: Sequence[Any]) -> Alert:
    return Alert(
        alertname=row[0],
        source=row[1],
        tenant=row[2],
        sync_id=row[3],
        severity=Severity(row[4]),
        status=None if row[5] is None else AlertStatus(row[5]),
        labels=orjson.loads(row[6]),
        annotations=orjson.loads(row[7]),
        active_since=datetime.fromtimestamp(row[8], UTC),
        fired_at=_dt(row[9]),
        last_notified_at=_dt(row[10]),
        cleared_since=_dt(row[11]),
        told=None if row[12] is None else orjson.loads(row[12]),
    )
