"""Acknowledgements: `POST /api/v1/alerts/{fingerprint}/ack` makes a silence bound to that one
alert, ended when the alert resolves or changes severity. The endpoint and the end of an ack
are driven through `syncwatch run`; the decision of which acks end is a pure table."""

from __future__ import annotations

import asyncio
import re
import signal
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from syncwatch.acks import ack_routes, ack_silence, acks_to_end
from syncwatch.amapi import ApiContext
from syncwatch.lifecycle import Alert
from syncwatch.models import AlertName, Severity, Source
from syncwatch.outbox import AlertStatus
from syncwatch.silence_store import SilenceStore
from syncwatch.silences import AckOf, Matcher, Silence
from tests.capture import CaptureServer
from tests.conftest import Daemon, Keys, SimProcess, launch, wait_until

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture
def daemon(tmp_path: Path, sim: SimProcess, rsa_keys: Keys) -> Iterator[Daemon]:
    d = launch(tmp_path, sim, rsa_keys)
    yield d
    d.proc.stop()


def ack(daemon: Daemon, fingerprint: str, body: object) -> httpx.Response:
    return httpx.post(f"{daemon.url}/api/v1/alerts/{fingerprint}/ack", json=body, timeout=20)


def firing(daemon: Daemon) -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = daemon.get("/api/v2/alerts").raise_for_status().json()
    return alerts


BODY = {"createdBy": "oncall@example.com", "comment": "looking at it"}


# --- the endpoint, against `syncwatch run` ----------------------------------------------


