"""Prometheus metrics: custom Collectors render the latest cycle's snapshot.

Per-sync series come only from the snapshot, so a sync that is no longer listed has no
series at the next scrape; nothing reaches into prometheus_client's private state.

The fleet's part of the page (every per-sync, per-tenant and per-alert series: hundreds of
thousands for a large fleet) changes only when a cycle replaces the snapshot, so it is
rendered once per snapshot and format, and every other scrape reuses those bytes. The rest
(counters, histograms, outbox, process) is rendered fresh on each scrape.

`metrics.per_sync_series` chooses which syncs get per-sync series (every one, only those
with an alert, or none); the per-tenant aggregates (syncs by state, worst staleness ratio,
invalid records) are exported whatever it says, so a fleet's cost to Prometheus can be
bounded by its tenants rather than its syncs.
"""

from __future__ import annotations

import math
import re
import threading
import time
import zlib
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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
from syncwatch.config import PerSyncSeries
from syncwatch.evaluate import Evaluation, Report, SourceRules
from syncwatch.exposition import Family, escape, lines, value
from syncwatch.lifecycle import Alert
from syncwatch.models import Listing, Source

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
    clock_skew: Mapping[tuple[str, str], float] = field(default_factory=dict)
    rules: Mapping[Source, SourceRules] = field(default_factory=dict)  # who writes its syncs
    # Records skipped as invalid in each tenant's last listing (only tenants with some).
    invalid_records: Mapping[tuple[str, str], int] = field(default_factory=dict)


