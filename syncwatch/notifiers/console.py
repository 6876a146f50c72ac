"""Console: one human line per alert event on stdout (the demo uses it)."""

from __future__ import annotations

import sys
from collections import Counter
from datetime import UTC, datetime
from typing import Literal, TextIO

from syncwatch.config import NotifierConfig
from syncwatch.models import Severity
from syncwatch.notifiers.base import Kind
from syncwatch.outbox import AlertPayload, Batch, EventKind


class ConsoleConfig(NotifierConfig):
    type: Literal["console"]


_WORDS = {
    EventKind.FIRING: "FIRING",
    EventKind.CHANGED: "CHANGED",
    EventKind.REPEAT: "REPEAT",
    EventKind.RESOLVED: "RESOLVED",
    EventKind.ACTIVE: "ACTIVE",
}


def console_line(
    alert: AlertPayload, at: datetime, test: bool = False, previous: Severity | None = None
) -> str:
    """`time EVENT severity alertname text`; `previous`: the severity shown before a change."""
    word, severity = _WORDS[alert.event], str(alert.severity)
    if alert.event is EventKind.CHANGED and previous is not None:
        word = "ESCALATED" if alert.severity.rank > previous.rank else "DE-ESCALATED"
        severity = f"{previous} → {alert.severity}"
    labels, notes = alert.labels, alert.annotations
    where = "/".join(x for x in (labels.get("tenant"), labels.get("sync_id")) if x)
    summary = notes.get("summary", "")
    if alert.event is EventKind.RESOLVED:
        # Annotations are the last ones seen while firing (as Alertmanager keeps them);
        # `resolution` says what the sync looks like now.
        name = f" {labels['name']!r}" if labels.get("name") else ""
        now, ratio = notes.get("resolution"), notes.get("ratio")
        was = f" (was {float(ratio):.1f}x)" if now and ratio else ""
        text = f"{where}{name}: {now}{was}" if now else f"{where}: was: {summary}"
    else:
        # The summary names the sync already; the ids are repeated only when it does not.
        sync_id = labels.get("sync_id", "")
        text = summary if sync_id and sync_id in summary else f"{where}  {summary}".strip()
    when = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    prefix = "[TEST] " if test else ""
    return f"{when} {prefix}{word:<9} {severity:<8} {alert.alertname} {text}"


class ConsoleNotifier:
    def __init__(self, config: ConsoleConfig, stream: TextIO | None = None) -> None:
        self.name = config.name
        self.capabilities = config.capabilities
        self.stream = stream
        self.counts: Counter[str] = Counter()  # printed lines by word (FIRING, ESCALATED…)
        self._shown: dict[str, Severity] = {}  # fingerprint → severity last printed

    @classmethod
    def build(cls, config: ConsoleConfig, _client: object, _context: object) -> ConsoleNotifier:
        """The registry's uniform factory (the console needs neither client nor clock)."""
        return cls(config)

    async def send(self, batch: Batch) -> None:
        stream = self.stream or sys.stdout
        for alert in batch.alerts:
            line = console_line(
                alert, batch.created_at, batch.test, self._shown.get(alert.fingerprint)
            )
            if alert.event is EventKind.RESOLVED:
                self._shown.pop(alert.fingerprint, None)
            elif not batch.test:
                self._shown[alert.fingerprint] = alert.severity
            self.counts[line.split()[1 + batch.test]] += 1
            print(line, file=stream)
        stream.flush()


KIND = Kind(ConsoleConfig, ConsoleNotifier.build)
