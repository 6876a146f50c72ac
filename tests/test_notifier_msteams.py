"""Specs for the Microsoft Teams notifier: Adaptive Card shape, size, config, wire, outbox.

Everything real: the card is checked against Microsoft's own Adaptive Cards 1.5 JSON
schema (vendored in tests/fixtures/adaptivecards/), deliveries go over HTTP to a capture
server on 127.0.0.1, `test-notify` runs as a process, and the outbox runs through the
simulated daemon of tests/test_sink_faults.py with this kind in the webhook's place.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import sqlite3
import time
import traceback
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import jsonschema
import orjson
import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncwatch.dispatch import BACKOFF_MAX, Dispatcher, make_test_batch
from syncwatch.engine import Engine
from syncwatch.http import make_http_client
from syncwatch.models import Severity
from syncwatch.notifiers.base import DELIVERY_ID_HEADER
from syncwatch.notifiers.msteams import (
    MAX_PAYLOAD,
    TEAMS_LIMIT,
    MSTeamsConfig,
    MSTeamsNotifier,
    plain,
    teams_message,
)
from syncwatch.notifiers.registry import make_notifier
from syncwatch.outbox import AlertStatus, Batch, DeliveryError, EventKind
from syncwatch.settings import Config
from syncwatch.state import StateStore
from syncwatch.store import Store
from tests.capture import CaptureServer, Reply
from tests.clock import FakeClock
from tests.delivery import deliver_due
from tests.test_config import MINIMAL, problem_lines, validate, write
from tests.test_notifiers import (
    EXTERNAL_URL,
    T0,
    Clock,
    batch,
    check_golden,
    errored,
    notify_config,
    refused_url,
    run_test_notify,
    stale,
    storm,
)
from tests.test_sink_faults import (
    HOUR,
    MINUTE,
    RETRY_AFTER,
    Sent,
    Signature,
    Sim,
    check_same_content_per_delivery_id,
    outbox,
    t,
)

SCHEMA = Path(__file__).parent / "fixtures" / "adaptivecards" / "adaptive-card-1.5.schema.json"

# A Workflows trigger URL as Teams hands it out: the workflow id and `sig` are the secret.
WORKFLOW = "0f3c9e4b7a2d4c1e8b5a6d7e9f0a1b2c"
SIG = "S1gN4tUr3-s3cr3t-Qx7ZkLmNoPvWy2Ab_cDeFgHiJ"
INVOKE = f"/workflows/{WORKFLOW}/triggers/manual/paths/invoke"
QUERY = f"api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={SIG}"

HOSTILE = (
    "[click here](https://evil.example/login) <at>General</at> **urgent** _now_ "
    "![img](https://evil.example/x.png) \r\n- item\r1. first\u202eevil\u200b\x00\x1b[31m"
)


@cache
def validator() -> jsonschema.Draft6Validator:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft6Validator.check_schema(schema)
    return jsonschema.Draft6Validator(schema)


def card_of(message: dict[str, Any]) -> dict[str, Any]:
    """The one Adaptive Card of a Teams message, after checking the message envelope."""
    assert set(message) == {"type", "attachments"}
    assert message["type"] == "message"
    (attachment,) = message["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card: dict[str, Any] = attachment["content"]
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert card["type"] == "AdaptiveCard"
    assert card["version"] in ("1.4", "1.5")
    return card


def schema_errors(message: dict[str, Any]) -> list[str]:
    return [
        f"{list(e.absolute_path)}: {e.message[:200]}"
        for e in validator().iter_errors(card_of(message))
    ]


def elements(message: dict[str, Any]) -> list[dict[str, Any]]:
    body: list[dict[str, Any]] = card_of(message)["body"]
    return body


def text_blocks(message: dict[str, Any]) -> list[str]:
    return [e["text"] for e in elements(message) if e["type"] == "TextBlock"]


def shown_alerts(message: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(group, severity, rest of the line) of each alert shown, in order."""
    shown = []
    group = ""
    for element in elements(message):
        if element["type"] == "TextBlock" and element["text"] in ("Firing", "Resolved"):
            group = element["text"].lower()
        elif element["type"] == "RichTextBlock":
            severity, *rest = [run["text"] for run in element["inlines"]]
            shown.append((group, severity.lower(), "".join(rest)))
    return shown


