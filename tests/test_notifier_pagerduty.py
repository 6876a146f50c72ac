"""PagerDuty Events API v2: event shape, answers, config, test-notify, the outbox and secrets.

The receiver is a CaptureServer that plays PagerDuty: it validates every event against the
Events API v2 schema in tests/fixtures/pagerduty (written from PagerDuty's docs) and answers
an invalid one as PagerDuty does, 400 with its JSON error body; a valid one gets 202.
"""

from __future__ import annotations

import itertools
import json
import random
import sqlite3
import subprocess
import sys
import time
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import structlog
from aiohttp import web

from syncwatch.config import AlertingConfig, ConfigError, TimbalConfig, TimbalOrg
from syncwatch.dispatch import Dispatcher, make_test_batch
from syncwatch.engine import Engine
from syncwatch.http import make_http_client
from syncwatch.notifiers.base import DELIVERY_ID_HEADER
from syncwatch.notifiers.pagerduty import (
    ENQUEUE_URL,
    PagerDutyConfig,
    PagerDutyNotifier,
    pagerduty_events,
)
from syncwatch.notifiers.registry import make_notifier
from syncwatch.outbox import (
    AlertPayload,
    AlertStatus,
    Batch,
    DeliveryError,
    EventKind,
    NotificationReason,
)
from syncwatch.settings import Config, load_config
from syncwatch.state import StateStore
from syncwatch.store import Store
from tests.capture import CaptureServer, Reply
from tests.clock import FakeClock
from tests.conftest import Keys, SimProcess, launch, refused_port, toml_value, wait_until
from tests.test_sink_faults import (
    HOUR,
    MINUTE,
    POLL,
    RETRY_AFTER,
    T0,
    Sent,
    Sim,
    stale_at,
    t,
)

SCHEMA_PATH = Path(__file__).parent / "fixtures" / "pagerduty" / "events-v2-alert-event.schema.json"
# Distinctive, and shaped like a real Integration Key (32 letters and digits).
ROUTING_KEY = "R0UT1NGKEYS3CRET7c1e94ab5f3a9c0d"
PATH = "/v2/enqueue"
NAME = "pd"
EXTERNAL_URL = "https://syncwatch.example.com"
ACCEPTED = b'{"status":"success","message":"Event processed","dedup_key":"x"}'
INVALID = {"status": "invalid event", "message": "Event object is invalid"}


# --- a capture server that validates like PagerDuty ----------------------------------------


def event_problems(body: bytes) -> list[str]:
    """Why PagerDuty would reject this body (empty when it is a valid alert event)."""
    if len(body) > 512 * 1024:
        return ["event larger than 512 KB"]
    try:
        event = json.loads(body)
    except ValueError:
        return ["JSON parse error"]
    schema = json.loads(SCHEMA_PATH.read_text())
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    return sorted(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(event)
    )


class PagerDutyServer(CaptureServer):
    """Answers 202 to a valid event and PagerDuty's 400 to an invalid one (kept in `invalid`)."""

    def __init__(self) -> None:
        super().__init__(default=Reply(202, {"Content-Type": "application/json"}, ACCEPTED))
        self.invalid: list[tuple[bytes, list[str]]] = []

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()  # aiohttp keeps it: the base class reads it again
        problems = event_problems(body) if request.path == PATH else [f"no route {request.path}"]
        if problems:
            self.invalid.append((body, problems))
            answer = json.dumps({**INVALID, "errors": problems})
            # Answered before any scripted reply, as PagerDuty does (requests are sequential).
            with self._cond:
                self._replies.appendleft(Reply(400, {"Content-Type": "application/json"}, answer))
        return await super()._handle(request)


@pytest.fixture
def pagerduty() -> Iterator[PagerDutyServer]:
    server = PagerDutyServer()
    server.start()
    yield server
    server.close()
    # Every test checks the shape of every event it sent.
    assert server.invalid == [], server.invalid


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with make_http_client(timeout=5.0, max_connections=4) as c:
        yield c


def pd_config(url: str, **kw: Any) -> PagerDutyConfig:
    return PagerDutyConfig(name=NAME, type="pagerduty", routing_key=ROUTING_KEY, url=url, **kw)


def notifier(server: CaptureServer, client: httpx.AsyncClient) -> PagerDutyNotifier:
    return PagerDutyNotifier(pd_config(f"{server.url}{PATH}"), client)


def alert(sync_id: str, *, status: AlertStatus = AlertStatus.FIRING, **kw: Any) -> AlertPayload:
    labels = {
        "alertname": "SyncStale",
        "severity": "critical",
        "source": "timbal",
        "tenant": "org_1",
        "sync_id": sync_id,
        "connector_id": "c-1",
        "name": f"table-{sync_id}",
    }
    resolved = status is AlertStatus.RESOLVED
    fields: dict[str, Any] = {
        "status": status,
        "event": EventKind.RESOLVED if resolved else EventKind.FIRING,
        "labels": labels,
        "annotations": {"summary": f"Sync {sync_id} is stale (org_1/{sync_id})", "ratio": "3.2"},
        "starts_at": T0 - timedelta(minutes=5),
        "ends_at": T0 if resolved else None,
        "fingerprint": f"fp-{sync_id}",
        "generator_url": f"{EXTERNAL_URL}/api/v1/alerts",
    }
    fields.update(kw)
    return AlertPayload(**fields)


