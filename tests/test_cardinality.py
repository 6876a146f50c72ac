"""`metrics.per_sync_series`: which syncs get their own series, and the per-tenant aggregates.

The simulated fleet of test_metrics (a real simulator, polled and judged by the real rules,
alerts from the real engine) rendered in each mode: `all` is the page as it always was,
`alerting` keeps the series of exactly the syncs with an alert, `none` names no sync, and
the aggregates are the same in all three and agree with the per-sync series.
"""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import Iterable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from syncwatch.config import PerSyncSeries
from syncwatch.engine import Engine
from syncwatch.evaluate import Report, SyncState
from syncwatch.lifecycle import Alert
from syncwatch.metrics import Telemetry
from syncwatch.settings import load_config
from syncwatch.simulator import SimulatorThread
from syncwatch.state import StateStore
from syncwatch.store import Store
from tests.conftest import Keys, SimProcess, launch, wait_until
from tests.test_metrics import NOW, _report, frozen_sim

__all__ = ["frozen_sim"]  # the module-scoped simulator of test_metrics, shared

Sample = tuple[str, dict[str, str], float]
PER_SYNC = (
    "syncwatch_timbal_sync_seconds_since_success",
    "syncwatch_timbal_sync_interval_seconds",
    "syncwatch_timbal_sync_staleness_ratio",
    "syncwatch_timbal_sync_enabled",
    "syncwatch_timbal_sync_last_success_timestamp_seconds",
    "syncwatch_timbal_sync_info",
    "syncwatch_paragon_sync_status",
    "syncwatch_paragon_sync_info",
)
AGGREGATES = (
    "syncwatch_tenant_syncs",
    "syncwatch_tenant_worst_staleness_ratio",
    "syncwatch_tenant_invalid_records",
)


def alerts_of(report: Report, tmp_path: Path, **alerting: object) -> list[Alert]:
    """The engine's alerts after one cycle of `report` (with `[alerting]` keys given)."""
    config = load_config(None, timbal={"api_key": "k", "orgs": [{"id": "org_0001"}]}, **alerting)
    store = Store(StateStore(tmp_path / "state.db"))
    try:
        engine = Engine(config, store)
        engine.apply(report, NOW)
        return list(engine.alerts.values())
    finally:
        store.close()


def samples(report: Report, alerts: Iterable[Alert], mode: PerSyncSeries) -> list[Sample]:
    telemetry = Telemetry(per_sync_series=mode)
    telemetry.record(report, alerts, NOW.timestamp())
    body, _ = telemetry.render("text/plain")
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    ]


def named(page: list[Sample], *names: str) -> list[Sample]:
    return [s for s in page if s[0] in names]


def syncs_shown(page: list[Sample]) -> set[tuple[str, str]]:
    """(tenant, sync_id) of every sync with a per-sync series."""
    return {
        (labels.get("org_id") or labels["user_id"], labels["sync_id"])
        for _, labels, _ in named(page, *PER_SYNC)
    }


def test_none_names_no_sync_and_keeps_every_aggregate(
    frozen_sim: SimulatorThread, tmp_path: Path
) -> None:
    report = _report(frozen_sim)
    alerts = alerts_of(report, tmp_path)
    assert [a for a in alerts if a.sync_id], "the fleet has alerting syncs"
    everything = samples(report, alerts, "all")
    none = samples(report, alerts, "none")

    assert [s for s in none if s[1].get("sync_id")] == []
    assert named(none, *PER_SYNC) == []
    assert named(none, *AGGREGATES) == named(everything, *AGGREGATES)
    assert named(none, "syncwatch_tenant_syncs")
    assert ("syncwatch_per_sync_series", {"mode": "none"}, 1.0) in none

    # The rest of syncwatch's page (tenants, counters, the daemon's own) is unchanged.
    def rest(page: list[Sample]) -> list[Sample]:
        skip = {*PER_SYNC, "syncwatch_alert", "syncwatch_per_sync_series"}
        return [
            s
            for s in page
            if s[0].startswith("syncwatch_")
            and s[0] not in skip
            and not s[0].startswith("syncwatch_poll_duration")  # timed, varies
        ]

    assert rest(everything) == rest(none)
    assert ("syncwatch_per_sync_series", {"mode": "all"}, 1.0) in everything


