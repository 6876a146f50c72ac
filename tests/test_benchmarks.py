"""The benchmark harness works end to end at its quick size (the numbers are not judged)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent

TARGETS = [
    "cycle vs floor (no latency)",
    "cycle, absolute",
    "cycle at 50ms latency",
    "CPU per 1000 requests",
    "idle CPU between cycles",
    "peak RSS",
    "RSS growth, cycle 2 to last",
    "/metrics render",
    "/metrics vs prometheus_client gauges",
    "rows written per steady cycle",
    "detection latency",
    "cycle under concurrent scrapes",
    "cost growth (s per 1000 requests)",
    "page: overview /",
    "page: tenant list /tenants",
    "page: tenant (Timbal org)",
    "page: tenant (Paragon user)",
    "page: sync",
    "page: /alerts",
    "page: /alerts, filtered",
    "page: /alerts, one tenant",
    "page: /silences",
    "page: silence form",
    "page: first view after a cycle",
    "cycle under 4 overview clients",
]


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, object], str]:
    out = tmp_path_factory.mktemp("bench") / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(out.read_text()), done.stdout


def test_quick_run_reports_every_target(quick: tuple[dict[str, object], str]) -> None:
    results, stdout = quick
    verdicts = results["verdicts"]
    assert isinstance(verdicts, list)
    assert [v["target"] for v in verdicts] == TARGETS
    for target in TARGETS:
        assert target in stdout


def test_quick_run_says_its_verdicts_are_indicative_not_a_pass_or_fail(
    quick: tuple[dict[str, object], str],
) -> None:
    _, stdout = quick
    assert "indicative only" in stdout
    assert "NOT MET" not in stdout
    assert " met\n" not in stdout


def test_quick_run_measured_a_real_fleet(quick: tuple[dict[str, object], str]) -> None:
    results, _ = quick
    fleet = results["fleet"]
    assert isinstance(fleet, dict)
    assert fleet["syncs"] == 20 * 10 + 40 * 3
    assert fleet["requests_per_cycle"] == 20 + 40
    cycle = results["cycle"]
    assert isinstance(cycle, dict)
    assert cycle["tenants_failed"] == 0
    assert 0 < cycle["steady_median"] < 60
    floor = results["floor"]
    assert isinstance(floor, dict)
    assert floor["wall"] > 0
    metrics = results["metrics"]
    assert isinstance(metrics, dict)
    # Every sync has series, and the baseline served as many.
    assert metrics["series"] > fleet["syncs"]
    assert metrics["baseline_series"] >= metrics["series"]
    load = results["load"]
    assert isinstance(load, dict)
    assert load["scrapes_ok"] > 0
    assert load["error_count"] == 0
    detection = results["detection"]
    assert isinstance(detection, dict)
    assert all(0 < latency < 60 for latency in detection["latencies"])
    curve = results["curve"]
    assert isinstance(curve, list)
    assert [c["fraction"] for c in curve] == [0.3, 1.0]
    pages = results["pages"]
    assert isinstance(pages, dict)
    assert pages["alerts"] > 0  # the pages were measured with alerts to show
    for target, page in pages["pages"].items():
        assert page["status"] == 200, target
        assert page["bytes"] > 0, target
        assert page["median"] > 0, target
    page_load = results["page_load"]
    assert isinstance(page_load, dict)
    assert page_load["loads_ok"] > 0
    assert page_load["error_count"] == 0
    assert len(page_load["pair_ratios"]) == 2
    assert len(page_load["first_views"]) + len(page_load["first_views_in_a_cycle"]) == 2


def test_cardinality_quick_run_counts_each_mode(tmp_path: Path) -> None:
    out = tmp_path / "cardinality.json"
    args = ["--quick", "--repeat", "1", "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.cardinality", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(out.read_text())
    assert results["syncs"] == 20 * 100 + 40 * 3
    modes = {m["mode"]: m for m in results["modes"]}
    assert list(modes) == ["all", "alerting", "none"]
    for mode in modes:
        assert f"| `{mode}` |" in done.stdout
    assert modes["all"]["series"] > modes["alerting"]["series"] > modes["none"]["series"]
    assert modes["none"]["kinds"].get("per-sync", 0) == 0
    assert modes["none"]["kinds"]["aggregates"] == modes["all"]["kinds"]["aggregates"] > 0
