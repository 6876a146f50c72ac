"""The simulated Timbal and Paragon APIs, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import email.utils
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from syncwatch.simulator import SimConfig, SimulatorThread
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parent.parent
START = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
TIMBAL_AUTH = {"Authorization": "Bearer sim-timbal-key"}
DATE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TIME_FIELDS = {
    "last_run_at",
    "last_state",
    "last_success_at",
    "seconds_since_success",
    "has_cursor",
    "created_at",
    "updated_at",
    "status",
    "reason",
    "dateCreated",
    "dateUpdated",
}


def paragon_auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer sim-paragon-token:{user}"}


class ManualClock:
    """A simulated clock that moves only when a test says so."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(scope="module")
def keypair() -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, public


@pytest.fixture(scope="module")
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(scope="module")
def server(
    keypair: tuple[rsa.RSAPrivateKey, bytes], clock: ManualClock
) -> Iterator[SimulatorThread]:
    """Seed 7, a frozen clock, no churn: every answer is exactly reproducible."""
    sim = SimulatorThread(
        SimConfig(orgs=3, syncs_per_org=12, seed=7, churn=0.0, paragon_public_key_pem=keypair[1]),
        clock=clock,
    )
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def client(server: SimulatorThread) -> Iterator[httpx.Client]:
    """A client of the module's simulator; faults, mutations and counters reset around it."""
    with httpx.Client(base_url=server.base_url, timeout=5) as c:
        reset(c)
        yield c
        reset(c)


def reset(c: httpx.Client) -> None:
    c.delete("/_sim/faults").raise_for_status()
    c.delete("/_sim/mutate").raise_for_status()
    c.delete("/_sim/requests").raise_for_status()


def fleet(c: httpx.Client) -> dict[str, Any]:
    data: dict[str, Any] = c.get("/_sim/fleet").raise_for_status().json()
    return data


def timbal(c: httpx.Client, org: str = "org_0001", **params: str) -> httpx.Response:
    return c.get(f"/orgs/{org}/connectors/syncs", headers=TIMBAL_AUTH, params=params)


def paragon(c: httpx.Client, user: str = "user-0001", **params: str) -> httpx.Response:
    return c.get("/api/syncs", headers=paragon_auth(user), params=params)


def fault(c: httpx.Client, **spec: Any) -> None:
    c.post("/_sim/faults", json=spec).raise_for_status()


def mint(
    key: rsa.RSAPrivateKey, sub: str, *, ttl: int = 600, aud: str = "useparagon.com/sim-project"
) -> str:
    now = int(time.time())
    return jwt.encode(
        {"sub": sub, "aud": aud, "iat": now, "exp": now + ttl}, key, algorithm="RS256"
    )


# -- listing shapes --------------------------------------------------------------------------------

TIMBAL_TYPES: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "connector_id": str,
    "source_kind": str,
    "connection_ref": str,
    "source_schema": str,
    "source_table": str,
    "cursor_column": str,
    "kb_uid": str,
    "dest_table": str,
    "interval_secs": int,
    "enabled": bool,
    "has_cursor": bool,
    "created_at": str,
    "updated_at": str,
}
TIMBAL_NULLABLE: dict[str, type] = {
    "last_run_at": str,
    "last_state": str,
    "last_success_at": str,
    "name": str,
    "seconds_since_success": int,
}


