"""Upstream faults, end to end: a real `syncwatch run` against a real `syncwatch simulate`.

One simulator and one daemon for the whole module. Every Timbal fault kind is switched on at
once, each on its own org, with one healthy org and the Paragon users as controls. The
`scenario` fixture drives the run (healthy → faults → every SourceUnreachable firing → faults
cleared → recovered) and records what /metrics, /api/v1/alerts and the JSON log showed; the
tests below judge that record, one fault kind per test id.

Consistency rules the observations rely on (no sleeps, no timing guesses):
- one /metrics page's fleet part (source_up, syncwatch_alert, sync series) is one snapshot;
- /api/v1/alerts between two /metrics pages with the same last-cycle timestamp is that cycle's;
- within a cycle the daemon logs `poll_failed`, then `alert_transition`, then `cycle_complete`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import (
    Daemon,
    Keys,
    SimProcess,
    launch,
    start_simulator,
    wait_until,
)

THRESHOLD = 3  # alerting.source_failure_threshold
REQUEST_TIMEOUT = 2.5  # daemon.request_timeout: a loaded CI box once took over 1 s to answer
SLOW = 8.0  # fault delay for timeout / slow_body: well beyond REQUEST_TIMEOUT
UNREACHABLE = "SourceUnreachable"


@dataclass(frozen=True)
class Case:
    name: str
    kind: str
    reason: str  # the Reason value the daemon must report
    spec: dict[str, Any] = field(default_factory=dict)


CASES = [
    Case("http_500", "http_500", "http_5xx"),
    Case("http_502", "http_502", "http_5xx"),
    Case("http_503", "http_503", "http_5xx"),
    Case("timeout", "timeout", "timeout", {"delay": SLOW}),
    Case("reset", "reset", "connect_error"),
    Case("slow_body", "slow_body", "timeout", {"delay": SLOW}),
    Case("truncated", "truncated", "invalid_response"),
    Case("html_502", "html", "http_5xx"),  # an nginx error page with its 502
    Case("html_200", "html", "invalid_response", {"status": 200}),  # a maintenance page
    Case("wrong_shape", "wrong_shape", "schema_mismatch"),
    Case("http_401", "http_401", "http_401"),
    Case("http_403", "http_403", "http_403"),
    # Beyond MAX_RETRY_AFTER (30 s): this cycle fails instead of stalling on the wait.
    Case("http_429", "http_429", "http_429", {"retry_after": 3600}),
]
CASE_IDS = [c.name for c in CASES]
REASONS = sorted({c.reason for c in CASES})

# --- observations --------------------------------------------------------------------------

Series = dict[str, list[tuple[dict[str, str], float]]]


@dataclass(frozen=True)
class Scrape:
    """One /metrics page, reduced to what the tests judge."""

    cycle_ts: float | None
    up: dict[tuple[str, str], float]
    alerts: dict[tuple[str, str, str, str], str]  # (alertname, source, tenant, sync_id) → state
    syncs: dict[tuple[str, str], frozenset[str]]  # (source, tenant) → listed sync ids
    poll_errors: dict[tuple[str, str], float]  # (source, reason) → count
    invalid_records: dict[str, float]

    @classmethod
    def parse(cls, text: str) -> Scrape:
        samples: Series = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append((sample.labels, sample.value))
        cycle = samples.get("syncwatch_last_cycle_timestamp_seconds", [])
        syncs: dict[tuple[str, str], set[str]] = {}
        for labels, _ in samples.get("syncwatch_timbal_sync_info", []):
            syncs.setdefault(("timbal", labels["org_id"]), set()).add(labels["sync_id"])
        for labels, _ in samples.get("syncwatch_paragon_sync_info", []):
            syncs.setdefault(("paragon", labels["user_id"]), set()).add(labels["sync_id"])
        return cls(
            cycle_ts=cycle[0][1] if cycle else None,
            up={(lb["source"], lb["tenant"]): v for lb, v in samples["syncwatch_source_up"]},
            alerts={
                (lb["alertname"], lb["source"], lb["tenant"], lb["sync_id"]): lb["state"]
                for lb, _ in samples.get("syncwatch_alert", [])
            },
            syncs={k: frozenset(v) for k, v in syncs.items()},
            poll_errors={
                (lb["source"], lb["reason"]): v
                for lb, v in samples.get("syncwatch_poll_errors_total", [])
            },
            invalid_records={
                lb["source"]: v for lb, v in samples.get("syncwatch_invalid_records_total", [])
            },
        )

    def unreachable(self, tenant: str) -> str | None:
        """The state of the tenant's SourceUnreachable in this snapshot, or None."""
        return self.alerts.get((UNREACHABLE, "timbal", tenant, ""))