def batch(*alerts: AlertPayload, delivery_id: str = "delivery-0001", **kw: Any) -> Batch:
    fields: dict[str, Any] = {
        "delivery_id": delivery_id,
        "notifier": NAME,
        "created_at": T0,
        "reason": NotificationReason.FIRST,
        "alerts": alerts,
        "external_url": EXTERNAL_URL,
    }
    fields.update(kw)
    return Batch(**fields)


def five() -> Batch:
    return batch(*(alert(f"s{i}") for i in range(1, 6)))


def pd_incidents(events: Iterable[dict[str, Any]]) -> tuple[Counter[str], set[str]]:
    """PagerDuty's de-duplication as its docs describe it: (alerts opened per dedup_key, open).

    A trigger opens an alert for a new (or resolved) dedup_key and only adds a log entry to
    an open one; a resolve closes an open one and is dropped otherwise.
    """
    opened: Counter[str] = Counter()
    open_now: set[str] = set()
    for e in events:
        key = e["dedup_key"]
        if e["event_action"] == "trigger" and key not in open_now:
            open_now.add(key)
            opened[key] += 1
        elif e["event_action"] == "resolve":
            open_now.discard(key)
    return opened, open_now


# --- the schema fixture can fail ------------------------------------------------------------


def good_trigger() -> dict[str, Any]:
    return pagerduty_events(batch(alert("s1")), ROUTING_KEY)[0]


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda e: e["payload"].update(summary="x" * 1025), id="summary-1025"),
        pytest.param(lambda e: e["payload"].update(severity="high"), id="severity"),
        pytest.param(lambda e: e["payload"].pop("source"), id="no-source"),
        pytest.param(lambda e: e.pop("payload"), id="trigger-without-payload"),
        pytest.param(lambda e: e.update(dedup_key="k" * 256), id="dedup-key-256"),
        pytest.param(lambda e: e["payload"].update(timestamp="yesterday"), id="timestamp"),
        pytest.param(lambda e: e.update(routing_key="short"), id="routing-key"),
        pytest.param(lambda e: e.update(event_action="resolve"), id="resolve-with-payload"),
        pytest.param(lambda e: e["payload"].update(customdetails={}), id="misspelt-field"),
    ],
)
def test_the_schema_fixture_rejects_what_pagerduty_rejects(spoil: Any) -> None:
    event = good_trigger()
    assert event_problems(json.dumps(event).encode()) == []
    spoil(event)
    assert event_problems(json.dumps(event).encode()) != []


# --- the events ------------------------------------------------------------------------------


async def test_one_trigger_per_firing_alert_in_batch_order_with_pd_cef_fields(
    pagerduty: PagerDutyServer, client: httpx.AsyncClient
) -> None:
    warning = alert("s2", labels={**alert("s2").labels, "severity": "warning"})
    await notifier(pagerduty, client).send(batch(alert("s1"), warning))
    first, second = pagerduty.requests
    assert (first.method, first.path) == ("POST", PATH)
    assert first.header("Content-Type") == "application/json"
    assert first.header(DELIVERY_ID_HEADER) == "delivery-0001"
    assert first.json() == {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": "fp-s1",
        "payload": {
            "summary": "Sync s1 is stale (org_1/s1)",
            "severity": "critical",
            "source": "timbal/org_1/s1",
            "timestamp": "2025-01-06T08:55:00Z",
            "class": "SyncStale",
            "group": "org_1",
            "component": "s1",
            "custom_details": {
                "labels": alert("s1").labels,
                "annotations": alert("s1").annotations,
            },
        },
        "client": "syncwatch",
        "client_url": EXTERNAL_URL,
        "links": [{"href": f"{EXTERNAL_URL}/api/v1/alerts", "text": "syncwatch"}],
    }
    assert second.json()["dedup_key"] == "fp-s2"
    assert second.json()["payload"]["severity"] == "warning"


async def test_a_resolved_alert_is_a_resolve_with_its_fingerprint_as_dedup_key(
    pagerduty: PagerDutyServer, client: httpx.AsyncClient
) -> None:
    await notifier(pagerduty, client).send(batch(alert("s1", status=AlertStatus.RESOLVED)))
    (request,) = pagerduty.requests
    assert request.json() == {
        "routing_key": ROUTING_KEY,
        "event_action": "resolve",
        "dedup_key": "fp-s1",
    }