def test_timbal_listing_has_every_field_with_its_json_type(client: httpx.Client) -> None:
    for org in ("org_0001", "org_0002", "org_0003"):
        response = timbal(client, org)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        syncs = response.json()["syncs"]
        assert len(syncs) == 12
        for sync in syncs:
            for key, kind in TIMBAL_TYPES.items():
                assert isinstance(sync[key], kind), (key, sync)
            for key, kind in TIMBAL_NULLABLE.items():
                assert sync[key] is None or isinstance(sync[key], kind), (key, sync)
            assert not isinstance(sync["interval_secs"], bool)
            assert 0 < sync["interval_secs"] < 2**31
            assert sync["interval_secs"] in (60, 300, 900, 3600)
            for key in ("created_at", "updated_at", "last_run_at", "last_success_at"):
                assert sync[key] is None or DATE.match(sync[key]), (key, sync[key])
            assert re.match(rf"^sync_{org}_\d{{3}}$", sync["id"])
            assert re.match(rf"^conn_{org}_[1-5]$", sync["connector_id"])
            assert sync["source_kind"] in ("postgres", "mysql", "snowflake", "bigquery")
            # Never succeeded: both null together; otherwise they agree with the clock.
            if sync["last_success_at"] is None:
                assert sync["seconds_since_success"] is None
            else:
                last = datetime.fromisoformat(sync["last_success_at"])
                assert (START - last).total_seconds() == sync["seconds_since_success"]


def test_paragon_listing_and_get_sync_have_the_documented_shape(client: httpx.Client) -> None:
    optional = {"reason", "configurationName", "dateCreated", "dateUpdated", "credentialId"}
    statuses = {"INITIALIZING", "ACTIVE", "IDLE", "DISABLED", "ERRORED"}
    for user in ("user-0001", "user-0002", "user-0003"):
        response = paragon(client, user)
        assert response.status_code == 200
        data = response.json()["data"]
        assert len(data) == 3
        for sync in data:
            assert {"id", "integration", "pipeline", "status"} <= set(sync)
            assert set(sync) <= {"id", "integration", "pipeline", "status"} | optional
            assert all(isinstance(sync[k], str) for k in sync)
            assert sync["status"].upper() in statuses
            assert ("reason" in sync) == (sync["status"].upper() == "ERRORED")
            assert UUID.match(sync["credentialId"])
            for key in ("dateCreated", "dateUpdated"):
                assert key not in sync or DATE.match(sync[key])
            detail = client.get(f"/api/syncs/{sync['id']}", headers=paragon_auth(user))
            assert detail.status_code == 200
            body = detail.json()
            summary = body.pop("summary")
            assert body == sync
            assert set(summary) == {"lastSyncedAt", "totalRecords"}
            assert isinstance(summary["totalRecords"], int)
            assert summary["lastSyncedAt"] is None or DATE.match(summary["lastSyncedAt"])


def test_the_fleet_holds_the_documented_mix(client: httpx.Client) -> None:
    data = fleet(client)
    assert data["now"] == "2025-06-01T12:00:00Z"
    assert data["orgs"] == ["org_0001", "org_0002", "org_0003"]
    expected_timbal = {
        "healthy": ("ok", None),
        "failed_but_fresh": ("ok", None),
        "warning_stale": ("warning", "SyncStale"),
        "critical_stale": ("critical", "SyncStale"),
        "never_succeeded_old": ("critical", "SyncNeverSucceeded"),
        "never_succeeded_new": ("ok", None),
        "disabled": ("disabled", None),
    }
    seen = {s["scenario"] for s in data["timbal"]}
    assert seen == set(expected_timbal)
    for s in data["timbal"]:
        assert (s["intended"], s["alertname"]) == expected_timbal[s["scenario"]], s
    healthy = sum(s["scenario"] == "healthy" for s in data["timbal"])
    assert 0.6 <= healthy / len(data["timbal"]) <= 0.8

    expected_paragon = {
        "active": ("ok", None),
        "idle": ("ok", None),
        "errored": ("critical", "SyncErrored"),
        "disabled": ("warning", "SyncDisabled"),
        "initializing_stuck": ("warning", "SyncStuckInitializing"),
        "initializing_fresh": ("ok", None),
    }
    assert {s["scenario"] for s in data["paragon"]} == set(expected_paragon)
    for s in data["paragon"]:
        assert (s["intended"], s["alertname"]) == expected_paragon[s["scenario"]], s
    assert any(s["status"].islower() for s in data["paragon"]), "one lower-case status"

    # Listings back the truth: unusual last_state values and the documented reasons appear.
    states = {s["last_state"] for org in data["orgs"] for s in timbal(client, org).json()["syncs"]}
    assert states - {"completed", "running", "failed", None}, states
    errored = [s for u in data["users"] for s in paragon(client, u).json()["data"] if "reason" in s]
    assert errored
    assert all(s["reason"].endswith(".") for s in errored)


