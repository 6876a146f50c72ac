"""deploy/prometheus/syncwatch-rules.yml: promtool lints it and runs its unit tests."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require_tool

RULES_DIR = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"
RULES = RULES_DIR / "syncwatch-rules.yml"


def rule_names() -> list[str]:
    """Every alert in the shipped rules file, in order."""
    doc = yaml.safe_load(RULES.read_text())
    return [r["alert"] for g in doc["groups"] for r in g["rules"]]


RULES_TEST = RULES_DIR / "syncwatch-rules.test.yml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = require_tool("promtool", "apt-get install prometheus")
    return subprocess.run(
        [binary, *args], capture_output=True, text=True, timeout=60, check=False, cwd=RULES_DIR
    )


def test_promtool_check_rules_passes() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rule_names())} rules found" in result.stdout


def test_promtool_test_rules_passes() -> None:
    result = promtool("test", "rules", str(RULES_TEST))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_rule_groups_and_names() -> None:
    doc = yaml.safe_load(RULES.read_text())
    groups = {g["name"]: [r["alert"] for r in g["rules"]] for g in doc["groups"]}
    assert groups == {
        "syncwatch-self": [
            "SyncwatchDown",
            "SyncwatchNoCycle",
            "SyncwatchSourceDown",
            "SyncwatchInvalidRecords",
            "SyncwatchOutboxBacklog",
            "SyncwatchNotificationsDropped",
            "SyncwatchStateDown",
        ],
        "syncwatch-syncs": ["SyncStale", "SyncStale", "SyncErrored", "SyncDisabled"],
        "syncwatch-tenants": ["TenantSyncsCritical", "TenantSyncsWarning"],
    }


def test_unit_tests_run_the_rules_in_every_per_sync_series_mode() -> None:
    """Each metrics.per_sync_series mode has its own cases (docs/metrics.md)."""
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    modes = set()
    for case in tests:
        for series in case["input_series"]:
            found = re.search(r'syncwatch_per_sync_series\{.*mode="(\w+)"', series["series"])
            if found:
                modes.add(found[1])
    assert modes == {"all", "alerting", "none"}


@pytest.mark.parametrize("rule", _rules(), ids=lambda r: f"{r['alert']}-{r['labels']['severity']}")
def test_every_rule_has_severity_and_templated_annotations(rule: dict[str, object]) -> None:
    labels = rule["labels"]
    annotations = rule["annotations"]
    assert isinstance(labels, dict)
    assert isinstance(annotations, dict)
    assert labels["severity"] in {"critical", "warning", "info"}
    assert set(annotations) == {"summary", "description"}
    assert "{{" in annotations["summary"]
    assert "{{" in annotations["description"]
    assert "runbook" not in str(annotations).lower()


def test_unit_tests_cover_every_rule_firing_and_quiet() -> None:
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    firing: set[tuple[str, str]] = set()
    quiet: set[str] = set()
    for case in tests:
        for check in case["alert_rule_test"]:
            if not check.get("exp_alerts"):
                quiet.add(check["alertname"])
            for alert in check.get("exp_alerts") or []:
                firing.add((check["alertname"], alert["exp_labels"]["severity"]))
    rules = {(str(r["alert"]), r["labels"]["severity"]) for r in _rules()}
    assert rules <= firing
    assert {name for name, _ in rules} <= quiet