def more_count(message: dict[str, Any]) -> int:
    """N of a closing "…and N more", or 0 without one."""
    last = elements(message)[-1]
    m = re.fullmatch(r"…and (\d+) more", last.get("text", ""))
    return int(m[1]) if m and last["type"] == "TextBlock" else 0


def rank(status: str, severity: str) -> tuple[int, int]:
    """Firing before resolved, then critical before warning."""
    return (status != "firing", severity != "critical")


def teams_config(url: str, name: str = "teams") -> MSTeamsConfig:
    return MSTeamsConfig(name=name, type="msteams", webhook_url=url)


# What a Workflows trigger answers a request it accepted.
ACCEPTED = Reply(status=202, body=b"")


@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    with CaptureServer(ACCEPTED) as server:
        yield server


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with make_http_client(timeout=5.0, max_connections=4) as c:
        yield c


# --- the card -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "b",
    [
        pytest.param(batch(errored(), stale(status=AlertStatus.RESOLVED)), id="firing+resolved"),
        pytest.param(make_test_batch("teams", T0, EXTERNAL_URL), id="test-batch"),
        pytest.param(batch(replace(stale(), event=EventKind.CHANGED)), id="changed"),
        pytest.param(batch(stale(), external_url=""), id="no-link"),
        pytest.param(storm(500), id="storm-500"),
    ],
)
def test_card_is_valid_against_the_adaptive_cards_1_5_schema(b: Batch) -> None:
    assert schema_errors(teams_message(b)) == []


def _no_text(card: dict[str, Any]) -> None:
    card["body"][0].pop("text")  # a TextBlock needs its text


def _unknown_run_key(card: dict[str, Any]) -> None:
    card["body"][-1]["inlines"][0]["markdown"] = True  # TextRun has no such property


def _unknown_colour(card: dict[str, Any]) -> None:
    card["body"][-1]["inlines"][0]["color"] = "red"  # not one of the named colours


def _mentions(card: dict[str, Any]) -> None:
    card["msteams"] = {"entities": []}  # not part of the schema


@pytest.mark.parametrize("breaks", [_no_text, _unknown_run_key, _unknown_colour, _mentions])
def test_schema_check_rejects_a_broken_card(breaks: Any) -> None:
    """The vendored schema is strict enough for the checks above to be able to fail."""
    message = teams_message(batch(errored()))
    breaks(card_of(message))
    assert schema_errors(message) != []


async def test_message_matches_the_golden_file_and_goes_to_the_workflow_url(
    capture: CaptureServer, client: httpx.AsyncClient
) -> None:
    small = batch(
        errored(),
        stale("sync-8", "warning"),
        stale("sync-9", "critical", status=AlertStatus.RESOLVED),
        notifier="teams",
    )
    notifier = MSTeamsNotifier(teams_config(f"{capture.url}{INVOKE}?{QUERY}"), client, Clock())
    await notifier.send(small)
    (request,) = capture.wait_for(1)
    assert (request.method, request.path) == ("POST", INVOKE)
    assert parse_qsl(request.query) == parse_qsl(QUERY)
    assert request.header(DELIVERY_ID_HEADER) == "delivery-0001"
    assert request.header("Content-Type") == "application/json; charset=utf-8"
    check_golden("msteams_card.json", request.json())


def test_title_counts_firing_and_resolved_and_names_the_reason() -> None:
    title, reason, *_ = text_blocks(
        teams_message(batch(errored(), stale(status=AlertStatus.RESOLVED)))
    )
    assert title == "syncwatch: 1 firing, 1 resolved"
    assert reason == "some alerts resolved"


def test_a_test_batch_is_marked_in_the_title() -> None:
    title = text_blocks(teams_message(make_test_batch("teams", T0)))[0]
    assert title == "[TEST] syncwatch: 1 firing"


