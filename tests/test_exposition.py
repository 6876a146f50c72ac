"""The hand-written fleet exposition is byte for byte what prometheus_client's encoders write.

The reference is prometheus_client itself: the same snapshot mapped to its `*MetricFamily`
classes by a collector written here, rendered by its `generate_latest` (text) and
`openmetrics.exposition.generate_latest` (OpenMetrics), for fleets full of awkward strings and
extreme floats.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import generate_latest as text_latest
from prometheus_client.openmetrics import exposition as openmetrics_exposition
from prometheus_client.registry import Collector

from syncwatch.config import ParagonConfig, PerSyncSeries, TimbalConfig
from syncwatch.evaluate import Evaluation, SourceRules, SyncState
from syncwatch.exposition import Family
from syncwatch.lifecycle import Alert
from syncwatch.metrics import Snapshot, Telemetry, fleet_chunks, fleet_families
from syncwatch.models import ParagonSync, Severity, Source, TimbalSync
from syncwatch.outbox import AlertStatus
from syncwatch.sources.paragon.rules import PARAGON_STATUSES, ParagonRules
from syncwatch.sources.timbal.rules import TimbalRules

EPOCH = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
# Each source writes its own families: both, with their default rules.
RULES: dict[Source, SourceRules] = {
    Source.TIMBAL: TimbalRules.from_config(TimbalConfig()),
    Source.PARAGON: ParagonRules.from_config(ParagonConfig()),
}
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
# What Prometheus 3 sends: OpenMetrics with UTF-8 names allowed, plain text as a fallback.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
)


# --- the reference: the same snapshot through prometheus_client's own classes -------------


class Fixed(Collector):
    """A collector that yields the families it was given."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def reference_families(snap: Snapshot, docs: dict[str, str], mode: str = "all") -> list[Metric]:
    """The contract's fleet families (PRODUCT.md section 5), built with prometheus_client.

    `mode` is metrics.per_sync_series: which syncs get their own series (docs/metrics.md).
    """

    def gauge(name: str, labels: list[str]) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, docs[name], labels=labels)

    tl = ["org_id", "connector_id", "sync_id", "name"]
    sss = gauge("syncwatch_timbal_sync_seconds_since_success", tl)
    interval = gauge("syncwatch_timbal_sync_interval_seconds", tl)
    ratio = gauge("syncwatch_timbal_sync_staleness_ratio", tl)
    enabled = gauge("syncwatch_timbal_sync_enabled", tl)
    last = gauge("syncwatch_timbal_sync_last_success_timestamp_seconds", tl)
    tinfo = InfoMetricFamily("syncwatch_timbal_sync", docs["syncwatch_timbal_sync"], labels=tl)
    pl = ["user_id", "sync_id", "integration", "pipeline"]
    status = gauge("syncwatch_paragon_sync_status", [*pl, "status"])
    pinfo = InfoMetricFamily("syncwatch_paragon_sync", docs["syncwatch_paragon_sync"], labels=pl)
    alerting = {(a.source, a.tenant, a.sync_id) for a in snap.alerts if a.sync_id}
    for e in snap.evaluations:
        s = e.sync
        if mode == "none" or (
            mode == "alerting"
            and e.condition is None
            and (s.source.value, s.tenant, s.id) not in alerting
        ):
            continue
        if isinstance(s, TimbalSync):
            key = [s.org_id, s.connector_id, s.id, s.name or ""]
            interval.add_metric(key, s.interval_secs)
            enabled.add_metric(key, 1.0 if s.enabled else 0.0)
            if s.seconds_since_success is not None:
                sss.add_metric(key, s.seconds_since_success)
            value = e.ratio
            if value is None and s.seconds_since_success is not None:
                value = max(0, s.seconds_since_success) / s.interval_secs
            if value is not None:
                ratio.add_metric(key, value)
            if s.last_success_at is not None:
                last.add_metric(key, s.last_success_at.timestamp())
            tinfo.add_metric(
                key,
                {
                    "source_kind": s.source_kind,
                    "source_table": s.source_table,
                    "dest_table": s.dest_table,
                    "last_state": s.last_state or "",
                },
            )
        else:
            key = [s.user_id, s.id, s.integration, s.pipeline]
            for known in PARAGON_STATUSES:
                status.add_metric([*key, known], 1.0 if s.status == known else 0.0)
            if s.status not in PARAGON_STATUSES:
                status.add_metric([*key, s.status], 1.0)
            pinfo.add_metric(
                key,
                {
                    "configuration_name": s.configuration_name or "",
                    "credential_id": s.credential_id or "",
                },
            )
    alert = gauge(
        "syncwatch_alert", ["alertname", "severity", "source", "state", "sync_id", "tenant"]
    )
    for a in snap.alerts:
        if mode != "none" or not a.sync_id:
            alert.add_metric([a.alertname, a.severity, a.source, a.state, a.sync_id, a.tenant], 1.0)
    up = gauge("syncwatch_source_up", ["source", "tenant"])
    for (source, tenant), ok in sorted(snap.source_up.items()):
        up.add_metric([source, tenant], 1.0 if ok else 0.0)
    tenant_last = gauge("syncwatch_source_last_success_timestamp_seconds", ["source", "tenant"])
    for (source, tenant), ts in sorted(snap.last_success.items()):
        if (source, tenant) in snap.source_up:
            tenant_last.add_metric([source, tenant], ts)
    skew = gauge("syncwatch_source_clock_skew_seconds", ["source", "tenant"])
    for (source, tenant), seconds in sorted(snap.clock_skew.items()):
        skew.add_metric([source, tenant], seconds)
    by_state: dict[tuple[str, str, str], int] = {}
    worst: dict[tuple[str, str], float] = {}
    for e in snap.evaluations:
        of = (e.sync.source.value, e.sync.tenant)
        counted = (*of, e.state.value)
        by_state[counted] = by_state.get(counted, 0) + 1
        if e.ratio is not None and not math.isnan(e.ratio):
            worst[of] = max(worst.get(of, -math.inf), e.ratio)
    syncs = gauge("syncwatch_tenant_syncs", ["source", "state", "tenant"])
    for (source, tenant, state), count in sorted(by_state.items()):
        syncs.add_metric([source, state, tenant], count)
    worst_ratio = gauge("syncwatch_tenant_worst_staleness_ratio", ["source", "tenant"])
    for (source, tenant), value in sorted(worst.items()):
        worst_ratio.add_metric([source, tenant], value)
    invalid = gauge("syncwatch_tenant_invalid_records", ["source", "tenant"])
    for (source, tenant), count in sorted(snap.invalid_records.items()):
        if count:
            invalid.add_metric([source, tenant], count)
    return [
        *(sss, interval, ratio, enabled, last, tinfo, status, pinfo),
        *(alert, up, tenant_last, skew),
        *(syncs, worst_ratio, invalid),
    ]


