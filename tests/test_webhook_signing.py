"""Standard Webhooks signing on the webhook notifier, checked by the reference library.

Every signature is verified with the `standardwebhooks` package (the spec's own Python
library), never with our code, on requests a real capture server on 127.0.0.1 received.
The library checks `webhook-timestamp` against the real clock (5 minutes either way), so the
notifier's injected clock starts at the real time here.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from standardwebhooks import Webhook, WebhookVerificationError

from syncwatch.cli import main
from syncwatch.config import EX_CONFIG
from syncwatch.dispatch import Dispatcher
from syncwatch.http import make_http_client
from syncwatch.notifiers.base import DELIVERY_ID_HEADER
from syncwatch.notifiers.webhook import WebhookConfig, WebhookNotifier
from syncwatch.outbox import AlertPayload, AlertStatus, Batch, DeliveryError, EventKind
from syncwatch.state import StateStore
from syncwatch.store import Store
from tests.capture import Captured, CaptureServer
from tests.clock import FakeClock
from tests.delivery import deliver_due
from tests.test_config import MINIMAL, problem_lines, run_cli, write
from tests.test_notifiers import (
    SECRET,
    batch,
    errored,
    golden_batch,
    notify_config,
    run_test_notify,
    stale,
)

pytestmark = pytest.mark.usefixtures("clean_env")

# A key as Svix and the spec's examples spell them: whsec_ + base64 of 24 random bytes.
KEY_BYTES = b"syncwatch-test-key-24byt"
KEY = "whsec_" + base64.b64encode(KEY_BYTES).decode()
OTHER_KEY = "whsec_" + base64.b64encode(b"another-receivers-key-32-bytes!!").decode()
WEBHOOK_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


class Clock:
    """Injected wall clock starting at the real time (the library checks the timestamp)."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    with CaptureServer() as server:
        yield server


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with make_http_client(timeout=5.0, max_connections=8) as c:
        yield c


def standard_config(url: str, secret: str | None = KEY, name: str = "pager-bridge") -> Any:
    return WebhookConfig(
        name=name,
        type="webhook",
        url=url,
        secret=secret,
        signing="standard-webhooks",
        headers={"X-Team": "data"},
    )


def verify(request: Captured, key: str = KEY) -> Any:
    """The library's verdict on a received request: the parsed body, or it raises."""
    headers = {name: request.header(name) or "" for name in WEBHOOK_HEADERS}
    return Webhook(key).verify(request.body, headers)


async def send(
    capture: CaptureServer, client: httpx.AsyncClient, b: Batch, clock: Clock | None = None
) -> Captured:
    notifier = WebhookNotifier(standard_config(f"{capture.url}/hook"), client, clock or Clock())
    await notifier.send(b)
    (request,) = capture.wait_for(1)
    return request


# --- what goes on the wire ----------------------------------------------------------------


async def test_standard_webhooks_request_verifies_with_the_reference_library(
    capture: CaptureServer, client: httpx.AsyncClient
) -> None:
    clock = Clock()
    request = await send(capture, client, golden_batch(), clock)

    assert verify(request) == request.json()
    assert request.header("webhook-id") == "delivery-0001"
    assert request.header(DELIVERY_ID_HEADER) == "delivery-0001"
    assert request.header("webhook-timestamp") == str(int(clock.now))
    assert (request.header("webhook-signature") or "").startswith("v1,")
    assert request.header("X-Team") == "data"


async def test_standard_webhooks_replaces_the_syncwatch_signature_headers(
    capture: CaptureServer, client: httpx.AsyncClient
) -> None:
    request = await send(capture, client, golden_batch())

    assert request.header("X-Syncwatch-Signature") is None
    assert request.header("X-Syncwatch-Timestamp") is None