def test_each_alert_shows_its_severity_alertname_and_summary() -> None:
    message = teams_message(batch(errored(), replace(stale("sync-3"), event=EventKind.CHANGED)))
    assert shown_alerts(message) == [
        (
            "firing",
            "critical",
            " SyncErrored Paragon sync psync-1 of user-1 (salesforce/contacts) is ERRORED",
        ),
        (
            "firing",
            "warning",
            " SyncStale (severity changed) Timbal sync sync-3 (billing-daily) is 3.2x its interval",
        ),
    ]
    colours = [e["inlines"][0]["color"] for e in elements(message) if e["type"] == "RichTextBlock"]
    assert colours == ["Attention", "Warning"]


def test_external_url_is_an_open_url_action() -> None:
    card = card_of(teams_message(batch(errored())))
    assert card["actions"] == [
        {"type": "Action.OpenUrl", "title": "Open syncwatch", "url": EXTERNAL_URL}
    ]


@pytest.mark.parametrize(
    "external_url",
    ["", f"{EXTERNAL_URL}/d/syncwatch?{'&var-tenant=org' * 400}"],
    ids=["none", "absurd"],
)
def test_no_link_without_external_url_nor_a_cut_one(external_url: str) -> None:
    message = teams_message(batch(errored(), external_url=external_url))
    assert "actions" not in card_of(message)
    assert len(orjson.dumps(message)) <= MAX_PAYLOAD


def test_upstream_text_cannot_become_a_link_a_mention_or_markup() -> None:
    """Summaries and alertnames go only into TextRuns, which Teams never parses as markdown."""
    hostile = replace(stale(summary=HOSTILE), labels={**stale().labels, "alertname": HOSTILE})
    message = teams_message(batch(hostile, errored()))
    assert schema_errors(message) == []
    # TextBlocks (markdown) hold only syncwatch's own words.
    for text in text_blocks(message):
        assert re.fullmatch(
            r"(\[TEST\] )?syncwatch: [\w ,]+|[a-z ]+|Firing|Resolved|…and \d+ more", text
        ), text
    runs = [
        r["text"] for e in elements(message) if e["type"] == "RichTextBlock" for r in e["inlines"]
    ]
    assert any("[click here](https://evil.example/login)" in r for r in runs)  # shown as text
    # No line breaks (markdown lists), controls, bidi overrides or zero-width characters.
    for r in runs:
        assert not re.search(r"[\x00-\x1f\x7f\u200b\u202e]", r), repr(r)
    # A mention needs msteams.entities; the card has no such key anywhere.
    assert b'"msteams"' not in orjson.dumps(message)
    assert b'"entities"' not in orjson.dumps(message)


def test_plain_keeps_text_readable() -> None:
    assert plain("  sync\tbroke\r\n\x1b[31mred ") == "sync broke [31mred"
    assert plain("a\u202edcba\u200b") == "adcba"
    assert plain("x" * 500) == "x" * 299 + "…"
    assert plain("caf\udce9") == "caf?"  # a lone surrogate would not encode


# --- storms and size --------------------------------------------------------------------


def hostile_storm(n: int = 500) -> Batch:
    """n alerts with long, unicode, hostile summaries; severities interleaved."""
    alerts = []
    for i in range(n):
        severity = "critical" if i % 3 == 2 else "warning"
        status = AlertStatus.RESOLVED if i % 10 == 7 else AlertStatus.FIRING
        summary = (
            f"{i:04d} 同步失败 🚨🔥 Ωμέγα <at>all</at> "
            + HOSTILE
            + " \U0001d518\U0001d52b\U0001d526" * 80
        )  # 4-byte letters
        alerts.append(stale(f"sync-{i:04d}", severity, status=status, summary=summary))
    return batch(*alerts, notifier="teams")


@pytest.mark.parametrize("b", [storm(500), hostile_storm(500)], ids=["storm", "hostile-storm"])
def test_storm_of_500_is_one_valid_card_under_28kb_ending_and_n_more(b: Batch) -> None:
    message = teams_message(b)
    size = len(orjson.dumps(message))
    assert size <= MAX_PAYLOAD < TEAMS_LIMIT == 28_000
    assert schema_errors(message) == []
    shown = shown_alerts(message)
    assert len(shown) >= 10
    assert more_count(message) == 500 - len(shown) > 0
    assert text_blocks(message)[0] == "syncwatch: 450 firing, 50 resolved"