class Telemetry:
    """The daemon's metrics: the snapshot, plus counters and histograms that only grow."""

    SCRAPED = 600.0  # s since a scrape asked for a form of the page: it will be asked again

    def __init__(
        self,
        notifier_outcomes: Callable[[], Mapping[tuple[str, str], int]] = dict,
        outbox_pending: Callable[[], Mapping[str, int]] = dict,
        notifier_names: Callable[[], Iterable[str]] = tuple,
        state_up: Callable[[], bool] = lambda: True,
        per_sync_series: PerSyncSeries = "all",
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # `*_created` series double the counters' cardinality for no alerting value.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream
        self.registry = CollectorRegistry(auto_describe=True)
        self.snapshot = Snapshot()
        # Which syncs get per-sync series; set again on reload, read by the next render.
        self.per_sync_series: PerSyncSeries = per_sync_series
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
        self.duplicate_records = Counter(
            "syncwatch_duplicate_records",
            "Upstream records repeating a sync id already listed (the worst one is evaluated).",
            ["source"],
            registry=self.registry,
        )
        self.unrequested_records = Counter(
            "syncwatch_unrequested_records",
            "Upstream records outside the connector or credential filter asked for: dropped.",
            ["source"],
            registry=self.registry,
        )
        self.cycle_overruns = Counter(
            "syncwatch_cycle_overruns",
            "Cycles that took longer than poll_interval (the next one started at once).",
            registry=self.registry,
        )
        for source in Source:
            for counter in (self.invalid_records, self.duplicate_records, self.unrequested_records):
                counter.labels(source)
        self.registry.register(
            DaemonCollector(self, notifier_outcomes, outbox_pending, notifier_names, state_up)
        )
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._fleet_lock = threading.Lock()  # one render per snapshot, however many scrapers
        self._fleet_page: tuple[Snapshot | None, FleetPage] = (None, FleetPage([]))
        self._fleet_mode = per_sync_series  # the mode _fleet_page was rendered in
        self._clock = clock
        # (openmetrics, gzip) → when a scraper last asked for the page in that form.
        self._asked: dict[tuple[bool, bool], float] = {}

    def record(self, report: Report, alerts: Iterable[Alert], finished_at: float) -> None:
        """Fold one finished cycle in: counters grow, the snapshot is replaced."""
        up: dict[tuple[str, str], bool] = {}
        skew: dict[tuple[str, str], float] = {}
        invalid: dict[tuple[str, str], int] = {}
        for listing in report.listings:
            self._record_listing(listing, finished_at)
            tenant = (str(listing.source), listing.tenant)
            up[tenant] = listing.ok
            if listing.clock_skew is not None:
                skew[tenant] = listing.clock_skew
            if listing.invalid_records:
                invalid[tenant] = listing.invalid_records
        with self._fleet_lock:
            # The previous cycle's page is not served again: free it now, not at the next scrape.
            self._fleet_page = (None, FleetPage([]))
        self.snapshot = Snapshot(
            evaluations=tuple(report.evaluations),
            alerts=tuple(alerts),
            source_up=up,
            last_success=dict(self.last_success),
            last_cycle_timestamp=finished_at,
            clock_skew=skew,
            rules=report.rules,
            invalid_records=invalid,
        )

    def _record_listing(self, listing: Listing, finished_at: float) -> None:
        source = str(listing.source)
        self.poll_duration.labels(source).observe(listing.duration)
        if listing.invalid_records:
            self.invalid_records.labels(source).inc(listing.invalid_records)
        if listing.duplicates:
            self.duplicate_records.labels(source).inc(listing.duplicates)
        if listing.unrequested:
            self.unrequested_records.labels(source).inc(listing.unrequested)
        if listing.error is not None:
            self.poll_errors.labels(source, str(listing.error.reason)).inc()
        else:
            self.last_success[(source, listing.tenant)] = finished_at

    def render(self, accept: str) -> tuple[bytes, str]:
        """The exposition body and its content type (OpenMetrics when the scraper asks)."""
        chunks, content_type = self.render_chunks(accept)
        return b"".join(chunks), content_type

    def render_chunks(self, accept: str, *, gzip: bool = False) -> tuple[list[bytes], str]:
        """The page as chunks to stream (a large fleet's page is never copied whole).

        The fleet's families come first, then the daemon's own, then OpenMetrics' `# EOF`.
        With `gzip`, the chunks are one gzip stream: the fleet's part compressed once per
        snapshot, the rest compressed onto a copy of that compressor on each scrape.
        """
        encoder, content_type = choose_encoder(
            _RENAMING_ESCAPES.sub("escaping=underscores", accept)
        )
        openmetrics = content_type.startswith("application/openmetrics-text")
        self._asked[(openmetrics, gzip)] = self._clock()
        tail = encoder(self.registry).removesuffix(OPENMETRICS_EOF)
        if openmetrics:
            tail += OPENMETRICS_EOF
        with self._fleet_lock:
            page = self._current_page()
            if not gzip:
                return [*fleet_chunks(page.families, openmetrics=openmetrics), tail], content_type
            prefix, compressor = page.compressed(openmetrics)
            rest = compressor.copy()
        return [prefix, rest.compress(tail) + rest.flush()], content_type

    def prepare(self) -> list[tuple[bool, bool]]:
        """Render the new snapshot's fleet part before a scraper asks, in each form asked
        for in the last `SCRAPED` seconds: the first scrape after a cycle is then as quick
        as the others (a large fleet's page takes seconds to build). Returns the forms
        rendered, (openmetrics, gzip); nobody scraping: none, no work."""
        now = self._clock()
        asked = dict(self._asked)  # scrapes add to it from other threads
        forms = sorted(form for form, at in asked.items() if now - at <= self.SCRAPED)
        with self._fleet_lock:
            for openmetrics, gzip in forms:
                page = self._current_page()
                if gzip:
                    page.compressed(openmetrics)
        return forms

    def _current_page(self) -> FleetPage:
        snapshot, page = self._fleet_page
        if snapshot is not self.snapshot or self._fleet_mode != self.per_sync_series:
            snapshot, self._fleet_mode = self.snapshot, self.per_sync_series
            page = FleetPage(fleet_families(snapshot, self._fleet_mode))
            self._fleet_page = (snapshot, page)
        return page


OPENMETRICS_EOF = b"# EOF\n"
# Every name here is a legacy name, written as is; `dots` (every `_` doubled) and `values`
# (`U__` prefixed) would rename only the encoder's part of the page, so those get
# `underscores`, which leaves legacy names alone (as `allow-utf-8` does).
_RENAMING_ESCAPES = re.compile(r"escaping=(?:dots|values)\b")


# --- the fleet's families ------------------------------------------------------------------
#
# Written directly rather than through prometheus_client's encoders, which spend ~10 µs per
# sample building and sorting label dicts: for a large fleet that is most of a second per
# 100,000 series (docs/benchmarks.md). The output is byte for byte what those encoders
# write (tests/test_exposition.py compares them): labels sorted by name, values as Go floats.


def fleet_chunks(families: Sequence[Family], *, openmetrics: bool) -> list[bytes]:
    """The fleet part of the page, in either format."""
    return [part for f in families for part in (f.header(openmetrics).encode(), f.lines)]


@dataclass(slots=True)
class FleetPage:
    """One snapshot's fleet families, and their gzip form per format once asked for."""

    families: list[Family]
    _gzip: dict[bool, tuple[bytes, zlib._Compress]] = field(default_factory=dict)

    def compressed(self, openmetrics: bool) -> tuple[bytes, zlib._Compress]:
        """The compressed fleet part and the compressor, ready for the rest of the page."""
        if openmetrics not in self._gzip:
            # Level 1: about 10x smaller for this repetitive text, at a fraction of level 6's
            # CPU. wbits=31 writes the gzip container that Content-Encoding: gzip means.
            compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
            chunks = fleet_chunks(self.families, openmetrics=openmetrics)
            prefix = b"".join(compressor.compress(c) for c in chunks)
            self._gzip[openmetrics] = (prefix, compressor)
        return self._gzip[openmetrics]


def fleet_families(snap: Snapshot, per_sync: PerSyncSeries = "all") -> list[Family]:
    """Every per-sync, per-tenant and per-alert family of one snapshot.

    `per_sync` picks the syncs whose own series are written: `all`, `alerting` (those with
    an alert: pending, firing or suppressed) or `none`, where no series names a sync (the
    alerts of a whole tenant, with no sync_id, stay). Every family is written, samples or not.
    """
    # Each source writes its own families, from its records alone, in the registry's order.
    mine: dict[Source, list[Evaluation]] = {source: [] for source in snap.rules}
    for e in per_sync_evaluations(snap, per_sync):
        mine[e.sync.source].append(e)
    per_source = [f for source, rules in snap.rules.items() for f in rules.families(mine[source])]
    alerts = snap.alerts if per_sync != "none" else [a for a in snap.alerts if not a.sync_id]
    return [*per_source, *_tenant_families(snap, alerts), *aggregate_families(snap)]


def per_sync_evaluations(snap: Snapshot, per_sync: PerSyncSeries) -> Iterable[Evaluation]:
    """The evaluations whose syncs get their own series under `per_sync`."""
    if per_sync == "all":
        return snap.evaluations
    if per_sync == "none":
        return ()
    alerting = {(a.source, a.tenant, a.sync_id) for a in snap.alerts if a.sync_id}
    return [
        e
        for e in snap.evaluations
        if e.condition is not None or (str(e.sync.source), e.sync.tenant, e.sync.id) in alerting
    ]


def aggregate_families(snap: Snapshot) -> list[Family]:
    """The per-tenant aggregates, written in every per_sync_series mode.

    Syncs by state and the invalid records count only what is there (a state no sync is in,
    a tenant with no invalid record, has no series); the worst ratio is that of the syncs
    judged by one (Timbal's enabled, not ignored syncs), NaN left out.
    """
    states: Tally[tuple[str, str, str]] = Tally()
    worst: dict[tuple[str, str], float] = {}
    for e in snap.evaluations:
        tenant = (str(e.sync.source), e.sync.tenant)
        states[(*tenant, str(e.state))] += 1
        ratio = e.ratio
        if ratio is None or math.isnan(ratio):
            continue
        if tenant not in worst or ratio > worst[tenant]:
            worst[tenant] = ratio
    syncs = lines(
        f'syncwatch_tenant_syncs{{source="{escape(source)}",state="{escape(state)}",'
        f'tenant="{escape(tenant)}"}} {value(count)}\n'
        for (source, tenant, state), count in sorted(states.items())
    )
    ratios = lines(
        f'syncwatch_tenant_worst_staleness_ratio{{source="{escape(source)}",'
        f'tenant="{escape(tenant)}"}} {value(ratio)}\n'
        for (source, tenant), ratio in sorted(worst.items())
    )
    invalid = lines(
        f'syncwatch_tenant_invalid_records{{source="{escape(source)}",'
        f'tenant="{escape(tenant)}"}} {value(count)}\n'
        for (source, tenant), count in sorted(snap.invalid_records.items())
        if count
    )
    return [
        Family(
            "syncwatch_tenant_syncs",
            "Syncs of the tenant's last listing in each state (a state without syncs is absent).",
            "gauge",
            syncs,
        ),
        Family(
            "syncwatch_tenant_worst_staleness_ratio",
            "The highest staleness ratio among the tenant's syncs judged by one.",
            "gauge",
            ratios,
        ),
        Family(
            "syncwatch_tenant_invalid_records",
            "Records skipped as invalid in the tenant's last listing (absent when none).",
            "gauge",
            invalid,
        ),
    ]


def _tenant_families(snap: Snapshot, shown: Iterable[Alert]) -> list[Family]:
    alerts = lines(
        f'syncwatch_alert{{alertname="{escape(a.alertname)}",severity="{escape(a.severity)}",'
        f'source="{escape(a.source)}",state="{escape(a.state)}",'
        f'sync_id="{escape(a.sync_id)}",tenant="{escape(a.tenant)}"}} 1.0\n'
        for a in shown
    )
    up = lines(
        f'syncwatch_source_up{{source="{escape(source)}",tenant="{escape(tenant)}"}} '
        f"{'1.0' if ok else '0.0'}\n"
        for (source, tenant), ok in sorted(snap.source_up.items())
    )
    last = lines(
        f'syncwatch_source_last_success_timestamp_seconds{{source="{escape(source)}",'
        f'tenant="{escape(tenant)}"}} {value(ts)}\n'
        for (source, tenant), ts in sorted(snap.last_success.items())
        if (source, tenant) in snap.source_up
    )
    skew = lines(
        f'syncwatch_source_clock_skew_seconds{{source="{escape(source)}",'
        f'tenant="{escape(tenant)}"}} {value(seconds)}\n'
        for (source, tenant), seconds in sorted(snap.clock_skew.items())
    )
    return [
        Family(
            "syncwatch_alert",
            "Pending, firing and suppressed (firing, but silenced) alerts (1 per alert).",
            "gauge",
            alerts,
        ),
        Family(
            "syncwatch_source_up", "1 if the tenant's last listing succeeded, else 0.", "gauge", up
        ),
        Family(
            "syncwatch_source_last_success_timestamp_seconds",
            "When the tenant's listing last succeeded (unix seconds).",
            "gauge",
            last,
        ),
        Family(
            "syncwatch_source_clock_skew_seconds",
            "Our clock minus the upstream's (its Date header) at the tenant's last listing.",
            "gauge",
            skew,
        ),
    ]


class DaemonCollector(Collector):
    """The daemon's own families that change between cycles: deliveries, outbox, build."""

    def __init__(
        self,
        telemetry: Telemetry,
        notifier_outcomes: Callable[[], Mapping[tuple[str, str], int]],
        outbox_pending: Callable[[], Mapping[str, int]],
        notifier_names: Callable[[], Iterable[str]],
        state_up: Callable[[], bool] = lambda: True,
    ) -> None:
        self.telemetry = telemetry
        self.state_up = state_up
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

        mode = GaugeMetricFamily(
            "syncwatch_per_sync_series",
            "1, with mode = metrics.per_sync_series: which syncs have per-sync series.",
            labels=["mode"],
        )
        mode.add_metric([self.telemetry.per_sync_series], 1.0)
        yield mode

        yield GaugeMetricFamily(
            "syncwatch_state_up",
            "1 while the state database takes every write; 0 while writes wait in memory.",
            value=1.0 if self.state_up() else 0.0,
        )

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