def test_an_ack_is_a_silence_on_that_one_alert_at_its_severity(daemon: Daemon) -> None:
    alerts = firing(daemon)
    assert len(alerts) > 1, "the simulated fleet should have several firing alerts"
    target = alerts[0]
    answer = ack(daemon, target["fingerprint"], BODY)
    assert answer.status_code == 200, answer.text
    silence_id = answer.json()["silenceID"]
    assert answer.json()["severity"] == target["labels"]["severity"]

    (stored,) = daemon.get("/api/v2/silences").json()
    assert stored["id"] == silence_id
    assert (stored["createdBy"], stored["comment"]) == (BODY["createdBy"], BODY["comment"])
    names = ("alertname", "source", "tenant", "sync_id", "severity")
    assert {m["name"]: m["value"] for m in stored["matchers"]} == {
        n: target["labels"][n] for n in names
    }
    assert not any(m["isRegex"] for m in stored["matchers"])

    def states() -> dict[str, list[str]]:
        return {a["fingerprint"]: a["status"]["silencedBy"] for a in firing(daemon)}

    wait_until(lambda: states()[target["fingerprint"]] == [silence_id])
    assert [f for f, by in states().items() if by] == [target["fingerprint"]]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"comment": "x"}, "createdBy is required"),
        ({"createdBy": "ops"}, "comment is required"),
        ({"createdBy": "ops", "comment": "  "}, "comment is required"),
        ({"createdBy": 3, "comment": "x"}, "createdBy is required"),
        ([], "must be a JSON object"),
        ({**BODY, "endsAt": "2001-01-01T00:00:00Z"}, "endsAt must be in the future"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_an_ack_without_created_by_or_comment_is_400(
    daemon: Daemon, body: object, message: str
) -> None:
    fingerprint = firing(daemon)[0]["fingerprint"]
    answer = ack(daemon, fingerprint, body)
    assert answer.status_code == 400
    assert message in answer.json()
    assert daemon.get("/api/v2/silences").json() == []


def test_an_ack_of_a_body_that_is_not_json_is_400(daemon: Daemon) -> None:
    fingerprint = firing(daemon)[0]["fingerprint"]
    url = f"{daemon.url}/api/v1/alerts/{fingerprint}/ack"
    answer = httpx.post(url, content=b"{nope", timeout=20)
    assert answer.status_code == 400
    assert "not JSON" in answer.json()


def test_an_ack_of_an_unknown_alert_is_404(daemon: Daemon) -> None:
    assert ack(daemon, "0123456789abcdef", BODY).status_code == 404
    assert daemon.get("/api/v2/silences").json() == []


# --- the endpoint in process: who may ack, and pending alerts ---------------------------


def alert(sync_id: str = "s-1", severity: Severity = Severity.WARNING, **kw: Any) -> Alert:
    labels = {"alertname": "SyncStale", "severity": str(severity), "source": "timbal"}
    return Alert(
        alertname=AlertName.SYNC_STALE,
        source=Source.TIMBAL,
        tenant="org_1",
        sync_id=sync_id,
        severity=severity,
        status=AlertStatus.FIRING,
        labels={**labels, "tenant": "org_1", "sync_id": sync_id},
        annotations={},
        active_since=NOW - HOUR,
        fired_at=NOW - HOUR,
        **kw,
    )


def in_process(tmp_path: Path, host: str, fingerprint: str, alerts: tuple[Alert, ...]) -> Any:
    """One ack as if from `host` (no way to be another host on 127.0.0.1); (status, body,
    the silences stored)."""
    store = SilenceStore(tmp_path / "state.db")
    ctx = ApiContext(silences=store, alerts=lambda: alerts, now=lambda: NOW)
    app = Starlette(routes=ack_routes(ctx))

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(host, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://syncwatch") as c:
            return await c.post(f"/api/v1/alerts/{fingerprint}/ack", json=BODY)

    try:
        answer = asyncio.run(call())
        return answer.status_code, answer.json(), store.all(NOW)
    finally:
        store.close()


@pytest.mark.parametrize("host", ["203.0.113.9", "2001:db8::1", "::ffff:203.0.113.9"])
def test_an_ack_from_the_network_is_403(tmp_path: Path, host: str) -> None:
    a = alert()
    status, body, stored = in_process(tmp_path, host, a.fingerprint, (a,))
    assert status == 403
    assert "loopback" in body
    assert stored == []


def test_an_ack_of_a_pending_alert_is_404(tmp_path: Path) -> None:
    pending = replace(alert(), status=None, fired_at=None)
    status, _, stored = in_process(tmp_path, "127.0.0.1", pending.fingerprint, (pending,))
    assert status == 404
    assert stored == []


def test_an_ack_from_this_host_is_stored_with_its_marker(tmp_path: Path) -> None:
    a = alert(severity=Severity.CRITICAL)
    status, body, stored = in_process(tmp_path, "::1", a.fingerprint, (alert("other"), a))
    assert status == 200
    (silence,) = stored
    assert silence.id == body["silenceID"]
    assert silence.ack == AckOf(a.fingerprint, "critical")
    assert silence.mutes(a.labels, NOW)
    assert not silence.mutes(alert("other").labels, NOW)
    assert not silence.mutes({**a.labels, "severity": "warning"}, NOW)


# --- the store keeps the marker ---------------------------------------------------------


def test_an_acks_marker_survives_reopening_the_store(tmp_path: Path) -> None:
    store = SilenceStore(tmp_path / "state.db")
    made = store.set(ack_silence(alert(), "ops", "on it", NOW), NOW).stored
    store.close()
    again = SilenceStore(tmp_path / "state.db")
    assert again.all(NOW) == [made]
    assert made.ack == AckOf(alert().fingerprint, "warning")
    again.close()


def test_updating_an_ack_in_place_keeps_its_marker(tmp_path: Path) -> None:
    """`amtool silence update <id> --duration=...` on an ack: still that alert's ack."""
    store = SilenceStore(tmp_path / "state.db")
    made = store.set(ack_silence(alert(), "ops", "on it", NOW), NOW).stored
    posted = replace(made, ack=None, ends_at=NOW + 3 * HOUR)  # amtool knows no marker
    updated = store.set(posted, NOW).stored
    assert (updated.id, updated.ack) == (made.id, made.ack)
    store.close()


def test_a_silences_table_from_before_acks_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE schema_parts (part TEXT PRIMARY KEY, version INTEGER NOT NULL)
                WITHOUT ROWID;
            INSERT INTO schema_parts VALUES ('silences', 1);
            CREATE TABLE silences (id TEXT PRIMARY KEY, matchers BLOB NOT NULL,
                starts_at TEXT NOT NULL, ends_at TEXT NOT NULL, created_by TEXT NOT NULL,
                comment TEXT NOT NULL, updated_at TEXT NOT NULL) WITHOUT ROWID;
            INSERT INTO silences VALUES ('old', '[{"name":"tenant","value":"org_1",
                "isRegex":false,"isEqual":true}]', '2026-12-02T11:00:00+00:00',
                '2026-12-02T13:00:00+00:00', 'ops', 'migration', '2026-12-02T11:00:00+00:00');
            """
        )
    db.close()
    store = SilenceStore(path)
    (old,) = store.all(NOW)
    assert (old.id, old.ack, old.matchers) == ("old", None, (Matcher("tenant", "org_1"),))
    store.close()


# --- which acks end: pure -----------------------------------------------------------------


def acked(a: Alert, severity: str | None = None, *, ends: datetime = NOW + HOUR) -> Silence:
    made = ack_silence(a, "ops", "on it", NOW - HOUR, ends)
    marker = AckOf(a.fingerprint, severity or str(a.severity))
    return replace(made, id=f"ack-{a.sync_id}", ack=marker)


PLAIN = Silence("plain", (Matcher("tenant", "org_1"),), NOW - HOUR, NOW + HOUR, "o", "c", NOW)


@pytest.mark.parametrize(
    ("silences", "alerts", "ended"),
    [
        ([acked(alert())], [alert()], []),
        ([acked(alert())], [], ["ack-s-1"]),  # resolved: gone from the table
        ([acked(alert())], [alert(severity=Severity.CRITICAL)], ["ack-s-1"]),  # escalated
        ([acked(alert(severity=Severity.CRITICAL))], [alert()], ["ack-s-1"]),  # de-escalated
        ([acked(alert())], [replace(alert(), status=None)], ["ack-s-1"]),  # back as pending
        ([acked(alert())], [alert("s-2")], ["ack-s-1"]),  # another alert fires, not this one
        ([acked(alert(), ends=NOW)], [], []),  # already expired: nothing to do
        ([PLAIN], [], []),  # a silence that is no ack never ends here
        ([acked(alert()), acked(alert("s-2"))], [alert("s-2")], ["ack-s-1"]),
    ],
    ids=[
        "still-firing",
        "resolved",
        "escalated",
        "de-escalated",
        "pending",
        "other-alert",
        "expired",
        "plain-silence",
        "one-of-two",
    ],
)
def test_which_acks_end(silences: list[Silence], alerts: list[Alert], ended: list[str]) -> None:
    assert acks_to_end(silences, alerts, NOW) == ended


# --- end to end: repeats stop, an escalation or a resolve is notified and ends the ack ------

LAG = {"ok": 10, "warning": 1200, "critical": 2400}  # seconds behind, at interval_secs = 600


@pytest.fixture
def hook() -> Iterator[CaptureServer]:
    with CaptureServer() as capture:
        yield capture


def launch_with_hook(tmp_path: Path, sim: SimProcess, keys: Keys, hook: CaptureServer) -> Daemon:
    extra = f"""