def test_storm_lists_firing_critical_then_warning_then_resolved() -> None:
    message = teams_message(storm(500))
    ranks = [rank(g, s) for g, s, _ in shown_alerts(message)]
    assert ranks == sorted(ranks)
    assert ranks[0] == (False, False)  # a firing critical comes first
    groups = [t for t in text_blocks(message) if t in ("Firing", "Resolved")]
    assert groups == ["Firing"]  # 150 firing criticals fill the card before any resolve


def test_resolved_follow_firing_under_their_own_heading() -> None:
    message = teams_message(batch(stale("a", status=AlertStatus.RESOLVED), stale("b", "critical")))
    assert [(g, s) for g, s, _ in shown_alerts(message)] == [
        ("firing", "critical"),
        ("resolved", "warning"),
    ]
    assert [t for t in text_blocks(message) if t in ("Firing", "Resolved")] == [
        "Firing",
        "Resolved",
    ]
    assert more_count(message) == 0


def test_never_shows_a_less_bad_alert_while_leaving_a_worse_one_out() -> None:
    """A short warning that would still fit is not shown once a long critical did not."""
    long = "\U0001d518" * 400  # 4 bytes each: near the longest an alert line can be
    alerts = [stale(f"c{i:02d}", "critical", summary=long) for i in range(40)]
    alerts += [stale(f"w{i:02d}", "warning", summary="short") for i in range(40)]
    message = teams_message(batch(*alerts))
    shown = shown_alerts(message)
    assert 0 < len(shown) < 40
    assert {s for _, s, _ in shown} == {"critical"}
    assert more_count(message) == 80 - len(shown)


@st.composite
def batches(draw: st.DrawFn, max_alerts: int = 1000) -> Batch:
    """1..1000 alerts of any status and severity with arbitrary unicode names and summaries."""
    texts = draw(
        st.lists(
            st.one_of(
                st.text(max_size=400),
                st.builds(lambda s, k: s * k, st.text(min_size=1, max_size=8), st.integers(1, 600)),
                st.just(HOSTILE),
            ),
            min_size=1,
            max_size=6,
        )
    )
    kinds = draw(
        st.lists(
            st.tuples(st.sampled_from(AlertStatus), st.sampled_from(Severity), st.booleans()),
            min_size=1,
            max_size=12,
        )
    )
    n = draw(st.integers(1, max_alerts))
    alerts = []
    for i in range(n):
        status, severity, changed = kinds[i % len(kinds)]
        a = stale(f"s{i}", str(severity), status=status, summary=texts[i % len(texts)] or "-")
        labels = {**a.labels, "alertname": texts[(i * 7 + 3) % len(texts)]}
        alerts.append(replace(a, labels=labels, event=EventKind.CHANGED if changed else a.event))
    external_url = draw(st.sampled_from(["", EXTERNAL_URL, EXTERNAL_URL + "/" + "é" * 1900]))
    return batch(*alerts, external_url=external_url, test=draw(st.booleans()))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_any_batch_renders_under_28kb_and_worst_first(b: Batch) -> None:
    message = teams_message(b)
    assert len(orjson.dumps(message)) <= MAX_PAYLOAD < TEAMS_LIMIT
    shown = shown_alerts(message)
    assert shown, "at least the worst alert is always shown"
    assert len(shown) + more_count(message) == len(b.alerts)
    # Exactly the worst len(shown) alerts, in order: nothing less bad shown while a worse is not.
    expected = sorted(rank(str(a.status), str(a.severity)) for a in b.alerts)
    assert [rank(g, s) for g, s, _ in shown] == expected[: len(shown)]


@settings(max_examples=40, deadline=None)
@given(batches(max_alerts=8))
def test_any_text_makes_a_valid_card(b: Batch) -> None:
    """(Validating a full 28 KB card takes 0.3 s: here small ones, with the same texts.)"""
    assert schema_errors(teams_message(b)) == []