async def test_a_unicode_body_verifies_as_the_raw_utf8_bytes_sent(
    capture: CaptureServer, client: httpx.AsyncClient
) -> None:
    summary = "Zürich, 東京 sync 🚨 is ERRORED: «jeton révoqué»"
    request = await send(capture, client, batch(errored(annotations={"summary": summary})))

    assert summary.encode() in request.body  # UTF-8 on the wire, not \\u escapes
    (alert,) = verify(request)["alerts"]
    assert alert["annotations"]["summary"] == summary


async def test_another_key_does_not_verify(
    capture: CaptureServer, client: httpx.AsyncClient
) -> None:
    request = await send(capture, client, golden_batch())

    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        verify(request, OTHER_KEY)


async def test_a_changed_body_does_not_verify(
    capture: CaptureServer, client: httpx.AsyncClient
) -> None:
    request = await send(capture, client, golden_batch())
    headers = {name: request.header(name) or "" for name in WEBHOOK_HEADERS}

    with pytest.raises(WebhookVerificationError):
        Webhook(KEY).verify(request.body.replace(b"ERRORED", b"HEALTHY"), headers)


async def test_default_signing_sends_syncwatch_headers_and_no_webhook_headers(
    capture: CaptureServer, client: httpx.AsyncClient
) -> None:
    config = WebhookConfig(name="hook", type="webhook", url=f"{capture.url}/hook", secret=SECRET)
    assert config.signing == "syncwatch"
    await WebhookNotifier(config, client, Clock()).send(golden_batch())
    (request,) = capture.wait_for(1)

    assert (request.header("X-Syncwatch-Signature") or "").startswith("sha256=")
    assert request.header("X-Syncwatch-Timestamp") is not None
    assert request.header(DELIVERY_ID_HEADER) == "delivery-0001"
    assert [h for h in request.headers if h.lower().startswith("webhook-")] == []


# --- retries and restarts -----------------------------------------------------------------