[alerting]
repeat_interval = "2s"

[[notifiers]]
name = "hook"
type = "webhook"
url = "{hook.url}/"
"""
    return launch(tmp_path, sim, keys, extra=extra)


def healthy_sync(sim: SimProcess) -> dict[str, Any]:
    return next(s for s in sim.fleet()["timbal"] if not s["alertname"] and s["intended"] == "ok")


def lag(sim: SimProcess, target: dict[str, Any], level: str) -> None:
    """The target sync falls `level` behind (or catches up: "ok")."""
    with sim.control() as control:
        control.post(
            "/_sim/mutate",
            json={
                "source": "timbal",
                "tenant": target["org_id"],
                "sync_id": target["sync_id"],
                "set": {"interval_secs": 600, "seconds_since_success": LAG[level]},
            },
        ).raise_for_status()


def heard(hook: CaptureServer, sync_id: str) -> list[tuple[str, str]]:
    """(status, severity) of every notification of `sync_id` the hook received, in order."""
    return [(status, severity) for status, severity, _ in told(hook, sync_id)]


def told(hook: CaptureServer, sync_id: str) -> list[tuple[str, str, str]]:
    """`heard`, with each message's notification_reason."""
    return [
        (a["status"], a["labels"]["severity"], r.json()["notification_reason"])
        for r in hook.requests
        for a in r.json()["alerts"]
        if a["labels"]["sync_id"] == sync_id
    ]


