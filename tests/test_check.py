"""`syncwatch check` as a subprocess against `syncwatch simulate` in another process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import Keys, SimProcess, refused_port, sim_config_toml


def check(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncwatch", "check", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def write_config(tmp_path: Path, sim: SimProcess, keys: Keys, **kwargs: Any) -> Path:
    path = tmp_path / "syncwatch.toml"
    path.write_text(
        sim_config_toml(sim, keys, state_path=tmp_path / "state.db", listen="127.0.0.1:0", **kwargs)
    )
    return path


def test_json_lists_every_sync_with_the_state_the_simulator_intended(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys
) -> None:
    result = check(write_config(tmp_path, sim, rsa_keys), "--format", "json")
    report = json.loads(result.stdout)
    fleet = sim.fleet()
    intended = {("timbal", s["org_id"], s["sync_id"]): s["intended"] for s in fleet["timbal"]}
    intended |= {("paragon", s["user_id"], s["sync_id"]): s["intended"] for s in fleet["paragon"]}
    got = {(s["source"], s["tenant"], s["sync_id"]): s["state"] for s in report["syncs"]}
    assert got == intended
    alertnames = {(s["sync_id"], s["alertname"]) for s in report["syncs"] if s["alertname"]}
    expected = {
        (s["sync_id"], s["alertname"]) for s in fleet["timbal"] + fleet["paragon"] if s["alertname"]
    }
    assert alertnames == expected


def test_exit_code_is_critical_when_a_critical_alert_holds(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys
) -> None:
    fleet = sim.fleet()
    assert any(s["intended"] == "critical" for s in fleet["timbal"] + fleet["paragon"])
    result = check(write_config(tmp_path, sim, rsa_keys))
    assert result.returncode == 2, result.stderr
    assert "CRITICAL:" in result.stdout


def delete_sync(control: httpx.Client, org: str, sync_id: str) -> None:
    """Remove one simulated Timbal sync from its org's listing."""
    control.post(
        "/_sim/mutate",
        json={"source": "timbal", "tenant": org, "sync_id": sync_id, "delete": True},
    ).raise_for_status()


def test_exit_code_is_ok_for_a_healthy_org(tmp_path: Path, sim: SimProcess, rsa_keys: Keys) -> None:
    fleet = sim.fleet()
    bad = {s["org_id"] for s in fleet["timbal"] if s["intended"] in ("warning", "critical")}
    healthy = [o for o in fleet["orgs"] if o not in bad]
    states = {s["intended"] for s in fleet["timbal"] if s["org_id"] in healthy}
    if not healthy:
        # Every org has a stale sync: make one healthy by deleting its alerting syncs.
        org = fleet["orgs"][0]
        with sim.control() as control:
            for s in fleet["timbal"]:
                if s["org_id"] == org and s["intended"] in ("warning", "critical"):
                    delete_sync(control, org, s["sync_id"])
        healthy, states = [org], {"ok"}
    assert states <= {"ok", "disabled"}
    result = check(write_config(tmp_path, sim, rsa_keys, orgs=healthy[:1], users=[]))
    assert result.returncode == 0, result.stdout + result.stderr


def test_exit_code_is_unknown_when_a_tenant_is_unreachable(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys
) -> None:
    fleet = sim.fleet()
    org = fleet["orgs"][0]
    with sim.control() as control:
        control.post(
            "/_sim/faults", json={"source": "timbal", "tenant": org, "kind": "http_503"}
        ).raise_for_status()
        # Only that org, with its alerting syncs gone, so nothing outranks UNKNOWN.
        for s in fleet["timbal"]:
            if s["org_id"] == org:
                delete_sync(control, org, s["sync_id"])
    result = check(write_config(tmp_path, sim, rsa_keys, orgs=[org], users=[]))
    assert result.returncode == 3, result.stdout + result.stderr
    assert "UNREACHABLE" in result.stdout
    assert "http_5xx" in result.stdout


