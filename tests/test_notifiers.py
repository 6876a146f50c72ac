"""Specs for the notifiers on the wire: real httpx client, real loopback capture server."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import io
import json
import os
import re
import subprocess
import sys
import traceback
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from slack_sdk.models.blocks import Block

from syncwatch.dispatch import Dispatcher, make_test_batch
from syncwatch.http import make_http_client
from syncwatch.notifiers.alertmanager import AlertmanagerConfig, AlertmanagerNotifier
from syncwatch.notifiers.base import DELIVERY_ID_HEADER, post
from syncwatch.notifiers.console import ConsoleConfig, ConsoleNotifier
from syncwatch.notifiers.registry import make_notifier
from syncwatch.notifiers.slack import (
    MAX_BLOCKS,
    MAX_BLOCKS_TEXT,
    MAX_HEADER,
    MAX_SECTION,
    SlackConfig,
    SlackNotifier,
    slack_message,
)
from syncwatch.notifiers.webhook import WebhookConfig, WebhookNotifier
from syncwatch.outbox import (
    AlertPayload,
    AlertStatus,
    Batch,
    DeliveryError,
    EventKind,
    NotificationReason,
)
from syncwatch.state import StateStore
from syncwatch.store import Store
from tests.capture import CaptureServer
from tests.clock import FakeClock
from tests.conftest import refused_port
from tests.delivery import deliver_due

GOLDEN = Path(__file__).parent / "fixtures" / "golden"
T0 = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
EXTERNAL_URL = "https://syncwatch.example.com"
SECRET = "hmac-secret-for-tests"
# A distinctive token in a secret URL: it must never surface in an error message.
URL_TOKEN = "XOXB-SECRET-TOKEN-5f3a9c"


def check_golden(name: str, data: Any) -> None:
    """Compare with tests/fixtures/golden/NAME; SYNCWATCH_UPDATE_GOLDEN=1 rewrites it."""
    path = GOLDEN / name
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if os.environ.get("SYNCWATCH_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} missing: run with SYNCWATCH_UPDATE_GOLDEN=1 to create it"
    assert json.loads(path.read_text(encoding="utf-8")) == data, (
        f"{name} differs from the golden file; if the change is intended, "
        "re-run with SYNCWATCH_UPDATE_GOLDEN=1 and review the diff"
    )


class Clock:
    """Injected wall clock (unix seconds), moved only by the test."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start.timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- alerts and batches with fixed times ------------------------------------------------


def errored(sync_id: str = "psync-1", user: str = "user-1", **kw: Any) -> AlertPayload:
    defaults: dict[str, Any] = {
        "status": AlertStatus.FIRING,
        "event": EventKind.FIRING,
        "labels": {
            "alertname": "SyncErrored",
            "severity": "critical",
            "source": "paragon",
            "tenant": user,
            "sync_id": sync_id,
            "integration": "salesforce",
            "pipeline": "contacts",
        },
        "annotations": {
            "summary": f"Paragon sync {sync_id} of {user} (salesforce/contacts) is ERRORED",
            "description": "The sync stopped with an error; fix the cause and re-enable it.",
            "status": "ERRORED",
            "reason": "OAuth token revoked",
        },
        "starts_at": T0 - timedelta(minutes=10),
        "ends_at": None,
        "fingerprint": "9c1f0d7a2b3e4f56",
        "generator_url": f"{EXTERNAL_URL}/api/v1/alerts",
    }
    return AlertPayload(**{**defaults, **kw})


def stale(
    sync_id: str = "sync-7",
    severity: str = "warning",
    *,
    status: AlertStatus = AlertStatus.FIRING,
    summary: str | None = None,
    ends_at: datetime | None = None,
) -> AlertPayload:
    resolved = status is AlertStatus.RESOLVED
    return AlertPayload(
        status=status,
        event=EventKind.RESOLVED if resolved else EventKind.FIRING,
        labels={
            "alertname": "SyncStale",
            "severity": severity,
            "source": "timbal",
            "tenant": "org_123",
            "sync_id": sync_id,
            "connector_id": "conn-1",
            "name": "billing-daily",
        },
        annotations={
            "summary": summary or f"Timbal sync {sync_id} (billing-daily) is 3.2x its interval",
            "description": "Last success 3h12m ago; the sync runs every 1h.",
            "seconds_since_success": "11520",
            "interval_secs": "3600",
            "ratio": "3.2",
        },
        starts_at=T0 - timedelta(hours=1),
        ends_at=ends_at if ends_at is not None else (T0 if resolved else None),
        fingerprint=hashlib.sha256(sync_id.encode()).hexdigest()[:16],
        generator_url=f"{EXTERNAL_URL}/api/v1/alerts",
    )