def encode(families: list[Metric], *, openmetrics: bool, escaping: str = "underscores") -> bytes:
    """prometheus_client's rendering of `families`, in either format."""
    collector = Fixed(families)
    if openmetrics:
        page: bytes = openmetrics_exposition.generate_latest(  # type: ignore[no-untyped-call]
            collector, escaping=escaping
        )
        return page
    return text_latest(collector, escaping=escaping)


def reference(
    snap: Snapshot, *, openmetrics: bool, escaping: str = "underscores", mode: str = "all"
) -> bytes:
    docs = {f.name: f.documentation for f in fleet_families(snap)}
    families = reference_families(snap, docs, mode)
    return encode(families, openmetrics=openmetrics, escaping=escaping)


def ours(snap: Snapshot, *, openmetrics: bool, mode: PerSyncSeries = "all") -> bytes:
    page = b"".join(fleet_chunks(fleet_families(snap, mode), openmetrics=openmetrics))
    return page + b"# EOF\n" if openmetrics else page


# --- generated fleets ---------------------------------------------------------------------

AWKWARD = st.sampled_from(
    ['"', "\\", "\n", "\r", "\t", "\x00", "\x7f", "{", "}", "=", ",", " ", "é", "☃", "𝄞", "\u2028"]
)
# No lone surrogates: UTF-8 cannot encode them, and the upstream decoders reject them.
CHARS = st.characters(exclude_categories=["Cs"])
TEXT = st.text(st.one_of(AWKWARD, CHARS), max_size=8)
EXTREME = st.sampled_from(
    [
        0.0,
        -0.0,
        1.0,
        -1.0,
        5e-324,
        1e-300,
        1e300,
        1.7976931348623157e308,
        math.inf,
        -math.inf,
        math.nan,
        123456.7,
        1234567.0,
        1e16,
        2.0**53,
        2.0**53 + 2,
        0.1,
        1 / 3,
    ]
)
FLOAT = st.one_of(EXTREME, st.floats(), st.integers(-(2**80), 2**80).map(float))
INT64 = st.one_of(
    st.sampled_from([0, 1, -1, 2**53, 2**53 + 1, 2**63 - 1, -(2**63)]),
    st.integers(-(2**63), 2**63 - 1),
)
WHEN = st.one_of(
    st.sampled_from(
        [datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)]
    ),
    st.datetimes(timezones=st.just(UTC)),
)


