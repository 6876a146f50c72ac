"""The HTTP edge against hostile peers: raw socket servers on 127.0.0.1 sending bad bytes.

Every test has one tenant (or receiver) answered badly and a control answered well, through
the real Poller, Upstream, transport and notifiers: the bad one fails alone, typed, with a
short cause and no secret; the control keeps alerting.
"""

from __future__ import annotations

import gc
import ssl
import subprocess
import sys
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import http_exceptions
from aiohttp.client_reqrep import ConnectionKey, RequestInfo
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from syncwatch.check import poll_and_evaluate
from syncwatch.evaluate import Report
from syncwatch.http import make_http_client, make_transport
from syncwatch.models import Reason, Source
from syncwatch.notifiers.base import post
from syncwatch.outbox import DeliveryError
from syncwatch.settings import Config, load_config
from syncwatch.sources import Poller
from tests.capture import CaptureServer, Reply
from tests.conftest import (
    Daemon,
    daemon_url,
    refused_port,
    start_syncwatch,
    toml_value,
    wait_until,
)
from tests.hostile import (
    FIXTURES,
    HOSTILE,
    Answer,
    HostileServer,
    Stall,
    Stream,
    gzip_bomb,
    gzipped,
    http,
    timbal_listing,
)

BAD, GOOD = "org_bad", "org_good"
TOKEN = "URLTOKEN-S3CRET-9d2f71"  # in every notifier URL: it must never show up in an error
NOW = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)


def timbal_config(base_url: str, **daemon: Any) -> Config:
    return load_config(
        None,
        daemon={"request_timeout": 5, "retries": 0, **daemon},
        timbal={
            "base_url": base_url,
            "api_key": "tk-test-key",
            "orgs": [{"id": BAD}, {"id": GOOD}],
        },
    )


def listings_by_tenant(report: Report) -> dict[str, Any]:
    return {listing.tenant: listing for listing in report.listings}


def alerts_of(report: Report, tenant: str) -> set[tuple[str, str]]:
    return {(str(c.alertname), c.sync_id) for c in report.conditions if c.tenant == tenant}


def assert_control_alerts(report: Report) -> None:
    good = listings_by_tenant(report)[GOOD]
    assert good.ok, str(good.error)
    assert {s.id for s in good.syncs} == {"sync_fresh", "sync_stale"}
    assert ("SyncStale", "sync_stale") in alerts_of(report, GOOD)


def served(bad: Answer | Stream) -> HostileServer:
    """Org BAD answered with `bad`, org GOOD with a valid listing, anything else 404."""
    return HostileServer(
        {f"/orgs/{BAD}/": bad, f"/orgs/{GOOD}/": http(timbal_listing())},
        http(b"not here", "404 Not Found"),
    )


# --- hostile answers fail their tenant only ------------------------------------------------


@pytest.mark.parametrize(("answer", "reason"), HOSTILE.values(), ids=HOSTILE.keys())
async def test_a_hostile_answer_fails_its_tenant_only_and_the_control_keeps_alerting(
    answer: Answer, reason: str
) -> None:
    with served(answer) as server:
        report = await poll_and_evaluate(timbal_config(server.url), NOW)
    bad = listings_by_tenant(report)[BAD]
    assert bad.error is not None
    assert bad.error.reason == reason, str(bad.error)
    assert ("SourceUnreachable", "") in alerts_of(report, BAD)
    assert_control_alerts(report)
    # The short form, never an aiohttp repr.
    message = str(bad.error)
    for raw in ("ClientResponseError", "ConnectionKey", "message=", "Traceback", "b'"):
        assert raw not in message, message


@pytest.mark.parametrize("name", ["huge_header", "garbage_status_line", "invalid_chunked"])
async def test_a_hostile_answer_fails_one_paragon_user_only(name: str) -> None:
    listing = (FIXTURES / "paragon_listing.json").read_bytes()
    routes: dict[str, Answer | Stream] = {
        "/api/syncs?credentialId=cred-bad": HOSTILE[name][0],
        "/api/syncs?credentialId=cred-good": http(listing),
    }
    with HostileServer(routes, http(b"", "404 Not Found")) as server:
        users = [
            {"id": user, "token": f"pg-token-{user}", "credential_id": f"cred-{user}"}
            for user in ("bad", "good")
        ]
        config = load_config(
            None,
            daemon={"request_timeout": 5, "retries": 0},
            paragon={"base_url": server.url, "users": users},
        )
        report = await poll_and_evaluate(config, NOW)
    by_user = listings_by_tenant(report)
    assert by_user["bad"].error is not None
    assert by_user["bad"].error.reason is Reason.INVALID_RESPONSE
    assert by_user["good"].ok
    assert ("SyncErrored", "psync_errored") in alerts_of(report, "good")