def acked_and_quiet(daemon: Daemon, hook: CaptureServer, sync_id: str) -> str:
    """Ack the (firing, repeating) alert of `sync_id`; once muted, no more repeats arrive."""
    wait_until(lambda: len(heard(hook, sync_id)) >= 2)  # fired, then repeated
    (target,) = [a for a in firing(daemon) if a["labels"]["sync_id"] == sync_id]
    silence_id: str = (
        ack(daemon, target["fingerprint"], BODY).raise_for_status().json()["silenceID"]
    )

    def state() -> str:
        alerts = daemon.get("/api/v1/alerts").json()
        return str(next(a["state"] for a in alerts if a["labels"]["sync_id"] == sync_id))

    wait_until(lambda: state() == "suppressed")
    daemon.wait_cycles(1)  # a repeat queued before the mute is still delivered
    quiet = len(heard(hook, sync_id))
    daemon.wait_cycles(4)  # two repeat intervals
    assert len(heard(hook, sync_id)) == quiet, "an acked alert repeated"
    return silence_id


def silence_state(daemon: Daemon, silence_id: str) -> str:
    return str(daemon.get(f"/api/v2/silence/{silence_id}").json()["status"]["state"])


def test_an_acked_alert_stops_repeating_and_its_escalation_notifies_and_ends_the_ack(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys, hook: CaptureServer
) -> None:
    target = healthy_sync(sim)
    lag(sim, target, "warning")
    daemon = launch_with_hook(tmp_path, sim, rsa_keys, hook)
    try:
        silence_id = acked_and_quiet(daemon, hook, target["sync_id"])
        assert silence_state(daemon, silence_id) == "active"
        before = len(heard(hook, target["sync_id"]))

        lag(sim, target, "critical")
        wait_until(lambda: ("firing", "critical") in heard(hook, target["sync_id"])[before:])
        # Told as a change in the cycle it escalated, not left to the next repeat.
        escalated = next(t for t in told(hook, target["sync_id"])[before:] if t[1] == "critical")
        assert escalated == ("firing", "critical", "new alerts added")
        wait_until(lambda: silence_state(daemon, silence_id) == "expired")
        assert '"ack_expired"' in daemon.proc.output
    finally:
        daemon.proc.stop()


def test_an_acked_alert_that_resolves_is_delivered_and_ends_the_ack(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys, hook: CaptureServer
) -> None:
    target = healthy_sync(sim)
    lag(sim, target, "warning")
    daemon = launch_with_hook(tmp_path, sim, rsa_keys, hook)
    try:
        silence_id = acked_and_quiet(daemon, hook, target["sync_id"])
        lag(sim, target, "ok")
        wait_until(lambda: heard(hook, target["sync_id"])[-1] == ("resolved", "warning"))
        wait_until(lambda: silence_state(daemon, silence_id) == "expired")
    finally:
        daemon.proc.stop()


def test_an_ack_ends_after_a_restart_when_its_alert_escalated_meanwhile(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys, hook: CaptureServer
) -> None:
    """The marker is in the state database: kill -9, escalate, restart; the ack still ends."""
    target = healthy_sync(sim)
    lag(sim, target, "warning")
    first = launch_with_hook(tmp_path, sim, rsa_keys, hook)
    try:
        silence_id = acked_and_quiet(first, hook, target["sync_id"])
    finally:
        first.proc.stop(signal.SIGKILL)
    before = len(heard(hook, target["sync_id"]))
    lag(sim, target, "critical")
    second = launch_with_hook(tmp_path, sim, rsa_keys, hook)
    try:
        wait_until(lambda: ("firing", "critical") in heard(hook, target["sync_id"])[before:])
        wait_until(lambda: silence_state(second, silence_id) == "expired")
    finally:
        second.proc.stop()


def test_an_acknowledgement_s_matchers_read_as_the_silence_form_writes_them() -> None:
    made = ack_silence(alert(), "ops", "on it", NOW)
    shown = [str(m) for m in made.matchers]
    # Plain label values (no enum reprs), quoted as amtool and the form read them back.
    assert shown[0].startswith('alertname="')
    assert all(re.fullmatch(r'[a-z_]+="[^"<>]*"', line) for line in shown), shown
    assert {type(m.value) for m in made.matchers} == {str}
