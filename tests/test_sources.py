"""Timbal and Paragon clients against the simulator on 127.0.0.1 (a real HTTP server)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from syncwatch.evaluate import SyncState, evaluate_listings
from syncwatch.http import make_transport
from syncwatch.models import Listing, ParagonSync, Reason, Source, SourceError, TimbalSync
from syncwatch.settings import Config, load_config
from syncwatch.simulator import SimConfig, SimulatorThread
from syncwatch.sources import Poller
from syncwatch.sources.base import Upstream
from syncwatch.sources.paragon import ParagonClient, TokenMinter
from syncwatch.sources.registry import rules_of
from tests.capture import CaptureServer
from tests.conftest import Keys


@pytest.fixture(scope="module")
def thread_sim(rsa_keys: Keys) -> Iterator[SimulatorThread]:
    """An in-process simulator: static fleet, seed 3, verifying our minted tokens."""
    sim = SimulatorThread(
        SimConfig(
            orgs=3,
            syncs_per_org=12,
            users=3,
            seed=3,
            churn=0,
            paragon_public_key_pem=rsa_keys.public_pem,
        )
    )
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def control(thread_sim: SimulatorThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=thread_sim.base_url, timeout=10) as client:
        client.delete("/_sim/faults")
        client.delete("/_sim/mutate")
        client.delete("/_sim/requests")
        yield client
        client.delete("/_sim/faults")
        client.delete("/_sim/mutate")


@pytest.fixture
def fleet(control: httpx.Client) -> dict[str, Any]:
    data: dict[str, Any] = control.get("/_sim/fleet").json()
    return data


def make_config(
    sim: SimulatorThread,
    keys: Keys,
    *,
    timbal: dict[str, Any] | None = None,
    paragon: dict[str, Any] | None = None,
    daemon: dict[str, Any] | None = None,
) -> Config:
    sections: dict[str, Any] = {
        "daemon": {"request_timeout": 2, "retries": 2, **(daemon or {})},
    }
    if timbal is not None:
        sections["timbal"] = {"base_url": sim.base_url, "api_key": "sim-timbal-key", **timbal}
    if paragon is not None:
        sections["paragon"] = {
            "base_url": sim.base_url,
            "project_id": "sim-project",
            "signing_key_file": str(keys.private_path),
            **paragon,
        }
    return load_config(None, **sections)


async def poll(config: Config) -> list[Listing]:
    async with make_transport(max_connections=config.daemon.concurrency) as transport:
        poller = Poller(config, transport)
        # Fast retries: the behaviour under test is whether we retry, not how long we wait.
        poller.upstream.wait_initial = 0.01
        poller.upstream.wait_max = 0.05
        return await poller.poll()


def run(config: Config) -> list[Listing]:
    return asyncio.run(poll(config))


def fault(control: httpx.Client, **spec: Any) -> None:
    control.post("/_sim/faults", json=spec).raise_for_status()


def mutate(
    control: httpx.Client, source: str, tenant: str, sync_id: str, fields: dict[str, Any]
) -> None:
    """Override upstream fields of one simulated sync."""
    control.post(
        "/_sim/mutate",
        json={"source": source, "tenant": tenant, "sync_id": sync_id, "set": fields},
    ).raise_for_status()


def requests_for(control: httpx.Client, source: str, tenant: str) -> int:
    return int(control.get("/_sim/requests").json()[source].get(tenant, 0))


def timbal_syncs(listing: Listing) -> list[TimbalSync]:
    """A Timbal listing's syncs, each checked to be one."""
    syncs = [s for s in listing.syncs if isinstance(s, TimbalSync)]
    assert len(syncs) == len(listing.syncs)
    return syncs


def paragon_syncs(listing: Listing) -> list[ParagonSync]:
    """A Paragon listing's syncs, each checked to be one."""
    syncs = [s for s in listing.syncs if isinstance(s, ParagonSync)]
    assert len(syncs) == len(listing.syncs)
    return syncs


# --- Timbal -----------------------------------------------------------------------------


def test_timbal_lists_every_sync_of_every_org(
    thread_sim: SimulatorThread, rsa_keys: Keys, fleet: dict[str, Any]
) -> None:
    config = make_config(thread_sim, rsa_keys, timbal={"orgs": [{"id": o} for o in fleet["orgs"]]})
    listings = run(config)
    assert all(listing.ok for listing in listings)
    got = {(s.org_id, s.id) for listing in listings for s in timbal_syncs(listing)}
    assert got == {(s["org_id"], s["sync_id"]) for s in fleet["timbal"]}
    assert all(isinstance(s, TimbalSync) for listing in listings for s in listing.syncs)