def api_unreachable(api: list[dict[str, Any]], tenant: str) -> dict[str, Any] | None:
    found = [
        a
        for a in api
        if a["labels"]["alertname"] == UNREACHABLE
        and a["labels"]["source"] == "timbal"
        and a["labels"]["tenant"] == tenant
    ]
    assert len(found) <= 1, found
    return found[0] if found else None


def read_log(path: Path) -> list[dict[str, Any]]:
    """The daemon's JSON log events, in order (non-JSON lines are skipped)."""
    text = path.read_text(errors="replace")
    lines = text.splitlines()
    if not text.endswith("\n"):
        lines = lines[:-1]  # a line still being written
    return [json.loads(line) for line in lines if line.startswith("{")]


def failures(events: list[dict[str, Any]], tenant: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == "poll_failed" and e["tenant"] == tenant]


def failure_counts(events: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    return Counter((e["source"], e["reason"]) for e in events if e["event"] == "poll_failed")


@dataclass
class Scenario:
    daemon: Daemon
    fleet: dict[str, Any]
    org_of: dict[str, str]  # case name → the org it faults
    poison_org: str
    control_org: str
    baseline: Scrape
    baseline_api: list[dict[str, Any]]
    baseline_log: list[dict[str, Any]]
    # Faults on: every scrape, and (scrape, /api/v1/alerts) pairs of one and the same cycle.
    ramp: list[Scrape] = field(default_factory=list)
    brackets: list[tuple[Scrape, list[dict[str, Any]]]] = field(default_factory=list)
    ramp_done: bool = False
    ramp_log_before: list[dict[str, Any]] = field(default_factory=list)
    ramp_end: Scrape | None = None
    ramp_api: list[dict[str, Any]] = field(default_factory=list)
    ramp_log_after: list[dict[str, Any]] = field(default_factory=list)
    # Faults cleared.
    recovery: list[Scrape] = field(default_factory=list)
    recovered: bool = False
    final: Scrape | None = None
    final_api: list[dict[str, Any]] = field(default_factory=list)
    final_log: list[dict[str, Any]] = field(default_factory=list)

    def expected_syncs(self, org: str) -> frozenset[str]:
        return frozenset(s["sync_id"] for s in self.fleet["timbal"] if s["org_id"] == org)

    @property
    def failing(self) -> list[str]:
        return list(self.org_of.values())


# --- the run -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fault_sim(tmp_path_factory: pytest.TempPathFactory, rsa_keys: Keys) -> Iterator[SimProcess]:
    """This module's own simulator: its faults never reach the session simulator."""
    sim = start_simulator(
        tmp_path_factory.mktemp("fault-sim"),
        rsa_keys,
        *("--orgs", str(len(CASES) + 2), "--syncs-per-org", "5"),
        *("--users", "2", "--syncs-per-user", "3", "--seed", "11", "--churn", "0"),
    )
    yield sim
    sim.proc.stop()


def start_daemon(directory: Path, sim: SimProcess, keys: Keys) -> Daemon:
    daemon = launch(
        directory,
        sim,
        keys,
        poll_interval="1s",
        request_timeout=f"{REQUEST_TIMEOUT:g}s",
        extra=f"[alerting]\nsource_failure_threshold = {THRESHOLD}\n",
    )
    text = daemon.config_path.read_text()
    assert f'request_timeout = "{REQUEST_TIMEOUT:g}s"' in text
    assert "retries = 0" in text
    assert 'log_format = "json"' in text
    return daemon


@pytest.fixture(scope="module")
def scenario(
    tmp_path_factory: pytest.TempPathFactory, fault_sim: SimProcess, rsa_keys: Keys
) -> Iterator[Scenario]:
    fault_sim.reset()
    daemon = start_daemon(tmp_path_factory.mktemp("fault-daemon"), fault_sim, rsa_keys)
    try:
        yield run_scenario(daemon, fault_sim)
    finally:
        fault_sim.reset()
        daemon.proc.stop()


def run_scenario(daemon: Daemon, sim: SimProcess) -> Scenario:
    fleet = sim.fleet()
    orgs = sorted(fleet["orgs"])
    assert len(orgs) == len(CASES) + 2
    log_path = daemon.proc.log_path

    def scrape() -> Scrape:
        return Scrape.parse(daemon.get("/metrics").raise_for_status().text)

    def api() -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = daemon.get("/api/v1/alerts").raise_for_status().json()
        return alerts

    daemon.wait_cycles(1)
    s = Scenario(
        daemon=daemon,
        fleet=fleet,
        org_of={c.name: org for c, org in zip(CASES, orgs, strict=False)},
        poison_org=orgs[-2],
        control_org=orgs[-1],
        baseline=scrape(),
        baseline_api=api(),
        baseline_log=read_log(log_path),
    )

    with sim.control() as control:
        for case in CASES:
            spec = {"source": "timbal", "tenant": s.org_of[case.name], "kind": case.kind}
            control.post("/_sim/faults", json={**spec, **case.spec}).raise_for_status()
        control.post(
            "/_sim/faults",
            json={"source": "timbal", "tenant": s.poison_org, "kind": "poison"},
        ).raise_for_status()

    def observe(into: list[Scrape]) -> tuple[Scrape, list[dict[str, Any]]]:
        before, alerts, after = scrape(), api(), scrape()
        into += [before, after]
        if before.cycle_ts == after.cycle_ts:
            s.brackets.append((before, alerts))
        return after, alerts

    def all_firing() -> bool:
        last, alerts = observe(s.ramp)
        firing = [api_unreachable(alerts, org) for org in s.failing]
        poisoned = last.invalid_records.get("timbal", 0) > s.baseline.invalid_records["timbal"]
        return poisoned and all(a is not None and a["state"] == "firing" for a in firing)

    try:
        wait_until(all_firing, timeout=30)
        s.ramp_done = True
    except AssertionError:
        pass
    s.ramp_log_before = read_log(log_path)
    s.ramp_end = scrape()
    s.ramp_api = api()
    s.ramp_log_after = read_log(log_path)

    with sim.control() as control:
        control.delete("/_sim/faults").raise_for_status()

    def all_recovered() -> bool:
        last, alerts = observe(s.recovery)
        up = all(last.up.get(("timbal", org)) == 1 for org in orgs)
        return up and not any(a["labels"]["alertname"] == UNREACHABLE for a in alerts)

    try:
        wait_until(all_recovered, timeout=20)
        s.recovered = True
    except AssertionError:
        pass
    # One more whole cycle: no fault is left to count, so logs and counters have settled.
    daemon.wait_cycles(2)
    s.final = scrape()
    s.final_api = api()
    s.final_log = read_log(log_path)
    return s


# --- the tests -----------------------------------------------------------------------------


def _case(name: str) -> Case:
    return next(c for c in CASES if c.name == name)


def test_the_run_reached_every_phase(scenario: Scenario) -> None:
    """Healthy before, every fault alerting, then every tenant back: the frame of the rest."""
    s = scenario
    assert all(v == 1 for v in s.baseline.up.values()), s.baseline.up
    assert not failure_counts(s.baseline_log)
    assert len(s.baseline.up) == len(s.fleet["orgs"]) + len(s.fleet["users"])
    assert not any(v for v in s.baseline.poll_errors.values())
    assert not any(a["labels"]["alertname"] == UNREACHABLE for a in s.baseline_api)
    assert s.ramp_done, "not every faulted org reached a firing SourceUnreachable within 30 s"
    assert s.recovered, "not every org came back up without SourceUnreachable within 20 s"


@pytest.mark.parametrize("name", CASE_IDS)
def test_fault_is_logged_with_its_reason(scenario: Scenario, name: str) -> None:
    case, org = _case(name), scenario.org_of[name]
    logged = failures(scenario.ramp_log_after, org)
    assert len(logged) >= THRESHOLD
    assert {e["source"] for e in logged} == {"timbal"}
    assert {e["reason"] for e in logged} == {case.reason}
    assert all(e["level"] == "warning" and org in e["error"] for e in logged)


@pytest.mark.parametrize("name", CASE_IDS)
def test_fault_takes_down_its_tenant_only(scenario: Scenario, name: str) -> None:
    org = scenario.org_of[name]
    end = scenario.ramp_end
    assert end is not None
    assert end.up[("timbal", org)] == 0
    assert end.up[("timbal", scenario.control_org)] == 1
    assert end.up[("timbal", scenario.poison_org)] == 1
    assert all(v == 1 for (source, _), v in end.up.items() if source == "paragon")


@pytest.mark.parametrize("name", CASE_IDS)
def test_source_unreachable_fires_at_the_threshold_not_before(
    scenario: Scenario, name: str
) -> None:
    case, org = _case(name), scenario.org_of[name]
    events = scenario.ramp_log_after

    # The log, in order: the alert fires in the cycle of the tenant's THRESHOLD-th failure.
    fired = [
        i
        for i, e in enumerate(events)
        if e["event"] == "alert_transition"
        and e["alertname"] == UNREACHABLE
        and e["tenant"] == org
        and e["kind"] == "firing"
    ]
    assert len(fired) == 1, fired
    failed = [
        i
        for i, e in enumerate(events[: fired[0]])
        if e["event"] == "poll_failed" and e["tenant"] == org
    ]
    assert len(failed) == THRESHOLD
    assert not any(e["event"] == "cycle_complete" for e in events[failed[-1] : fired[0]])

    # /api/v1/alerts, read within one cycle: the tenant was seen down with no firing alert...
    early = [
        api
        for scrape, api in scenario.brackets
        if scrape.up.get(("timbal", org)) == 0
        and (api_unreachable(api, org) or {}).get("state") != "firing"
    ]
    assert early, "never saw the tenant down before its SourceUnreachable fired"
    # ...and never an alert while the tenant was up, in any snapshot.
    for scrape in [*scenario.ramp, *scenario.recovery]:
        if scrape.unreachable(org) is not None:
            assert scrape.up[("timbal", org)] == 0

    # ...then firing, with the reason of this fault.
    alert = api_unreachable(scenario.ramp_api, org)
    assert alert is not None
    assert alert["state"] == "firing"
    assert alert["labels"]["reason"] == case.reason
    assert alert["severity"] == "critical"
    assert org in alert["annotations"]["description"]
    assert scenario.ramp_end is not None
    assert scenario.ramp_end.unreachable(org) == "firing"


@pytest.mark.parametrize("name", CASE_IDS)
def test_tenant_recovers_on_the_next_good_poll(scenario: Scenario, name: str) -> None:
    org = scenario.org_of[name]
    events = scenario.final_log
    last_failure = max(
        i for i, e in enumerate(events) if e["event"] == "poll_failed" and e["tenant"] == org
    )
    ends = [i for i, e in enumerate(events) if i > last_failure and e["event"] == "cycle_complete"]
    assert len(ends) >= 2
    resolved = [
        i
        for i, e in enumerate(events)
        if e["event"] == "alert_transition"
        and e["alertname"] == UNREACHABLE
        and e["tenant"] == org
        and e["kind"] == "resolved"
    ]
    # Resolved once, in the first cycle after the failing one: the next good poll.
    assert len(resolved) == 1
    assert ends[0] < resolved[0] < ends[1]

    final = scenario.final
    assert final is not None
    assert final.up[("timbal", org)] == 1
    assert final.unreachable(org) is None
    assert api_unreachable(scenario.final_api, org) is None
    assert final.syncs[("timbal", org)] == scenario.expected_syncs(org)


@pytest.mark.parametrize("reason", REASONS)
def test_poll_errors_total_counts_each_failed_poll_by_reason(
    scenario: Scenario, reason: str
) -> None:
    tenants = sum(1 for c in CASES if c.reason == reason)
    key = ("timbal", reason)
    assert scenario.ramp_end is not None
    assert scenario.final is not None
    during = scenario.ramp_end.poll_errors.get(key, 0)
    # Each tenant with this reason failed at least THRESHOLD times before its alert fired.
    assert during >= THRESHOLD * tenants
    # The counter follows the log: at most the cycle in flight (one poll per tenant) apart.
    logged_before = failure_counts(scenario.ramp_log_before)[key]
    logged_after = failure_counts(scenario.ramp_log_after)[key]
    assert logged_before - tenants <= during <= logged_after
    # Once the faults are gone it settles on exactly one count per logged failure.
    assert scenario.final.poll_errors.get(key, 0) == failure_counts(scenario.final_log)[key]


def test_no_failure_is_counted_under_another_reason(scenario: Scenario) -> None:
    assert scenario.final is not None
    counted = {k for k, v in scenario.final.poll_errors.items() if v}
    assert counted == {("timbal", r) for r in REASONS}
    assert set(failure_counts(scenario.final_log)) == counted
    failing = {e["tenant"] for e in scenario.final_log if e["event"] == "poll_failed"}
    assert failing == set(scenario.failing)


def test_poisoned_record_is_skipped_and_its_tenant_stays_up(scenario: Scenario) -> None:
    s, org = scenario, scenario.poison_org
    listed = [x["sync_id"] for x in s.fleet["timbal"] if x["org_id"] == org]
    invalid = [e for e in s.ramp_log_after if e["event"] == "invalid_record"]
    assert invalid, "the poisoned record was not reported"
    # The simulator breaks the first record of the listing (interval_secs = -5).
    assert {(e["source"], e["tenant"], e["sync_id"]) for e in invalid} == {
        ("timbal", org, listed[0])
    }
    assert "interval_secs" in invalid[0]["errors"]
    assert s.ramp_end is not None
    grew = s.ramp_end.invalid_records["timbal"] - s.baseline.invalid_records["timbal"]
    assert 1 <= grew <= len(invalid)
    assert s.ramp_end.syncs[("timbal", org)] == frozenset(listed[1:])
    for scrape in [s.baseline, *s.ramp, *s.recovery]:
        assert scrape.up[("timbal", org)] == 1
        assert scrape.unreachable(org) is None
    assert not failures(s.final_log, org)
    assert api_unreachable(s.ramp_api, org) is None
    # Listed whole again once the poison is gone.
    assert s.final is not None
    assert s.final.syncs[("timbal", org)] == frozenset(listed)


def test_healthy_tenants_are_unaffected(scenario: Scenario) -> None:
    s = scenario
    healthy = [("timbal", s.control_org)] + [("paragon", u) for u in s.fleet["users"]]
    wanted = {("timbal", s.control_org): s.expected_syncs(s.control_org)} | {
        ("paragon", u): frozenset(x["sync_id"] for x in s.fleet["paragon"] if x["user_id"] == u)
        for u in s.fleet["users"]
    }
    assert s.ramp, "no scrape while the faults were on"
    for scrape in [s.baseline, *s.ramp, *s.recovery, s.ramp_end, s.final]:
        assert scrape is not None
        for key in healthy:
            assert scrape.up[key] == 1
            assert scrape.syncs[key] == wanted[key]
    for _, tenant in healthy:
        assert not failures(s.final_log, tenant)

    def their_alerts(api: list[dict[str, Any]]) -> set[tuple[str, str, str, str]]:
        return {
            (a["labels"]["alertname"], a["labels"]["sync_id"], a["state"], a["severity"])
            for a in api
            if (a["labels"]["source"], a["labels"]["tenant"]) in healthy
        }

    assert their_alerts(s.ramp_api) == their_alerts(s.baseline_api)
    assert their_alerts(s.final_api) == their_alerts(s.baseline_api)


def test_daemon_survives_every_fault(scenario: Scenario) -> None:
    proc = scenario.daemon.proc
    assert proc.popen.poll() is None
    output = proc.output
    assert "Traceback" not in output
    assert not [e for e in scenario.final_log if e["level"] in ("error", "critical")]
    cycles = [e for e in scenario.ramp_log_after if e["event"] == "cycle_complete"]
    before = sum(1 for e in scenario.baseline_log if e["event"] == "cycle_complete")
    # Polling went on through the faults: at least THRESHOLD cycles while they were on.
    assert len(cycles) - before >= THRESHOLD
    assert scenario.daemon.get("/healthz").status_code == 200
