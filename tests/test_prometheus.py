"""A real Prometheus (Debian's package) scrapes a real `syncwatch run`; promtool lints it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    Daemon,
    Keys,
    SimProcess,
    launch,
    ready_process,
    require_tool,
    wait_until,
)


@pytest.fixture
def daemon(tmp_path: Path, sim: SimProcess, rsa_keys: Keys) -> Iterator[Daemon]:
    d = launch(tmp_path, sim, rsa_keys)
    yield d
    d.proc.stop()


@contextmanager
def running_prometheus(
    tmp_path: Path,
    target: str,
    *,
    rules: Path | None = None,
    alertmanager: str | None = None,
    extra_args: tuple[str, ...] = (),
) -> Iterator[str]:
    """A real Prometheus on loopback scraping `target` every second; yields its URL."""
    binary = require_tool("prometheus", "apt-get install prometheus")
    config = tmp_path / "prometheus.yml"
    text = "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
    if rules is not None:
        text += f"rule_files: ['{rules}']\n"
    if alertmanager is not None:
        text += (
            "alerting:\n  alertmanagers:\n    - static_configs:\n"
            f"        - targets: ['{alertmanager.removeprefix('http://')}']\n"
        )
    text += (
        "scrape_configs:\n  - job_name: syncwatch\n"
        f"    static_configs:\n      - targets: ['{target.removeprefix('http://')}']\n"
    )
    config.write_text(text)
    with ready_process(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            "--web.listen-address=127.0.0.1:0",
            *extra_args,
        ],
        tmp_path / "prometheus.log",
    ) as url:
        yield url


@pytest.fixture
def prometheus(tmp_path: Path, daemon: Daemon) -> Iterator[str]:
    with running_prometheus(tmp_path, daemon.url) as url:
        yield url


def query(url: str, promql: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5)
    body = response.raise_for_status().json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def test_prometheus_scrapes_the_daemon_up(prometheus: str) -> None:
    result = wait_until(lambda: query(prometheus, 'up{job="syncwatch"} == 1'), timeout=30)
    assert len(result) == 1


def test_promql_finds_the_stale_syncs(prometheus: str, daemon: Daemon, sim: SimProcess) -> None:
    page = {
        (labels["org_id"], labels["sync_id"])
        for labels, value in daemon.metrics()["syncwatch_timbal_sync_staleness_ratio"]
        if value > 1.5
    }
    stale = {
        (s["org_id"], s["sync_id"])
        for s in sim.fleet()["timbal"]
        if s["alertname"] in ("SyncStale", "SyncNeverSucceeded")
    }
    assert stale <= page

    def found() -> set[tuple[str, str]]:
        result = query(prometheus, "syncwatch_timbal_sync_staleness_ratio > 1.5")
        return {(r["metric"]["org_id"], r["metric"]["sync_id"]) for r in result}

    wait_until(lambda: found() == page, timeout=30)


def test_prometheus_sees_alerts_and_source_health(prometheus: str, sim: SimProcess) -> None:
    def errored() -> list[dict[str, Any]]:
        return query(prometheus, 'syncwatch_alert{alertname="SyncErrored",state="firing"}')

    result = wait_until(errored, timeout=30)
    expected = {s["sync_id"] for s in sim.fleet()["paragon"] if s["alertname"] == "SyncErrored"}
    assert {r["metric"]["sync_id"] for r in result} == expected
    down = query(prometheus, "syncwatch_source_up == 0")
    assert down == []


def test_promtool_check_metrics_finds_no_problems(daemon: Daemon) -> None:
    binary = require_tool("promtool", "apt-get install prometheus")
    page = daemon.get("/metrics").raise_for_status().content
    result = subprocess.run(
        [binary, "check", "metrics"], input=page, capture_output=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert result.stdout.strip() == b""