def test_a_static_fleet_never_changes_state(server: SimulatorThread, clock: ManualClock) -> None:
    with httpx.Client(base_url=server.base_url, timeout=5) as c:
        before = [(s["sync_id"], s["intended"]) for s in fleet(c)["timbal"] + fleet(c)["paragon"]]
        try:
            for step in (1, 59, 3600, 7 * 86400):
                clock.advance(step)
                after = fleet(c)
                assert [
                    (s["sync_id"], s["intended"]) for s in after["timbal"] + after["paragon"]
                ] == before
        finally:
            clock.now = START


# -- determinism ----------------------------------------------------------------------------------


def snapshot(sim: SimulatorThread) -> tuple[bytes, list[bytes]]:
    with httpx.Client(base_url=sim.base_url, timeout=5) as c:
        bodies = [timbal(c, "org_0001").content, timbal(c, "org_0002").content]
        bodies += [paragon(c, "user-0001").content, paragon(c, "user-0002").content]
        return c.get("/_sim/fleet").content, bodies


def test_the_same_seed_gives_the_same_fleet_and_listings() -> None:
    config = SimConfig(orgs=2, users=2, seed=42, churn=0.2)
    with (
        SimulatorThread(config, clock=ManualClock()) as a,
        SimulatorThread(config, clock=ManualClock()) as b,
        SimulatorThread(SimConfig(orgs=2, users=2, seed=43, churn=0.2), clock=ManualClock()) as c,
    ):
        assert snapshot(a) == snapshot(b)
        assert snapshot(a) != snapshot(c)


def test_histories_count_from_the_epoch_so_every_demo_tells_the_same_story() -> None:
    from syncwatch.simulator.fleet import generate_fleet
    from syncwatch.simulator.views import paragon_at, timbal_at

    def story(epoch: int) -> list[tuple[Any, ...]]:
        fleet = generate_fleet(SimConfig(orgs=2, users=2, seed=3, churn=0.5, epoch=epoch))
        return [
            *(
                (t.sync_id, view["last_state"], view["seconds_since_success"])
                for t in fleet.timbal
                for k in range(0, 4 * 3600, 300)
                for view in [timbal_at(t, epoch + k)]
            ),
            *(
                (p.sync_id, paragon_at(p, epoch + k, False)["status"])
                for p in fleet.paragon
                for k in range(0, 4 * 3600, 300)
            ),
        ]

    assert story(1_800_000_000) == story(1_800_004_321) == story(1_812_345_678)


def test_real_clocks_differ_only_in_time_derived_fields() -> None:
    config = SimConfig(orgs=2, users=2, seed=5, churn=0.0)

    def stable(sim: SimulatorThread) -> list[Any]:
        fleet_body, bodies = snapshot(sim)
        listings = [orjson.loads(b) for b in bodies]
        records = [r for body in listings for r in body.get("syncs", body.get("data", []))]
        return [
            orjson.loads(fleet_body)["timbal"],
            [{k: v for k, v in r.items() if k not in TIME_FIELDS} for r in records],
        ]

    with SimulatorThread(config) as a, SimulatorThread(config) as b:
        assert stable(a) == stable(b)


# -- filters and auth -----------------------------------------------------------------------------


def test_connector_and_credential_filters(client: httpx.Client) -> None:
    syncs = timbal(client).json()["syncs"]
    connectors = {s["connector_id"] for s in syncs}
    assert 2 <= len(connectors) <= 5
    for connector in connectors:
        filtered = timbal(client, connector_id=connector).json()["syncs"]
        assert filtered == [s for s in syncs if s["connector_id"] == connector]
    assert timbal(client, connector_id="conn_nope").json() == {"syncs": []}

    data = paragon(client).json()["data"]
    for credential in {s["credentialId"] for s in data}:
        filtered = paragon(client, credentialId=credential).json()["data"]
        assert filtered == [s for s in data if s["credentialId"] == credential]
    assert paragon(client, credentialId="nope").json() == {"data": []}