async def test_summary_is_cut_to_1024_characters_ending_with_an_ellipsis(
    pagerduty: PagerDutyServer, client: httpx.AsyncClient
) -> None:
    long = alert("s1", annotations={"summary": "é" * 5000, "description": "d" * 100_000})
    await notifier(pagerduty, client).send(batch(long))
    payload = pagerduty.requests[0].json()["payload"]
    assert len(payload["summary"]) == 1024
    assert payload["summary"] == "é" * 1023 + "…"
    assert len(pagerduty.requests[0].body) < 512 * 1024


async def test_without_external_url_there_is_no_client_url_and_no_link(
    pagerduty: PagerDutyServer, client: httpx.AsyncClient
) -> None:
    bare = alert("s1", generator_url="")
    await notifier(pagerduty, client).send(batch(bare, external_url=""))
    event = pagerduty.requests[0].json()
    assert "client_url" not in event
    assert "links" not in event
    assert event["client"] == "syncwatch"


async def test_an_alert_without_sync_labels_names_syncwatch_as_its_source(
    pagerduty: PagerDutyServer, client: httpx.AsyncClient
) -> None:
    bare = alert("s1", labels={"alertname": "SyncwatchSelf", "severity": "warning"})
    await notifier(pagerduty, client).send(batch(bare))
    assert pagerduty.requests[0].json()["payload"]["source"] == "syncwatch"


# --- PagerDuty's answers -------------------------------------------------------------------


async def send_failing(
    server: CaptureServer, client: httpx.AsyncClient, b: Batch | None = None
) -> DeliveryError:
    with pytest.raises(DeliveryError) as info:
        await notifier(server, client).send(b or batch(alert("s1")))
    return info.value


async def test_400_invalid_event_is_permanent_and_names_pagerdutys_errors(
    pagerduty: PagerDutyServer, client: httpx.AsyncClient
) -> None:
    errors = ["Length of 'routing_key' is incorrect (should be 32 characters)"]
    pagerduty.reply(400, json.dumps({**INVALID, "errors": errors}))
    error = await send_failing(pagerduty, client)
    assert (error.retryable, error.retry_after, error.status_code) == (False, None, 400)
    assert "pagerduty pd: HTTP 400" in str(error)
    assert "Event object is invalid: Length of 'routing_key' is incorrect" in str(error)


@pytest.mark.parametrize("status", [429, 500, 502, 503])
async def test_429_and_5xx_are_retried_honouring_retry_after(
    status: int, pagerduty: PagerDutyServer, client: httpx.AsyncClient
) -> None:
    pagerduty.reply(
        status,
        json.dumps({"status": "throttled", "message": "Slow down"}),
        headers={"Retry-After": "30"},
    )
    error = await send_failing(pagerduty, client)
    assert (error.retryable, error.retry_after, error.status_code) == (True, 30.0, status)
    assert "'Slow down'" in str(error)


@pytest.mark.parametrize("status", [401, 403, 404, 413])
async def test_other_4xx_answers_are_permanent(
    status: int, pagerduty: PagerDutyServer, client: httpx.AsyncClient
) -> None:
    pagerduty.reply(status, "<html>nope</html>")
    error = await send_failing(pagerduty, client)
    assert not error.retryable
    assert "nope" in str(error)  # not JSON: the body's own words


async def test_connection_refused_is_retryable(client: httpx.AsyncClient) -> None:
    config = pd_config(f"http://127.0.0.1:{refused_port()}{PATH}")
    with pytest.raises(DeliveryError) as info:
        await PagerDutyNotifier(config, client).send(batch(alert("s1")))
    assert info.value.retryable
    assert "connection refused" in str(info.value)


# --- event 3 of 5 fails -------------------------------------------------------------------


async def test_event_3_of_5_failing_is_retried_from_event_3_by_the_same_process(
    pagerduty: PagerDutyServer, client: httpx.AsyncClient
) -> None:
    pagerduty.reply(202, ACCEPTED)
    pagerduty.reply(202, ACCEPTED)
    pagerduty.reply(500, "down")
    pd = notifier(pagerduty, client)
    with pytest.raises(DeliveryError) as info:
        await pd.send(five())
    assert info.value.retryable
    assert "at event 3 of 5 (trigger); the 2 before it are not sent again" in str(info.value)
    await pd.send(five())
    keys = [r.json()["dedup_key"] for r in pagerduty.requests]
    assert keys == ["fp-s1", "fp-s2", "fp-s3", "fp-s3", "fp-s4", "fp-s5"]
    await pd.send(five())  # a new attempt after success starts over (a crash before the ack)
    assert len(pagerduty.requests) == 11