def test_timbal_connector_filter_makes_one_call_per_connector(
    thread_sim: SimulatorThread, rsa_keys: Keys, fleet: dict[str, Any], control: httpx.Client
) -> None:
    org = fleet["orgs"][0]
    connectors = sorted({s["connector_id"] for s in fleet["timbal"] if s["org_id"] == org})[:2]
    config = make_config(
        thread_sim, rsa_keys, timbal={"orgs": [{"id": org, "connector_ids": connectors}]}
    )
    [listing] = run(config)
    assert {s.connector_id for s in timbal_syncs(listing)} == set(connectors)
    expected = {
        s["sync_id"]
        for s in fleet["timbal"]
        if s["org_id"] == org and s["connector_id"] in connectors
    }
    assert {s.id for s in listing.syncs} == expected
    assert requests_for(control, "timbal", org) == 2


def test_timbal_per_org_key_overrides_the_global_key(
    thread_sim: SimulatorThread, rsa_keys: Keys, fleet: dict[str, Any]
) -> None:
    first, second = fleet["orgs"][:2]
    config = make_config(
        thread_sim,
        rsa_keys,
        timbal={
            "api_key": "wrong-global-key",
            "orgs": [{"id": first, "api_key": "sim-timbal-key"}, {"id": second}],
        },
    )
    by_org = {listing.tenant: listing for listing in run(config)}
    assert by_org[first].ok
    error = by_org[second].error
    assert error is not None
    assert error.reason is Reason.HTTP_403


