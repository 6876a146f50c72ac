"""What went wrong with one HTTP exchange, in a few fixed words; shared by sources and notifiers.

The words never come from an exception's own text: aiohttp and httpx put the request URL in
theirs, and a Slack or webhook URL is itself the secret. Bottom of the import graph: it
knows aiohttp and httpx, nothing of syncwatch.
"""

from __future__ import annotations

import email.utils
import enum
import errno
import os
import re
import socket
import ssl
from dataclasses import dataclass
from datetime import UTC
from urllib.parse import urlsplit

import aiohttp
import httpx
from aiohttp import http_exceptions


class Kind(enum.StrEnum):
    TIMEOUT = "timeout"
    CONNECT = "connect"
    TLS = "tls"
    PROTOCOL = "protocol"  # the peer answered, but not with valid HTTP
    UNEXPECTED = "unexpected"  # not an HTTP failure at all: most likely a syncwatch bug


_WORDS = {
    Kind.TIMEOUT: "timed out",
    Kind.CONNECT: "connection failed",
    Kind.TLS: "TLS failed",
    Kind.PROTOCOL: "invalid HTTP response",
    Kind.UNEXPECTED: "failed unexpectedly",
}


@dataclass(frozen=True, slots=True)
class Failure:
    kind: Kind
    cause: str  # fixed words (or an OS error string): never text that may hold a URL

    def __str__(self) -> str:
        return f"{_WORDS[self.kind]} ({self.cause})" if self.cause else _WORDS[self.kind]