async def test_a_retry_after_a_restart_keeps_webhook_id_and_signs_a_fresh_timestamp(
    capture: CaptureServer, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """The outbox row outlives the process: the retry has the id, a new time, and verifies."""
    now = datetime.fromtimestamp(int(time.time()), UTC)
    clock = FakeClock(now, autojump=True)
    capture.reply(500, "try later")
    store = Store(StateStore(tmp_path / "state.db"))
    store.enqueue([replace(golden_batch(), created_at=now)])
    notifier = WebhookNotifier(standard_config(f"{capture.url}/hook"), client, clock)
    assert await deliver_due(Dispatcher(store, {notifier.name: notifier}, clock=clock))
    row = store.head("pager-bridge")
    assert row is not None
    store.close()  # the daemon stops with the delivery still owed

    store = Store(StateStore(tmp_path / "state.db"))
    try:
        notifier = WebhookNotifier(standard_config(f"{capture.url}/hook"), client, clock)
        clock.now = row.next_attempt_at.timestamp()
        assert await deliver_due(Dispatcher(store, {notifier.name: notifier}, clock=clock)) is None
        assert store.head("pager-bridge") is None
    finally:
        store.close()

    first, retry = capture.wait_for(2)
    assert first.header("webhook-id") == retry.header("webhook-id") == "delivery-0001"
    assert int(retry.header("webhook-timestamp") or 0) > int(first.header("webhook-timestamp") or 0)
    assert first.body == retry.body
    assert verify(first) == verify(retry)


# --- the secret stays secret --------------------------------------------------------------


@pytest.mark.parametrize("signing", ["standard-webhooks", "syncwatch"])
@pytest.mark.parametrize("echoed", [KEY, KEY.removeprefix("whsec_")])
async def test_a_receiver_echoing_the_key_does_not_put_it_in_the_delivery_error(
    signing: str, echoed: str, capture: CaptureServer, client: httpx.AsyncClient
) -> None:
    """The error text is logged, printed by test-notify and stored in the outbox row."""
    capture.reply(401, f"signature mismatch for key {echoed}")
    config = standard_config(f"{capture.url}/hook").model_copy(update={"signing": signing})
    notifier = WebhookNotifier(config, client, Clock())

    with pytest.raises(DeliveryError) as failed:
        await notifier.send(golden_batch())

    assert str(failed.value).startswith("webhook pager-bridge: HTTP 401 'signature mismatch")
    assert failed.value.status_code == 401
    assert not failed.value.retryable
    assert KEY.removeprefix("whsec_") not in str(failed.value)


BAD_KEYS = [
    pytest.param(
        "sk_live_s3cr3t-not-a-whsec-key",
        "secret: signing = 'standard-webhooks' needs a key that starts with 'whsec_' "
        "(value not shown)",
        id="bad_prefix",
    ),
    pytest.param(
        "whsec_s3cr3t*not-base64!",
        "secret: the part after 'whsec_' is not valid base64 (value not shown)",
        id="bad_base64",
    ),
    pytest.param(
        "whsec_" + base64.b64encode(b"s3cr3t-16-bytes!").decode(),
        "secret: the whsec_ key decodes to 16 bytes; Standard Webhooks keys are at least 24 "
        "(value not shown)",
        id="too_short",
    ),
]


def hook_table(secret_line: str) -> str:
    return (
        '[[notifiers]]\nname = "hook"\ntype = "webhook"\nurl = "https://hooks.example.com/h"\n'
        f'signing = "standard-webhooks"\n{secret_line}'
    )


def validate(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["validate", "-c", str(config)])
    out, err = capsys.readouterr()
    return code, out + err


@pytest.mark.parametrize(("secret", "problem"), BAD_KEYS)
def test_a_bad_key_is_one_config_line_without_the_secret(
    secret: str, problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path, MINIMAL + hook_table(f'secret = "{secret}"\n'))

    code, printed = validate(config, capsys)

    assert code == EX_CONFIG
    assert problem_lines(printed) == [f"notifiers[0].{problem}"]
    assert secret.removeprefix("whsec_") not in printed


@pytest.mark.parametrize(("secret", "problem"), BAD_KEYS)
def test_a_bad_key_in_secret_file_names_secret_file(
    secret: str, problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, secret + "\n", "whsec")
    config = write(tmp_path, MINIMAL + hook_table(f'secret_file = "{tmp_path}/whsec"\n'))

    code, printed = validate(config, capsys)

    assert code == EX_CONFIG
    assert problem_lines(printed) == [f"notifiers[0].secret_file:{problem.partition(':')[2]}"]
    assert secret.removeprefix("whsec_") not in printed


def test_standard_webhooks_without_a_secret_is_one_config_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path, MINIMAL + hook_table(""))

    code, printed = validate(config, capsys)

    assert code == EX_CONFIG
    assert problem_lines(printed) == [
        "notifiers[0].secret: required with signing = 'standard-webhooks': set secret_file "
        "(or secret) to the receiver's whsec_... signing key"
    ]


def test_a_custom_header_that_signing_sets_is_one_config_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = hook_table(f'secret = "{KEY}"\nheaders = {{ "Webhook-Signature" = "v1,x" }}\n')
    config = write(tmp_path, MINIMAL + table)

    code, printed = validate(config, capsys)

    assert code == EX_CONFIG
    assert problem_lines(printed) == [
        "notifiers[0].headers.Webhook-Signature: set by signing = 'standard-webhooks' on every "
        "request; remove it"
    ]
    assert KEY not in printed


def test_an_unknown_signing_scheme_is_one_config_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(
        tmp_path,
        MINIMAL + hook_table(f'secret = "{KEY}"\n').replace("standard-webhooks", "svix"),
    )

    code, printed = validate(config, capsys)

    assert code == EX_CONFIG
    assert problem_lines(printed) == [
        "notifiers[0].signing: input should be 'syncwatch' or 'standard-webhooks'"
    ]
    assert KEY not in printed