def test_timbal_auth_and_unknown_org(client: httpx.Client) -> None:
    url = "/orgs/org_0001/connectors/syncs"
    assert client.get(url).status_code == 401
    wrong = client.get(url, headers={"Authorization": "Bearer wrong"})
    assert (wrong.status_code, wrong.json()) == (403, {"detail": "forbidden"})
    assert client.get(url, headers={"Authorization": "Basic sim-timbal-key"}).status_code == 403
    missing = timbal(client, "org_9999")
    assert missing.status_code == 404


def test_paragon_static_tokens(client: httpx.Client) -> None:
    assert paragon(client, "user-0002").status_code == 200
    assert paragon(client, "user-9999").status_code == 403
    assert client.get("/api/syncs").status_code == 401
    assert client.get("/api/syncs", headers={"Authorization": "Bearer junk"}).status_code == 401


def test_paragon_rs256_user_tokens(
    client: httpx.Client, keypair: tuple[rsa.RSAPrivateKey, bytes]
) -> None:
    key = keypair[0]

    def get(token: str, path: str = "/api/syncs") -> httpx.Response:
        return client.get(path, headers={"Authorization": f"Bearer {token}"})

    good = get(mint(key, "user-0003"))
    assert good.status_code == 200
    assert good.json() == paragon(client, "user-0003").json()
    assert get(mint(key, "user-0003")).status_code == 200  # cached verification, same answer
    expired = get(mint(key, "user-0003", ttl=-60))
    assert (expired.status_code, expired.json()) == (401, {"detail": "token expired"})
    assert get(mint(key, "user-0003", aud="useparagon.com/other")).status_code == 401
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert get(mint(stranger, "user-0003")).status_code == 401
    assert get(mint(key, "user-4242")).status_code == 403
    # The user comes from the token: another user's sync does not exist for this one.
    other = paragon(client, "user-0001").json()["data"][0]["id"]
    assert get(mint(key, "user-0003"), f"/api/syncs/{other}").status_code == 404
    assert get(mint(key, "user-0001"), f"/api/syncs/{other}").status_code == 200
    assert get(mint(key, "user-0001"), "/api/syncs/psync_nope").status_code == 404


# -- faults ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        ("http_500", 500),
        ("http_502", 502),
        ("http_503", 503),
        ("http_429", 429),
        ("http_401", 401),
        ("http_403", 403),
    ],
)
@pytest.mark.parametrize("source", ["timbal", "paragon"])
def test_http_status_faults(client: httpx.Client, kind: str, status: int, source: str) -> None:
    fault(client, source=source, tenant="*", kind=kind, count=1, retry_after=7)
    call = timbal if source == "timbal" else paragon
    response = call(client)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert "detail" in response.json()
    if kind in ("http_429", "http_503"):
        assert response.headers["retry-after"] == "7"
    else:
        assert "retry-after" not in response.headers
    assert call(client).status_code == 200, "count=1 expires after one request"


def test_429_always_carries_retry_after(client: httpx.Client) -> None:
    fault(client, source="timbal", kind="http_429", count=1)
    assert timbal(client).headers["retry-after"] == "1"