def chain(exc: BaseException) -> list[BaseException]:
    """The exception and its causes, outermost first (bounded: chains can loop)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(seen) < 16 and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def classify(exc: BaseException) -> Failure:
    """Timeout, connect, TLS, protocol or unexpected, with a short cause fit to show anyone."""
    links = chain(exc)
    return (
        _tls(links)
        or _protocol(links)
        or _timeout(links)
        or _connect(links)
        or Failure(Kind.UNEXPECTED, type(exc).__name__)
    )


def _tls(links: list[BaseException]) -> Failure | None:
    # Deepest first: aiohttp's TLS errors subclass ssl's but carry none of their details.
    for e in reversed(links):
        if isinstance(e, ssl.SSLCertVerificationError):
            words = getattr(e, "verify_message", None) or "certificate verification failed"
            return Failure(Kind.TLS, str(words))
        if isinstance(e, ssl.SSLError):
            reason = getattr(e, "reason", None) or "handshake failed"
            return Failure(Kind.TLS, str(reason).lower().replace("_", " "))
        if isinstance(e, aiohttp.ServerFingerprintMismatch):
            return Failure(Kind.TLS, "certificate fingerprint mismatch")
        if isinstance(e, aiohttp.ClientSSLError):
            return Failure(Kind.TLS, "handshake failed")
    return None


# aiohttp's parser raises the generic BadHttpMessage for these; its message (safe to match,
# never to show: it quotes the peer's bytes) tells which.
_BAD_MESSAGE_WORDS = (
    ("too many headers", "too many headers"),
    ("chunk", "invalid chunked encoding"),
    ("content-length", "invalid Content-Length"),
    ("transfer-encoding", "invalid Transfer-Encoding"),
    ("header", "invalid header"),
)


def _protocol(links: list[BaseException]) -> Failure | None:
    # The deepest parser error is the most specific (aiohttp re-wraps it in generic ones).
    for e in reversed(links):
        if isinstance(e, http_exceptions.ContentLengthError):
            return Failure(Kind.CONNECT, "connection closed before the whole body")
        if isinstance(e, http_exceptions.LineTooLong):
            return Failure(Kind.PROTOCOL, "status line or header too long")
        if isinstance(e, http_exceptions.BadStatusLine):
            return Failure(Kind.PROTOCOL, "bad status line")
        if isinstance(e, http_exceptions.InvalidHeader):
            return Failure(Kind.PROTOCOL, "invalid header")
        if isinstance(e, http_exceptions.TransferEncodingError):
            return Failure(Kind.PROTOCOL, "invalid chunked encoding")
        if isinstance(e, http_exceptions.ContentEncodingError):
            return Failure(Kind.PROTOCOL, "undecodable body")
        if isinstance(e, http_exceptions.HttpProcessingError):
            message = str(e.message).lower()
            for needle, words in _BAD_MESSAGE_WORDS:
                if needle in message:
                    return Failure(Kind.PROTOCOL, words)
            return Failure(Kind.PROTOCOL, "malformed HTTP message")
    for e in links:
        if isinstance(e, httpx.DecodingError):
            return Failure(Kind.PROTOCOL, "undecodable body")
        if isinstance(e, httpx.ProtocolError):
            return Failure(Kind.PROTOCOL, "malformed HTTP message")
        if isinstance(e, httpx.UnsupportedProtocol | aiohttp.NonHttpUrlClientError):
            return Failure(Kind.PROTOCOL, "unsupported URL scheme")
        if isinstance(e, aiohttp.ClientResponseError):
            # Raised by aiohttp for an answer it could not read; the status is aiohttp's own.
            return Failure(Kind.PROTOCOL, "malformed HTTP message")
    return None


def _timeout(links: list[BaseException]) -> Failure | None:
    # httpx-aiohttp maps every aiohttp connection error (refused, reset…) to ConnectTimeout;
    # only a TimeoutError among the causes, or httpx's own timeout with no cause, is one.
    if any(isinstance(e, TimeoutError) for e in links):
        return Failure(Kind.TIMEOUT, "")
    if isinstance(links[-1], httpx.TimeoutException):
        return Failure(Kind.TIMEOUT, "")
    return None


_OS_ERRORS: tuple[tuple[type[BaseException], str], ...] = (
    (ConnectionRefusedError, "connection refused"),
    (ConnectionResetError, "connection reset"),
    (ConnectionAbortedError, "connection aborted"),
    (BrokenPipeError, "connection closed"),
    (socket.gaierror, "name resolution failed"),
    (aiohttp.ClientConnectorDNSError, "name resolution failed"),
    (aiohttp.ServerDisconnectedError, "server disconnected"),
    (aiohttp.ClientPayloadError, "connection closed before the whole body"),
)


def _connect(links: list[BaseException]) -> Failure | None:
    for e in links:
        for kind, words in _OS_ERRORS:
            if isinstance(e, kind):
                return Failure(Kind.CONNECT, words)
    for e in reversed(links):
        # The OS's words for the errno, not the exception's: asyncio adds the address.
        if isinstance(e, OSError) and e.errno is not None and e.errno in errno.errorcode:
            return Failure(Kind.CONNECT, os.strerror(e.errno).lower())
    if any(isinstance(e, httpx.TransportError | aiohttp.ClientError | OSError) for e in links):
        return Failure(Kind.CONNECT, type(links[-1]).__name__)
    return None


# --- scrubbing --------------------------------------------------------------------------


def origin(url: str) -> str:
    """`host[:port]` of a URL, without credentials, path or query: safe to name anywhere."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return "an invalid URL"
    netloc = f"[{host}]" if ":" in host else host
    return f"{netloc}:{port}" if port is not None else netloc


def _secret_parts(url: str) -> set[str]:
    parts = urlsplit(url)
    found = {url, parts.path, parts.query, parts.password or "", parts.username or ""}
    # A receiver may echo one path segment or query value alone: the token. Segments that
    # look like words ("services", "hooks") are not worth hiding and often are the message.
    pieces = parts.path.split("/") + re.split(r"[&=]", parts.query)
    found.update(p for p in pieces if len(p) >= 16 or (len(p) >= 6 and not p.isalpha()))
    return found


def scrub(text: str, url: str, extra: tuple[str, ...] = ()) -> str:
    """`text` without the URL's path, query, credentials or token-like parts, nor `extra`."""
    secrets = _secret_parts(url) | {s for s in extra if len(s) >= 6}
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) > 1:  # never blank out "/" everywhere
            text = text.replace(secret, "[redacted]")
    return text


_URL = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)([^\s/'\"<>?#]*)([^\s'\"<>]*)")


def redact_urls(text: str) -> str:
    """Every URL in `text` cut to scheme and host: a last guard before an error is stored."""

    def cut(match: re.Match[str]) -> str:
        scheme, netloc, rest = match.groups()
        host = netloc.rsplit("@", 1)[-1]
        return f"{scheme}{host}" + ("/[redacted]" if rest.strip("/") else "")

    return _URL.sub(cut, text)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)