def batch(
    *alerts: AlertPayload,
    notifier: str = "pager-bridge",
    delivery_id: str = "delivery-0001",
    reason: NotificationReason = NotificationReason.SOME_RESOLVED,
    test: bool = False,
    external_url: str = EXTERNAL_URL,
) -> Batch:
    return Batch(
        delivery_id=delivery_id,
        notifier=notifier,
        created_at=T0,
        reason=reason,
        alerts=alerts,
        external_url=external_url,
        test=test,
    )


def golden_batch() -> Batch:
    """One firing critical Paragon alert and one resolved Timbal alert."""
    return batch(errored(), stale(status=AlertStatus.RESOLVED))


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    with CaptureServer() as server:
        yield server


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with make_http_client(timeout=5.0, max_connections=8) as c:
        yield c


def refused_url(path: str = "") -> str:
    """A loopback URL nobody listens on: the connection is refused."""
    return f"http://127.0.0.1:{refused_port()}{path}"


def webhook_config(url: str, *, secret: str | None = SECRET, name: str = "pager-bridge") -> Any:
    return WebhookConfig(
        name=name,
        type="webhook",
        url=url,
        secret=secret,
        headers={"X-Team": "data", "X-Env": "test"},
    )


def slack_config(url: str, name: str = "ops-slack") -> Any:
    return SlackConfig(name=name, type="slack", webhook_url=url)


def am_config(*urls: str) -> Any:
    return AlertmanagerConfig(name="am", type="alertmanager", urls=list(urls))


# --- webhook ----------------------------------------------------------------------------


async def send_webhook(
    capture: CaptureServer, client: httpx.AsyncClient, b: Batch, *, secret: str | None = SECRET
) -> Any:
    notifier = WebhookNotifier(
        webhook_config(f"{capture.url}/hooks/syncwatch", secret=secret), client, Clock()
    )
    await notifier.send(b)
    (request,) = capture.wait_for(1)
    return request


async def test_webhook_body_matches_the_v4_golden_file(
    capture: CaptureServer, client: httpx.AsyncClient
) -> None:
    request = await send_webhook(capture, client, golden_batch())
    assert request.method == "POST"
    assert request.path == "/hooks/syncwatch"
    assert request.header("Content-Type") == "application/json"
    check_golden("webhook_v4.json", request.json())


async def test_webhook_body_has_every_alertmanager_v4_field(
    capture: CaptureServer, client: httpx.AsyncClient
) -> None:
    body = (await send_webhook(capture, client, golden_batch())).json()
    assert set(body) >= {
        "version",
        "groupKey",
        "truncatedAlerts",
        "status",
        "receiver",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "notification_reason",
        "alerts",
    }
    assert body["version"] == "4"
    assert body["status"] == "firing"  # any alert still firing
    assert body["receiver"] == "pager-bridge"
    assert body["externalURL"] == EXTERNAL_URL
    assert body["notification_reason"] == "some alerts resolved"
    assert body["truncatedAlerts"] == 0
    assert len(body["alerts"]) == 2
    for alert in body["alerts"]:
        assert set(alert) >= {
            "status",
            "labels",
            "annotations",
            "startsAt",
            "endsAt",
            "generatorURL",
            "fingerprint",
        }
    firing, resolved = body["alerts"]
    assert (firing["status"], firing["endsAt"]) == ("firing", "0001-01-01T00:00:00Z")
    assert (resolved["status"], resolved["endsAt"]) == ("resolved", "2025-01-06T09:00:00Z")


async def test_webhook_signature_verifies_with_the_secret_over_timestamp_dot_body(
    capture: CaptureServer, client: httpx.AsyncClient
) -> None:
    request = await send_webhook(capture, client, golden_batch())
    timestamp = request.header("X-Syncwatch-Timestamp")
    assert timestamp == str(int(T0.timestamp()))
    expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + request.body, hashlib.sha256)
    assert request.header("X-Syncwatch-Signature") == f"sha256={expected.hexdigest()}"


async def test_webhook_signature_does_not_verify_with_another_secret(
    capture: CaptureServer, client: httpx.AsyncClient
) -> None:
    request = await send_webhook(capture, client, golden_batch())
    timestamp = request.header("X-Syncwatch-Timestamp")
    other = hmac.new(b"wrong", f"{timestamp}.".encode() + request.body, hashlib.sha256)
    assert request.header("X-Syncwatch-Signature") != f"sha256={other.hexdigest()}"


async def test_webhook_sends_custom_headers_and_the_delivery_id(
    capture: CaptureServer, client: httpx.AsyncClient
) -> None:
    request = await send_webhook(capture, client, golden_batch())
    assert request.header("X-Team") == "data"
    assert request.header("X-Env") == "test"
    assert request.header(DELIVERY_ID_HEADER) == "delivery-0001"


async def test_webhook_without_a_secret_is_not_signed(
    capture: CaptureServer, client: httpx.AsyncClient
) -> None:
    request = await send_webhook(capture, client, golden_batch(), secret=None)
    assert request.header("X-Syncwatch-Signature") is None
    assert request.header("X-Syncwatch-Timestamp") is None
    assert request.header(DELIVERY_ID_HEADER) == "delivery-0001"