def test_alerting_shows_exactly_the_syncs_with_an_alert_pending_firing_or_suppressed(
    frozen_sim: SimulatorThread, tmp_path: Path
) -> None:
    report = _report(frozen_sim)
    # `for` = 1h: every new alert is pending; one of them is then muted while firing.
    pending = alerts_of(report, tmp_path / "pending", alerting={"for": "1h"})
    assert pending
    assert {a.state for a in pending} == {"pending"}
    fired = alerts_of(report, tmp_path / "fired")
    muted = dataclasses.replace(fired[0], muted_by=("silence-1",))
    assert muted.state == "suppressed"
    everything = samples(report, fired, "all")

    for alerts in (pending, [muted, *fired[1:]]):
        page = samples(report, alerts, "alerting")
        wanted = {(a.tenant, a.sync_id) for a in alerts if a.sync_id}
        assert syncs_shown(page) == wanted
        # Each shown sync has all of its series, exactly as in `all`.
        assert named(page, *PER_SYNC) == [
            s
            for s in named(everything, *PER_SYNC)
            if (s[1].get("org_id") or s[1]["user_id"], s[1]["sync_id"]) in wanted
        ]
        assert named(page, "syncwatch_alert") == named(
            samples(report, alerts, "all"), "syncwatch_alert"
        )
        assert named(page, *AGGREGATES) == named(everything, *AGGREGATES)


def test_alerting_keeps_a_sync_whose_alert_still_fires_after_its_condition_cleared(
    frozen_sim: SimulatorThread, tmp_path: Path
) -> None:
    report = _report(frozen_sim)
    fired = alerts_of(report, tmp_path)
    kept = next(a for a in fired if a.sync_id)
    # Next cycle the sync is fine again, but keep_firing_for holds its alert.
    healed = [
        dataclasses.replace(e, state=SyncState.OK, condition=None)
        if (e.sync.tenant, e.sync.id) == (kept.tenant, kept.sync_id)
        else e
        for e in report.evaluations
    ]
    later = dataclasses.replace(report, evaluations=healed)
    page = samples(later, [kept], "alerting")
    assert syncs_shown(page) >= {(kept.tenant, kept.sync_id)}


def test_aggregates_agree_with_the_per_sync_series(
    frozen_sim: SimulatorThread, tmp_path: Path
) -> None:
    report = _report(frozen_sim)
    alerts = alerts_of(report, tmp_path)
    page = samples(report, alerts, "all")
    by_state: dict[tuple[str, str], dict[str, float]] = {}
    for _, labels, value in named(page, "syncwatch_tenant_syncs"):
        by_state.setdefault((labels["source"], labels["tenant"]), {})[labels["state"]] = value
    assert all(v > 0 for states in by_state.values() for v in states.values())

    listed: dict[tuple[str, str], int] = {}
    for _, labels, _ in named(page, "syncwatch_timbal_sync_info"):
        listed[("timbal", labels["org_id"])] = listed.get(("timbal", labels["org_id"]), 0) + 1
    for _, labels, _ in named(page, "syncwatch_paragon_sync_info"):
        listed[("paragon", labels["user_id"])] = listed.get(("paragon", labels["user_id"]), 0) + 1
    assert {t: sum(states.values()) for t, states in by_state.items()} == listed

    firing: dict[tuple[str, str], dict[str, int]] = {}
    for a in alerts:
        counts = firing.setdefault((a.source, a.tenant), {})
        counts[a.severity] = counts.get(a.severity, 0) + 1
    for tenant, states in by_state.items():
        expected = firing.get(tenant, {})
        shown = {s: int(v) for s, v in states.items() if s in ("warning", "critical")}
        assert shown == expected, tenant

    enabled = {
        (labels["org_id"], labels["sync_id"])
        for _, labels, value in named(page, "syncwatch_timbal_sync_enabled")
        if value == 1
    }
    worst: dict[str, float] = {}
    for _, labels, value in named(page, "syncwatch_timbal_sync_staleness_ratio"):
        if (labels["org_id"], labels["sync_id"]) in enabled:
            worst[labels["org_id"]] = max(worst.get(labels["org_id"], 0.0), value)
    aggregate = {
        labels["tenant"]: value
        for _, labels, value in named(page, "syncwatch_tenant_worst_staleness_ratio")
    }
    assert aggregate == worst
    assert len(aggregate) == len({t for s, t in listed if s == "timbal"})