async def test_a_huge_header_names_its_cause_in_a_few_words() -> None:
    with served(HOSTILE["huge_header"][0]) as server:
        report = await poll_and_evaluate(timbal_config(server.url), NOW)
    message = str(listings_by_tenant(report)[BAD].error)
    assert "invalid HTTP response (status line or header too long)" in message
    assert "base_url" in message


async def test_a_stalled_answer_times_out_its_tenant_only() -> None:
    with served(Stall()) as server:
        report = await poll_and_evaluate(timbal_config(server.url, request_timeout=0.5), NOW)
    bad = listings_by_tenant(report)[BAD]
    assert bad.error is not None
    assert bad.error.reason is Reason.TIMEOUT
    assert_control_alerts(report)


async def test_an_unexpected_exception_in_one_tenants_poll_is_that_tenants_internal_error() -> None:
    """The per-tenant firewall around list_org/list_user: a bug fails one tenant, not all."""
    from syncwatch.sources.base import guarded  # new with the firewall

    async def crashing() -> Any:
        raise KeyError("something no code path expected")

    listing = await guarded(Source.TIMBAL, BAD, crashing())
    assert listing.error is not None
    assert listing.error.reason is Reason.INTERNAL
    assert "unexpected KeyError" in str(listing.error)
    assert listing.tenant == BAD


# --- every exception class of the HTTP stack -------------------------------------------------

SECRET_URL = f"http://127.0.0.1:1/hook/{TOKEN}?token={TOKEN}"
_KEY = ConnectionKey("127.0.0.1", 1, False, True, None, None, None)
_INFO = RequestInfo(URL(SECRET_URL), "POST", CIMultiDictProxy(CIMultiDict()), URL(SECRET_URL))


def _http_error_classes() -> list[type[BaseException]]:
    roots: list[type[BaseException]] = [
        aiohttp.ClientError,
        http_exceptions.HttpProcessingError,
        httpx.HTTPError,
        httpx.InvalidURL,
        httpx.CookieConflict,
        httpx.StreamError,
    ]
    found: list[type[BaseException]] = []
    todo = list(roots)
    while todo:
        cls = todo.pop()
        if cls not in found:
            found.append(cls)
            todo.extend(cls.__subclasses__())
    return sorted(found, key=lambda c: f"{c.__module__}.{c.__qualname__}")


def _instance(cls: type[BaseException]) -> BaseException:
    """An instance of `cls` whose text holds the secret URL, as aiohttp's and httpx's do."""
    msg = f"failed for {SECRET_URL}"
    os_error = ConnectionRefusedError(111, msg)
    request = httpx.Request("POST", SECRET_URL)
    attempts: list[Callable[[], BaseException]] = [
        lambda: cls(_INFO, (), status=400, message=msg),  # type: ignore[call-arg]
        lambda: cls(_KEY, ssl.SSLCertVerificationError(1, msg)),
        lambda: cls(_KEY, os_error),
        lambda: cls(SECRET_URL, _KEY, os_error),
        lambda: cls(b"a", b"b", "127.0.0.1", 1),
        lambda: cls(SECRET_URL, msg),
        lambda: cls(msg, request=request),  # type: ignore[call-arg]
        lambda: cls(msg, request=request, response=httpx.Response(500)),  # type: ignore[call-arg]
        lambda: cls(message=msg),  # type: ignore[call-arg]
        lambda: cls(SECRET_URL.encode(), "8190"),
        lambda: cls(SECRET_URL),
        cls,
    ]
    for attempt in attempts:
        try:
            made = attempt()
        except TypeError:
            continue
        if isinstance(made, cls):
            return made
    raise AssertionError(f"cannot build {cls}")


ERROR_CLASSES = _http_error_classes()
PHASES = ("request", "body")


class _RaisingStream(httpx.AsyncByteStream):
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b'{"syncs": ['
        raise self.exc