# --- config -------------------------------------------------------------------------------


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("table", "expected"),
    [
        pytest.param(
            "",
            "notifiers[0].webhook_url: required: an msteams notifier needs webhook_url_file "
            "(or webhook_url), the URL of a Teams Workflows webhook trigger",
            id="missing",
        ),
        pytest.param(
            f'webhook_url = "https://prod-1.westeurope.logic.azure.com{INVOKE}?{QUERY}"\n'
            'webhook_url_file = "{tmp}/teams-url"\n',
            "notifiers[0].webhook_url_file: set either webhook_url or webhook_url_file, not both",
            id="both",
        ),
        pytest.param(
            f'webhook_url = "ftp://logic.azure.com{INVOKE}?{QUERY}"\n',
            "notifiers[0].webhook_url: invalid URL: expected http(s)://host/... (value not shown)",
            id="not-http",
        ),
        pytest.param(
            'webhook_url_file = "{tmp}/bad-url"\n',
            "notifiers[0].webhook_url_file: invalid URL: expected http(s)://host/... "
            "(value not shown)",
            id="bad-url-in-file",
        ),
    ],
)
def test_config_error_is_one_line_naming_the_key_never_the_url(
    table: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, f"https://prod-1.westeurope.logic.azure.com{INVOKE}?{QUERY}\n", "teams-url")
    write(tmp_path, f"mailto:{WORKFLOW}?sig={SIG}\n", "bad-url")
    config = write(
        tmp_path,
        MINIMAL
        + '[[notifiers]]\nname = "teams"\ntype = "msteams"\n'
        + table.replace("{tmp}", str(tmp_path)),
    )
    code, out, err = validate(config, capsys)
    assert code == 78
    assert problem_lines(err) == [expected]
    assert SIG not in out + err
    assert WORKFLOW not in out + err


@pytest.mark.usefixtures("clean_env")
def test_validate_redacts_the_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"https://prod-1.westeurope.logic.azure.com{INVOKE}?{QUERY}"
    config = write(
        tmp_path,
        MINIMAL + f'[[notifiers]]\nname = "teams"\ntype = "msteams"\nwebhook_url = "{url}"\n',
    )
    code, out, err = validate(config, capsys)
    assert (code, err) == (0, "")
    assert SIG not in out
    assert WORKFLOW not in out
    assert 'type = "msteams"' in out


async def test_the_registry_builds_it_from_its_config(client: httpx.AsyncClient) -> None:
    notifier = make_notifier(teams_config("https://logic.azure.com/x"), client, poll_interval=60)
    assert isinstance(notifier, MSTeamsNotifier)
    assert notifier.name == "teams"


# --- answers ------------------------------------------------------------------------------


async def send(capture: CaptureServer, client: httpx.AsyncClient, url: str | None = None) -> None:
    notifier = MSTeamsNotifier(
        teams_config(url or f"{capture.url}{INVOKE}?{QUERY}"), client, Clock()
    )
    await notifier.send(batch(errored()))


async def test_202_accepted_is_delivered(capture: CaptureServer, client: httpx.AsyncClient) -> None:
    capture.reply(202, b"")
    await send(capture, client)
    assert len(capture.wait_for(1)) == 1


async def test_429_is_retried_after_retry_after(
    capture: CaptureServer, client: httpx.AsyncClient
) -> None:
    capture.reply(
        429,
        '{"error":{"code":"TooManyRequests","message":"Rate limit reached"}}',
        headers={"Retry-After": "17"},
    )
    with pytest.raises(DeliveryError) as info:
        await send(capture, client)
    assert (info.value.retryable, info.value.retry_after, info.value.status_code) == (
        True,
        17.0,
        429,
    )


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_server_errors_are_retried(
    status: int, capture: CaptureServer, client: httpx.AsyncClient
) -> None:
    capture.reply(status, "upstream trouble")
    with pytest.raises(DeliveryError) as info:
        await send(capture, client)
    assert info.value.retryable
    assert info.value.retry_after is None


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "InvalidRequestContent"),
        (401, "DirectApiAuthorizationRequired"),
        (403, "AuthorizationFailed"),
        (404, "WorkflowNotFound"),
        (413, "RequestEntityTooLarge"),
    ],
)
async def test_other_answers_are_permanent_and_explained(
    status: int, code: str, capture: CaptureServer, client: httpx.AsyncClient
) -> None:
    capture.reply(status, json.dumps({"error": {"code": code, "message": "The request failed."}}))
    with pytest.raises(DeliveryError) as info:
        await send(capture, client)
    assert not info.value.retryable
    assert info.value.status_code == status
    assert str(info.value) == f"msteams teams: HTTP {status} '{code}: The request failed.'"


