"""Prometheus metrics: custom Collectors render the latest cycle's snapshot.

Per-sync series come only from the snapshot, so a sync that is no longer listed has no
series at the next scrape; nothing reaches into prometheus_client's private state.

The fleet's part of the page (every per-sync, per-tenant and per-alert series: hundreds of
thousands for a large fleet) changes only when a cycle replaces the snapshot, so it is
rendered once per snapshot and format, and every other scrape reuses those bytes. The rest
(counters, histograms, outbox, process) is rendered fresh on each scrape.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from syncwatch import __version__
from syncwatch.evaluate import Evaluation, Report
from syncwatch.lifecycle import Alert
from syncwatch.models import ParagonStatus, ParagonSync, TimbalSync
from syncwatch.sources import Listing

PARAGON_STATUSES = [s.value for s in ParagonStatus]
OUTCOMES = ("sent", "failed", "dropped")
POLL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CYCLE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one scrape shows about syncs and alerts, replaced whole after each cycle."""

    evaluations: tuple[Evaluation, ...] = ()
    alerts: tuple[Alert, ...] = ()
    source_up: Mapping[tuple[str, str], bool] = field(default_factory=dict)
    last_success: Mapping[tuple[str, str], float] = field(default_factory=dict)
    last_cycle_timestamp: float | None = None