class FaultyTransport(httpx.AsyncBaseTransport):
    """The real transport, except that requests whose path holds `marker` raise `exc`.

    No server can make aiohttp or httpx raise each of their exception classes on demand:
    this injects them where the transport would raise them (the request or its body).
    """

    def __init__(self, real: httpx.AsyncBaseTransport, marker: str, exc: BaseException, phase: str):
        self.real, self.marker, self.exc, self.phase = real, marker, exc, phase

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.marker not in request.url.path:
            return await self.real.handle_async_request(request)
        if self.phase == "request":
            raise self.exc
        response = await self.real.handle_async_request(request)
        await response.aclose()
        return httpx.Response(200, stream=_RaisingStream(self.exc), request=request)

    async def aclose(self) -> None:
        await self.real.aclose()


@pytest.fixture(scope="module")
def good_server() -> Iterator[HostileServer]:
    with HostileServer({}, http(timbal_listing())) as server:
        yield server


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__qualname__)
async def test_every_http_exception_class_is_its_tenants_typed_failure(
    cls: type[BaseException], phase: str, good_server: HostileServer
) -> None:
    exc = _instance(cls)
    config = timbal_config(good_server.url)
    real = make_transport(max_connections=4)
    async with FaultyTransport(real, f"/orgs/{BAD}/", exc, phase) as transport:
        report = await poll_and_evaluate(config, NOW, transport)
    bad = listings_by_tenant(report)[BAD]
    assert bad.error is not None
    assert isinstance(bad.error.reason, Reason)
    assert TOKEN not in str(bad.error)
    assert ("SourceUnreachable", "") in alerts_of(report, BAD)
    assert_control_alerts(report)
    is_transport_error = issubclass(
        cls, aiohttp.ClientError | http_exceptions.HttpProcessingError | httpx.TransportError
    )
    if is_transport_error:
        assert bad.error.reason is not Reason.INTERNAL, str(bad.error)


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__qualname__)
async def test_every_http_exception_class_is_a_clean_delivery_error(
    cls: type[BaseException], phase: str, good_server: HostileServer
) -> None:
    exc = _instance(cls)
    transport = FaultyTransport(make_transport(max_connections=4), "/hook/", exc, phase)
    url = f"{good_server.url}/hook/{TOKEN}"
    async with make_http_client(timeout=5, max_connections=4, transport=transport) as client:
        if phase == "body":
            # The status (200) arrived before the body failed: that is a delivery.
            await post(client, url, b"{}", {}, what="webhook w")
            return
        with pytest.raises(DeliveryError) as caught:
            await post(client, url, b"{}", {}, what="webhook w")
    assert TOKEN not in str(caught.value), str(caught.value)
    assert str(caught.value).startswith("webhook w: ")
    assert caught.value.retryable


# --- one short form everywhere ------------------------------------------------------------


