"""The one failure classifier and the scrubbers that keep URLs out of error texts."""

from __future__ import annotations

import ssl

import aiohttp
import httpx
import pytest
from aiohttp import http_exceptions
from aiohttp.client_reqrep import ConnectionKey

from syncwatch.failures import Kind, classify, redact_urls, scrub

TOKEN = "URLTOKEN-S3CRET-9d2f71"
_KEY = ConnectionKey("127.0.0.1", 1, False, True, None, None, None)


@pytest.mark.parametrize(
    ("exc", "kind", "cause"),
    [
        (
            ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 1)"),
            Kind.CONNECT,
            "connection refused",
        ),
        (ConnectionResetError(104, "x"), Kind.CONNECT, "connection reset"),
        (aiohttp.ServerDisconnectedError(), Kind.CONNECT, "server disconnected"),
        (aiohttp.SocketTimeoutError("x"), Kind.TIMEOUT, ""),
        (httpx.ConnectTimeout("x"), Kind.TIMEOUT, ""),
        (TimeoutError(), Kind.TIMEOUT, ""),
        (ssl.SSLCertVerificationError(1, "x"), Kind.TLS, "certificate verification failed"),
        (
            http_exceptions.LineTooLong(b"x", "8190"),
            Kind.PROTOCOL,
            "status line or header too long",
        ),
        (http_exceptions.BadStatusLine("x"), Kind.PROTOCOL, "bad status line"),
        (ValueError("x"), Kind.UNEXPECTED, "ValueError"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None,
)
def test_classify_names_the_kind_and_a_short_cause(
    exc: BaseException, kind: Kind, cause: str
) -> None:
    failure = classify(exc)
    assert (failure.kind, failure.cause) == (kind, cause)


def test_classify_sees_through_httpx_aiohttp_calling_a_refusal_a_connect_timeout() -> None:
    inner = aiohttp.ClientConnectorError(_KEY, ConnectionRefusedError(111, "refused"))
    inner.__cause__ = inner.os_error
    outer = httpx.ConnectTimeout(str(inner))
    outer.__cause__ = inner
    assert str(classify(outer)) == "connection failed (connection refused)"


def test_scrub_removes_the_url_its_path_query_and_token_like_segments() -> None:
    url = f"https://hooks.example.com/services/T0123/B0456/{TOKEN}?sig={TOKEN}x"
    text = f"no such hook {TOKEN}; POST /services/T0123/B0456/{TOKEN} failed; services down"
    cleaned = scrub(text, url)
    assert TOKEN not in cleaned
    assert "T0123" not in cleaned
    assert "services down" in cleaned  # plain words stay


def test_redact_urls_keeps_only_scheme_and_host() -> None:
    text = f"x: POST http://user:pw@127.0.0.1:9/hook/{TOKEN}?a=b failed; see https://a.example"
    assert redact_urls(text) == (
        "x: POST http://127.0.0.1:9/[redacted] failed; see https://a.example"
    )