def test_validate_prints_the_signing_scheme_and_redacts_the_key(tmp_path: Path) -> None:
    write(tmp_path, KEY + "\n", "whsec")
    inline = write(tmp_path, MINIMAL + hook_table(f'secret = "{KEY}"\n'), "inline.toml")
    from_file = write(
        tmp_path, MINIMAL + hook_table(f'secret_file = "{tmp_path}/whsec"\n'), "file.toml"
    )

    for config in (inline, from_file):
        result = run_cli("validate", "-c", str(config), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        printed = result.stdout + result.stderr
        assert 'signing = "standard-webhooks"' in printed
        assert KEY.removeprefix("whsec_") not in printed
        assert config != inline or 'secret = "**********"' in printed


# --- syncwatch test-notify ----------------------------------------------------------------


def test_test_notify_with_standard_webhooks_signing_verifies_with_the_library(
    tmp_path: Path, capture: CaptureServer
) -> None:
    table = (
        f'[[notifiers]]\nname = "hook"\ntype = "webhook"\nurl = "{capture.url}/hook"\n'
        f'signing = "standard-webhooks"\nsecret_file = "{tmp_path}/whsec"\n'
    )
    write(tmp_path, KEY + "\n", "whsec")

    result = run_test_notify(notify_config(tmp_path, table))

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == ["hook: delivered"]
    (request,) = capture.wait_for(1)
    (alert,) = verify(request)["alerts"]
    assert alert["labels"]["test"] == "true"
    assert request.header("webhook-id") == request.header(DELIVERY_ID_HEADER)
    assert (request.header("webhook-id") or "").startswith("test-")
    assert KEY.removeprefix("whsec_") not in result.stdout + result.stderr


# --- the property -------------------------------------------------------------------------

EXAMPLES = int(os.environ.get("SYNCWATCH_FUZZ_EXAMPLES", "0") or 0)
TEXT = st.text(max_size=40)
LABELS = st.dictionaries(st.text(min_size=1, max_size=12), TEXT, max_size=4)


@st.composite
def alerts(draw: st.DrawFn) -> AlertPayload:
    base = draw(st.sampled_from([errored(), stale(), stale(status=AlertStatus.RESOLVED)]))
    return AlertPayload(
        status=base.status,
        event=base.event if base.status is AlertStatus.RESOLVED else EventKind.FIRING,
        labels={**draw(LABELS), **base.labels},
        annotations={**draw(LABELS), "summary": draw(TEXT)},
        starts_at=base.starts_at,
        ends_at=base.ends_at,
        fingerprint=draw(st.text(min_size=1, max_size=16)),
        generator_url=base.generator_url,
    )


@pytest.fixture(scope="module")
def shared_capture() -> Iterator[CaptureServer]:
    with CaptureServer() as server:
        yield server


@settings(
    max_examples=EXAMPLES or 40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    items=st.lists(alerts(), min_size=1, max_size=4),
    delivery_id=st.uuids().map(lambda u: u.hex)
    | st.from_regex(r"test-[0-9a-f]{32}", fullmatch=True),
    key=st.binary(min_size=24, max_size=64),
    test=st.booleans(),
)
def test_the_library_verifies_every_batch_we_send(
    shared_capture: CaptureServer,
    items: list[AlertPayload],
    delivery_id: str,
    key: bytes,
    test: bool,
) -> None:
    secret = "whsec_" + base64.b64encode(key).decode()
    sent = batch(*items, delivery_id=delivery_id, test=test)

    async def deliver() -> None:
        async with make_http_client(timeout=5.0, max_connections=2) as client:
            config = standard_config(f"{shared_capture.url}/hook", secret)
            await WebhookNotifier(config, client, Clock()).send(sent)

    shared_capture.clear()
    asyncio.run(deliver())
    (request,) = shared_capture.wait_for(1)

    body = verify(request, secret)
    assert request.header("webhook-id") == delivery_id
    assert [a["fingerprint"] for a in body["alerts"]] == [a.fingerprint for a in items]