async def test_webhook_test_batch_is_marked_once_as_a_test(
    capture: CaptureServer, client: httpx.AsyncClient
) -> None:
    test_batch = make_test_batch("pager-bridge", T0, EXTERNAL_URL)
    (alert,) = (await send_webhook(capture, client, test_batch)).json()["alerts"]
    assert alert["labels"]["test"] == "true"
    assert alert["annotations"]["summary"].startswith("[TEST] ")
    assert alert["annotations"]["summary"].count("[TEST]") == 1


# --- slack ------------------------------------------------------------------------------


def block_texts(blocks: list[dict[str, Any]]) -> list[str]:
    """Every text string anywhere in the blocks (what Slack counts for msg_blocks_too_long)."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "text" and isinstance(value, str):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(blocks)
    return found


ALERT_LINE = re.compile(r"^(:red_circle:|:large_orange_circle:|:white_check_mark:) \*(\w+)\*")


def alert_lines(message: dict[str, Any]) -> list[tuple[str, str]]:
    """(icon, severity) of each alert line shown in the section blocks, in order."""
    lines = []
    for block in message["blocks"]:
        if block["type"] == "section":
            for line in block["text"]["text"].splitlines():
                m = ALERT_LINE.match(line)
                if m:
                    lines.append((m[1], m[2]))
    return lines


def storm(n: int = 500, external_url: str = EXTERNAL_URL) -> Batch:
    """n alerts, severities and states interleaved so that only sorting puts the worst first."""
    alerts = []
    for i in range(n):
        severity = "critical" if i % 3 == 2 else "warning"
        status = AlertStatus.RESOLVED if i % 10 == 7 else AlertStatus.FIRING
        summary = (
            f"Timbal sync sync-{i:04d} (warehouse <prod> & billing) is {3 + i % 7}.{i % 10}x "
            "its interval; last success long ago, check the connector credentials"
        )
        alerts.append(stale(f"sync-{i:04d}", severity, status=status, summary=summary))
    return batch(
        *alerts,
        notifier="ops-slack",
        reason=NotificationReason.NEW_ALERTS,
        external_url=external_url,
    )


async def test_slack_message_matches_the_golden_file(
    capture: CaptureServer, client: httpx.AsyncClient
) -> None:
    small = batch(
        errored(),
        stale("sync-8", "warning"),
        stale("sync-9", "critical", status=AlertStatus.RESOLVED),
        notifier="ops-slack",
    )
    notifier = SlackNotifier(
        slack_config(f"{capture.url}/services/T000/B000/{URL_TOKEN}"), client, Clock()
    )
    await notifier.send(small)
    (request,) = capture.wait_for(1)
    assert request.path == f"/services/T000/B000/{URL_TOKEN}"
    assert request.header(DELIVERY_ID_HEADER) == "delivery-0001"
    check_golden("slack_blocks.json", request.json())


@pytest.mark.parametrize(
    "external_url",
    [
        pytest.param(EXTERNAL_URL, id="short-link"),
        pytest.param(f"{EXTERNAL_URL}/d/syncwatch?{'&var-tenant=org' * 40}", id="long-link"),
        pytest.param("", id="no-link"),
    ],
)
async def test_slack_storm_of_500_alerts_is_one_message_within_every_limit(
    external_url: str, capture: CaptureServer, client: httpx.AsyncClient
) -> None:
    notifier = SlackNotifier(slack_config(f"{capture.url}/services/T/B/x"), client, Clock())
    await notifier.send(storm(500, external_url))
    (request,) = capture.wait_for(1)
    message = request.json()
    blocks = message["blocks"]
    assert len(blocks) <= MAX_BLOCKS == 50
    headers = [b for b in blocks if b["type"] == "header"]
    assert headers
    for header in headers:
        assert len(header["text"]["text"]) <= MAX_HEADER == 150
    sections = [b for b in blocks if b["type"] == "section"]
    assert sections
    for section in sections:
        assert len(section["text"]["text"]) <= MAX_SECTION == 3000
    assert len(message["text"]) <= 40_000  # Slack's limit on text
    assert sum(len(t) for t in block_texts(blocks)) <= MAX_BLOCKS_TEXT == 12_000
    for block in Block.parse_all(blocks):
        block.validate_json()  # slack_sdk's own per-block limits
    assert re.fullmatch(r"…and \d+ more", blocks[-1]["elements"][0]["text"])
    assert len(capture.requests) == 1


def test_slack_storm_lists_firing_critical_before_warning_before_resolved() -> None:
    shown = alert_lines(slack_message(storm(500)))
    assert shown, "no alert lines shown"
    order = {(":red_circle:", "critical"): 0, (":large_orange_circle:", "warning"): 1}
    ranks = [order.get(line, 2) for line in shown]
    assert ranks == sorted(ranks), "worse alerts must come first"
    assert ranks[0] == 0


def test_slack_orders_alerts_of_equal_severity_by_alertname_then_tenant() -> None:
    def as_warning(alert: AlertPayload) -> AlertPayload:
        return dataclasses.replace(alert, labels={**alert.labels, "severity": "warning"})

    b = batch(
        stale("sync-2"),
        as_warning(errored(user="user-b")),
        as_warning(errored(user="user-a")),
    )
    (section,) = [blk for blk in slack_message(b)["blocks"] if blk["type"] == "section"]
    text = section["text"]["text"]
    assert text.index("of user-a") < text.index("of user-b") < text.index("`SyncStale`")


def test_slack_never_shows_a_less_bad_alert_while_leaving_a_worse_one_out() -> None:
    """Long firing lines fill the message; short resolved lines must not squeeze in after."""
    long_summary = "stalled " * 40
    alerts = [stale(f"f{i:03d}", "warning", summary=long_summary) for i in range(200)]
    alerts += [stale(f"r{i:03d}", status=AlertStatus.RESOLVED, summary="ok") for i in range(200)]
    shown = alert_lines(slack_message(batch(*alerts)))
    assert 0 < len(shown) < 200
    assert all(icon == ":large_orange_circle:" for icon, _ in shown)


def test_slack_storm_says_exactly_how_many_alerts_are_not_shown() -> None:
    message = slack_message(storm(500))
    shown = len(alert_lines(message))
    more = [
        m
        for text in block_texts(message["blocks"])
        if (m := re.fullmatch(r"…and (\d+) more", text))
    ]
    assert len(more) == 1
    assert shown < 500
    assert int(more[0][1]) == 500 - shown


def test_slack_small_batch_says_nothing_about_more() -> None:
    message = slack_message(batch(errored(), stale()))
    assert len(alert_lines(message)) == 2
    assert not any(t.startswith("…and") for t in block_texts(message["blocks"]))


def test_slack_message_has_a_plain_text_fallback() -> None:
    message = slack_message(storm(500))
    assert message["text"].strip()
    assert "500 firing" not in message["text"]  # 450 firing + 50 resolved
    assert message["text"].startswith("syncwatch: 450 firing, 50 resolved")


def test_slack_escapes_mentions_and_links_from_alert_text_everywhere() -> None:
    """Upstream text (e.g. an error reason) must not ping a channel or render a link."""
    hostile = "sync broke <!channel> see <https://evil.example|here> & more"
    message = slack_message(batch(stale(summary=hostile)))
    texts = [message["text"], *block_texts(message["blocks"])]
    assert any("&lt;!channel&gt;" in t for t in texts)
    for text in texts:
        assert "<!channel>" not in text
        assert "<https://evil.example" not in text


# --- alertmanager -----------------------------------------------------------------------


async def test_alertmanager_posts_the_same_alerts_to_every_url(
    capture: CaptureServer, client: httpx.AsyncClient
) -> None:
    with CaptureServer() as other:
        notifier = AlertmanagerNotifier(
            am_config(capture.url, other.url), client, 60.0, Clock(T0 + timedelta(seconds=30))
        )
        await notifier.send(golden_batch())
        (first,) = capture.wait_for(1)
        (second,) = other.wait_for(1)
    for request in (first, second):
        assert (request.method, request.path) == ("POST", "/api/v2/alerts")
        assert request.header(DELIVERY_ID_HEADER) == "delivery-0001"
    assert first.body == second.body
    alerts = first.json()
    assert [a["labels"]["sync_id"] for a in alerts] == ["psync-1", "sync-7"]
    for alert in alerts:
        assert set(alert) == {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}


async def test_alertmanager_firing_ends_at_is_now_plus_four_poll_intervals(
    capture: CaptureServer, client: httpx.AsyncClient
) -> None:
    clock = Clock(T0 + timedelta(seconds=30))
    notifier = AlertmanagerNotifier(am_config(capture.url), client, 60.0, clock)
    await notifier.send(batch(errored()))
    (alert,) = capture.wait_for(1)[0].json()
    assert alert["startsAt"] == "2025-01-06T08:50:00Z"
    assert alert["endsAt"] == "2025-01-06T09:04:30Z"  # now + 4 x 60 s


async def test_alertmanager_resolved_ends_at_is_the_resolution_time(
    capture: CaptureServer, client: httpx.AsyncClient
) -> None:
    clock = Clock(T0 + timedelta(minutes=5))  # sent late, e.g. after a retry
    notifier = AlertmanagerNotifier(am_config(capture.url), client, 60.0, clock)
    resolved_at = T0 + timedelta(seconds=10)
    await notifier.send(batch(stale(status=AlertStatus.RESOLVED, ends_at=resolved_at)))
    (alert,) = capture.wait_for(1)[0].json()
    assert alert["endsAt"] == "2025-01-06T09:00:10Z"


async def test_alertmanager_one_replica_down_is_still_delivered(
    capture: CaptureServer, client: httpx.AsyncClient
) -> None:
    notifier = AlertmanagerNotifier(am_config(refused_url(), capture.url), client, 60.0, Clock())
    await notifier.send(golden_batch())  # no DeliveryError
    assert len(capture.wait_for(1)) == 1


async def test_alertmanager_every_replica_down_is_a_retryable_failure(
    client: httpx.AsyncClient,
) -> None:
    notifier = AlertmanagerNotifier(am_config(refused_url(), refused_url()), client, 60.0, Clock())
    with pytest.raises(DeliveryError) as info:
        await notifier.send(golden_batch())
    assert info.value.retryable


# --- error mapping ----------------------------------------------------------------------


async def post_to(capture: CaptureServer, client: httpx.AsyncClient, url: str) -> DeliveryError:
    with pytest.raises(DeliveryError) as info:
        await post(client, url, b"{}", {}, what="webhook test", clock=Clock())
    return info.value


async def test_post_5xx_is_retryable(capture: CaptureServer, client: httpx.AsyncClient) -> None:
    capture.reply(500, "internal error")
    error = await post_to(capture, client, capture.url)
    assert error.retryable
    assert error.status_code == 500
    assert error.retry_after is None
    assert "HTTP 500" in str(error)


async def test_post_429_honours_retry_after_seconds(
    capture: CaptureServer, client: httpx.AsyncClient
) -> None:
    capture.reply(429, "slow down", headers={"Retry-After": "7"})
    error = await post_to(capture, client, capture.url)
    assert error.retryable
    assert error.retry_after == 7.0
    assert error.status_code == 429


async def test_post_400_is_permanent(capture: CaptureServer, client: httpx.AsyncClient) -> None:
    capture.reply(400, "invalid_blocks")
    error = await post_to(capture, client, capture.url)
    assert not error.retryable
    assert error.status_code == 400
    assert "invalid_blocks" in str(error)


async def test_post_connection_refused_is_retryable_and_says_so(
    capture: CaptureServer, client: httpx.AsyncClient
) -> None:
    error = await post_to(capture, client, refused_url())
    assert error.retryable
    assert error.status_code is None
    assert "refused" in str(error)
    assert "timed out" not in str(error)


async def test_post_timeout_is_retryable_and_says_so(capture: CaptureServer) -> None:
    capture.reply(200, delay=2.0)
    async with make_http_client(timeout=0.2, max_connections=2) as short:
        error = await post_to(capture, short, capture.url)
    assert error.retryable
    assert "timed out" in str(error)


async def test_post_408_is_retryable(capture: CaptureServer, client: httpx.AsyncClient) -> None:
    capture.reply(408, "request timeout")
    error = await post_to(capture, client, capture.url)
    assert error.retryable
    assert error.status_code == 408


async def test_post_503_honours_retry_after_when_present(
    capture: CaptureServer, client: httpx.AsyncClient
) -> None:
    capture.reply(503, "maintenance", headers={"Retry-After": "120"})
    error = await post_to(capture, client, capture.url)
    assert error.retryable
    assert error.retry_after == 120.0


async def test_post_429_honours_retry_after_as_an_http_date(
    capture: CaptureServer, client: httpx.AsyncClient
) -> None:
    """Clock() is T0; the date is 30 s later."""
    capture.reply(429, "slow down", headers={"Retry-After": "Mon, 06 Jan 2025 09:00:30 GMT"})
    error = await post_to(capture, client, capture.url)
    assert error.retryable
    assert error.retry_after == 30.0


async def test_post_2xx_returns_the_response(
    capture: CaptureServer, client: httpx.AsyncClient
) -> None:
    capture.reply(202, "accepted")
    response = await post(client, capture.url, b"{}", {}, what="webhook test", clock=Clock())
    assert (response.status_code, response.text) == (202, "accepted")


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, "invalid_payload"),
        (403, "action_prohibited"),
        (404, "no_service"),
        (410, "channel_is_archived"),
    ],
)
async def test_slack_error_answers_are_permanent_and_named(
    status: int, body: str, capture: CaptureServer, client: httpx.AsyncClient
) -> None:
    capture.reply(status, body)
    notifier = SlackNotifier(slack_config(f"{capture.url}/services/T/B/x"), client, Clock())
    with pytest.raises(DeliveryError) as info:
        await notifier.send(golden_batch())
    assert not info.value.retryable
    assert info.value.status_code == status
    assert body in str(info.value)
    assert "slack ops-slack" in str(info.value)


async def test_slack_429_is_retryable_after_retry_after(
    capture: CaptureServer, client: httpx.AsyncClient
) -> None:
    capture.reply(429, "rate_limited", headers={"Retry-After": "3"})
    notifier = SlackNotifier(slack_config(f"{capture.url}/services/T/B/x"), client, Clock())
    with pytest.raises(DeliveryError) as info:
        await notifier.send(golden_batch())
    assert (info.value.retryable, info.value.retry_after) == (True, 3.0)


def _failure_scenarios() -> list[Any]:
    return [
        pytest.param("refused", id="refused"),
        pytest.param((500, "upstream down"), id="500"),
        pytest.param((400, "invalid_payload"), id="400"),
        pytest.param((429, "rate limited"), id="429"),
        # Express-style 404 pages echo the request path, token included.
        pytest.param((404, f"Cannot POST /services/T000/B000/{URL_TOKEN}"), id="404-echo"),
        # An echo straddling the point where the error detail is cut off.
        pytest.param((502, "x" * 180 + f" /services/T000/B000/{URL_TOKEN}"), id="502-echo-at-cut"),
    ]


@pytest.mark.parametrize("kind", ["slack", "webhook"])
@pytest.mark.parametrize("scenario", _failure_scenarios())
async def test_secret_url_token_never_appears_in_a_delivery_error(
    kind: str, scenario: Any, capture: CaptureServer, client: httpx.AsyncClient
) -> None:
    base = refused_url() if scenario == "refused" else capture.url
    if scenario != "refused":
        status, body = scenario
        capture.reply(status, body)
    url = f"{base}/services/T000/B000/{URL_TOKEN}?token={URL_TOKEN}"
    notifier: SlackNotifier | WebhookNotifier = (
        SlackNotifier(slack_config(url), client, Clock())
        if kind == "slack"
        else WebhookNotifier(webhook_config(url), client, Clock())
    )
    with pytest.raises(DeliveryError) as info:
        await notifier.send(golden_batch())
    error = info.value
    shown = "".join(traceback.format_exception(error)) + repr(error) + str(error.args)
    assert URL_TOKEN not in shown
    assert notifier.name in str(error)  # the notifier is still named


# --- console and make_notifier ----------------------------------------------------------


async def console_output(b: Batch) -> list[str]:
    stream = io.StringIO()
    notifier = ConsoleNotifier(ConsoleConfig(name="console", type="console"), stream)
    await notifier.send(b)
    return stream.getvalue().splitlines()


async def test_console_prints_one_line_per_alert_event() -> None:
    assert len(await console_output(golden_batch())) == 2


async def test_console_firing_line_reads_time_event_severity_alertname_summary() -> None:
    (line,) = await console_output(batch(stale("sync_12", "critical")))
    assert line == (
        "2025-01-06T09:00:00Z FIRING    critical SyncStale "
        "Timbal sync sync_12 (billing-daily) is 3.2x its interval"
    )


async def test_console_names_the_sync_when_the_summary_does_not() -> None:
    (line,) = await console_output(batch(stale("sync_12", summary="stale for a while")))
    assert line.endswith("SyncStale org_123/sync_12  stale for a while")


async def test_console_resolved_line_without_a_resolution_says_what_the_alert_was() -> None:
    (line,) = await console_output(batch(stale("sync_12", status=AlertStatus.RESOLVED)))
    assert line == (
        "2025-01-06T09:00:00Z RESOLVED  warning  SyncStale org_123/sync_12: "
        "was: Timbal sync sync_12 (billing-daily) is 3.2x its interval"
    )


async def test_console_resolved_line_says_what_the_sync_looks_like_now() -> None:
    alert = stale("sync_12", status=AlertStatus.RESOLVED)
    alert = replace(
        alert,
        annotations={
            **alert.annotations,
            "ratio": "12.93",
            "resolution": "now 0.3x its 5m interval",
        },
    )
    (line,) = await console_output(batch(alert))
    assert line.endswith("org_123/sync_12 'billing-daily': now 0.3x its 5m interval (was 12.9x)")


async def test_console_shows_an_escalation_as_the_severities_it_moved_between() -> None:
    stream = io.StringIO()
    notifier = ConsoleNotifier(ConsoleConfig(name="console", type="console"), stream)
    await notifier.send(batch(stale("sync_12", "warning")))
    await notifier.send(batch(replace(stale("sync_12", "critical"), event=EventKind.CHANGED)))
    await notifier.send(batch(replace(stale("sync_12", "warning"), event=EventKind.CHANGED)))
    lines = stream.getvalue().splitlines()
    assert " ESCALATED warning → critical SyncStale " in lines[1]
    assert " DE-ESCALATED critical → warning SyncStale " in lines[2]
    assert notifier.counts == {"FIRING": 1, "ESCALATED": 1, "DE-ESCALATED": 1}


async def test_console_without_the_previous_severity_says_changed() -> None:
    (line,) = await console_output(batch(replace(stale("sync_12"), event=EventKind.CHANGED)))
    assert " CHANGED   warning  SyncStale " in line


async def test_console_marks_a_test_batch() -> None:
    (line,) = await console_output(batch(errored(), test=True))
    assert "[TEST] FIRING" in line


@pytest.mark.parametrize(
    ("config", "kind"),
    [
        (
            SlackConfig(name="s", type="slack", webhook_url="https://hooks.slack.com/x"),
            SlackNotifier,
        ),
        (WebhookConfig(name="w", type="webhook", url="https://h.example.com/"), WebhookNotifier),
        (
            AlertmanagerConfig(name="a", type="alertmanager", urls=["http://am:9093"]),
            AlertmanagerNotifier,
        ),
        (ConsoleConfig(name="c", type="console"), ConsoleNotifier),
    ],
    ids=["slack", "webhook", "alertmanager", "console"],
)
async def test_make_notifier_builds_the_notifier_its_config_type_names(
    config: Any, kind: type, client: httpx.AsyncClient
) -> None:
    notifier = make_notifier(config, client, poll_interval=30.0)
    assert isinstance(notifier, kind)
    assert notifier.name == config.name
    if isinstance(notifier, AlertmanagerNotifier):
        assert notifier.poll_interval == 30.0


# --- dispatcher + real webhook + real store ---------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(StateStore(tmp_path / "state.db"))
    yield s
    s.close()


def hook_dispatcher(
    store: Store, capture: CaptureServer, client: httpx.AsyncClient, clock: FakeClock
) -> Dispatcher:
    notifier = WebhookNotifier(webhook_config(f"{capture.url}/hook"), client, clock)
    return Dispatcher(store, {notifier.name: notifier}, clock=clock)


async def test_dispatcher_redelivers_after_a_500_with_the_same_delivery_id(
    store: Store, capture: CaptureServer, client: httpx.AsyncClient
) -> None:
    clock = FakeClock(T0 + timedelta(seconds=1), autojump=True)
    dispatcher = hook_dispatcher(store, capture, client, clock)
    capture.reply(500, "try later")
    capture.reply(200, "ok")
    store.enqueue([golden_batch()])

    retry_in = await deliver_due(dispatcher)
    assert retry_in is not None
    assert len(capture.wait_for(1)) == 1
    row = store.head("pager-bridge")
    assert row is not None
    assert row.attempts == 1

    clock.now = row.next_attempt_at.timestamp()
    assert await deliver_due(dispatcher) is None
    first, second = capture.wait_for(2)
    assert first.header(DELIVERY_ID_HEADER) == second.header(DELIVERY_ID_HEADER) == "delivery-0001"
    assert first.body == second.body
    assert store.head("pager-bridge") is None

    clock.advance(3600)
    assert await deliver_due(dispatcher) is None
    assert len(capture.requests) == 2  # delivered exactly once more, never again
    assert dispatcher.outcomes[("pager-bridge", "failed")] == 1
    assert dispatcher.outcomes[("pager-bridge", "sent")] == 1


async def test_dispatcher_honours_a_429_retry_after_exactly(
    store: Store, capture: CaptureServer, client: httpx.AsyncClient
) -> None:
    clock = FakeClock(T0 + timedelta(seconds=1), autojump=True)
    dispatcher = hook_dispatcher(store, capture, client, clock)
    capture.reply(429, "slow down", headers={"Retry-After": "7"})
    store.enqueue([golden_batch()])

    failed_at = clock()
    assert await deliver_due(dispatcher) == 7.0
    row = store.head("pager-bridge")
    assert row is not None
    assert row.next_attempt_at.timestamp() == failed_at + 7

    clock.now = failed_at + 6.9
    await deliver_due(dispatcher)
    assert len(capture.requests) == 1  # not before Retry-After
    clock.now = failed_at + 7
    assert await deliver_due(dispatcher) is None
    assert len(capture.wait_for(2)) == 2
    assert store.head("pager-bridge") is None


async def test_dispatcher_drops_a_permanent_400_and_counts_it(
    store: Store, capture: CaptureServer, client: httpx.AsyncClient
) -> None:
    clock = FakeClock(T0 + timedelta(seconds=1), autojump=True)
    dispatcher = hook_dispatcher(store, capture, client, clock)
    capture.reply(400, "bad payload")
    store.enqueue([golden_batch()])

    assert await deliver_due(dispatcher) is None
    assert store.head("pager-bridge") is None
    assert dispatcher.outcomes[("pager-bridge", "dropped")] == 1
    assert dispatcher.outcomes[("pager-bridge", "sent")] == 0
    clock.advance(3600)
    await deliver_due(dispatcher)
    assert len(capture.requests) == 1


# --- syncwatch test-notify --------------------------------------------------------------


def notify_config(tmp_path: Path, *tables: str) -> Path:
    path = tmp_path / "syncwatch.toml"
    path.write_text(
        '[daemon]\nrequest_timeout = "5s"\nlog_format = "json"\n'
        f'state_path = "{tmp_path / "state.db"}"\n\n'
        '[timbal]\nbase_url = "http://127.0.0.1:9"\napi_key = "unused"\n'
        '[[timbal.orgs]]\nid = "org_test"\n\n' + "\n".join(tables)
    )
    return path


def webhook_table(name: str, url: str) -> str:
    return f'[[notifiers]]\nname = "{name}"\ntype = "webhook"\nurl = "{url}"\nsecret = "s"\n'


def run_test_notify(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNCWATCH_", "NOTIFY_"))}
    return subprocess.run(
        [sys.executable, "-m", "syncwatch", "test-notify", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_test_notify_delivers_a_batch_marked_as_a_test_to_every_notifier(
    tmp_path: Path, capture: CaptureServer
) -> None:
    config = notify_config(
        tmp_path,
        webhook_table("hook", f"{capture.url}/hook"),
        f'[[notifiers]]\nname = "chat"\ntype = "slack"\nwebhook_url = "{capture.url}/slack"\n',
        f'[[notifiers]]\nname = "am"\ntype = "alertmanager"\nurls = ["{capture.url}"]\n',
    )
    result = run_test_notify(config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(result.stdout.splitlines()) == [
        "am: delivered",
        "chat: delivered",
        "hook: delivered",
    ]
    by_path = {r.path: r for r in capture.wait_for(3)}
    (hook_alert,) = by_path["/hook"].json()["alerts"]
    assert hook_alert["labels"]["test"] == "true"
    assert "[TEST]" in hook_alert["annotations"]["summary"]
    assert by_path["/slack"].json()["blocks"][0]["text"]["text"].startswith("[TEST]")
    (am_alert,) = by_path["/api/v2/alerts"].json()
    assert am_alert["labels"]["test"] == "true"
    for request in by_path.values():
        assert (request.header(DELIVERY_ID_HEADER) or "").startswith("test-")


def test_test_notify_exits_1_with_a_failed_line_for_a_refused_port(
    tmp_path: Path, capture: CaptureServer
) -> None:
    config = notify_config(
        tmp_path,
        webhook_table("good", f"{capture.url}/hook"),
        webhook_table("dead", refused_url("/hook")),
    )
    result = run_test_notify(config)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert "good: delivered" in lines
    (failed,) = [line for line in lines if line.startswith("dead: FAILED: ")]
    assert "connection refused" in failed
    assert len(capture.wait_for(1)) == 1


def test_test_notify_with_notifier_name_sends_only_to_that_one(
    tmp_path: Path, capture: CaptureServer
) -> None:
    config = notify_config(
        tmp_path,
        webhook_table("one", f"{capture.url}/one"),
        webhook_table("two", f"{capture.url}/two"),
    )
    result = run_test_notify(config, "--notifier", "two")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == ["two: delivered"]
    assert [r.path for r in capture.wait_for(1)] == ["/two"]
    assert [r.path for r in capture.requests] == ["/two"]


async def test_alertmanager_url_credentials_become_basic_auth_and_stay_out_of_errors() -> None:
    """`http://user:pass@host` works (as basic auth) and the password is never echoed."""
    with CaptureServer() as capture:
        capture.reply(status=500)
        url = capture.url.replace("http://", "http://am-user:s3cr3t-PASS@")
        config = AlertmanagerConfig(name="am", type="alertmanager", urls=[url])
        async with make_http_client(timeout=5, max_connections=4) as client:
            notifier = AlertmanagerNotifier(config, client, poll_interval=60)
            with pytest.raises(DeliveryError) as failed:
                await notifier.send(make_test_batch("am", datetime.now(UTC)))
            await notifier.send(make_test_batch("am", datetime.now(UTC)))
        assert "s3cr3t-PASS" not in str(failed.value)
        [_, delivered] = capture.wait_for(2)
        expected = "Basic " + base64.b64encode(b"am-user:s3cr3t-PASS").decode()
        assert delivered.header("Authorization") == expected


def test_the_config_accepts_exactly_the_registrys_kinds() -> None:
    """One registry line per notifier kind: the config union and the type names follow it."""
    from typing import get_args

    from syncwatch.config import ConfigError
    from syncwatch.notifiers.registry import KINDS
    from syncwatch.settings import Config, load_config

    (entry,) = get_args(Config.model_fields["notifiers"].annotation)
    union = get_args(entry)[0]
    assert set(get_args(union)) == {kind.config for kind in KINDS.values()}
    assert all(kind.type == name for name, kind in KINDS.items())
    with pytest.raises(ConfigError) as caught:
        load_config(
            None,
            timbal={"api_key": "k", "orgs": [{"id": "o"}]},
            notifiers=[{"name": "n", "type": "carrier-pigeon"}],
        )
    assert caught.value.problems == [
        "notifiers[0].type: unknown notifier type 'carrier-pigeon'; expected one of "
        + ", ".join(KINDS)
    ]


def test_capabilities_are_the_kinds_own_data() -> None:
    assert AlertmanagerConfig.capabilities.always_resolves
    assert AlertmanagerConfig.capabilities.resends_active
    assert SlackConfig.capabilities.min_interval == 1.0
    assert WebhookConfig.capabilities.min_interval == 0.0
