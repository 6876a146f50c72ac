"""The /metrics page for a fixed simulated fleet, against a golden file."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from syncwatch.check import poll_and_evaluate
from syncwatch.engine import Engine
from syncwatch.evaluate import Report
from syncwatch.metrics import Telemetry
from syncwatch.models import TimbalSync
from syncwatch.settings import load_config
from syncwatch.simulator import SimConfig, SimulatorThread
from syncwatch.state import StateStore
from syncwatch.store import Store

GOLDEN = Path(__file__).parent / "fixtures" / "golden" / "metrics.txt"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
# Durations and process metrics vary run to run; everything else is fixed by seed and clock.
VARYING = ("syncwatch_poll_duration_seconds", "process_", "python_")


@pytest.fixture(scope="module")
def frozen_sim() -> Iterator[SimulatorThread]:
    sim = SimulatorThread(
        SimConfig(orgs=2, syncs_per_org=12, users=2, seed=11, churn=0), clock=lambda: NOW
    )
    sim.start()
    yield sim
    sim.stop()


def _report(sim: SimulatorThread) -> Report:
    config = load_config(
        None,
        timbal={
            "base_url": sim.base_url,
            "api_key": "sim-timbal-key",
            "orgs": [{"id": "org_0001"}, {"id": "org_0002"}],
        },
        paragon={
            "base_url": sim.base_url,
            "users": [
                {"id": u, "token": f"sim-paragon-token:{u}"} for u in ("user-0001", "user-0002")
            ],
        },
    )
    return asyncio.run(poll_and_evaluate(config, now=NOW))


def _page(report: Report, tmp_path: Path) -> str:
    config = load_config(
        None,
        timbal={"api_key": "k", "orgs": [{"id": "org_0001"}]},
        notifiers=[{"name": "console", "type": "console"}],
    )
    store = Store(StateStore(tmp_path / "state.db"))
    engine = Engine(config, store)
    engine.apply(report, NOW)
    store.close()
    telemetry = Telemetry(notifier_names=lambda: ["console"])
    telemetry.record(report, engine.alerts.values(), NOW.timestamp())
    body, _ = telemetry.render("text/plain")
    lines = body.decode().splitlines()
    return "\n".join(line for line in lines if not any(v in line for v in VARYING)) + "\n"


def test_metrics_page_matches_the_golden_file(frozen_sim: SimulatorThread, tmp_path: Path) -> None:
    page = _page(_report(frozen_sim), tmp_path)
    if os.environ.get("SYNCWATCH_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(page)
    assert page == GOLDEN.read_text()


def test_every_contract_family_is_on_the_page(frozen_sim: SimulatorThread, tmp_path: Path) -> None:
    families = {
        f.name for f in text_string_to_metric_families(_page(_report(frozen_sim), tmp_path))
    }
    contract = {
        "syncwatch_timbal_sync_seconds_since_success",
        "syncwatch_timbal_sync_interval_seconds",
        "syncwatch_timbal_sync_staleness_ratio",
        "syncwatch_timbal_sync_enabled",
        "syncwatch_timbal_sync_last_success_timestamp_seconds",
        "syncwatch_timbal_sync_info",
        "syncwatch_paragon_sync_status",
        "syncwatch_paragon_sync_info",
        "syncwatch_alert",
        "syncwatch_source_up",
        "syncwatch_source_last_success_timestamp_seconds",
        "syncwatch_poll_errors",
        "syncwatch_invalid_records",
        "syncwatch_notifications",
        "syncwatch_outbox_pending",
        "syncwatch_cycle_duration_seconds",
        "syncwatch_last_cycle_timestamp_seconds",
        "syncwatch_build_info",
    }
    assert contract <= families


def test_never_succeeded_sync_has_no_last_success_series(
    frozen_sim: SimulatorThread, tmp_path: Path
) -> None:
    report = _report(frozen_sim)
    never = {
        e.sync.id for e in report.evaluations if getattr(e.sync, "seconds_since_success", 0) is None
    }
    assert never, "the fleet should include never-succeeded syncs"
    page = _page(report, tmp_path)
    for sync_id in never:
        assert not any(
            line.startswith("syncwatch_timbal_sync_last_success_timestamp_seconds{")
            and f'sync_id="{sync_id}"' in line
            for line in page.splitlines()
        )


def test_fleet_part_is_rendered_once_per_snapshot_and_counters_stay_live(
    frozen_sim: SimulatorThread,
) -> None:
    report = _report(frozen_sim)
    outcomes: dict[tuple[str, str], int] = {}
    telemetry = Telemetry(notifier_outcomes=lambda: outcomes, notifier_names=lambda: ["console"])
    telemetry.record(report, (), NOW.timestamp())
    first, _ = telemetry.render("text/plain")
    cached = telemetry._fleet_page[1].families
    assert cached

    outcomes[("console", "sent")] = 3  # a delivery between cycles shows at the next scrape
    second, _ = telemetry.render("text/plain")
    assert 'syncwatch_notifications_total{notifier="console",outcome="sent"} 3.0' in second.decode()
    assert telemetry._fleet_page[1].families is cached  # not re-rendered
    for family in cached:
        assert family.lines in first
        assert family.lines in second

    # A sync gone from the next cycle is gone from the next scrape.
    gone = report.evaluations[0].sync.id
    fewer = dataclasses.replace(report, evaluations=report.evaluations[1:])
    telemetry.record(fewer, (), NOW.timestamp() + 60)
    third, _ = telemetry.render("text/plain")
    assert f'sync_id="{gone}"' in first.decode()
    assert f'sync_id="{gone}"' not in third.decode()


def test_openmetrics_page_has_one_eof_at_its_end(frozen_sim: SimulatorThread) -> None:
    from prometheus_client.openmetrics.parser import (
        text_string_to_metric_families as openmetrics_families,
    )

    telemetry = Telemetry(notifier_names=lambda: ["console"])
    telemetry.record(_report(frozen_sim), (), NOW.timestamp())
    body, content_type = telemetry.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    text = body.decode()
    assert text.count("# EOF") == 1
    assert text.endswith("# EOF\n")
    names = {f.name for f in openmetrics_families(text)}  # the strict parser accepts it
    assert {"syncwatch_timbal_sync_interval_seconds", "syncwatch_notifications"} <= names


@pytest.mark.parametrize("openmetrics", [False, True], ids=["text", "openmetrics"])
def test_label_values_are_escaped(frozen_sim: SimulatorThread, openmetrics: bool) -> None:
    from dataclasses import replace

    from prometheus_client.openmetrics.parser import (
        text_string_to_metric_families as openmetrics_families,
    )

    report = _report(frozen_sim)
    first = report.evaluations[0]
    assert isinstance(first.sync, TimbalSync)  # the interval family below is Timbal's
    awkward = 'a "quoted" back\\slash\nnew line'
    evaluations = [replace(first, sync=replace(first.sync, name=awkward)), *report.evaluations[1:]]
    telemetry = Telemetry()
    telemetry.record(
        dataclasses.replace(report, evaluations=evaluations),
        (),
        NOW.timestamp(),
    )
    accept = "application/openmetrics-text; version=1.0.0" if openmetrics else "text/plain"
    body, _ = telemetry.render(accept)
    parse = openmetrics_families if openmetrics else text_string_to_metric_families
    names = {
        sample.labels.get("name")
        for family in parse(body.decode())
        if family.name == "syncwatch_timbal_sync_interval_seconds"
        for sample in family.samples
        if sample.labels["sync_id"] == first.sync.id
    }
    assert names == {awkward}


@pytest.mark.parametrize("openmetrics", [False, True], ids=["text", "openmetrics"])
def test_gzip_page_is_one_stream_of_the_same_page(
    frozen_sim: SimulatorThread, openmetrics: bool
) -> None:
    import gzip
    import zlib

    telemetry = Telemetry(notifier_names=lambda: ["console"])
    telemetry.record(_report(frozen_sim), (), NOW.timestamp())
    accept = "application/openmetrics-text; version=1.0.0" if openmetrics else "text/plain"
    plain, _ = telemetry.render(accept)
    for _ in range(2):  # the second scrape reuses the compressed fleet part
        chunks, _ = telemetry.render_chunks(accept, gzip=True)
        body = b"".join(chunks)
        # One gzip member, as a strict single-stream decoder (httpx's, Go's) expects.
        decoder = zlib.decompressobj(wbits=31)
        page = decoder.decompress(body) + decoder.flush()
        assert decoder.eof
        assert not decoder.unused_data
        assert page == gzip.decompress(body)
        strip = [v.encode() for v in VARYING]
        assert [line for line in page.splitlines() if not any(v in line for v in strip)] == [
            line for line in plain.splitlines() if not any(v in line for v in strip)
        ]
        assert page.endswith(b"# EOF\n") is openmetrics


def test_a_new_snapshot_is_rendered_ahead_in_the_forms_scraped_in_the_last_ten_minutes(
    frozen_sim: SimulatorThread,
) -> None:
    import gzip

    now = [0.0]
    telemetry = Telemetry(notifier_names=lambda: ["console"], clock=lambda: now[0])
    report = _report(frozen_sim)
    telemetry.record(report, (), NOW.timestamp())
    assert telemetry.prepare() == []  # never scraped: no work after a cycle

    openmetrics = "application/openmetrics-text; version=1.0.0"
    telemetry.render("text/plain")
    telemetry.render_chunks(openmetrics, gzip=True)
    telemetry.record(report, (), NOW.timestamp() + 60)  # the next cycle's snapshot
    now[0] = Telemetry.SCRAPED
    assert telemetry.prepare() == [(False, False), (True, True)]

    # What the next scrapes get is the page of the new snapshot, as if built for them.
    fresh = Telemetry(notifier_names=lambda: ["console"])
    fresh.record(report, (), NOW.timestamp() + 60)
    strip = [v.encode() for v in VARYING]

    def stable(page: bytes) -> list[bytes]:
        return [line for line in page.splitlines() if not any(v in line for v in strip)]

    assert stable(telemetry.render("text/plain")[0]) == stable(fresh.render("text/plain")[0])
    prepared = gzip.decompress(b"".join(telemetry.render_chunks(openmetrics, gzip=True)[0]))
    assert stable(prepared) == stable(fresh.render(openmetrics)[0])

    now[0] += Telemetry.SCRAPED + 1  # the scrapers went away: the next cycle renders nothing
    telemetry.record(report, (), NOW.timestamp() + 120)
    assert telemetry.prepare() == []
