"""The Alertmanager v2 API, driven by the real amtool against a running `syncwatch run`.

Every body is also checked against Alertmanager's own `api/v2/openapi.yaml`
(tests/fixtures/alertmanager/openapi.yaml, verbatim).
"""

from __future__ import annotations

import asyncio
import functools
import json
import signal
import sqlite3
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from starlette.applications import Starlette

from syncwatch.amapi import (
    MAX_BODY,
    ApiContext,
    BadRequestError,
    alert_listed,
    api_routes,
    parse_filter,
    silence_listed,
)
from syncwatch.lifecycle import Alert
from syncwatch.models import AlertName, Severity, Source
from syncwatch.notifiers.console import ConsoleConfig
from syncwatch.outbox import AlertStatus
from syncwatch.silence_store import SilenceStore
from syncwatch.silences import Matcher, Muter, Silence
from tests.conftest import Daemon, Keys, SimProcess, launch, require_tool, wait_until

OPENAPI = Path(__file__).parent / "fixtures" / "alertmanager" / "openapi.yaml"


@functools.cache
def _definitions() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(OPENAPI.read_text())["definitions"]
    return loaded


def conforms(body: Any, definition: str) -> None:
    """`body` is valid as Alertmanager's `definitions.<definition>`."""
    schema = {"$ref": f"#/definitions/{definition}", "definitions": _definitions()}
    jsonschema.Draft4Validator(schema).validate(body)


@pytest.fixture
def amtool_path() -> str:
    return require_tool("amtool", "apt-get install prometheus-alertmanager")


@pytest.fixture
def daemon(tmp_path: Path, sim: SimProcess, rsa_keys: Keys) -> Iterator[Daemon]:
    d = launch(tmp_path, sim, rsa_keys)
    yield d
    d.proc.stop()