async def test_a_restart_resends_events_1_and_2_and_pagerduty_deduplicates_them(
    pagerduty: PagerDutyServer, client: httpx.AsyncClient
) -> None:
    """A restart forgets the progress; the re-sent triggers open no second incident."""
    pagerduty.reply(202, ACCEPTED)
    pagerduty.reply(202, ACCEPTED)
    pagerduty.reply(503, "down")
    with pytest.raises(DeliveryError):
        await notifier(pagerduty, client).send(five())
    await notifier(pagerduty, client).send(five())  # a new process: the same batch again
    accepted = [r.json() for i, r in enumerate(pagerduty.requests) if i != 2]
    assert [e["dedup_key"] for e in accepted] == ["fp-s1", "fp-s2"] + [
        f"fp-s{i}" for i in range(1, 6)
    ]
    # Identical events under the same dedup_key: PagerDuty adds a log entry, not an incident.
    assert accepted[0] == accepted[2]
    opened, open_now = pd_incidents(accepted)
    assert opened == Counter({f"fp-s{i}": 1 for i in range(1, 6)})
    assert open_now == {f"fp-s{i}" for i in range(1, 6)}


async def test_a_rejected_event_does_not_stop_the_rest_of_the_batch(
    pagerduty: PagerDutyServer, client: httpx.AsyncClient
) -> None:
    pagerduty.reply(202, ACCEPTED)
    pagerduty.reply(202, ACCEPTED)
    pagerduty.reply(400, json.dumps({**INVALID, "errors": ["bad"]}))
    pd = notifier(pagerduty, client)
    with pytest.raises(DeliveryError) as info:
        await pd.send(five())
    assert len(pagerduty.requests) == 5
    assert not info.value.retryable
    assert info.value.status_code == 400
    assert "at event 3 of 5 (trigger)" in str(info.value)
    assert str(info.value).endswith("(4 of 5 accepted)")


async def test_a_batch_rejected_whole_names_three_events_and_counts_the_rest(
    pagerduty: PagerDutyServer, client: httpx.AsyncClient
) -> None:
    for _ in range(5):
        pagerduty.reply(400, json.dumps({**INVALID, "errors": ["bad key"]}))
    error = await send_failing(pagerduty, client, five())
    assert str(error).count("HTTP 400") == 3
    assert str(error).endswith("; 2 more rejected (0 of 5 accepted)")


async def test_a_rejection_before_a_retryable_failure_is_not_sent_again(
    pagerduty: PagerDutyServer, client: httpx.AsyncClient
) -> None:
    pagerduty.reply(400, json.dumps({**INVALID, "errors": ["bad"]}))
    pagerduty.reply(500, "down")
    pd = notifier(pagerduty, client)
    with pytest.raises(DeliveryError) as first:
        await pd.send(five())
    assert first.value.retryable
    with pytest.raises(DeliveryError) as second:
        await pd.send(five())
    assert not second.value.retryable  # the rejection is reported once the rest is in
    assert [r.json()["dedup_key"] for r in pagerduty.requests] == [
        "fp-s1",
        "fp-s2",
        "fp-s2",
        "fp-s3",
        "fp-s4",
        "fp-s5",
    ]


# --- test-notify ---------------------------------------------------------------------------


async def test_a_test_batch_triggers_then_resolves_its_own_dedup_key(
    pagerduty: PagerDutyServer, client: httpx.AsyncClient
) -> None:
    test = make_test_batch(NAME, T0, EXTERNAL_URL)
    await notifier(pagerduty, client).send(test)
    trigger, resolve = (r.json() for r in pagerduty.requests)
    assert trigger["payload"]["summary"].startswith("[TEST] ")
    assert trigger["payload"]["custom_details"]["labels"]["test"] == "true"
    assert resolve["event_action"] == "resolve"
    assert trigger["dedup_key"] == resolve["dedup_key"] == f"syncwatch-{test.delivery_id}"
    assert pd_incidents([trigger, resolve])[1] == set()  # nothing left open


async def test_a_test_batch_whose_resolve_fails_says_the_test_alert_is_open(
    pagerduty: PagerDutyServer, client: httpx.AsyncClient
) -> None:
    pagerduty.reply(202, ACCEPTED)
    pagerduty.reply(500, "down")
    error = await send_failing(pagerduty, client, make_test_batch(NAME, T0, EXTERNAL_URL))
    assert error.retryable
    assert str(error).endswith(
        "at event 2 of 2 (resolve); the 1 before it are not sent again; "
        "the [TEST] alert stays open in PagerDuty: resolve it there"
    )


def notify_config(tmp_path: Path, table: str) -> Path:
    path = tmp_path / "syncwatch.toml"
    path.write_text(
        '[daemon]\nrequest_timeout = "5s"\nlog_format = "json"\n'
        f"state_path = {toml_value(str(tmp_path / 'state.db'))}\n\n"
        '[timbal]\nbase_url = "http://127.0.0.1:9"\napi_key = "unused"\n'
        '[[timbal.orgs]]\nid = "org_test"\n\n'
        f'[alerting]\nexternal_url = "{EXTERNAL_URL}"\n\n' + table
    )
    return path


