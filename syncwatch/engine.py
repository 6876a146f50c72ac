"""One cycle's bookkeeping: evaluated report → lifecycle transition → outbox, atomically."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import structlog

from syncwatch.config import Config
from syncwatch.dispatch import route
from syncwatch.evaluate import Report
from syncwatch.lifecycle import Alert, Identity, Rules, TenantKey, TenantOutcome, transition
from syncwatch.notifiers.base import Batch
from syncwatch.state import StateStore

log = structlog.get_logger("syncwatch.engine")


@dataclass(frozen=True, slots=True)
class CycleResult:
    batches: list[Batch]
    rows_written: int


def outcomes_of(report: Report) -> list[TenantOutcome]:
    return [
        TenantOutcome(
            source=listing.source,
            tenant=listing.tenant,
            ok=listing.ok,
            sync_ids=frozenset(s.id for s in listing.syncs),
            reason="" if listing.error is None else str(listing.error.reason),
            message="" if listing.error is None else str(listing.error),
            invalid_ids=listing.invalid_ids,
        )
        for listing in report.listings
    ]


class Engine:
    """Holds the current alerts in memory and the durable copy in the store."""

    def __init__(
        self,
        config: Config,
        store: StateStore,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self.config = config
        self.store = store
        self._new_id = new_id
        self.alerts: dict[Identity, Alert]
        self.failures: dict[TenantKey, int]
        self.alerts, self.failures = store.load()

    def reconfigure(self, config: Config) -> None:
        self.config = config

    def apply(self, report: Report, now: datetime) -> CycleResult:
        """Advance the lifecycle and store transitions with their notifications in one go."""
        alerting = self.config.alerting
        result = transition(
            self.alerts,
            self.failures,
            conditions=[e.condition for e in report.evaluations if e.condition is not None],
            outcomes=outcomes_of(report),
            rules=Rules.from_config(alerting),
            now=now,
        )
        batches = route(
            result,
            self.alerts,
            self.config.notifiers,
            send_resolved=alerting.send_resolved,
            external_url=alerting.external_url,
            now=now,
            new_id=self._new_id,
        )
        rows = self.store.commit_cycle(result, batches)
        for event in result.events:
            a = event.alert
            log.info(
                "alert_transition",
                kind=str(event.kind),
                alertname=a.alertname,
                severity=str(a.severity),
                source=a.source,
                tenant=a.tenant,
                sync_id=a.sync_id,
                summary=a.annotations.get("summary", ""),
            )
        self.alerts, self.failures = result.alerts, result.failures
        return CycleResult(batches, rows)