def test_count_expires_and_faults_match_their_tenant(client: httpx.Client) -> None:
    fault(client, source="timbal", tenant="org_0002", kind="http_503", count=2)
    assert timbal(client, "org_0001").status_code == 200
    assert paragon(client).status_code == 200
    assert [timbal(client, "org_0002").status_code for _ in range(3)] == [503, 503, 200]
    assert client.get("/_sim/faults").json() == {"faults": []}

    # Faults queue up in order; one without a count lasts until cleared.
    fault(client, source="paragon", kind="http_502", count=1)
    fault(client, source="paragon", tenant="user-0002", kind="http_500")
    assert paragon(client, "user-0002").status_code == 502
    assert [paragon(client, "user-0002").status_code for _ in range(3)] == [500, 500, 500]
    assert paragon(client, "user-0001").status_code == 200
    client.delete("/_sim/faults")
    assert paragon(client, "user-0002").status_code == 200


def test_timeout_holds_the_answer_past_the_client_deadline(client: httpx.Client) -> None:
    fault(client, source="timbal", kind="timeout", delay=10, count=1)
    with pytest.raises(httpx.ReadTimeout):
        client.get("/orgs/org_0001/connectors/syncs", headers=TIMBAL_AUTH, timeout=0.3)
    fault(client, source="paragon", kind="timeout", delay=0.3, count=1)
    started = time.monotonic()
    response = paragon(client)
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.3


def test_slow_body_sends_headers_then_trickles_the_body(client: httpx.Client) -> None:
    expected = timbal(client).content
    fault(client, source="timbal", kind="slow_body", delay=0.6, count=1)
    with client.stream("GET", "/orgs/org_0001/connectors/syncs", headers=TIMBAL_AUTH) as response:
        headers_at = time.monotonic()
        assert response.status_code == 200
        chunks = list(response.iter_raw())
        body_at = time.monotonic()
    assert b"".join(chunks) == expected
    assert len(chunks) > 1
    assert body_at - headers_at >= 0.4


def test_reset_drops_the_connection_without_an_answer(client: httpx.Client) -> None:
    fault(client, source="timbal", kind="reset", count=1)
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        timbal(client)
    fault(client, source="paragon", kind="reset", count=1)
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        paragon(client)
    assert timbal(client).status_code == 200