# --- the secret URL -----------------------------------------------------------------------


def _echo_scenarios() -> list[Any]:
    return [
        pytest.param("refused", id="refused"),
        pytest.param((500, "upstream down"), id="500"),
        pytest.param((429, "rate limited"), id="429"),
        # Logic Apps errors quote the request; an echo must not carry the signature out.
        pytest.param(
            (
                401,
                json.dumps(
                    {
                        "error": {
                            "code": "DirectApiInvalidAuthorizationSignature",
                            "message": f"Signature '{SIG}' of workflow '{WORKFLOW}' is invalid.",
                        }
                    }
                ),
            ),
            id="401-echo-json",
        ),
        pytest.param((404, f"Cannot POST {INVOKE}?{QUERY}"), id="404-echo-path"),
        pytest.param((502, "x" * 180 + f" {INVOKE}?{QUERY}"), id="502-echo-at-cut"),
    ]


@pytest.mark.parametrize("scenario", _echo_scenarios())
async def test_the_url_never_appears_in_a_delivery_error(
    scenario: Any, capture: CaptureServer, client: httpx.AsyncClient
) -> None:
    base = refused_url() if scenario == "refused" else capture.url
    if scenario != "refused":
        capture.reply(*scenario)
    with pytest.raises(DeliveryError) as info:
        await send(capture, client, f"{base}{INVOKE}?{QUERY}")
    error = info.value
    shown = "".join(traceback.format_exception(error)) + repr(error) + str(error.args)
    assert SIG not in shown
    assert WORKFLOW not in shown
    assert "msteams teams" in str(error)


