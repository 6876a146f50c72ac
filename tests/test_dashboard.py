"""deploy/grafana/syncwatch.json: generated, and every panel query runs on a real Prometheus.

A real `syncwatch run` watches the simulator; a real Prometheus scrapes it (with the
alerting rules loaded, as in production) and answers each panel's PromQL, in each
`metrics.per_sync_series` mode: only the panels the generator lists as PER_SYNC_ONLY may
go empty without per-sync series.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.conftest import Daemon, Keys, SimProcess, launch, wait_until
from tests.test_prometheus import query, running_prometheus
from tests.test_rules import rule_names

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "deploy" / "grafana"
RULES = ROOT / "deploy" / "prometheus" / "syncwatch-rules.yml"
# Panels that must show data for any fleet: the overview stats and the staleness table.
MUST_HAVE_DATA = {
    "Stale Timbal syncs",
    "Critical Paragon syncs",
    "Tenants failing to list",
    "Tenants with invalid records",
    "Worst staleness ratio per org",
    "Worst staleness ratios",
    "Syncs by state",
    "Source health per tenant",
}
MODES = ["all", "alerting", "none"]
PER_SYNC_FAMILIES = re.compile(r"syncwatch_(timbal|paragon)_sync_|syncwatch_alert\b")


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("syncwatch_grafana", GRAFANA / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((GRAFANA / "syncwatch.json").read_text())
    return data


def targets() -> list[tuple[str, str]]:
    """(panel title, expr) for every panel target, with Grafana's variables filled in."""
    out = []
    for panel in dashboard()["panels"]:
        for t in panel.get("targets", []):
            expr = t["expr"].replace("$tenant", ".*").replace("$__rate_interval", "1m")
            out.append((panel["title"], expr))
    return out


def test_committed_json_is_the_generator_output() -> None:
    committed = (GRAFANA / "syncwatch.json").read_text()
    assert committed == generator().render(), "run: python deploy/grafana/generate.py"


def test_dashboard_shape() -> None:
    board = dashboard()
    assert board["schemaVersion"] == 39
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    tenant = variables["tenant"]
    assert tenant["query"]["query"] == "label_values(syncwatch_source_up, tenant)"
    assert tenant["multi"] is True
    assert tenant["includeAll"] is True
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    titles = {p["title"] for p in board["panels"]}
    assert titles >= MUST_HAVE_DATA | {
        "Poll duration p95",
        "Notifications by outcome",
        "Outbox pending",
    }
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for t in panel["targets"]:
            assert t["datasource"] == panel["datasource"]
    exprs = " ".join(expr for _, expr in targets())
    assert "histogram_quantile(0.95" in exprs
    assert "topk(" in exprs


def test_only_the_panels_marked_per_sync_only_read_per_sync_series() -> None:
    per_sync_only = generator().PER_SYNC_ONLY
    panels = {p["title"]: p for p in dashboard()["panels"]}
    assert per_sync_only <= set(panels)
    readers = {title for title, expr in targets() if PER_SYNC_FAMILIES.search(expr)}
    assert readers == per_sync_only
    for title in per_sync_only:
        assert "Needs per-sync series" in panels[title]["description"], title


@pytest.fixture
def mode(request: pytest.FixtureRequest) -> str:
    """metrics.per_sync_series of the daemon (parametrized indirectly; default `all`)."""
    return str(getattr(request, "param", "all"))


@pytest.fixture
def daemon(tmp_path: Path, sim: SimProcess, rsa_keys: Keys, mode: str) -> Iterator[Daemon]:
    d = launch(tmp_path, sim, rsa_keys, extra=f'[metrics]\nper_sync_series = "{mode}"\n')
    yield d
    d.proc.stop()


@pytest.fixture
def prometheus(tmp_path: Path, daemon: Daemon) -> Iterator[str]:
    with running_prometheus(tmp_path, daemon.url, rules=RULES) as url:
        yield url


@pytest.mark.parametrize("mode", MODES, indirect=True)
def test_every_panel_query_runs_on_prometheus(prometheus: str, mode: str) -> None:
    # One scrape of a daemon that has finished a cycle: its series are in the TSDB.
    wait_until(lambda: query(prometheus, "syncwatch_tenant_syncs"), timeout=60)
    wait_until(lambda: query(prometheus, f'syncwatch_per_sync_series{{mode="{mode}"}}'))
    empty = []
    for title, expr in targets():
        response = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=5)
        body = response.json()
        assert response.status_code == 200, (title, expr, body)
        assert body["status"] == "success", (title, expr, body)
        if title in MUST_HAVE_DATA and not body["data"]["result"]:
            empty.append(title)
    # Without per-sync series only the panels documented as needing them are empty.
    assert sorted(empty) == (sorted(generator().PER_SYNC_ONLY) if mode == "none" else [])


@pytest.mark.parametrize("mode", ["all", "none"], indirect=True)
def test_overview_counts_match_the_simulated_fleet(prometheus: str, sim: SimProcess) -> None:
    wait_until(lambda: query(prometheus, "syncwatch_tenant_syncs"), timeout=60)
    exprs = dict(targets())
    errored = query(prometheus, exprs["Critical Paragon syncs"])
    expected = sum(1 for s in sim.fleet()["paragon"] if s["status"] == "ERRORED")
    assert [float(r["value"][1]) for r in errored] == [expected]


def test_alerting_rules_load_and_evaluate(prometheus: str) -> None:
    def evaluated() -> list[dict[str, Any]]:
        response = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).raise_for_status()
        groups: list[dict[str, Any]] = response.json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return (
            rules
            if rules and all(r.get("lastEvaluation", "").startswith("2") for r in rules)
            else []
        )

    rules = wait_until(evaluated, timeout=30)
    assert len(rules) == len(rule_names())
    assert {r["health"] for r in rules} == {"ok"}, [r for r in rules if r["health"] != "ok"]