def amtool(path: str, daemon: Daemon, *args: str, check: bool = True) -> str:
    done = subprocess.run(
        [path, f"--alertmanager.url={daemon.url}", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if check:
        assert done.returncode == 0, f"amtool {' '.join(args)}: {done.stderr}{done.stdout}"
    # stderr may hold amtool's "versions are different" warning (it reads /api/v2/status).
    return done.stdout


def add(path: str, daemon: Daemon, *matchers: str, comment: str = "migration") -> str:
    out = amtool(path, daemon, "silence", "add", f"--comment={comment}", "--author=ops", *matchers)
    return out.strip()


def firing(daemon: Daemon) -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = daemon.get("/api/v2/alerts").raise_for_status().json()
    return alerts


def test_amtool_adds_queries_and_expires_a_silence(amtool_path: str, daemon: Daemon) -> None:
    silence_id = add(amtool_path, daemon, "tenant=org_1", "alertname=~Sync.*")
    assert amtool(amtool_path, daemon, "silence", "query", "-q").split() == [silence_id]
    table = amtool(amtool_path, daemon, "silence", "query")
    assert silence_id in table
    assert 'tenant="org_1"' in table
    assert 'alertname=~"Sync.*"' in table
    assert "migration" in table
    listed = json.loads(amtool(amtool_path, daemon, "silence", "query", "-o", "json"))
    assert [s["status"]["state"] for s in listed] == ["active"]
    conforms(daemon.get("/api/v2/silences").json(), "gettableSilences")

    amtool(amtool_path, daemon, "silence", "expire", silence_id)
    assert amtool(amtool_path, daemon, "silence", "query", "-q").split() == []
    expired = amtool(amtool_path, daemon, "silence", "query", "--expired", "-q").split()
    assert expired == [silence_id]
    one = daemon.get(f"/api/v2/silence/{silence_id}").raise_for_status().json()
    conforms(one, "gettableSilence")
    assert one["status"]["state"] == "expired"


def test_amtool_query_filters_by_matcher(amtool_path: str, daemon: Daemon) -> None:
    first = add(amtool_path, daemon, "tenant=org_1")
    add(amtool_path, daemon, "tenant=org_2")
    assert amtool(amtool_path, daemon, "silence", "query", "-q", "tenant=org_1").split() == [first]


def test_amtool_alert_query_shows_a_silenced_alert_as_suppressed(
    amtool_path: str, daemon: Daemon
) -> None:
    alerts = firing(daemon)
    assert alerts, "the simulated fleet should have firing alerts"
    conforms(alerts, "gettableAlerts")
    assert {a["status"]["state"] for a in alerts} == {"active"}
    target = alerts[0]["labels"]
    silence_id = add(
        amtool_path,
        daemon,
        f"alertname={target['alertname']}",
        f"tenant={target['tenant']}",
        f"sync_id={target['sync_id']}",
    )

    extended = amtool(amtool_path, daemon, "alert", "query", "--silenced", "-o", "extended")
    lines = [line for line in extended.splitlines() if f'sync_id="{target["sync_id"]}"' in line]
    assert len(lines) == 1
    assert "suppressed" in lines[0]
    # By default amtool shows only active alerts: the silenced one is gone from that view.
    active = amtool(amtool_path, daemon, "alert", "query", "-o", "extended")
    assert f'sync_id="{target["sync_id"]}"' not in active

    suppressed = [a for a in firing(daemon) if a["status"]["state"] == "suppressed"]
    assert [a["status"]["silencedBy"] for a in suppressed] == [[silence_id]]
    conforms(daemon.get("/api/v2/alerts/groups").json(), "alertGroups")


def test_updating_a_silence_by_posting_its_id_keeps_the_id(
    amtool_path: str, daemon: Daemon
) -> None:
    silence_id = add(amtool_path, daemon, "tenant=org_1")
    out = amtool(amtool_path, daemon, "silence", "update", silence_id, "--duration=3h")
    assert silence_id in out
    assert amtool(amtool_path, daemon, "silence", "query", "-q").split() == [silence_id]
    assert amtool(amtool_path, daemon, "silence", "query", "--expired", "-q").split() == []
    got = daemon.get(f"/api/v2/silence/{silence_id}").json()
    ends = datetime.fromisoformat(got["endsAt"])
    assert ends - datetime.now(UTC) > timedelta(hours=2, minutes=50)


def test_posting_an_id_with_other_matchers_replaces_and_expires_the_old_one(
    daemon: Daemon,
) -> None:
    old = post(daemon, valid()).raise_for_status().json()["silenceID"]
    changed = [{"name": "tenant", "value": "org_2", "isRegex": False}]
    new = post(daemon, valid(id=old, matchers=changed)).raise_for_status().json()["silenceID"]
    assert new != old
    states = {s["id"]: s["status"]["state"] for s in daemon.get("/api/v2/silences").json()}
    assert states == {old: "expired", new: "active"}


def test_amtool_import_restores_exported_silences_elsewhere(
    amtool_path: str, daemon: Daemon, tmp_path: Path, sim: SimProcess, rsa_keys: Keys
) -> None:
    add(amtool_path, daemon, "tenant=org_1", comment="first")
    add(amtool_path, daemon, "tenant=org_2", "severity!=info", comment="second")
    exported = tmp_path / "silences.json"
    exported.write_text(amtool(amtool_path, daemon, "silence", "query", "-o", "json"))

    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other = launch(other_dir, sim, rsa_keys)
    try:
        # Unknown ids there: amtool retries each as new, as against Alertmanager.
        new_ids = amtool(amtool_path, other, "silence", "import", str(exported)).split()
        assert len(new_ids) == 2
        imported = other.get("/api/v2/silences").json()
        assert sorted(s["comment"] for s in imported) == ["first", "second"]
        assert {s["id"] for s in imported} == set(new_ids)
    finally:
        other.proc.stop()


def test_silences_survive_kill_9_of_the_daemon(
    amtool_path: str, tmp_path: Path, sim: SimProcess, rsa_keys: Keys
) -> None:
    first = launch(tmp_path, sim, rsa_keys)
    try:
        silence_id = add(amtool_path, first, "tenant=org_1")
        expired_id = add(amtool_path, first, "tenant=org_2")
        amtool(amtool_path, first, "silence", "expire", expired_id)
    finally:
        first.proc.stop(signal.SIGKILL)
    second = launch(tmp_path, sim, rsa_keys)
    try:
        assert amtool(amtool_path, second, "silence", "query", "-q").split() == [silence_id]
        assert amtool(amtool_path, second, "silence", "query", "--expired", "-q").split() == [
            expired_id
        ]
    finally:
        second.proc.stop()


def test_a_maintenance_window_mutes_but_is_not_listed_as_a_silence(
    amtool_path: str, tmp_path: Path, sim: SimProcess, rsa_keys: Keys
) -> None:
    """Windows are config, listed at /api/v1/maintenance: amtool and /api/v2/silences show
    the silences alone, while the window mutes its alerts (`mutedBy`)."""
    tenants = sorted({s["org_id"] for s in sim.fleet()["timbal"] if s["alertname"]})
    assert len(tenants) >= 2, "two orgs with alerts: one under the window, one silenced"
    muted, silenced = tenants[:2]
    window = f'[[maintenance]]\nname = "migration"\nmatch = {{ tenant = "{muted}" }}\n'
    daemon = launch(tmp_path, sim, rsa_keys, extra=window + 'time = "00:00-24:00"\n')
    try:
        (listed,) = daemon.get("/api/v1/maintenance").raise_for_status().json()
        assert (listed["name"], listed["state"]) == ("migration", "active")
        silence_id = add(amtool_path, daemon, f"tenant={silenced}")

        def by_tenant() -> dict[str, list[dict[str, Any]]]:
            out: dict[str, list[dict[str, Any]]] = {}
            for a in firing(daemon):
                out.setdefault(a["labels"]["tenant"], []).append(a["status"])
            return out if {muted, silenced} <= set(out) else {}

        alerts = wait_until(by_tenant)
        assert alerts[muted]
        assert all(a["mutedBy"] == ["maintenance:migration"] for a in alerts[muted]), alerts
        assert all(a["state"] == "suppressed" and a["silencedBy"] == [] for a in alerts[muted])
        assert all(a["silencedBy"] == [silence_id] for a in alerts[silenced])

        silences = daemon.get("/api/v2/silences").raise_for_status().json()
        conforms(silences, "gettableSilences")
        assert [s["id"] for s in silences] == [silence_id]
        assert amtool(amtool_path, daemon, "silence", "query", "-q").split() == [silence_id]
        assert amtool(amtool_path, daemon, "silence", "query", "--expired", "-q").split() == []
        as_json = json.loads(amtool(amtool_path, daemon, "silence", "query", "-o", "json"))
        assert [s["matchers"] for s in as_json] == [
            [{"name": "tenant", "value": silenced, "isRegex": False, "isEqual": True}]
        ]
        for name in ("migration", "maintenance:migration"):
            assert daemon.get(f"/api/v2/silence/{name}").status_code in (400, 404)
    finally:
        daemon.proc.stop()


def test_amtool_reads_the_status(amtool_path: str, daemon: Daemon) -> None:
    amtool(amtool_path, daemon, "config", "show")
    conforms(daemon.get("/api/v2/status").json(), "alertmanagerStatus")


# --- the API's answers to bad requests, as Alertmanager's -------------------------------


def post(daemon: Daemon, body: object) -> httpx.Response:
    return httpx.post(f"{daemon.url}/api/v2/silences", json=body, timeout=20)


def valid(**overrides: object) -> dict[str, object]:
    now = datetime.now(UTC)
    body: dict[str, object] = {
        "matchers": [{"name": "tenant", "value": "org_1", "isRegex": False}],
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(hours=1)).isoformat(),
        "createdBy": "ops",
        "comment": "migration",
    }
    body.update(overrides)
    return body


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"comment": ""}, "comment is required"),
        ({"matchers": []}, "at least one matcher"),
        ({"matchers": [{"name": "a", "value": ".*", "isRegex": True}]}, "empty string"),
        ({"matchers": [{"name": "a", "value": "("}]}, "isRegex is a required boolean"),
        ({"endsAt": "2001-01-01T00:00:00Z"}, "start time must be before end time"),
        ({"startsAt": "2001-01-01T00:00:00Z", "endsAt": "2001-01-02T00:00:00Z"}, "in the past"),
        ({"endsAt": "tomorrow"}, "not an RFC 3339 date-time"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_an_invalid_silence_is_refused_with_400(
    daemon: Daemon, overrides: dict[str, object], message: str
) -> None:
    answer = post(daemon, valid(**overrides))
    assert answer.status_code == 400
    assert message in answer.json()
    assert daemon.get("/api/v2/silences").json() == []


def test_unknown_ids_are_404(daemon: Daemon) -> None:
    assert post(daemon, valid(id="nope")).status_code == 404
    assert daemon.get("/api/v2/silence/nope").status_code == 404
    assert httpx.delete(f"{daemon.url}/api/v2/silence/nope", timeout=20).status_code == 404


def test_a_bad_filter_is_400(daemon: Daemon) -> None:
    answer = daemon.get("/api/v2/silences", params={"filter": "no operator"})
    assert answer.status_code == 400
    assert daemon.get("/api/v2/alerts", params={"active": "maybe"}).status_code == 400


def test_an_expired_silence_stops_muting_at_once(daemon: Daemon) -> None:
    target = firing(daemon)[0]["labels"]
    matchers = [{"name": k, "value": target[k], "isRegex": False} for k in ("alertname", "sync_id")]
    silence_id = post(daemon, valid(matchers=matchers)).raise_for_status().json()["silenceID"]
    wait_until(lambda: any(a["status"]["silencedBy"] == [silence_id] for a in firing(daemon)))
    httpx.delete(f"{daemon.url}/api/v2/silence/{silence_id}", timeout=20).raise_for_status()
    assert all(a["status"]["state"] == "active" for a in firing(daemon))


# --- who may write ----------------------------------------------------------------------


def as_client(
    tmp_path: Path, host: str, method: str, url: str, locked: bool = False, **kw: Any
) -> httpx.Response:
    """One request to the API app as if from `host` (no way to be another host on 127.0.0.1);
    `locked`: another connection holds the database's write lock meanwhile."""
    store = SilenceStore(tmp_path / "state.db")
    store._db.execute("PRAGMA busy_timeout=0")
    other = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    if locked:
        other.execute("BEGIN EXCLUSIVE")
    app = Starlette(routes=api_routes(ApiContext(silences=store, alerts=tuple)))

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(host, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://syncwatch") as c:
            return await c.request(method, url, **kw)

    try:
        return asyncio.run(call())
    finally:
        other.close()
        store.close()


@pytest.mark.parametrize("host", ["203.0.113.9", "2001:db8::1", "::ffff:203.0.113.9", "name"])
def test_a_write_from_the_network_is_refused(tmp_path: Path, host: str) -> None:
    """No silence can be made or ended anonymously from another host (until auth lands)."""
    answer = as_client(tmp_path, host, "POST", "/api/v2/silences", json=valid())
    assert answer.status_code == 403
    assert "loopback" in answer.json()
    assert as_client(tmp_path, host, "DELETE", "/api/v2/silence/any").status_code == 403
    assert as_client(tmp_path, host, "GET", "/api/v2/silences").json() == []  # reads stay open


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"])
def test_a_write_from_this_host_is_accepted(tmp_path: Path, host: str) -> None:
    answer = as_client(tmp_path, host, "POST", "/api/v2/silences", json=valid())
    assert answer.status_code == 200


def test_an_oversized_silence_is_refused_unread(daemon: Daemon) -> None:
    huge = valid(comment="x" * (MAX_BODY + 1))
    assert post(daemon, huge).status_code == 413
    assert daemon.get("/api/v2/silences").json() == []


def test_silences_are_counted_by_state_on_metrics(daemon: Daemon) -> None:
    post(daemon, valid()).raise_for_status()
    expired = post(daemon, valid()).raise_for_status().json()["silenceID"]
    httpx.delete(f"{daemon.url}/api/v2/silence/{expired}", timeout=20).raise_for_status()
    counts = {labels["state"]: value for labels, value in daemon.metrics()["syncwatch_silences"]}
    assert counts == {"active": 1.0, "pending": 0.0, "expired": 1.0}


def test_the_daemon_collects_expired_silences_after_the_retention(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys
) -> None:
    daemon = launch(tmp_path, sim, rsa_keys, extra='[alerting]\nsilence_retention = "1s"\n')
    try:
        kept = post(daemon, valid()).raise_for_status().json()["silenceID"]
        gone = post(daemon, valid()).raise_for_status().json()["silenceID"]
        httpx.delete(f"{daemon.url}/api/v2/silence/{gone}", timeout=20).raise_for_status()

        def only_kept() -> bool:
            db = sqlite3.connect(tmp_path / "state.db", timeout=5)
            try:
                return {row[0] for row in db.execute("SELECT id FROM silences")} == {kept}
            except sqlite3.OperationalError:  # the daemon is writing: look again
                return False
            finally:
                db.close()

        # Cycles every second, retention 1 s: generous, for a loaded machine.
        wait_until(only_kept, timeout=40)
        assert '"silences_collected"' in daemon.proc.output
    finally:
        daemon.proc.stop()


def test_a_silence_that_cannot_be_written_is_a_500_and_not_kept(tmp_path: Path) -> None:
    answer = as_client(tmp_path, "127.0.0.1", "POST", "/api/v2/silences", True, json=valid())
    assert answer.status_code == 500
    assert "not saved" in answer.json()
    assert as_client(tmp_path, "127.0.0.1", "GET", "/api/v2/silences").json() == []


# --- the pure parts: filters as Alertmanager reads them ---------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ('tenant="org_1"', Matcher("tenant", "org_1")),
        ("tenant=org_1", Matcher("tenant", "org_1")),
        (' tenant = "org 1" ', Matcher("tenant", "org 1")),
        ('alertname=~"Sync.*"', Matcher("alertname", "Sync.*", is_regex=True)),
        ("severity!=info", Matcher("severity", "info", is_equal=False)),
        ('sync_id!~"s-4.*"', Matcher("sync_id", "s-4.*", is_regex=True, is_equal=False)),
        ('comment="say \\"hi\\""', Matcher("comment", 'say "hi"')),
        ('"odd name"="v"', Matcher("odd name", "v")),
        ("pipeline=", Matcher("pipeline", "")),
    ],
)
def test_filters_parse_as_amtool_sends_them(expression: str, expected: Matcher) -> None:
    assert parse_filter(expression) == expected