class Telemetry:
    """The daemon's metrics: the snapshot, plus counters and histograms that only grow."""

    def __init__(
        self,
        notifier_outcomes: Callable[[], Mapping[tuple[str, str], int]] = dict,
        outbox_pending: Callable[[], Mapping[str, int]] = dict,
        notifier_names: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        # `*_created` series double the counters' cardinality for no alerting value.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream
        self.registry = CollectorRegistry(auto_describe=True)
        self.snapshot = Snapshot()
        self.last_success: dict[tuple[str, str], float] = {}
        self.poll_duration = Histogram(
            "syncwatch_poll_duration_seconds",
            "Time to list one tenant's syncs, retries included.",
            ["source"],
            buckets=POLL_BUCKETS,
            registry=self.registry,
        )
        self.cycle_duration = Histogram(
            "syncwatch_cycle_duration_seconds",
            "Time for one cycle: poll every tenant, evaluate, store transitions.",
            buckets=CYCLE_BUCKETS,
            registry=self.registry,
        )
        self.poll_errors = Counter(
            "syncwatch_poll_errors",
            "Failed tenant listings, by failure reason.",
            ["source", "reason"],
            registry=self.registry,
        )
        self.invalid_records = Counter(
            "syncwatch_invalid_records",
            "Upstream records skipped because they break the API schema.",
            ["source"],
            registry=self.registry,
        )
        self.cycle_overruns = Counter(
            "syncwatch_cycle_overruns",
            "Cycles that took longer than poll_interval (the next one started at once).",
            registry=self.registry,
        )
        for source in ("timbal", "paragon"):
            self.invalid_records.labels(source)
        self.registry.register(
            DaemonCollector(self, notifier_outcomes, outbox_pending, notifier_names)
        )
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._fleet_lock = threading.Lock()  # one render per snapshot, however many scrapers
        self._fleet_pages: tuple[Snapshot, dict[str, bytes]] = (self.snapshot, {})

    def record(self, report: Report, alerts: Iterable[Alert], finished_at: float) -> None:
        """Fold one finished cycle in: counters grow, the snapshot is replaced."""
        up: dict[tuple[str, str], bool] = {}
        for listing in report.listings:
            self._record_listing(listing, finished_at)
            up[(str(listing.source), listing.tenant)] = listing.ok
        self.snapshot = Snapshot(
            evaluations=tuple(report.evaluations),
            alerts=tuple(alerts),
            source_up=up,
            last_success=dict(self.last_success),
            last_cycle_timestamp=finished_at,
        )

    def _record_listing(self, listing: Listing, finished_at: float) -> None:
        source = str(listing.source)
        self.poll_duration.labels(source).observe(listing.duration)
        if listing.invalid_records:
            self.invalid_records.labels(source).inc(listing.invalid_records)
        if listing.error is not None:
            self.poll_errors.labels(source, str(listing.error.reason)).inc()
        else:
            self.last_success[(source, listing.tenant)] = finished_at

    def render(self, accept: str) -> tuple[bytes, str]:
        """The exposition body and its content type (OpenMetrics when the scraper asks)."""
        encoder, content_type = choose_encoder(accept)
        own = encoder(self.registry)
        fleet = self._fleet_page(encoder, content_type)
        # An OpenMetrics page ends with one "# EOF": the fleet part's.
        return own.removesuffix(OPENMETRICS_EOF) + fleet, content_type

    def _fleet_page(
        self, encoder: Callable[[CollectorRegistry], bytes], content_type: str
    ) -> bytes:
        with self._fleet_lock:
            snapshot, pages = self._fleet_pages
            if snapshot is not self.snapshot:
                snapshot, pages = self.snapshot, {}
                self._fleet_pages = (snapshot, pages)
            if content_type not in pages:
                registry = CollectorRegistry(auto_describe=False)
                registry.register(FleetCollector(snapshot))
                pages[content_type] = encoder(registry)
            return pages[content_type]


OPENMETRICS_EOF = b"# EOF\n"


class FleetCollector(Collector):
    """Every per-sync, per-tenant and per-alert family of one snapshot."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def collect(self) -> Iterator[Metric]:
        snap = self.snap
        yield from _timbal_families(e for e in snap.evaluations if isinstance(e.sync, TimbalSync))
        yield from _paragon_families(
            e.sync for e in snap.evaluations if isinstance(e.sync, ParagonSync)
        )
        alert = GaugeMetricFamily(
            "syncwatch_alert",
            "Pending and firing alerts (1 per alert).",
            labels=["alertname", "severity", "source", "tenant", "sync_id", "state"],
        )
        for a in snap.alerts:
            alert.add_metric([a.alertname, a.severity, a.source, a.tenant, a.sync_id, a.state], 1)
        yield alert

        up = GaugeMetricFamily(
            "syncwatch_source_up",
            "1 if the tenant's last listing succeeded, else 0.",
            labels=["source", "tenant"],
        )
        for (source, tenant), ok in sorted(snap.source_up.items()):
            up.add_metric([source, tenant], 1 if ok else 0)
        yield up

        last = GaugeMetricFamily(
            "syncwatch_source_last_success_timestamp_seconds",
            "When the tenant's listing last succeeded (unix seconds).",
            labels=["source", "tenant"],
        )
        for key, ts in sorted(snap.last_success.items()):
            if key in snap.source_up:
                last.add_metric(list(key), ts)
        yield last


class DaemonCollector(Collector):
    """The daemon's own families that change between cycles: deliveries, outbox, build."""

    def __init__(
        self,
        telemetry: Telemetry,
        notifier_outcomes: Callable[[], Mapping[tuple[str, str], int]],
        outbox_pending: Callable[[], Mapping[str, int]],
        notifier_names: Callable[[], Iterable[str]],
    ) -> None:
        self.telemetry = telemetry
        self.notifier_outcomes = notifier_outcomes
        self.outbox_pending = outbox_pending
        self.notifier_names = notifier_names

    def collect(self) -> Iterator[Metric]:
        snap = self.telemetry.snapshot
        sent = CounterMetricFamily(
            "syncwatch_notifications",
            "Notification deliveries by outcome (failed attempts are retried).",
            labels=["notifier", "outcome"],
        )
        outcomes = self.notifier_outcomes()
        names = sorted({*self.notifier_names(), *(n for n, _ in outcomes)})
        for name in names:
            for outcome in OUTCOMES:
                sent.add_metric([name, outcome], outcomes.get((name, outcome), 0))
        yield sent

        pending = GaugeMetricFamily(
            "syncwatch_outbox_pending",
            "Notifications stored and not yet delivered.",
            labels=["notifier"],
        )
        counts = self.outbox_pending()
        for name in sorted({*names, *counts}):
            pending.add_metric([name], counts.get(name, 0))
        yield pending

        cycle = GaugeMetricFamily(
            "syncwatch_last_cycle_timestamp_seconds",
            "When the last complete cycle finished (unix seconds).",
        )
        if snap.last_cycle_timestamp is not None:
            cycle.add_metric([], snap.last_cycle_timestamp)
        yield cycle

        build = InfoMetricFamily("syncwatch_build", "syncwatch build information.")
        build.add_metric([], {"version": __version__})
        yield build


_TIMBAL_LABELS = ["org_id", "connector_id", "sync_id", "name"]


def _timbal_families(evaluations: Iterable[Evaluation]) -> Iterator[Metric]:
    sss = GaugeMetricFamily(
        "syncwatch_timbal_sync_seconds_since_success",
        "Seconds since the sync last succeeded, as reported by Timbal.",
        labels=_TIMBAL_LABELS,
    )
    interval = GaugeMetricFamily(
        "syncwatch_timbal_sync_interval_seconds",
        "The sync's schedule interval.",
        labels=_TIMBAL_LABELS,
    )
    ratio = GaugeMetricFamily(
        "syncwatch_timbal_sync_staleness_ratio",
        "seconds_since_success / interval_secs (age / interval if never succeeded).",
        labels=_TIMBAL_LABELS,
    )
    enabled = GaugeMetricFamily(
        "syncwatch_timbal_sync_enabled",
        "1 if the sync is enabled upstream.",
        labels=_TIMBAL_LABELS,
    )
    last = GaugeMetricFamily(
        "syncwatch_timbal_sync_last_success_timestamp_seconds",
        "When the sync last succeeded (unix seconds); absent if it never has.",
        labels=_TIMBAL_LABELS,
    )
    info = InfoMetricFamily(
        "syncwatch_timbal_sync", "Descriptive labels of a Timbal sync.", labels=_TIMBAL_LABELS
    )
    for e in evaluations:
        s = e.sync
        assert isinstance(s, TimbalSync)
        labels = [s.org_id, s.connector_id, s.id, s.name or ""]
        interval.add_metric(labels, s.interval_secs)
        enabled.add_metric(labels, 1 if s.enabled else 0)
        if s.seconds_since_success is not None:
            sss.add_metric(labels, s.seconds_since_success)
        value = e.ratio
        if value is None and s.seconds_since_success is not None:
            value = s.seconds_since_success / s.interval_secs
        if value is not None:
            ratio.add_metric(labels, value)
        if s.last_success_at is not None:
            last.add_metric(labels, s.last_success_at.timestamp())
        info.add_metric(
            labels,
            {
                "source_kind": s.source_kind,
                "source_table": s.source_table,
                "dest_table": s.dest_table,
                "last_state": s.last_state or "",
            },
        )
    yield from (sss, interval, ratio, enabled, last, info)


_PARAGON_LABELS = ["user_id", "sync_id", "integration", "pipeline"]


def _paragon_families(syncs: Iterable[ParagonSync]) -> Iterator[Metric]:
    status = GaugeMetricFamily(
        "syncwatch_paragon_sync_status",
        "1 for the sync's current status, 0 for the others (a state set).",
        labels=[*_PARAGON_LABELS, "status"],
    )
    info = InfoMetricFamily(
        "syncwatch_paragon_sync", "Descriptive labels of a Paragon sync.", labels=_PARAGON_LABELS
    )
    for s in syncs:
        labels = [s.user_id, s.id, s.integration, s.pipeline]
        for known in PARAGON_STATUSES:
            status.add_metric([*labels, known], 1 if s.status == known else 0)
        if s.status not in PARAGON_STATUSES:
            # An unknown upstream status is carried as its own value, never dropped.
            status.add_metric([*labels, s.status], 1)
        info.add_metric(
            labels,
            {
                "configuration_name": s.configuration_name or "",
                "credential_id": s.credential_id or "",
            },
        )
    yield from (status, info)