async def test_the_url_never_appears_in_logs_or_the_outbox(
    capture: CaptureServer, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """Through the dispatcher: a retry, a drop and a delivery; every log event and stored error."""
    echo = json.dumps({"error": {"code": "Unauthorized", "message": f"sig {SIG} of {WORKFLOW}"}})
    capture.reply(503, f"busy at {INVOKE}?{QUERY}")
    capture.reply(401, echo)
    clock = FakeClock(T0, autojump=True)
    notifier = MSTeamsNotifier(teams_config(f"{capture.url}{INVOKE}?{QUERY}"), client, clock)
    db = tmp_path / "state.db"
    store = Store(StateStore(db))
    try:
        dispatcher = Dispatcher(store, {notifier.name: notifier}, clock=clock)
        store.enqueue([batch(errored(), notifier="teams", delivery_id="d-1")])
        store.enqueue([batch(stale(), notifier="teams", delivery_id="d-2")])
        with structlog.testing.capture_logs() as logs:
            await deliver_due(dispatcher)  # 503: kept for a retry
            with closing(sqlite3.connect(db)) as conn:
                stored = conn.execute("SELECT last_error FROM outbox").fetchall()
            row = store.head("teams")
            assert row is not None
            clock.now = row.next_attempt_at.timestamp()
            await deliver_due(dispatcher)  # 401: dropped; then d-2 is delivered (202)
    finally:
        store.close()
    assert dispatcher.outcomes[("teams", "dropped")] == dispatcher.outcomes[("teams", "sent")] == 1
    assert [r.header(DELIVERY_ID_HEADER) for r in capture.requests] == ["d-1", "d-1", "d-2"]
    events = {e["event"] for e in logs}
    assert {"notification_failed", "notification_dropped", "notification_sent"} <= events
    everything = repr(logs) + repr(stored)
    assert "HTTP 503" in everything
    assert "Unauthorized" in everything
    assert SIG not in everything
    assert WORKFLOW not in everything


# --- syncwatch test-notify ----------------------------------------------------------------


def teams_table(url: str, name: str = "teams") -> str:
    return f'[[notifiers]]\nname = "{name}"\ntype = "msteams"\nwebhook_url = "{url}"\n'


def test_test_notify_delivers_a_test_card(tmp_path: Path, capture: CaptureServer) -> None:
    config = notify_config(tmp_path, teams_table(f"{capture.url}{INVOKE}?{QUERY}"))
    result = run_test_notify(config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == ["teams: delivered"]
    (request,) = capture.wait_for(1)
    assert request.path == INVOKE
    assert parse_qsl(request.query) == parse_qsl(QUERY)
    assert (request.header(DELIVERY_ID_HEADER) or "").startswith("test-")
    message = request.json()
    assert schema_errors(message) == []
    assert text_blocks(message)[0] == "[TEST] syncwatch: 1 firing"
    ((_, severity, line),) = shown_alerts(message)
    assert (severity, line) == (
        "warning",
        " SyncwatchTestNotification [TEST] syncwatch test notification: no action needed",
    )


def test_test_notify_failure_names_the_answer_never_the_url(
    tmp_path: Path, capture: CaptureServer
) -> None:
    capture.reply(
        404,
        json.dumps(
            {"error": {"code": "WorkflowNotFound", "message": f"Workflow '{WORKFLOW}' not found."}}
        ),
    )
    config = notify_config(tmp_path, teams_table(f"{capture.url}{INVOKE}?{QUERY}"))
    result = run_test_notify(config)
    assert result.returncode == 1, result.stdout + result.stderr
    (line,) = result.stdout.splitlines()
    assert line == (
        "teams: FAILED: msteams teams: HTTP 404 "
        "\"WorkflowNotFound: Workflow '[redacted]' not found.\""
    )
    assert SIG not in result.stdout + result.stderr
    assert WORKFLOW not in result.stdout + result.stderr


# --- the durable outbox: tests/test_sink_faults.py's simulated daemon -------------------


class TeamsSim(Sim):
    """test_sink_faults' Sim (engine, store, dispatcher, simulated time) delivering to Teams."""

    def __init__(
        self,
        store: Store,
        sink: CaptureServer,
        client: httpx.AsyncClient,
        *,
        send_timeout: float = 30.0,
    ) -> None:
        super().__init__("webhook", store, sink, client, send_timeout=send_timeout)
        # The same daemon with this kind's entry in the webhook's place.
        self.kind, self.name = "msteams", "teams"
        entry = teams_config(f"{sink.url}{INVOKE}?{QUERY}", self.name)
        self.config = Config(
            timbal=self.config.timbal, alerting=self.config.alerting, notifiers=[entry]
        )
        ids = itertools.count(1)
        self.engine = Engine(self.config, store, new_id=lambda: f"msteams-{next(ids):05d}")
        self.dispatcher = Dispatcher(
            store,
            {self.name: MSTeamsNotifier(entry, client, self.clock)},
            send_timeout=send_timeout,
            clock=self.clock,
            rng=random.Random(7),
        )


def card_signature(message: dict[str, Any]) -> Signature:
    """(status, sync_id) of each alert on the card, from the card alone."""
    got = []
    for group, _, line in shown_alerts(message):
        m = re.search(r"\(org_1/(s\d)\)", line)
        assert m, line
        got.append((group, m[1]))
    return tuple(sorted(got))


def check_teams_drained_in_order(sim: TeamsSim, accepted: list[Sent], batches: list[Batch]) -> None:
    """Accepted requests are exactly `batches`, in outbox order, each its batch's card."""
    assert [s.delivery_id for s in accepted] == [b.delivery_id for b in batches]
    for sent, b in zip(accepted, batches, strict=True):
        assert sent.request.path == INVOKE
        assert parse_qsl(sent.request.query) == parse_qsl(QUERY)
        body = sent.request.json()
        assert body == teams_message(b)
        assert card_signature(body) == sim.expected[b.delivery_id]
        assert sent.at >= b.created_at.timestamp()


@pytest.fixture
def sink() -> Iterator[CaptureServer]:
    server = CaptureServer(ACCEPTED).start()
    yield server
    server.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def store(db: Path) -> Iterator[Store]:
    s = Store(StateStore(db))
    yield s
    s.close()


async def test_outage_of_six_hours_queues_everything_then_drains_it_in_order(
    store: Store, db: Path, sink: CaptureServer, client: httpx.AsyncClient
) -> None:
    sim = TeamsSim(store, sink, client)
    await sim.run(t(30 * MINUTE))
    before = len(sim.enqueued)
    assert before >= 2
    check_teams_drained_in_order(sim, sim.sent, sim.enqueued)

    sink.stop()
    await sim.run(t(30 * MINUTE + 6 * HOUR))
    queued = sim.enqueued[before:]
    assert len(queued) >= 20
    assert len(sim.sent) == before
    rows = outbox(db, sim.name)
    assert [r[0] for r in rows] == [b.delivery_id for b in queued]
    assert rows[0][1] == sim.outcome("failed") >= 6 * HOUR / BACKOFF_MAX
    assert "connection" in (rows[0][2] or "")

    sink.start()
    back = sim.clock.now
    await sim.run(back + 30 * MINUTE)
    after = sim.sent[before:]
    assert after[0].at - back <= BACKOFF_MAX
    assert all(s.at == after[0].at for s in after[: len(queued)])  # one pass drains it all
    check_teams_drained_in_order(sim, after, sim.enqueued[before:])
    assert sim.outcome("sent") == len(sim.enqueued) == len(sim.sent)
    assert (sim.outcome("dropped"), store.pending(), outbox(db, sim.name)) == (0, {}, [])


async def test_429_storm_honours_retry_after_exactly_then_drains(
    store: Store, sink: CaptureServer, client: httpx.AsyncClient
) -> None:
    for seconds in RETRY_AFTER:
        sink.reply(429, "rate limited", headers={"Retry-After": str(seconds)})
    sim = TeamsSim(store, sink, client)
    await sim.run(t(95 * MINUTE))

    storm_size = len(RETRY_AFTER)
    first = sim.enqueued[0]
    assert [gap for _, gap in sim.failures] == pytest.approx(RETRY_AFTER, abs=1e-5)
    assert [s.delivery_id for s in sim.sent[: storm_size + 1]] == [first.delivery_id] * (
        storm_size + 1
    )
    gaps = [b.at - a.at for a, b in itertools.pairwise(sim.sent[: storm_size + 1])]
    assert gaps == pytest.approx(RETRY_AFTER, abs=1e-5)
    check_teams_drained_in_order(sim, sim.sent[storm_size:], sim.enqueued)
    check_same_content_per_delivery_id(sim)
    assert sim.outcome("sent") == len(sim.enqueued) >= 4
    assert (sim.outcome("dropped"), store.pending()) == (0, {})


async def test_sink_slower_than_the_send_timeout_is_retried_with_the_same_delivery_id(
    store: Store, db: Path, sink: CaptureServer, client: httpx.AsyncClient
) -> None:
    slow = 2
    for _ in range(slow):
        sink.reply(202, b"", delay=5.0)  # would be accepted, but long after send_timeout
    # 1 s: above what a prompt answer takes on a loaded machine, below the slow ones' 5 s.
    sim = TeamsSim(store, sink, client, send_timeout=1.0)

    started = time.monotonic()
    await sim.run(t(0))
    assert time.monotonic() - started < 5.0, "gave up at send_timeout, not at the answer"
    ((delivery_id, attempts, error),) = outbox(db, sim.name)
    assert (delivery_id, attempts, error) == (
        sim.enqueued[0].delivery_id,
        1,
        "no answer within 1s",
    )

    await sim.run(t(30 * MINUTE))
    ids = [s.delivery_id for s in sim.sent]
    assert ids[:slow] == [sim.enqueued[0].delivery_id] * slow
    assert list(dict.fromkeys(ids)) == [b.delivery_id for b in sim.enqueued]
    check_teams_drained_in_order(sim, sim.sent[slow:], sim.enqueued)
    check_same_content_per_delivery_id(sim)
    assert sim.outcome("sent") == len(sim.enqueued) >= 2
    assert (sim.outcome("failed"), sim.outcome("dropped"), store.pending()) == (slow, 0, {})


async def test_the_simulated_daemon_really_runs_this_kind(
    store: Store, sink: CaptureServer, client: httpx.AsyncClient
) -> None:
    """TeamsSim is not the webhook in disguise: its only notifier is an MSTeamsNotifier."""
    sim = TeamsSim(store, sink, client)
    assert [type(n) for n in sim.dispatcher.notifiers.values()] == [MSTeamsNotifier]
    assert [n.type for n in sim.config.notifiers] == ["msteams"]
    assert datetime.fromtimestamp(sim.clock.now, UTC) == T0