@pytest.mark.parametrize("expression", ["no operator", "=value", 'a=~"("'])
def test_a_bad_filter_is_a_bad_request(expression: str) -> None:
    with pytest.raises(BadRequestError, match="bad matcher format"):
        parse_filter(expression)


LABELS = {"alertname": "SyncStale", "tenant": "org_1"}


@pytest.mark.parametrize(
    ("expression", "listed"),
    [
        ("tenant=org_1", True),
        ("tenant=org_2", False),
        ("tenant=~org_.*", True),
        ("tenant=~org", False),  # anchored
        ("pipeline=", True),  # an empty value ignores a missing label…
        ("tenant=", False),  # …but not a present one
        ("tenant!=", True),  # a negative empty value ignores a present label
        ("pipeline!=", False),  # a missing label is "", which `!=""` refuses
        ("pipeline!=x", True),
    ],
)
def test_alert_filters_follow_alertmanager(expression: str, listed: bool) -> None:
    assert alert_listed(LABELS, [parse_filter(expression)]) is listed


def test_a_silence_filter_lists_silences_having_that_exact_matcher() -> None:
    now = datetime.now(UTC)
    s = Silence("a", (Matcher("tenant", "org_.*", is_regex=True),), now, now, "me", "c", now)
    assert silence_listed(s, [parse_filter('tenant=~"org_.*"')])
    assert not silence_listed(s, [parse_filter("tenant=org_1")])  # not evaluated: compared