@st.composite
def timbal_evaluations(draw: st.DrawFn) -> Evaluation:
    sync = TimbalSync(
        org_id=draw(TEXT),
        id=draw(TEXT),
        connector_id=draw(TEXT),
        name=draw(st.none() | TEXT),
        source_kind=draw(TEXT),
        source_table=draw(TEXT),
        dest_table=draw(TEXT),
        interval_secs=draw(st.one_of(st.just(1), st.integers(1, 2**31 - 1))),
        enabled=draw(st.booleans()),
        seconds_since_success=draw(st.none() | INT64),
        last_success_at=draw(st.none() | WHEN),
        last_run_at=None,
        last_state=draw(st.none() | TEXT),
        created_at=EPOCH,
        updated_at=None,
    )
    return Evaluation(sync, draw(st.sampled_from(SyncState)), ratio=draw(st.none() | FLOAT))


@st.composite
def paragon_evaluations(draw: st.DrawFn) -> Evaluation:
    sync = ParagonSync(
        user_id=draw(TEXT),
        id=draw(TEXT),
        integration=draw(TEXT),
        pipeline=draw(TEXT),
        status=draw(st.one_of(st.sampled_from(PARAGON_STATUSES), TEXT)),
        configuration_name=draw(st.none() | TEXT),
        credential_id=draw(st.none() | TEXT),
    )
    return Evaluation(sync, draw(st.sampled_from(SyncState)))


@st.composite
def alerts(draw: st.DrawFn, of: Evaluation | None = None) -> Alert:
    """An alert; with `of`, on that evaluation's sync (as the engine raises them)."""
    return Alert(
        alertname=draw(TEXT),
        source=draw(TEXT) if of is None else of.sync.source.value,
        tenant=draw(TEXT) if of is None else of.sync.tenant,
        sync_id=draw(TEXT) if of is None else of.sync.id,
        severity=draw(st.sampled_from(Severity)),
        status=draw(st.sampled_from([None, AlertStatus.FIRING])),
        labels={},
        annotations={},
        active_since=EPOCH,
    )


TENANTS = st.tuples(TEXT, TEXT)


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    tenants = draw(st.lists(TENANTS, max_size=4, unique=True))
    # Tenants with a last success that are no longer listed: not shown.
    gone = draw(st.lists(TENANTS, max_size=2))
    evaluations = draw(st.lists(st.one_of(timbal_evaluations(), paragon_evaluations()), max_size=6))
    # Some syncs alerting (metrics.per_sync_series = "alerting" shows only theirs).
    alerting = [alerts(of=e) for e in evaluations if draw(st.booleans())]
    return Snapshot(
        rules=RULES,
        evaluations=tuple(evaluations),
        alerts=tuple(draw(st.lists(alerts(), max_size=3)) + [draw(a) for a in alerting]),
        source_up={t: draw(st.booleans()) for t in tenants},
        last_success={t: draw(FLOAT) for t in [*tenants, *gone] if draw(st.booleans())},
        clock_skew={t: draw(FLOAT) for t in tenants if draw(st.booleans())},
        invalid_records={t: draw(st.integers(0, 2**40)) for t in tenants if draw(st.booleans())},
    )


ONE_SYNC = TimbalSync(
    org_id="o",
    id="s",
    connector_id="c",
    name="n",
    source_kind="k",
    source_table="t",
    dest_table="d",
    interval_secs=60,
    enabled=True,
    seconds_since_success=30,
    last_success_at=EPOCH,
    last_run_at=None,
    last_state="ok",
    created_at=EPOCH,
    updated_at=None,
)