def test_truncated_html_and_wrong_shape_bodies(client: httpx.Client) -> None:
    full = timbal(client).content
    fault(client, source="timbal", kind="truncated", count=1)
    cut = timbal(client)
    assert cut.status_code == 200
    assert cut.headers["content-type"] == "application/json"
    assert cut.content == full[: len(full) // 2]
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(cut.content)

    fault(client, source="paragon", kind="html", count=1)
    fault(client, source="paragon", kind="html", status=200, count=1)
    for status in (502, 200):
        page = paragon(client)
        assert page.status_code == status
        assert page.headers["content-type"].startswith("text/html")
        assert page.text.lstrip().startswith("<!DOCTYPE html>")

    fault(client, source="timbal", kind="wrong_shape", count=1)
    shaped = timbal(client)
    assert (shaped.status_code, shaped.json()) == (200, {"items": []})


@pytest.mark.parametrize(
    ("source", "variant", "broken"),
    [
        ("timbal", None, {"interval_secs": -5}),
        ("timbal", "interval_zero", {"interval_secs": 0}),
        ("timbal", "bad_date", {"created_at": "not-a-date"}),
        ("timbal", "missing_id", {"id": None}),
        ("paragon", None, {"id": None}),
        ("paragon", "bad_date", {"dateCreated": "not-a-date"}),
        ("paragon", "missing_status", {"status": None}),
    ],
)
def test_poison_breaks_exactly_one_record(
    client: httpx.Client, source: str, variant: str | None, broken: dict[str, Any]
) -> None:
    call, key = (timbal, "syncs") if source == "timbal" else (paragon, "data")
    clean = call(client).json()[key]
    fault(
        client, source=source, kind="poison", count=1, **({"variant": variant} if variant else {})
    )
    response = call(client)
    poisoned = response.json()[key]
    assert response.headers["x-sim-poisoned"] == clean[0]["id"]
    assert poisoned[1:] == clean[1:]
    expected = dict(clean[0])
    for field, value in broken.items():
        if value is None:
            del expected[field]
        else:
            expected[field] = value
    assert poisoned[0] == expected
    assert call(client).json()[key] == clean


def test_ignore_filter_answers_with_the_whole_listing(client: httpx.Client) -> None:
    everything = timbal(client).json()["syncs"]
    connector = everything[0]["connector_id"]
    fault(client, source="timbal", kind="ignore_filter", count=1)
    assert timbal(client, connector_id=connector).json()["syncs"] == everything
    assert len(timbal(client, connector_id=connector).json()["syncs"]) < len(everything)

    data = paragon(client).json()["data"]
    fault(client, source="paragon", kind="ignore_filter", count=1)
    assert paragon(client, credentialId=data[0]["credentialId"]).json()["data"] == data


@pytest.mark.parametrize(
    ("source", "worse"),
    [("timbal", {"last_state": "failed"}), ("paragon", {"status": "ERRORED"})],
)
def test_duplicate_repeats_the_first_id_with_a_worse_record(
    client: httpx.Client, source: str, worse: dict[str, Any]
) -> None:
    call, key = (timbal, "syncs") if source == "timbal" else (paragon, "data")
    clean = call(client).json()[key]
    fault(client, source=source, kind="duplicate", count=1)
    response = call(client)
    listed = response.json()[key]
    assert response.headers["x-sim-duplicated"] == clean[0]["id"]
    assert listed[:-1] == clean
    assert listed[-1]["id"] == clean[0]["id"]
    assert listed[-1] != clean[0]
    assert worse.items() <= listed[-1].items()
    if source == "timbal":
        assert listed[-1]["seconds_since_success"] == 10 * clean[0]["interval_secs"]


def test_every_answer_has_one_date_header_from_the_simulated_clock(
    client: httpx.Client, clock: ManualClock
) -> None:
    """The upstream's clock is the simulated one, never uvicorn's real time beside it."""
    expected = email.utils.format_datetime(clock().replace(microsecond=0), usegmt=True)
    fault(client, source="timbal", kind="http_503", count=1)
    for response in (timbal(client), timbal(client), paragon(client), client.get("/_sim/health")):
        assert response.headers.get_list("date") == [expected], response.status_code


def test_bad_fault_requests_are_rejected(client: httpx.Client) -> None:
    for body in (
        {"source": "timbal", "kind": "meteor"},
        {"source": "nowhere", "kind": "http_500"},
        {"source": "timbal", "kind": "http_500", "count": 0},
        {"source": "timbal", "kind": "poison", "variant": "missing_status"},
        {"source": "timbal", "kind": "http_500", "cuont": 1},
    ):
        assert client.post("/_sim/faults", json=body).status_code == 400, body
    assert client.post("/_sim/faults", content=b"{nope").status_code == 400


# -- request counts and mutations -----------------------------------------------------------------


def test_requests_are_counted_per_source_and_tenant(client: httpx.Client) -> None:
    fault(client, source="timbal", tenant="org_0001", kind="http_503", count=2)
    for _ in range(3):
        timbal(client, "org_0001")
    timbal(client, "org_0003")
    paragon(client, "user-0002")
    sync_id = paragon(client, "user-0002").json()["data"][0]["id"]
    client.get(f"/api/syncs/{sync_id}", headers=paragon_auth("user-0002"))
    assert client.get("/_sim/requests").json() == {
        "timbal": {"org_0001": 3, "org_0003": 1},
        "paragon": {"user-0002": 3},
    }
    client.delete("/_sim/requests")
    assert client.get("/_sim/requests").json() == {"timbal": {}, "paragon": {}}


def test_mutations_change_listings_and_the_intended_state(client: httpx.Client) -> None:
    truth = fleet(client)
    healthy = next(s for s in truth["timbal"] if s["scenario"] == "healthy")
    org, sync_id = healthy["org_id"], healthy["sync_id"]
    interval = next(s for s in timbal(client, org).json()["syncs"] if s["id"] == sync_id)[
        "interval_secs"
    ]
    change = {"source": "timbal", "tenant": org, "sync_id": sync_id}
    lag = max(3 * interval, 300) + 60
    client.post(
        "/_sim/mutate", json={**change, "set": {"seconds_since_success": lag}}
    ).raise_for_status()
    row = next(s for s in timbal(client, org).json()["syncs"] if s["id"] == sync_id)
    assert row["seconds_since_success"] == lag
    assert datetime.fromisoformat(row["last_success_at"]) == START - timedelta(seconds=lag)
    entry = next(s for s in fleet(client)["timbal"] if s["sync_id"] == sync_id)
    assert (entry["intended"], entry["alertname"]) == ("critical", "SyncStale")

    client.post("/_sim/mutate", json={**change, "set": {"enabled": False}}).raise_for_status()
    entry = next(s for s in fleet(client)["timbal"] if s["sync_id"] == sync_id)
    assert (entry["intended"], entry["alertname"]) == ("disabled", None)

    client.post("/_sim/mutate", json={**change, "delete": True}).raise_for_status()
    assert sync_id not in {s["id"] for s in timbal(client, org).json()["syncs"]}
    assert sync_id not in {s["sync_id"] for s in fleet(client)["timbal"]}

    client.delete("/_sim/mutate").raise_for_status()
    assert fleet(client) == truth


def test_paragon_mutations(client: httpx.Client) -> None:
    truth = fleet(client)
    errored = next(s for s in truth["paragon"] if s["scenario"] == "errored")
    user, sync_id = errored["user_id"], errored["sync_id"]
    change = {"source": "paragon", "tenant": user, "sync_id": sync_id}
    client.post("/_sim/mutate", json={**change, "set": {"status": "ACTIVE"}}).raise_for_status()
    row = next(s for s in paragon(client, user).json()["data"] if s["id"] == sync_id)
    assert row["status"] == "ACTIVE"
    assert "reason" not in row
    entry = next(s for s in fleet(client)["paragon"] if s["sync_id"] == sync_id)
    assert (entry["intended"], entry["alertname"]) == ("ok", None)

    reason = "Rate limit exceeded by the integration provider."
    update = {
        "status": "ERRORED",
        "reason": reason,
        "summary": {"lastSyncedAt": None, "totalRecords": 3},
    }
    client.post("/_sim/mutate", json={**change, "set": update}).raise_for_status()
    row = next(s for s in paragon(client, user).json()["data"] if s["id"] == sync_id)
    assert (row["status"], row["reason"]) == ("ERRORED", reason)
    assert "summary" not in row
    detail = client.get(f"/api/syncs/{sync_id}", headers=paragon_auth(user)).json()
    assert detail["summary"] == {"lastSyncedAt": None, "totalRecords": 3}

    client.post("/_sim/mutate", json={**change, "delete": True}).raise_for_status()
    assert client.get(f"/api/syncs/{sync_id}", headers=paragon_auth(user)).status_code == 404
    assert sync_id not in {s["id"] for s in paragon(client, user).json()["data"]}

    other = "user-0001" if user != "user-0001" else "user-0002"
    assert (
        client.post("/_sim/mutate", json={**change, "tenant": other, "delete": True}).status_code
        == 404
    )
    assert (
        client.post("/_sim/mutate", json={**change, "sync_id": "nope", "delete": True}).status_code
        == 404
    )
    assert (
        client.post("/_sim/mutate", json={**change, "source": "x", "delete": True}).status_code
        == 400
    )
    assert client.post("/_sim/mutate", json=change).status_code == 400


# -- churn ----------------------------------------------------------------------------------------


def collapse(states: list[str]) -> list[str]:
    return [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s]


def test_churn_syncs_cycle_through_stale_and_errored_as_the_clock_moves() -> None:
    clock = ManualClock()
    config = SimConfig(orgs=2, syncs_per_org=5, users=2, syncs_per_user=3, churn=0.5, seed=11)
    with SimulatorThread(config, clock=clock) as sim, httpx.Client(base_url=sim.base_url) as c:
        first = fleet(c)
        churn_timbal = [s for s in first["timbal"] if s["scenario"] == "churn"]
        churn_paragon = [s for s in first["paragon"] if s["scenario"] == "churn"]
        assert len(churn_timbal) == 5
        assert len(churn_paragon) == 3
        history: dict[str, list[str]] = {s["sync_id"]: [] for s in churn_timbal + churn_paragon}
        static = {s["sync_id"]: s["intended"] for s in first["timbal"] + first["paragon"]}
        lags: list[int] = []
        for _ in range(4 * 60):  # four simulated hours in one-minute steps
            now = fleet(c)
            for s in now["timbal"] + now["paragon"]:
                if s["sync_id"] in history:
                    history[s["sync_id"]].append(s["intended"])
                else:
                    assert s["intended"] == static[s["sync_id"]]
            row = next(
                r
                for r in timbal(c, churn_timbal[0]["org_id"]).json()["syncs"]
                if r["id"] == churn_timbal[0]["sync_id"]
            )
            lags.append(row["seconds_since_success"])
            clock.advance(60)
    for s in churn_timbal:
        cycle = "".join(state[0] for state in collapse(history[s["sync_id"]]))
        assert "owco" in cycle, (s["sync_id"], cycle)
    for s in churn_paragon:
        assert "oco" in "".join(state[0] for state in collapse(history[s["sync_id"]]))
    # The listing drives the truth: the lag grows while runs fail, then drops on recovery.
    assert max(lags) >= 3 * 300
    assert min(lags) < 300


# -- servers --------------------------------------------------------------------------------------


def test_port_zero_binds_a_free_port_and_stop_is_bounded_mid_request() -> None:
    sim = SimulatorThread(SimConfig(orgs=1, users=1))
    sim.start()
    assert sim.port > 0
    assert sim.base_url == f"http://127.0.0.1:{sim.port}"
    with httpx.Client(base_url=sim.base_url, timeout=5) as c:
        assert c.get("/_sim/health").json() == {"ok": True}
        fault(c, source="timbal", kind="timeout", delay=60)
        with pytest.raises(httpx.ReadTimeout):
            c.get("/orgs/org_0001/connectors/syncs", headers=TIMBAL_AUTH, timeout=0.2)
    started = time.monotonic()
    sim.stop()
    assert time.monotonic() - started < 2
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{sim.base_url}/_sim/health")


def test_latency_is_added_to_api_answers_only() -> None:
    # 1 s: a loaded machine can stall a local answer for a few hundred ms, never for this.
    sim = SimulatorThread(SimConfig(orgs=1, users=1, latency=1.0))
    with sim, httpx.Client(base_url=sim.base_url, timeout=5) as c:
        started = time.monotonic()
        assert c.get("/_sim/health").status_code == 200
        assert time.monotonic() - started < 1.0
        started = time.monotonic()
        assert timbal(c).status_code == 200
        assert time.monotonic() - started >= 1.0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_returns_cleanly_on_sigterm_and_sigint(tmp_path: Path, sig: int) -> None:
    # Port 0 and the bound port printed once up: no other process can take it first.
    code = (
        "from syncwatch.simulator import SimConfig, serve\n"
        "serve(SimConfig(orgs=1, users=1), '127.0.0.1', 0,"
        " on_started=lambda port: print('port', port, flush=True))\n"
        "print('returned', flush=True)\n"
    )
    out_path, err_path = tmp_path / "serve.out", tmp_path / "serve.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=out, stderr=err)
    try:

        def announced() -> str | None:
            assert proc.poll() is None, err_path.read_text()
            found = re.match(r"port (\d+)\n", out_path.read_text())
            return found[1] if found else None

        port = wait_until(announced, timeout=15)
        assert httpx.get(f"http://127.0.0.1:{port}/_sim/health", timeout=5).status_code == 200
        proc.send_signal(sig)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, err_path.read_text()
    assert out_path.read_text() == f"port {port}\nreturned\n"