def test_the_index_lists_the_alertmanager_api(daemon: Daemon) -> None:
    endpoints = daemon.get("/").json()["endpoints"]
    assert "/api/v2/silences" in endpoints
    assert endpoints.count("/api/v2/silence/{silence_id}") == 1


# --- alerts, receivers and groups, in process -------------------------------------------


def fired(sync_id: str, severity: Severity) -> Alert:
    labels = {"alertname": "SyncStale", "severity": str(severity), "tenant": "org_1"}
    return Alert(
        alertname=AlertName.SYNC_STALE,
        source=Source.TIMBAL,
        tenant="org_1",
        sync_id=sync_id,
        severity=severity,
        status=AlertStatus.FIRING,
        labels={**labels, "sync_id": sync_id},
        annotations={"summary": f"{sync_id} is stale"},
        active_since=datetime(2026, 12, 1, tzinfo=UTC),
        fired_at=datetime(2026, 12, 1, tzinfo=UTC),
    )


def alerts_app(tmp_path: Path, muters: Sequence[Muter] = ()) -> Starlette:
    alerts = (
        fired("s-1", Severity.WARNING),
        fired("s-2", Severity.CRITICAL),
        replace(fired("s-3", Severity.WARNING), status=None),  # pending: not shown
    )
    notifiers = (
        ConsoleConfig(name="everything", type="console", min_severity=Severity.WARNING),
        ConsoleConfig(name="pager", type="console", min_severity=Severity.CRITICAL),
    )
    ctx = ApiContext(
        silences=SilenceStore(tmp_path / "state.db"),
        alerts=lambda: alerts,
        notifiers=lambda: notifiers,
        muters=lambda: muters,
    )
    return Starlette(routes=api_routes(ctx))


