"""Console: one human line per alert event on stdout (the demo uses it)."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import TextIO

from syncwatch.config import ConsoleNotifier as ConsoleConfig
from syncwatch.notifiers.base import AlertPayload, Batch, EventKind, rfc3339

_WORDS = {
    EventKind.FIRING: "FIRING",
    EventKind.CHANGED: "CHANGED",
    EventKind.REPEAT: "REPEAT",
    EventKind.RESOLVED: "RESOLVED",
    EventKind.ACTIVE: "ACTIVE",
}


def console_line(alert: AlertPayload, at: datetime, test: bool = False) -> str:
    labels = alert.labels
    where = "/".join(
        x for x in (labels.get("source"), labels.get("tenant"), labels.get("sync_id")) if x
    )
    when = rfc3339(at)
    summary = alert.annotations.get("summary", "")
    if alert.event is EventKind.RESOLVED:
        # Annotations are the last ones seen while firing, as Alertmanager keeps them.
        summary = f"was: {summary}"
    prefix = "[TEST] " if test else ""
    return (
        f"{when} {prefix}{_WORDS[alert.event]:<8} {alert.severity:<8} {alert.alertname} "
        f"{where}  {summary}"
    )


class ConsoleNotifier:
    def __init__(self, config: ConsoleConfig, stream: TextIO | None = None) -> None:
        self.name = config.name
        self.stream = stream

    async def send(self, batch: Batch) -> None:
        stream = self.stream or sys.stdout
        for alert in batch.alerts:
            print(console_line(alert, batch.created_at, batch.test), file=stream)
        stream.flush()