def test_a_critical_sync_outranks_an_unreachable_tenant_and_unreachable_outranks_a_warning(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys
) -> None:
    """The README's order, as Icinga reads it: CRITICAL (2) > UNKNOWN (3) > WARNING (1)."""
    fleet = sim.fleet()
    states: dict[str, set[str]] = {}
    for s in fleet["timbal"]:
        states.setdefault(s["org_id"], set()).add(s["intended"])
    stale = next(o for o in fleet["orgs"] if {"critical", "warning"} <= states[o])
    down = next(o for o in fleet["orgs"] if o != stale)
    with sim.control() as control:
        control.post(
            "/_sim/faults", json={"source": "timbal", "tenant": down, "kind": "http_503"}
        ).raise_for_status()
    config = write_config(tmp_path, sim, rsa_keys, orgs=[stale, down], users=[])

    both = check(config, "--format", "json")
    report = json.loads(both.stdout)
    assert both.returncode == 2, both.stdout + both.stderr
    assert report["status"] == "CRITICAL"
    assert {(s["tenant"], s["up"]) for s in report["sources"]} == {(stale, True), (down, False)}
    unreachable = [a for a in report["alerts"] if a["labels"]["alertname"] == "SourceUnreachable"]
    assert [(a["labels"]["tenant"], a["severity"]) for a in unreachable] == [(down, "critical")]
    table = check(config)
    assert table.returncode == 2
    assert "UNREACHABLE" in table.stdout
    assert table.stdout.splitlines()[-1].startswith("CRITICAL: ")

    # The critical syncs gone, the warnings stay: now the unreachable tenant decides (3).
    with sim.control() as control:
        for s in fleet["timbal"]:
            if s["org_id"] == stale and s["intended"] == "critical":
                delete_sync(control, stale, s["sync_id"])
    warned = check(config, "--format", "json")
    report = json.loads(warned.stdout)
    assert warned.returncode == 3, warned.stdout + warned.stderr
    assert report["status"] == "UNKNOWN"
    assert {a["severity"] for a in report["alerts"] if a["labels"]["tenant"] == stale} == {
        "warning"
    }


def test_table_has_a_row_per_sync_and_a_summary(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys
) -> None:
    fleet = sim.fleet()
    result = check(write_config(tmp_path, sim, rsa_keys))
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["SOURCE", "TENANT", "SYNC", "STATE"]
    rows = [line for line in lines[1:] if line.startswith(("timbal ", "paragon "))]
    assert len(rows) == len(fleet["timbal"]) + len(fleet["paragon"])
    assert lines[-1].startswith("CRITICAL: ")


def test_check_sends_nothing(tmp_path: Path, sim: SimProcess, rsa_keys: Keys) -> None:
    """A notifier pointed at a port nobody listens on: check must not even try."""
    port = refused_port()
    config = write_config(
        tmp_path,
        sim,
        rsa_keys,
        extra=f'[[notifiers]]\nname = "w"\ntype = "webhook"\nurl = "http://127.0.0.1:{port}/"',
    )
    result = check(config)
    assert result.returncode == 2
    assert "notification" not in result.stderr
    assert not (tmp_path / "state.db").exists()


def test_a_stored_silence_suppresses_its_alerts_and_leaves_them_out_of_the_exit_code(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys
) -> None:
    """`check` reads the silences `run` stored (the same state database), never creating it."""
    from datetime import UTC, datetime, timedelta

    from syncwatch.silence_store import SilenceStore
    from syncwatch.silences import Matcher, Silence

    config = write_config(tmp_path, sim, rsa_keys)
    before = check(config, "--format", "json")
    assert before.returncode == 2, before.stderr
    assert not (tmp_path / "state.db").exists(), "check must not create the state database"
    now = datetime.now(UTC)
    store = SilenceStore(tmp_path / "state.db")
    change = store.set(
        Silence(
            id="",
            matchers=(Matcher("severity", "critical"),),
            starts_at=now - timedelta(minutes=1),
            ends_at=now + timedelta(hours=1),
            created_by="ops@example.com",
            comment="known outage",
            updated_at=now,
        ),
        now,
    )
    store.close()
    after = check(config, "--format", "json")
    report = json.loads(after.stdout)
    critical = [a for a in report["alerts"] if a["severity"] == "critical"]
    assert critical
    assert {a["state"] for a in critical} == {"suppressed"}
    assert all(a["silenced_by"] == [change.stored.id] for a in critical)
    assert after.returncode != 2, after.stdout
    assert report["exit_code"] == after.returncode