@pytest.mark.parametrize(
    ("kind", "reason", "extra"),
    [
        ("http_500", Reason.HTTP_5XX, {}),
        ("http_502", Reason.HTTP_5XX, {}),
        ("http_503", Reason.HTTP_5XX, {}),
        ("http_401", Reason.HTTP_401, {}),
        ("http_403", Reason.HTTP_403, {}),
        ("truncated", Reason.INVALID_RESPONSE, {}),
        ("html", Reason.HTTP_5XX, {}),
        ("wrong_shape", Reason.SCHEMA_MISMATCH, {}),
        ("timeout", Reason.TIMEOUT, {"delay": 5}),
        ("slow_body", Reason.TIMEOUT, {"delay": 5}),
        ("reset", Reason.CONNECT, {}),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_timbal_fault_is_a_typed_failure_of_that_org_only(
    thread_sim: SimulatorThread,
    rsa_keys: Keys,
    fleet: dict[str, Any],
    control: httpx.Client,
    kind: str,
    reason: Reason,
    extra: dict[str, Any],
) -> None:
    bad, good = fleet["orgs"][:2]
    fault(control, source="timbal", tenant=bad, kind=kind, **extra)
    config = make_config(
        thread_sim,
        rsa_keys,
        timbal={"orgs": [{"id": bad}, {"id": good}]},
        daemon={"request_timeout": 0.5, "retries": 0},
    )
    by_org = {listing.tenant: listing for listing in run(config)}
    error = by_org[bad].error
    assert error is not None
    assert error.reason is reason, str(error)
    assert by_org[good].ok
    assert by_org[good].syncs


def test_html_error_page_with_status_200_is_an_invalid_response(
    thread_sim: SimulatorThread, rsa_keys: Keys, fleet: dict[str, Any], control: httpx.Client
) -> None:
    org = fleet["orgs"][0]
    fault(control, source="timbal", tenant=org, kind="html", status=200)
    [listing] = run(make_config(thread_sim, rsa_keys, timbal={"orgs": [{"id": org}]}))
    assert listing.error is not None
    assert listing.error.reason is Reason.INVALID_RESPONSE


@pytest.mark.parametrize(
    ("kind", "retried"),
    [("http_503", True), ("http_500", True), ("http_403", False), ("wrong_shape", False)],
)
def test_retries_only_what_is_worth_retrying(
    thread_sim: SimulatorThread,
    rsa_keys: Keys,
    fleet: dict[str, Any],
    control: httpx.Client,
    kind: str,
    retried: bool,
) -> None:
    org = fleet["orgs"][0]
    fault(control, source="timbal", tenant=org, kind=kind)
    run(make_config(thread_sim, rsa_keys, timbal={"orgs": [{"id": org}]}, daemon={"retries": 2}))
    assert requests_for(control, "timbal", org) == (3 if retried else 1)


def test_a_transient_5xx_is_retried_into_success(
    thread_sim: SimulatorThread, rsa_keys: Keys, fleet: dict[str, Any], control: httpx.Client
) -> None:
    org = fleet["orgs"][0]
    fault(control, source="timbal", tenant=org, kind="http_502", count=1)
    [listing] = run(make_config(thread_sim, rsa_keys, timbal={"orgs": [{"id": org}]}))
    assert listing.ok
    assert requests_for(control, "timbal", org) == 2


def test_429_retry_after_is_honoured(
    thread_sim: SimulatorThread, rsa_keys: Keys, fleet: dict[str, Any], control: httpx.Client
) -> None:
    org = fleet["orgs"][0]
    fault(control, source="timbal", tenant=org, kind="http_429", count=1, retry_after=1)
    started = time.monotonic()
    [listing] = run(make_config(thread_sim, rsa_keys, timbal={"orgs": [{"id": org}]}))
    assert listing.ok
    assert time.monotonic() - started >= 1.0  # waited what the server asked, not our 10 ms
    assert requests_for(control, "timbal", org) == 2


def test_429_asking_for_too_long_a_wait_fails_this_cycle(
    thread_sim: SimulatorThread, rsa_keys: Keys, fleet: dict[str, Any], control: httpx.Client
) -> None:
    org = fleet["orgs"][0]
    fault(control, source="timbal", tenant=org, kind="http_429", retry_after=3600)
    [listing] = run(make_config(thread_sim, rsa_keys, timbal={"orgs": [{"id": org}]}))
    assert listing.error is not None
    assert listing.error.reason is Reason.HTTP_429
    assert requests_for(control, "timbal", org) == 1


@pytest.mark.parametrize(
    "variant", ["interval_negative", "interval_zero", "bad_date", "missing_id"]
)
def test_a_poisoned_record_is_skipped_and_its_neighbours_kept(
    thread_sim: SimulatorThread,
    rsa_keys: Keys,
    fleet: dict[str, Any],
    control: httpx.Client,
    variant: str,
) -> None:
    org = fleet["orgs"][0]
    listed = [s["sync_id"] for s in fleet["timbal"] if s["org_id"] == org]
    fault(control, source="timbal", tenant=org, kind="poison", variant=variant)
    [listing] = run(make_config(thread_sim, rsa_keys, timbal={"orgs": [{"id": org}]}))
    assert listing.ok
    assert listing.invalid_records == 1
    assert [s.id for s in listing.syncs] == listed[1:]


def test_unknown_last_state_is_carried_not_rejected(
    thread_sim: SimulatorThread, rsa_keys: Keys, fleet: dict[str, Any], control: httpx.Client
) -> None:
    sync = fleet["timbal"][0]
    mutate(
        control, "timbal", sync["org_id"], sync["sync_id"], {"last_state": "quantum_superposition"}
    )
    [listing] = run(make_config(thread_sim, rsa_keys, timbal={"orgs": [{"id": sync["org_id"]}]}))
    [got] = [s for s in listing.syncs if s.id == sync["sync_id"]]
    assert isinstance(got, TimbalSync)
    assert got.last_state == "quantum_superposition"


def test_label_strings_are_one_copy_across_syncs_and_polls(
    thread_sim: SimulatorThread, rsa_keys: Keys, fleet: dict[str, Any], control: httpx.Client
) -> None:
    """The next snapshot shares its label strings with the one being served (issue 18).
    Longer than 64 characters, so no JSON parser's own string cache can be what shares them."""
    org = fleet["orgs"][0]
    first, second = [s for s in fleet["timbal"] if s["org_id"] == org][:2]
    labels = {
        "connector_id": "conn-" + "c" * 80,
        "name": "Orders " + "n" * 80,
        "source_table": "orders_" + "s" * 80,
        "dest_table": "raw_orders_" + "d" * 80,
    }
    for sync in (first, second):
        mutate(control, "timbal", org, sync["sync_id"], labels)
    config = make_config(thread_sim, rsa_keys, timbal={"orgs": [{"id": org}]})
    [earlier] = run(config)
    [later] = run(config)  # the earlier poll's syncs still held, as a served snapshot is
    polls = [
        {s.id: s for s in listing.syncs if s.id in (first["sync_id"], second["sync_id"])}
        for listing in (earlier, later)
    ]
    assert [len(p) for p in polls] == [2, 2]
    syncs = [sync for poll in polls for sync in poll.values()]
    for field, text in labels.items():
        values = [getattr(sync, field) for sync in syncs]
        assert values == [text] * 4
        assert all(value is values[0] for value in values), field
    assert polls[0][first["sync_id"]].id is polls[1][first["sync_id"]].id


def test_error_messages_name_source_tenant_status_and_a_hint(
    thread_sim: SimulatorThread, rsa_keys: Keys, fleet: dict[str, Any]
) -> None:
    org = fleet["orgs"][0]
    config = make_config(
        thread_sim, rsa_keys, timbal={"api_key": "k3y-DISTINCT-zz", "orgs": [{"id": org}]}
    )
    [listing] = run(config)
    message = str(listing.error)
    assert message.startswith(f"timbal {org}: HTTP 403")
    assert "api_key" in message
    assert "k3y-DISTINCT-zz" not in message


# --- Paragon ----------------------------------------------------------------------------


def test_paragon_lists_every_users_syncs_with_minted_tokens(
    thread_sim: SimulatorThread, rsa_keys: Keys, fleet: dict[str, Any]
) -> None:
    config = make_config(thread_sim, rsa_keys, paragon={"users": fleet["users"]})
    listings = run(config)
    assert all(listing.ok for listing in listings), [str(x.error) for x in listings]
    got = {(s.user_id, s.id) for listing in listings for s in paragon_syncs(listing)}
    assert got == {(s["user_id"], s["sync_id"]) for s in fleet["paragon"]}


def test_paragon_static_tokens_work_without_a_signing_key(
    thread_sim: SimulatorThread, fleet: dict[str, Any]
) -> None:
    user = fleet["users"][0]
    config = load_config(
        None,
        paragon={
            "base_url": thread_sim.base_url,
            "users": [{"id": user, "token": f"sim-paragon-token:{user}"}],
        },
    )
    [listing] = run(config)
    assert listing.ok
    assert listing.syncs


def test_paragon_statuses_are_upper_cased(
    thread_sim: SimulatorThread, rsa_keys: Keys, fleet: dict[str, Any], control: httpx.Client
) -> None:
    sync = fleet["paragon"][0]
    mutate(
        control,
        "paragon",
        sync["user_id"],
        sync["sync_id"],
        {"status": "errored", "reason": "Token revoked"},
    )
    [listing] = run(make_config(thread_sim, rsa_keys, paragon={"users": [sync["user_id"]]}))
    [got] = [s for s in listing.syncs if s.id == sync["sync_id"]]
    assert isinstance(got, ParagonSync)
    assert got.status == "ERRORED"
    assert got.reason == "Token revoked"


def test_paragon_unknown_status_is_carried_as_its_own_value(
    thread_sim: SimulatorThread, rsa_keys: Keys, fleet: dict[str, Any], control: httpx.Client
) -> None:
    sync = fleet["paragon"][0]
    mutate(control, "paragon", sync["user_id"], sync["sync_id"], {"status": "PAUSED"})
    [listing] = run(make_config(thread_sim, rsa_keys, paragon={"users": [sync["user_id"]]}))
    assert listing.ok
    assert {s.status for s in paragon_syncs(listing) if s.id == sync["sync_id"]} == {"PAUSED"}


def test_paragon_credential_filter_is_sent(
    thread_sim: SimulatorThread, rsa_keys: Keys, fleet: dict[str, Any]
) -> None:
    sync = fleet["paragon"][0]
    config = make_config(
        thread_sim,
        rsa_keys,
        paragon={"users": [{"id": sync["user_id"], "credential_id": sync["credential_id"]}]},
    )
    [listing] = run(config)
    assert {s.credential_id for s in paragon_syncs(listing)} == {sync["credential_id"]}


def test_paragon_reminted_once_on_401(
    thread_sim: SimulatorThread, rsa_keys: Keys, fleet: dict[str, Any], control: httpx.Client
) -> None:
    user = fleet["users"][0]
    fault(control, source="paragon", tenant=user, kind="http_401", count=1)
    [listing] = run(make_config(thread_sim, rsa_keys, paragon={"users": [user]}))
    assert listing.ok
    assert requests_for(control, "paragon", user) == 2


def test_paragon_persistent_401_fails_after_one_remint(
    thread_sim: SimulatorThread, rsa_keys: Keys, fleet: dict[str, Any], control: httpx.Client
) -> None:
    user = fleet["users"][0]
    fault(control, source="paragon", tenant=user, kind="http_401")
    [listing] = run(make_config(thread_sim, rsa_keys, paragon={"users": [user]}))
    assert listing.error is not None
    assert listing.error.reason is Reason.HTTP_401
    assert "signing_key" in str(listing.error)
    assert requests_for(control, "paragon", user) == 2


def test_paragon_get_sync_fills_last_synced_at_for_idle_syncs(
    thread_sim: SimulatorThread, rsa_keys: Keys, fleet: dict[str, Any], control: httpx.Client
) -> None:
    idle = [s for s in fleet["paragon"] if s["status"].upper() == "IDLE"]
    assert idle, "the fleet should have IDLE syncs"
    user = idle[0]["user_id"]
    idle_ids = {s["sync_id"] for s in idle if s["user_id"] == user}
    listed = sum(1 for s in fleet["paragon"] if s["user_id"] == user)
    config = make_config(thread_sim, rsa_keys, paragon={"users": [user], "idle_stale_after": "6h"})
    [listing] = run(config)
    assert listing.ok
    for sync in listing.syncs:
        assert isinstance(sync, ParagonSync)
        if sync.id in idle_ids:
            assert sync.last_synced_at is not None
    # One listing plus one Get Sync per IDLE sync; none without idle_stale_after.
    assert requests_for(control, "paragon", user) == 1 + len(idle_ids)
    assert listed >= len(idle_ids)


def test_minted_token_verifies_with_the_public_key_and_carries_the_claims(
    rsa_keys: Keys,
) -> None:
    now = [1_700_000_000.0]
    minter = TokenMinter(rsa_keys.private_pem.decode(), "proj-1", 3600, clock=lambda: now[0])
    token = minter.token("user-9")
    claims = jwt.decode(
        token,
        rsa_keys.public_pem,
        algorithms=["RS256"],
        audience="useparagon.com/proj-1",
        options={"verify_exp": False},
    )
    assert claims == {
        "sub": "user-9",
        "aud": "useparagon.com/proj-1",
        "iat": 1_700_000_000,
        "exp": 1_700_003_600,
    }


def test_minted_token_is_cached_until_shortly_before_expiry(rsa_keys: Keys) -> None:
    now = [1_700_000_000.0]
    minter = TokenMinter(rsa_keys.private_pem.decode(), "p", 3600, clock=lambda: now[0])
    first = minter.token("u")
    now[0] += 3000
    assert minter.token("u") == first
    now[0] += 300  # within the renewal margin of expiry
    assert minter.token("u") != first


def test_tokens_minted_together_are_renewed_over_many_cycles_never_late(rsa_keys: Keys) -> None:
    """The first cycle mints every user's token; their renewals spread over the margin
    before expiry (a 20 s cycle renews a few users, not all of them at once), and no token
    is handed out within the margin of its expiry."""
    users, cycle, start = 200, 20.0, 1_700_000_000.0
    now = [start]
    minter = TokenMinter(rsa_keys.private_pem.decode(), "p", 3600, clock=lambda: now[0])
    held = {f"user-{i}": minter.token(f"user-{i}") for i in range(users)}
    renewed_per_cycle = []
    while now[0] < start + 2 * 3600:
        now[0] += cycle
        renewed = 0
        for user, token in held.items():
            fresh = minter.token(user)
            claims = jwt.decode(fresh, options={"verify_signature": False})
            assert claims["exp"] - now[0] >= minter.margin  # never late
            renewed += fresh != token
            held[user] = fresh
        renewed_per_cycle.append(renewed)
    assert sum(renewed_per_cycle) >= 2 * users  # each renewed twice in two hours...
    # ...and spread: at most ~2 cycles' worth of the margin's share, where all would renew at once.
    assert max(renewed_per_cycle) <= 2 * users * cycle / minter.margin


def test_invalidate_forces_a_new_token(rsa_keys: Keys) -> None:
    now = [1_700_000_000.0]
    minter = TokenMinter(rsa_keys.private_pem.decode(), "p", 3600, clock=lambda: now[0])
    first = minter.token("u")
    now[0] += 1
    minter.invalidate("u")
    assert minter.token("u") != first


def test_a_minted_token_carries_the_upstreams_clock_once_its_skew_is_observed(
    rsa_keys: Keys,
) -> None:
    now = [1_700_000_000.0]
    minter = TokenMinter(rsa_keys.private_pem.decode(), "p", 3600, clock=lambda: now[0])
    minter.observe(86_400.0)  # our clock a day ahead of the upstream's
    claims = jwt.decode(minter.token("u"), options={"verify_signature": False})
    assert (claims["iat"], claims["exp"]) == (1_699_913_600, 1_699_917_200)
    minter.observe(None)  # an answer without a readable Date keeps what is known
    assert minter.skew == 86_400.0
    # The cache is judged on the upstream's clock too: still fresh 3,000 s later.
    first = minter.token("u")
    now[0] += 3000
    assert minter.token("u") == first


@pytest.mark.parametrize("offset", [86_400.0, -86_400.0], ids=["+1d", "-1d"])
async def test_a_token_refused_for_our_clock_is_reminted_once_on_the_upstreams(
    thread_sim: SimulatorThread,
    rsa_keys: Keys,
    fleet: dict[str, Any],
    control: httpx.Client,
    offset: float,
) -> None:
    """Our clock a day off, the upstream's right: the first token (iat in its future, or
    long expired) is refused with 401; the 401's Date gives the skew; one re-mint works."""
    user = fleet["users"][0]
    config = make_config(thread_sim, rsa_keys, paragon={"users": [user]})
    assert config.paragon is not None
    async with make_transport(max_connections=2) as transport:
        upstream = Upstream(
            transport=transport, retries=0, timeout=5, semaphore=asyncio.Semaphore(2)
        )
        client = ParagonClient(
            config.paragon,
            upstream,
            clock=lambda: time.time() + offset,
            now=lambda: datetime.now(UTC) + timedelta(seconds=offset),
        )
        [first] = await client.poll(lambda _source, _tenant: True)
        [second] = await client.poll(lambda _source, _tenant: True)
    assert first.error is None
    assert second.error is None
    assert first.clock_skew is not None
    assert abs(first.clock_skew - offset) < 5
    # 401, the re-mint, then the cached token: three requests for two listings.
    assert requests_for(control, "paragon", user) == 3


def test_users_file_is_reread_every_poll(
    tmp_path: Path, thread_sim: SimulatorThread, rsa_keys: Keys, fleet: dict[str, Any]
) -> None:
    users_file = tmp_path / "users.txt"
    users_file.write_text(f"{fleet['users'][0]}\n")
    config = make_config(thread_sim, rsa_keys, paragon={"users_file": str(users_file)})
    assert [listing.tenant for listing in run(config)] == [fleet["users"][0]]
    users_file.write_text("# two now\n" + "\n".join(fleet["users"][:2]) + "\n")
    assert sorted(listing.tenant for listing in run(config)) == sorted(fleet["users"][:2])


def test_concurrency_bound_is_global_across_sources(
    thread_sim: SimulatorThread, rsa_keys: Keys, fleet: dict[str, Any]
) -> None:
    """With concurrency 1 and 50 ms latency per answer, six tenants take >= 6 x 50 ms."""
    slow = SimulatorThread(
        SimConfig(
            orgs=3,
            syncs_per_org=2,
            users=3,
            seed=3,
            churn=0,
            latency=0.05,
            paragon_public_key_pem=rsa_keys.public_pem,
        )
    )
    slow.start()
    try:
        config = make_config(
            slow,
            rsa_keys,
            timbal={"orgs": [{"id": o} for o in fleet["orgs"]]},
            paragon={"users": fleet["users"]},
            daemon={"concurrency": 1},
        )
        started = time.monotonic()
        listings = run(config)
        assert all(listing.ok for listing in listings)
        assert time.monotonic() - started >= 6 * 0.05
    finally:
        slow.stop()


async def test_a_body_that_fails_its_content_encoding_is_an_invalid_response() -> None:
    with CaptureServer() as server:
        server.reply(200, b"not gzip at all", headers={"Content-Encoding": "gzip"})
        async with make_transport(max_connections=2) as transport:
            upstream = Upstream(
                transport=transport, retries=2, timeout=5, semaphore=asyncio.Semaphore(2)
            )
            with pytest.raises(SourceError) as caught:
                await upstream.get(Source.TIMBAL, "org_x", f"{server.url}/orgs/org_x")
    assert caught.value.reason is Reason.INVALID_RESPONSE
    assert len(server.requests) == 1  # a body that cannot be decoded is not retried


# --- issue 13: upstream data -----------------------------------------------------------------


def test_a_record_that_fails_validation_keeps_its_id_as_listed(
    thread_sim: SimulatorThread, rsa_keys: Keys, fleet: dict[str, Any], control: httpx.Client
) -> None:
    org = fleet["orgs"][0]
    first = next(s["sync_id"] for s in fleet["timbal"] if s["org_id"] == org)
    mutate(control, "timbal", org, first, {"interval_secs": 0})
    [listing] = run(make_config(thread_sim, rsa_keys, timbal={"orgs": [{"id": org}]}))
    assert listing.ok
    assert (listing.invalid_records, listing.invalid_ids) == (1, frozenset({first}))
    assert first not in {s.id for s in listing.syncs}


@pytest.mark.parametrize("source", ["timbal", "paragon"])
def test_a_listing_whose_every_record_is_invalid_is_a_failed_poll(
    thread_sim: SimulatorThread,
    rsa_keys: Keys,
    fleet: dict[str, Any],
    control: httpx.Client,
    source: str,
) -> None:
    if source == "timbal":
        tenant = fleet["orgs"][0]
        ids = [s["sync_id"] for s in fleet["timbal"] if s["org_id"] == tenant]
        broken: dict[str, Any] = {"interval_secs": 0}
        config = make_config(thread_sim, rsa_keys, timbal={"orgs": [{"id": tenant}]})
    else:
        tenant = fleet["users"][0]
        ids = [s["sync_id"] for s in fleet["paragon"] if s["user_id"] == tenant]
        broken = {"status": 5}
        config = make_config(thread_sim, rsa_keys, paragon={"users": [tenant]})
    for sync_id in ids:
        mutate(control, source, tenant, sync_id, broken)
    [listing] = run(config)
    assert listing.error is not None
    assert listing.error.reason is Reason.SCHEMA_MISMATCH
    assert f"all {len(ids)} records" in str(listing.error)
    assert listing.invalid_records == len(ids)  # still counted in syncwatch_invalid_records


def test_an_empty_listing_is_a_healthy_tenant_with_no_syncs(
    thread_sim: SimulatorThread, rsa_keys: Keys, fleet: dict[str, Any], control: httpx.Client
) -> None:
    org = fleet["orgs"][0]
    for sync in (s for s in fleet["timbal"] if s["org_id"] == org):
        control.post(
            "/_sim/mutate", json={"source": "timbal", "sync_id": sync["sync_id"], "delete": True}
        ).raise_for_status()
    [listing] = run(make_config(thread_sim, rsa_keys, timbal={"orgs": [{"id": org}]}))
    assert (listing.ok, list(listing.syncs), listing.invalid_records) == (True, [], 0)


def test_timbal_records_of_connectors_not_asked_for_are_dropped_and_counted(
    thread_sim: SimulatorThread, rsa_keys: Keys, fleet: dict[str, Any], control: httpx.Client
) -> None:
    org = fleet["orgs"][0]
    of_org = [s for s in fleet["timbal"] if s["org_id"] == org]
    connector = of_org[0]["connector_id"]
    wanted = {s["sync_id"] for s in of_org if s["connector_id"] == connector}
    fault(control, source="timbal", tenant=org, kind="ignore_filter")
    config = make_config(
        thread_sim, rsa_keys, timbal={"orgs": [{"id": org, "connector_ids": [connector]}]}
    )
    [listing] = run(config)
    assert listing.ok
    assert {s.id for s in listing.syncs} == wanted
    assert listing.unrequested == len(of_org) - len(wanted) > 0
    assert listing.duplicates == 0


def test_timbal_filters_answered_with_everything_list_each_sync_once(
    thread_sim: SimulatorThread, rsa_keys: Keys, fleet: dict[str, Any], control: httpx.Client
) -> None:
    """Two connector filters, both ignored upstream: each sync once, no duplicate warned."""
    org = fleet["orgs"][0]
    of_org = [s for s in fleet["timbal"] if s["org_id"] == org]
    connectors = sorted({s["connector_id"] for s in of_org})[:2]
    fault(control, source="timbal", tenant=org, kind="ignore_filter")
    config = make_config(
        thread_sim, rsa_keys, timbal={"orgs": [{"id": org, "connector_ids": connectors}]}
    )
    [listing] = run(config)
    ids = [s.id for s in listing.syncs]
    assert sorted(ids) == sorted(s["sync_id"] for s in of_org if s["connector_id"] in connectors)
    assert listing.duplicates == 0
    assert listing.unrequested == 2 * len(of_org) - len(ids)


def test_paragon_records_of_credentials_not_asked_for_are_dropped_and_counted(
    thread_sim: SimulatorThread, rsa_keys: Keys, fleet: dict[str, Any], control: httpx.Client
) -> None:
    by_user: dict[str, set[str]] = {}
    for s in fleet["paragon"]:
        by_user.setdefault(s["user_id"], set()).add(s["credential_id"])
    user = next(u for u, credentials in sorted(by_user.items()) if len(credentials) > 1)
    of_user = [s for s in fleet["paragon"] if s["user_id"] == user]
    credential = of_user[0]["credential_id"]
    fault(control, source="paragon", tenant=user, kind="ignore_filter")
    config = make_config(
        thread_sim, rsa_keys, paragon={"users": [{"id": user, "credential_id": credential}]}
    )
    [listing] = run(config)
    assert listing.ok
    assert {s.id for s in listing.syncs} == {
        s["sync_id"] for s in of_user if s["credential_id"] == credential
    }
    assert listing.unrequested == sum(1 for s in of_user if s["credential_id"] != credential)


@pytest.mark.parametrize("source", ["timbal", "paragon"])
def test_a_duplicated_sync_id_is_counted_and_its_worse_record_alerts(
    thread_sim: SimulatorThread,
    rsa_keys: Keys,
    fleet: dict[str, Any],
    control: httpx.Client,
    source: str,
) -> None:
    if source == "timbal":
        tenant = fleet["orgs"][0]
        config = make_config(thread_sim, rsa_keys, timbal={"orgs": [{"id": tenant}]})
        first = next(s for s in fleet["timbal"] if s["org_id"] == tenant)
    else:
        tenant = fleet["users"][0]
        config = make_config(thread_sim, rsa_keys, paragon={"users": [tenant]})
        first = next(s for s in fleet["paragon"] if s["user_id"] == tenant)
    assert first["intended"] == "ok", "the first sync of the seed-3 fleet is healthy"
    fault(control, source=source, tenant=tenant, kind="duplicate")
    [listing] = run(config)
    assert (listing.duplicates, listing.duplicate_ids) == (1, (first["sync_id"],))
    report = evaluate_listings([listing], rules_of(config), datetime.now(UTC))
    verdicts = [e for e in report.evaluations if e.sync.id == first["sync_id"]]
    assert [e.state for e in verdicts] == [SyncState.CRITICAL]


def test_a_listing_carries_the_upstreams_clock_and_how_far_ours_is_from_it(
    rsa_keys: Keys,
) -> None:
    behind = timedelta(days=1, seconds=30)
    with SimulatorThread(
        SimConfig(orgs=1, syncs_per_org=2, users=1, churn=0),
        clock=lambda: datetime.now(UTC) - behind,
    ) as sim:
        config = make_config(
            sim,
            rsa_keys,
            timbal={"orgs": [{"id": "org_0001"}]},
            paragon={"users": [{"id": "user-0001", "token": "sim-paragon-token:user-0001"}]},
        )
        before = datetime.now(UTC)
        listings = run(config)
        after = datetime.now(UTC)
    assert [listing.ok for listing in listings] == [True, True]
    for listing in listings:
        assert listing.upstream_now is not None
        assert before - behind - timedelta(seconds=1) <= listing.upstream_now <= after - behind
        assert listing.clock_skew is not None
        assert behind.total_seconds() <= listing.clock_skew <= behind.total_seconds() + 2


@pytest.mark.parametrize("date", [None, b"Date: the day after tomorrow\r\n"])
async def test_without_a_readable_date_header_a_listing_has_no_upstream_clock(
    date: bytes | None,
) -> None:
    """A raw HTTP server (every framework adds a Date): evaluation falls back to our clock."""
    body = b'{"syncs": []}'

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + (date or b"")
            + b"Content-Length: %d\r\n\r\n" % len(body)
            + body
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = load_config(
        None, timbal={"base_url": f"http://127.0.0.1:{port}", "api_key": "k", "orgs": [{"id": "o"}]}
    )
    async with server, make_transport(max_connections=2) as transport:
        [listing] = await Poller(config, transport).poll()
    assert listing.ok
    assert (listing.upstream_now, listing.clock_skew) == (None, None)