def test_check_on_a_refused_connection_prints_the_short_cause(tmp_path: Path) -> None:
    config = tmp_path / "syncwatch.toml"
    config.write_text(
        f"""
[daemon]
retries = 0
[timbal]
base_url = "http://127.0.0.1:{refused_port()}"
api_key = "tk-test-key"
[[timbal.orgs]]
id = "org_1"
"""
    )
    result = subprocess.run(
        [sys.executable, "-m", "syncwatch", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert "connection failed (connection refused)" in result.stdout, result.stdout
    for raw in ("ConnectionKey", "ClientConnectorError", "ConnectTimeout", "is_ssl"):
        assert raw not in result.stdout + result.stderr


# --- body size ----------------------------------------------------------------------------

LIMIT = 1 << 20  # daemon.max_body_size in these tests


def _listing_of_size(size: int) -> bytes:
    """A valid (empty) Timbal listing padded with whitespace to exactly `size` bytes."""
    core = b'{"syncs": []}'
    return core[:-1] + b" " * (size - len(core)) + b"}"


BODIES: dict[str, Answer | Stream] = {
    "content_length_over": http(_listing_of_size(LIMIT + 1)),
    "chunked_over": Stream(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"4000\r\n" + b" " * 0x4000 + b"\r\n",
        LIMIT * 2,
    ),
    "no_length_over": Stream(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", b" " * 65536, LIMIT * 2
    ),
    "gzip_bomb": http(gzip_bomb(64 << 20), headers={"Content-Encoding": "gzip"}),
    "deflate_bomb": http(
        zlib.compress(bytes(64 << 20), 9), headers={"Content-Encoding": "deflate"}
    ),
}


@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
async def test_a_body_over_max_body_size_is_body_too_large_for_that_tenant(
    body: Answer | Stream,
) -> None:
    with served(body) as server:
        config = timbal_config(server.url, max_body_size=LIMIT)
        report = await poll_and_evaluate(config, NOW)
    bad = listings_by_tenant(report)[BAD]
    assert bad.error is not None
    assert bad.error.reason is Reason.BODY_TOO_LARGE, str(bad.error)
    assert "daemon.max_body_size" in str(bad.error)
    assert "1MiB" in str(bad.error)
    assert_control_alerts(report)


@pytest.mark.parametrize("encoding", ["identity", "gzip", "deflate", "raw_deflate"], ids=str)
async def test_a_body_of_exactly_max_body_size_is_read_in_any_offered_encoding(
    encoding: str,
) -> None:
    body = _listing_of_size(LIMIT)
    raw_deflate = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    encoded = {
        "identity": (body, {}),
        "gzip": (gzipped(body), {"Content-Encoding": "gzip"}),
        "deflate": (zlib.compress(body), {"Content-Encoding": "deflate"}),
        "raw_deflate": (
            raw_deflate.compress(body) + raw_deflate.flush(),
            {"Content-Encoding": "deflate"},
        ),
    }[encoding]
    with served(http(encoded[0], headers=encoded[1])) as server:
        report = await poll_and_evaluate(timbal_config(server.url, max_body_size=LIMIT), NOW)
    bad = listings_by_tenant(report)[BAD]
    assert bad.ok, str(bad.error)
    assert_control_alerts(report)


async def test_upstream_accept_encoding_is_gzip_and_deflate_only() -> None:
    with CaptureServer() as capture:
        capture.reply(200, timbal_listing())
        capture.reply(200, timbal_listing())
        await poll_and_evaluate(timbal_config(capture.url), NOW)
        [request, _] = capture.wait_for(2)
    assert request.header("Accept-Encoding") == "gzip, deflate"


async def _peak_while(run: Callable[[], Any]) -> tuple[Any, int]:
    gc.collect()
    tracemalloc.start()
    try:
        result = await run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


async def test_a_gzip_bomb_is_never_inflated_past_the_limit() -> None:
    """64 MiB of zeros in 64 KiB of gzip: at most the limit is ever decoded (traced memory)."""
    bomb = http(gzip_bomb(64 << 20), headers={"Content-Encoding": "gzip"})
    with served(bomb) as server:
        config = timbal_config(server.url, max_body_size=LIMIT)
        async with make_transport(max_connections=2) as transport:
            poller = Poller(config, transport)
            listings, peak = await _peak_while(poller.poll)
    bad = {listing.tenant: listing for listing in listings}[BAD]
    assert bad.error is not None
    assert bad.error.reason is Reason.BODY_TOO_LARGE
    assert peak < 6 * LIMIT, f"peak traced memory {peak / 2**20:.1f} MiB"


async def test_a_receivers_huge_answer_is_read_only_up_to_the_answer_limit() -> None:
    page = Stream(b"HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\n", b"x" * 65536, 50 << 20)
    bomb = http(gzip_bomb(64 << 20), headers={"Content-Encoding": "gzip"})
    routes: dict[str, Answer | Stream] = {"/big/": page, "/bomb/": bomb}
    with HostileServer(routes, http(b"ok")) as server:
        async with make_http_client(timeout=10, max_connections=2) as client:
            for path in ("/big/", "/bomb/"):

                async def send(path: str = path) -> DeliveryError | None:
                    try:
                        await post(client, f"{server.url}{path}{TOKEN}", b"{}", {}, what="hook h")
                    except DeliveryError as exc:
                        return exc
                    return None

                error, peak = await _peak_while(send)
                assert peak < 4 << 20, f"{path}: {peak / 2**20:.1f} MiB"
                if path == "/big/":
                    assert isinstance(error, DeliveryError)
                    assert error.status_code == 500


# --- cookies --------------------------------------------------------------------------------

COOKIE = {"Set-Cookie": "sess=tenant-a-session; Path=/"}


async def test_a_cookie_one_upstream_sets_is_never_sent_to_anyone() -> None:
    """Pollers and notifiers share one pool: no jar in it, nor in the notifiers' client."""
    with CaptureServer() as capture:
        capture.default = Reply(200, COOKIE, timbal_listing())
        # `localhost`, not an IP: cookie jars refuse cookies from bare IP addresses.
        base = capture.url.replace("127.0.0.1", "localhost")
        config = timbal_config(base)
        async with make_transport(max_connections=4) as transport:
            poller = Poller(config, transport)
            client = make_http_client(timeout=5, max_connections=4, transport=transport)
            for _ in range(2):
                await poller.poll()
                for name in ("slack", "hook"):
                    await post(client, f"{base}/{name}/{TOKEN}", b"{}", {}, what=name)
        sent = capture.requests
    assert len(sent) == 8
    assert [r.header("Cookie") for r in sent] == [None] * 8


# --- redirects ------------------------------------------------------------------------------


async def test_a_redirect_is_http_3xx_naming_only_the_location_host_and_is_not_followed() -> None:
    with CaptureServer() as elsewhere, CaptureServer() as capture:
        target = f"{elsewhere.url}/steal/{TOKEN}?next=/x"
        capture.reply(302, "moved", headers={"Location": target})
        capture.reply(200, timbal_listing())
        report = await poll_and_evaluate(timbal_config(capture.url), NOW)
        bad = next((v for k, v in listings_by_tenant(report).items() if not v.ok), None)
        assert bad is not None
        assert bad.error is not None
        assert bad.error.reason is Reason.HTTP_3XX
        message = str(bad.error)
        assert f"127.0.0.1:{elsewhere.port}" in message
        assert "base_url" in message
        assert "/steal" not in message
        assert TOKEN not in message
        assert elsewhere.requests == []  # the bearer token never travelled


async def test_a_receivers_redirect_is_not_followed_and_names_only_the_host() -> None:
    with CaptureServer() as elsewhere, CaptureServer() as capture:
        capture.reply(307, "", headers={"Location": f"{elsewhere.url}/grab/{TOKEN}"})
        async with make_http_client(timeout=5, max_connections=2) as client:
            with pytest.raises(DeliveryError) as caught:
                await post(client, f"{capture.url}/hook/{TOKEN}", b"{}", {}, what="hook h")
    assert f"127.0.0.1:{elsewhere.port}" in str(caught.value)
    assert TOKEN not in str(caught.value)
    assert elsewhere.requests == []


# --- a real daemon: one org's huge header ---------------------------------------------------


def test_the_daemon_keeps_alerting_while_one_org_answers_a_huge_header(tmp_path: Path) -> None:
    with served(HOSTILE["huge_header"][0]) as upstream, CaptureServer() as sink:
        config = tmp_path / "syncwatch.toml"
        config.write_text(
            f"""
[daemon]
poll_interval = "1s"
listen = "127.0.0.1:0"
state_path = {toml_value(str(tmp_path / "state.db"))}
request_timeout = "3s"
retries = 0
log_format = "json"

[timbal]
base_url = {toml_value(upstream.url)}
api_key = "tk-test-key"
[[timbal.orgs]]
id = "{BAD}"
[[timbal.orgs]]
id = "{GOOD}"

[alerting]
source_failure_threshold = 2

[[notifiers]]
name = "hook"
type = "webhook"
url = {toml_value(f"{sink.url}/hook")}
"""
        )
        proc = start_syncwatch(["run", "-c", str(config)], tmp_path / "daemon.log")
        try:
            url = daemon_url(proc)

            def alerted(alertname: str, tenant: str) -> Callable[[Any], bool]:
                def match(request: Any) -> bool:
                    return any(
                        a["labels"]["alertname"] == alertname and a["labels"]["tenant"] == tenant
                        for a in request.json()["alerts"]
                    )

                return match

            [stale] = sink.wait_for(1, timeout=30, where=alerted("SyncStale", GOOD))
            [down] = sink.wait_for(1, timeout=30, where=alerted("SourceUnreachable", BAD))
            unreachable = next(
                a for a in down.json()["alerts"] if a["labels"]["alertname"] == "SourceUnreachable"
            )
            assert unreachable["labels"]["reason"] == "invalid_response"
            assert wait_until(lambda: httpx.get(f"{url}/healthz", timeout=2).status_code == 200)
            daemon = Daemon(proc, url, config)
            up = {lb["tenant"]: v for lb, v in daemon.metrics()["syncwatch_source_up"]}
            assert up == {GOOD: 1.0, BAD: 0.0}
            daemon.wait_cycles(2)
        finally:
            code = proc.stop()
    assert code == 0, proc.output
    assert "cycle_failed" not in proc.output
    assert "cycle_complete" in proc.output
    assert stale is not None