def test_invalid_records_are_counted_per_tenant_while_they_last(
    frozen_sim: SimulatorThread,
) -> None:
    report = _report(frozen_sim)
    first = report.listings[0]
    spoilt = dataclasses.replace(first, invalid_records=2)
    telemetry = Telemetry(per_sync_series="none")

    def invalid() -> tuple[list[Sample], float]:
        body, _ = telemetry.render("text/plain")
        page = [
            (s.name, s.labels, s.value)
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
        ]
        total = [v for n, lab, v in page if n == "syncwatch_invalid_records_total"]
        source = str(first.source)
        counter = sum(
            v
            for n, lab, v in page
            if n == "syncwatch_invalid_records_total" and lab["source"] == source
        )
        assert total
        return named(page, "syncwatch_tenant_invalid_records"), counter

    telemetry.record(dataclasses.replace(report, listings=[spoilt, *report.listings[1:]]), (), 1)
    gauge, counter = invalid()
    assert gauge == [
        (
            "syncwatch_tenant_invalid_records",
            {"source": str(first.source), "tenant": first.tenant},
            2.0,
        )
    ]
    assert counter == 2.0  # the per-source counter counts the same records
    telemetry.record(report, (), 2)  # a clean listing: the tenant has none again
    gauge, counter = invalid()
    assert gauge == []
    assert counter == 2.0


def test_a_failed_listing_has_no_aggregates(frozen_sim: SimulatorThread) -> None:
    """Like its per-sync series: the tenant's last listing says nothing (source_up says why)."""
    report = _report(frozen_sim)
    gone = report.listings[0]
    kept = [e for e in report.evaluations if e.sync.tenant != gone.tenant]
    failed = dataclasses.replace(report, evaluations=kept)
    page = samples(failed, (), "none")
    tenants = {lab["tenant"] for _, lab, _ in named(page, *AGGREGATES)}
    assert gone.tenant not in tenants
    assert tenants


def test_changing_the_mode_rerenders_the_same_snapshot(frozen_sim: SimulatorThread) -> None:
    telemetry = Telemetry()
    telemetry.record(_report(frozen_sim), (), NOW.timestamp())
    before, _ = telemetry.render("text/plain")
    assert b'sync_id="' in before
    telemetry.per_sync_series = "none"  # what a reload does
    after, _ = telemetry.render("text/plain")
    assert b'sync_id="' not in after
    assert b'syncwatch_per_sync_series{mode="none"} 1.0' in after


# --- the daemon --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["alerting", "none"])
def test_the_daemon_serves_the_configured_mode_and_sighup_changes_it(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys, mode: str
) -> None:
    daemon = launch(tmp_path, sim, rsa_keys, extra=f'[metrics]\nper_sync_series = "{mode}"\n')
    try:
        page = daemon.metrics()
        assert page["syncwatch_per_sync_series"] == [({"mode": mode}, 1.0)]
        assert page["syncwatch_tenant_syncs"]
        shown = {labels["sync_id"] for labels, _ in page.get("syncwatch_timbal_sync_info", [])}
        if mode == "none":
            assert shown == set()
        else:
            alerting = {
                labels["sync_id"]
                for labels, _ in page["syncwatch_alert"]
                if labels["source"] == "timbal"
            }
            assert shown
            assert shown == alerting

        text = daemon.config_path.read_text()
        daemon.config_path.write_text(text.replace(f'"{mode}"', '"all"'))
        daemon.proc.popen.send_signal(signal.SIGHUP)
        wait_until(lambda: '"reloaded"' in daemon.proc.output)
        page = daemon.metrics()
        assert page["syncwatch_per_sync_series"] == [({"mode": "all"}, 1.0)]
        every = {labels["sync_id"] for labels, _ in page["syncwatch_timbal_sync_info"]}
        assert every > shown
    finally:
        daemon.proc.stop()


def test_default_mode_is_all() -> None:
    config = load_config(None, timbal={"api_key": "k", "orgs": [{"id": "org_1"}]})
    assert config.metrics.per_sync_series == "all"