def one_sync(ratio: float | None = None, **changes: Any) -> Snapshot:
    """A snapshot of one Timbal sync, with the fields given changed."""
    return Snapshot(
        evaluations=(Evaluation(replace(ONE_SYNC, **changes), SyncState.OK, ratio=ratio),),
        rules=RULES,
    )


SIGNED_ZERO = Snapshot(clock_skew={("timbal", "org"): -0.0}, rules=RULES)


# --- the property -------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(snap=snapshots())
@example(snap=SIGNED_ZERO)
@example(snap=one_sync(name='a "q" \\ \n é', ratio=-0.0, seconds_since_success=2**63 - 1))
@example(snap=one_sync(ratio=math.nan, last_success_at=datetime(1, 1, 1, tzinfo=UTC)))
def test_fleet_page_is_byte_for_byte_prometheus_clients(snap: Snapshot) -> None:
    """Text and OpenMetrics, and `escaping=allow-utf-8` (Prometheus 3): no legacy name changes;
    in each metrics.per_sync_series mode."""
    modes: tuple[PerSyncSeries, ...] = ("all", "alerting", "none")
    for openmetrics in (False, True):
        for mode in modes:
            page = ours(snap, openmetrics=openmetrics, mode=mode)
            assert page == reference(snap, openmetrics=openmetrics, mode=mode)
        page = ours(snap, openmetrics=openmetrics)
        assert page == reference(snap, openmetrics=openmetrics, escaping="allow-utf-8")


@pytest.mark.parametrize(
    "accept",
    [
        "",
        "text/plain",
        OPENMETRICS,
        PROMETHEUS_ACCEPT,
        "text/plain;version=1.0.0;escaping=dots",
        f"{OPENMETRICS};escaping=dots",
        "text/plain;version=1.0.0;escaping=values",
        f"{OPENMETRICS};escaping=values",
    ],
    ids=["none", "text", "om", "prom3", "text-dots", "om-dots", "text-values", "om-values"],
)
@settings(max_examples=25, deadline=None)
@given(snap=snapshots())
@example(snap=SIGNED_ZERO)
def test_the_served_page_is_the_reference_fleet_then_the_daemons_families(
    snap: Snapshot, accept: str
) -> None:
    """Through `Telemetry.render`, as /metrics serves it, names left alone whatever is asked.

    Every name on the page is a legacy name; `dots` would double each `_` and `values` prefix
    `U__` in the daemon's part only, so the whole page is answered with `underscores`.
    """
    telemetry = Telemetry()
    telemetry.snapshot = snap
    page, content_type = telemetry.render(accept)
    openmetrics = content_type.startswith("application/openmetrics-text")
    fleet = reference(snap, openmetrics=openmetrics).removesuffix(b"# EOF\n")
    assert page.startswith(fleet)
    rest = page[len(fleet) :]
    assert rest.startswith(b"# HELP syncwatch_")
    assert not any(f"# HELP {f.name}".encode() in rest for f in fleet_families(snap))
    assert b"\nsyncwatch_build_info{" in rest
    assert b"syncwatch__" not in rest
    assert b"U__" not in rest
    assert "escaping=dots" not in content_type
    assert "escaping=values" not in content_type
    assert page.endswith(b"# EOF\n") is openmetrics


DOC = st.text(st.one_of(AWKWARD, CHARS), max_size=20)


@pytest.mark.parametrize("openmetrics", [False, True], ids=["text", "openmetrics"])
@pytest.mark.parametrize("make", [GaugeMetricFamily, InfoMetricFamily], ids=["gauge", "info"])
@settings(max_examples=200, deadline=None)
@given(doc=DOC)
def test_help_text_is_escaped_as_prometheus_client_does(
    make: Callable[[str, str], Metric], openmetrics: bool, doc: str
) -> None:
    metric = make("syncwatch_x", doc)
    family = Family("syncwatch_x", doc, metric.type, b"")
    expected = encode([metric], openmetrics=openmetrics).removesuffix(b"# EOF\n")
    assert family.header(openmetrics).encode() == expected