def get(app: Starlette, url: str, **params: str) -> Any:
    async def call() -> Any:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://syncwatch") as c:
            return (await c.get(url, params=params)).raise_for_status().json()

    return asyncio.run(call())


def test_alerts_name_the_notifiers_that_route_them_and_skip_pending_ones(tmp_path: Path) -> None:
    alerts = get(alerts_app(tmp_path), "/api/v2/alerts")
    conforms(alerts, "gettableAlerts")
    receivers = {a["labels"]["sync_id"]: [r["name"] for r in a["receivers"]] for a in alerts}
    assert receivers == {"s-1": ["everything"], "s-2": ["everything", "pager"]}
    paged = get(alerts_app(tmp_path), "/api/v2/alerts", receiver="pag.*")
    assert [a["labels"]["sync_id"] for a in paged] == ["s-2"]


def test_groups_are_one_per_receiver(tmp_path: Path) -> None:
    groups = get(alerts_app(tmp_path), "/api/v2/alerts/groups")
    conforms(groups, "alertGroups")
    members = {g["receiver"]["name"]: [a["labels"]["sync_id"] for a in g["alerts"]] for g in groups}
    assert members == {"everything": ["s-1", "s-2"], "pager": ["s-2"]}


def test_other_muters_show_in_muted_by_and_suppress(tmp_path: Path) -> None:
    """A maintenance window is Alertmanager's mute time interval: `mutedBy`, not silencedBy."""

    def window(labels: Mapping[str, str], _now: datetime) -> tuple[str, ...]:
        return ("nightly",) if labels.get("severity") == "critical" else ()

    app = alerts_app(tmp_path, [window])
    alerts = {a["labels"]["sync_id"]: a["status"] for a in get(app, "/api/v2/alerts")}
    assert alerts["s-2"] == {
        "state": "suppressed",
        "silencedBy": [],
        "inhibitedBy": [],
        "mutedBy": ["nightly"],
    }
    assert alerts["s-1"]["state"] == "active"
    only_suppressed = get(app, "/api/v2/alerts", active="false")
    assert [a["labels"]["sync_id"] for a in only_suppressed] == ["s-2"]
    groups = get(app, "/api/v2/alerts/groups", muted="false")
    assert [g["receiver"]["name"] for g in groups] == ["everything"]  # pager's all muted