def pd_table(url: str, **keys: str) -> str:
    lines = [f"{k} = {toml_value(v)}" for k, v in keys.items()]
    return (
        "\n".join(
            [
                "[[notifiers]]",
                f'name = "{NAME}"',
                'type = "pagerduty"',
                f"url = {toml_value(url)}",
                *lines,
            ]
        )
        + "\n"
    )


def syncwatch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncwatch", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_test_notify_triggers_and_resolves_a_marked_test_alert(
    tmp_path: Path, pagerduty: PagerDutyServer
) -> None:
    key_file = tmp_path / "routing-key"
    key_file.write_text(ROUTING_KEY + "\n")
    config = notify_config(
        tmp_path, pd_table(f"{pagerduty.url}{PATH}", routing_key_file=str(key_file))
    )
    result = syncwatch("test-notify", "-c", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [f"{NAME}: delivered"]
    trigger, resolve = (r.json() for r in pagerduty.wait_for(2))
    assert trigger["routing_key"] == resolve["routing_key"] == ROUTING_KEY
    assert trigger["payload"]["summary"].startswith("[TEST]")
    assert trigger["client_url"] == EXTERNAL_URL
    assert (trigger["event_action"], resolve["event_action"]) == ("trigger", "resolve")
    assert resolve["dedup_key"] == trigger["dedup_key"]
    assert ROUTING_KEY not in result.stdout + result.stderr


def test_test_notify_failure_shows_pagerdutys_words_and_never_the_key(
    tmp_path: Path, pagerduty: PagerDutyServer
) -> None:
    # A proxy echoing the request body back, routing key and all.
    pagerduty.reply(502, f'Bad gateway for {{"routing_key":"{ROUTING_KEY}"}}')
    config = notify_config(tmp_path, pd_table(f"{pagerduty.url}{PATH}", routing_key=ROUTING_KEY))
    result = syncwatch("test-notify", "-c", str(config))
    assert result.returncode == 1, result.stdout + result.stderr
    (line,) = result.stdout.splitlines()
    assert line.startswith(f"{NAME}: FAILED: pagerduty {NAME}: HTTP 502 'Bad gateway for ")
    assert "[redacted]" in line
    assert ROUTING_KEY not in result.stdout + result.stderr


# --- config -------------------------------------------------------------------------------


def problems(**entry: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(
            None,
            timbal={"api_key": "k", "orgs": [{"id": "o"}]},
            notifiers=[{"name": NAME, "type": "pagerduty", **entry}],
        )
    return caught.value.problems


def test_a_missing_routing_key_is_one_line_naming_the_key() -> None:
    assert problems() == [
        "notifiers[0].routing_key: required: a pagerduty notifier needs routing_key_file (or "
        "routing_key), the Integration Key of an Events API v2 integration"
    ]


def test_routing_key_and_its_file_together_are_one_line(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(ROUTING_KEY)
    (line,) = problems(routing_key=ROUTING_KEY, routing_key_file=str(key_file))
    assert (
        line
        == "notifiers[0].routing_key_file: set either routing_key or routing_key_file, not both"
    )


@pytest.mark.parametrize("bad", [ROUTING_KEY[:-1], ROUTING_KEY + "x", ROUTING_KEY[:-1] + "!"])
def test_a_malformed_routing_key_is_one_line_without_the_value(bad: str) -> None:
    (line,) = problems(routing_key=bad)
    assert line.startswith("notifiers[0].routing_key: expected a 32-character Integration Key")
    assert "value not shown" in line
    assert bad not in line
    assert ROUTING_KEY[:8] not in line


def test_the_url_defaults_to_pagerdutys_enqueue_endpoint() -> None:
    config = PagerDutyConfig(name=NAME, type="pagerduty", routing_key=ROUTING_KEY)
    assert config.url == ENQUEUE_URL == "https://events.pagerduty.com/v2/enqueue"


def test_validate_masks_the_routing_key_and_the_url_password(tmp_path: Path) -> None:
    url = "http://proxy-user:pr0xy-S3CRET@127.0.0.1:9/v2/enqueue"
    config = notify_config(tmp_path, pd_table(url, routing_key=ROUTING_KEY))
    result = syncwatch("validate", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert 'routing_key = "**********"' in result.stdout
    assert "proxy-user:**********@127.0.0.1" in result.stdout
    for secret in (ROUTING_KEY, "pr0xy-S3CRET"):
        assert secret not in result.stdout + result.stderr


def test_validate_of_a_missing_key_exits_78_with_one_problem_line(tmp_path: Path) -> None:
    config = notify_config(tmp_path, pd_table(ENQUEUE_URL))
    result = syncwatch("validate", "-c", str(config))
    assert result.returncode == 78, result.stdout + result.stderr
    assert [x for x in result.stderr.splitlines() if "notifiers[0]" in x] == [
        x for x in result.stderr.splitlines() if "notifiers[0].routing_key: required" in x
    ]
    assert sum("notifiers[0]" in x for x in result.stderr.splitlines()) == 1


def test_the_registry_builds_it_and_it_hears_every_resolve(client: httpx.AsyncClient) -> None:
    built = make_notifier(pd_config(ENQUEUE_URL), client, poll_interval=60)
    assert isinstance(built, PagerDutyNotifier)
    assert built.capabilities.always_resolves
    assert not built.capabilities.resends_active


# --- the durable outbox: Engine + Store + Dispatcher + PagerDuty on 127.0.0.1 ---------------


class PagerDutySim(Sim):
    """test_sink_faults' simulated daemon, delivering to PagerDuty: one request per event."""

    def __init__(
        self,
        store: Store,
        sink: CaptureServer,
        client: httpx.AsyncClient,
        *,
        send_timeout: float = 30.0,
        send_resolved: bool = True,
    ) -> None:
        self.kind = "pagerduty"
        self.name = NAME
        self.store = store
        self.sink = sink
        self.clock = FakeClock(T0, autojump=True)
        entry = pd_config(f"{sink.url}{PATH}")
        self.notifier = PagerDutyNotifier(entry, client, self.clock)
        self.config = Config(
            timbal=TimbalConfig(api_key="test-key", orgs=[TimbalOrg(id="org_1")]),
            alerting=AlertingConfig(repeat_interval=100 * HOUR, send_resolved=send_resolved),
            notifiers=[entry],
        )
        ids = itertools.count(1)
        self.engine = Engine(self.config, store, new_id=lambda: f"pd-{next(ids):05d}")
        self.dispatcher = Dispatcher(
            store,
            {NAME: self.notifier},
            send_timeout=send_timeout,
            clock=self.clock,
            rng=random.Random(7),
        )
        self.cycle_every = POLL
        self.next_cycle = self.clock.now
        self.next_retry = None
        self.stale_before = frozenset()
        self.enqueued = []
        self.expected = {}
        self.sent = []
        self.failures = []
        self.drops = []
        self.pending_after_cycle = []

    def events(self, batches: Iterable[Batch]) -> list[tuple[str, dict[str, Any]]]:
        """(delivery id, event) PagerDuty must accept for these batches, in order."""
        return [(b.delivery_id, e) for b in batches for e in pagerduty_events(b, ROUTING_KEY)]

    def open_syncs(self, sent: Iterable[Sent]) -> set[str]:
        """The syncs PagerDuty has an open alert for, after accepting `sent`."""
        sync_of = {a.fingerprint: a.labels["sync_id"] for b in self.enqueued for a in b.alerts}
        return {sync_of[k] for k in pd_incidents(s.request.json() for s in sent)[1]}


def got(sent: Iterable[Sent]) -> list[tuple[str, dict[str, Any]]]:
    return [(s.delivery_id, s.request.json()) for s in sent]


def outbox(db: Path) -> list[tuple[str, int, str | None]]:
    with closing(sqlite3.connect(db)) as conn:
        rows: list[tuple[str, int, str | None]] = conn.execute(
            "SELECT delivery_id, attempts, last_error FROM outbox WHERE notifier=? ORDER BY seq",
            (NAME,),
        ).fetchall()
    return rows


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def store(db: Path) -> Iterator[Store]:
    s = Store(StateStore(db))
    yield s
    s.close()


async def test_six_hour_outage_then_every_event_in_order_and_pagerduty_agrees(
    store: Store, db: Path, pagerduty: PagerDutyServer, client: httpx.AsyncClient
) -> None:
    sim = PagerDutySim(store, pagerduty, client)
    await sim.run(t(30 * MINUTE))
    before = len(sim.enqueued)
    assert got(sim.sent) == sim.events(sim.enqueued)

    pagerduty.stop()
    await sim.run(t(30 * MINUTE + 6 * HOUR))
    queued = sim.enqueued[before:]
    assert len(queued) >= 20
    assert [r[0] for r in outbox(db)] == [b.delivery_id for b in queued]
    assert "connection" in (outbox(db)[0][2] or "")
    assert sim.outcome("failed") == len(sim.failures) >= 6 * HOUR / 600

    pagerduty.start()
    back = sim.clock.now
    await sim.run(back + 30 * MINUTE)
    assert got(sim.sent) == sim.events(sim.enqueued)  # each event once, in outbox order
    assert store.pending() == {}
    assert (sim.outcome("sent"), sim.outcome("dropped")) == (len(sim.enqueued), 0)
    # PagerDuty's open alerts are exactly the syncs stale now, each opened once per episode.
    assert sim.open_syncs(sim.sent) == set(stale_at(sim.clock.now - T0.timestamp()))
    assert all(
        e["dedup_key"] == a.fingerprint
        for b in sim.enqueued
        for a, e in zip(b.alerts, pagerduty_events(b, ROUTING_KEY), strict=True)
    )


async def test_flapping_pagerduty_accepts_every_event_exactly_once_in_order(
    store: Store, pagerduty: PagerDutyServer, client: httpx.AsyncClient
) -> None:
    rng = random.Random(1234)
    script = [202 if rng.random() < 0.5 else rng.choice([500, 502, 503, 429]) for _ in range(400)]
    for code in script:
        pagerduty.reply(
            code,
            ACCEPTED if code == 202 else json.dumps({"status": "error", "message": f"e{code}"}),
        )
    sim = PagerDutySim(store, pagerduty, client)
    await sim.run(t(75 * MINUTE))
    await sim.run(t(3 * HOUR), cycles=False)
    assert len(sim.sent) < len(script)
    accepted = [s for i, s in enumerate(sim.sent) if script[i] == 202]
    assert len(accepted) < len(sim.sent)
    # Progress kept across retries: no accepted event is sent twice by one process.
    assert got(accepted) == sim.events(sim.enqueued)
    assert store.pending() == {}
    assert sim.outcome("dropped") == 0


async def test_429_storm_honours_retry_after_exactly_then_drains(
    store: Store, pagerduty: PagerDutyServer, client: httpx.AsyncClient
) -> None:
    for seconds in RETRY_AFTER:
        pagerduty.reply(
            429,
            json.dumps({"status": "throttled", "message": "Request Limit Exceeded"}),
            headers={"Retry-After": str(seconds)},
        )
    sim = PagerDutySim(store, pagerduty, client)
    await sim.run(t(95 * MINUTE))
    storm = len(RETRY_AFTER)
    assert [gap for _, gap in sim.failures] == pytest.approx(RETRY_AFTER, abs=1e-5)
    first = pagerduty_events(sim.enqueued[0], ROUTING_KEY)[0]
    assert [s.request.json() for s in sim.sent[: storm + 1]] == [first] * (storm + 1)
    gaps = [b.at - a.at for a, b in itertools.pairwise(sim.sent[: storm + 1])]
    assert gaps == pytest.approx(RETRY_AFTER, abs=1e-5)
    assert got(sim.sent[storm:]) == sim.events(sim.enqueued)
    assert sim.outcome("sent") == len(sim.enqueued) >= 4
    assert (sim.outcome("failed"), sim.outcome("dropped")) == (storm, 0)
    assert store.pending() == {}


async def test_400_drops_that_event_once_and_never_retries_it(
    store: Store, db: Path, pagerduty: PagerDutyServer, client: httpx.AsyncClient
) -> None:
    pagerduty.reply(400, json.dumps({**INVALID, "errors": ["payload.summary is missing"]}))
    sim = PagerDutySim(store, pagerduty, client)
    await sim.run(t(0))
    (head,) = sim.enqueued
    assert len(head.alerts) >= 2
    assert sim.outcome("dropped") == 1
    assert outbox(db) == []  # not kept for a retry
    await sim.run(t(2 * HOUR))
    rejected = pagerduty_events(head, ROUTING_KEY)[0]
    assert [s.request.json() for s in sim.sent].count(rejected) == 1  # never sent again
    assert got(sim.sent[1:]) == sim.events(sim.enqueued)[1:]  # the rest all went through
    assert (sim.outcome("dropped"), sim.outcome("sent")) == (1, len(sim.enqueued) - 1)


async def test_a_slow_pagerduty_is_bounded_by_send_timeout_and_retried(
    store: Store, db: Path, pagerduty: PagerDutyServer, client: httpx.AsyncClient
) -> None:
    pagerduty.reply(202, ACCEPTED, delay=5.0)  # would be accepted, long after send_timeout
    # 1 s: above what a prompt answer takes on a loaded machine, below the slow one's 5 s.
    sim = PagerDutySim(store, pagerduty, client, send_timeout=1.0)
    started = time.monotonic()
    await sim.run(t(0))
    assert 0.99 <= time.monotonic() - started < 5.0
    ((delivery_id, attempts, error),) = outbox(db)
    assert (delivery_id, attempts, error) == (
        sim.enqueued[0].delivery_id,
        1,
        "no answer within 1s",
    )
    await sim.run(t(30 * MINUTE))
    # The slow event was sent again under the same dedup_key; the rest once each, in order.
    assert sim.sent[0].request.json() == sim.sent[1].request.json()
    assert got(sim.sent[1:]) == sim.events(sim.enqueued)
    assert (sim.outcome("failed"), sim.outcome("dropped")) == (1, 0)
    assert store.pending() == {}


async def test_resolves_reach_pagerduty_even_with_send_resolved_false(
    store: Store, pagerduty: PagerDutyServer, client: httpx.AsyncClient
) -> None:
    """An incident left open forever is worse than a resolve nobody asked to read."""
    sim = PagerDutySim(store, pagerduty, client, send_resolved=False)
    await sim.run(t(2 * HOUR))  # Sim.cycle checks each batch holds the resolves too
    actions = Counter(s.request.json()["event_action"] for s in sim.sent)
    assert actions["resolve"] >= 3
    assert sim.open_syncs(sim.sent) == set(stale_at(sim.clock.now - T0.timestamp()))


# --- the routing key never leaks -----------------------------------------------------------


def assert_key_not_stored(directory: Path) -> None:
    """Neither the database nor its -wal and -shm hold the key, or a piece of it."""
    files = list(directory.glob("state.db*"))
    assert files
    for path in files:
        data = path.read_bytes()
        assert ROUTING_KEY[:12].encode() not in data, path.name


def echoes() -> list[Reply]:
    """Error pages that echo the request body (the routing key in it), in every place."""
    return [
        Reply(500, {}, f'upstream failed on {{"routing_key":"{ROUTING_KEY}"}}'),
        Reply(400, {}, json.dumps({**INVALID, "errors": [f"unknown routing_key {ROUTING_KEY}"]})),
        Reply(502, {}, "x" * 185 + ROUTING_KEY),  # straddling the cut of the error detail
        Reply(429, {"Retry-After": "1"}, json.dumps({"message": ROUTING_KEY})),
        Reply(503, {}, ROUTING_KEY * 20),
    ]


async def test_the_routing_key_is_never_in_a_delivery_error(
    pagerduty: PagerDutyServer, client: httpx.AsyncClient
) -> None:
    for reply in echoes():
        pagerduty.reply(reply.status, reply.body, reply.headers)
        error = await send_failing(pagerduty, client)
        shown = "".join(traceback.format_exception(error)) + repr(error) + str(error.args)
        assert ROUTING_KEY not in shown
        assert ROUTING_KEY[:12] not in shown, shown  # nor a piece cut at the detail's end
        assert f"pagerduty {NAME}: HTTP {reply.status}" in str(error)


async def test_the_routing_key_is_never_in_the_log_or_the_state_db(
    tmp_path: Path, store: Store, db: Path, pagerduty: PagerDutyServer, client: httpx.AsyncClient
) -> None:
    for reply in echoes() * 3:
        pagerduty.reply(reply.status, reply.body, reply.headers)
    sim = PagerDutySim(store, pagerduty, client)
    with structlog.testing.capture_logs() as logs:
        await sim.run(t(60 * MINUTE))
    events = Counter(entry["event"] for entry in logs)
    assert events["notification_failed"] >= 5
    assert events["notification_dropped"] >= 1
    assert events["notification_sent"] >= 1
    assert ROUTING_KEY not in repr(logs)
    assert ROUTING_KEY[:12] not in repr(logs)
    store.close()
    assert_key_not_stored(tmp_path)


# --- the daemon, end to end -----------------------------------------------------------------


def test_the_daemon_pages_pagerduty_and_keeps_the_key_out_of_its_log_and_db(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys, pagerduty: PagerDutyServer
) -> None:
    fleet = sim.fleet()
    errored = [s for s in fleet["paragon"] if s["alertname"] == "SyncErrored"]
    assert errored, "the seed-7 fleet has an ERRORED Paragon sync"
    target = errored[0]["sync_id"]
    for reply in echoes()[:2]:
        pagerduty.reply(reply.status, reply.body, reply.headers)
    key_file = tmp_path / "routing-key"
    key_file.write_text(ROUTING_KEY)
    extra = "[alerting]\nsend_resolved = false\n\n" + pd_table(
        f"{pagerduty.url}{PATH}", routing_key_file=str(key_file)
    )
    daemon = launch(tmp_path, sim, rsa_keys, extra=extra)
    try:

        def trigger_for_target() -> list[Any]:
            return [
                e
                for r in pagerduty.requests
                if (e := r.json())["event_action"] == "trigger"
                and e["payload"]["custom_details"]["labels"].get("sync_id") == target
            ]

        (trigger, *_) = wait_until(trigger_for_target, timeout=60)
        assert trigger["payload"]["severity"] == "critical"
        assert trigger["payload"]["source"] == f"paragon/{errored[0]['user_id']}/{target}"
        with sim.control() as control:
            control.post(
                "/_sim/mutate",
                json={"source": "paragon", "sync_id": target, "set": {"status": "ACTIVE"}},
            ).raise_for_status()

        def resolved() -> bool:
            return any(
                r.json()
                == {
                    "routing_key": ROUTING_KEY,
                    "event_action": "resolve",
                    "dedup_key": trigger["dedup_key"],
                }
                for r in pagerduty.requests
            )

        wait_until(resolved, timeout=60)  # send_resolved = false: PagerDuty still hears it
    finally:
        code = daemon.proc.stop()
    assert code == 0, daemon.proc.output
    log = daemon.proc.output
    assert '"notification_failed"' in log
    assert '"notification_dropped"' in log
    assert ROUTING_KEY not in log
    assert ROUTING_KEY[:12] not in log
    assert_key_not_stored(tmp_path)
