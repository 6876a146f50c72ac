"""HTTP basic auth from the web config file: bcrypt checks, per-client lockout, `may_write`.

`/healthz` and `/readyz` stay open (probes carry no credentials); every other path needs a
user of `basic_auth_users` when any is configured, as exporter-toolkit does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import bcrypt
import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from syncwatch.webconfig import WebConfig

log = structlog.get_logger("syncwatch.webauth")

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
SCOPE_KEY = "syncwatch.auth"

# exporter-toolkit's stand-in for an unknown user (bcrypt of "fakepassword", cost 10): a
# wrong name costs one bcrypt like a wrong password, so timing does not enumerate users.
_UNKNOWN_USER_HASH = b"$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi"

MAX_FAILURES = 5  # wrong credentials per client within FAILURE_WINDOW before a lockout
FAILURE_WINDOW = 60.0  # s
CACHE_SIZE = 256  # verified (user, password) digests: a scraper's every request is not a bcrypt


@dataclass(frozen=True, slots=True)
class AuthInfo:
    """What the middleware learnt about a request, for `may_write` and handlers."""

    user: str | None
    users_configured: bool


class FailureLimiter:
    """Wrong credentials per client: MAX_FAILURES within FAILURE_WINDOW locks it out until the
    oldest failure leaves the window. Pure apart from the injected monotonic clock."""

    def __init__(
        self,
        max_failures: int = MAX_FAILURES,
        window: float = FAILURE_WINDOW,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = 4096,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.clock = clock
        self.max_clients = max_clients  # a scan from many addresses cannot grow it unbounded
        self._failures: OrderedDict[str, list[float]] = OrderedDict()

    def retry_after(self, client: str) -> float:
        """Seconds until `client` may try again; 0 when it is not locked out."""
        times = self._recent(client)
        if len(times) < self.max_failures:
            return 0.0
        return max(0.0, times[-self.max_failures] + self.window - self.clock())

    def failed(self, client: str) -> int:
        """Record one failure; the client's failures within the window."""
        times = self._recent(client)
        times.append(self.clock())
        self._failures[client] = times[-self.max_failures :]
        self._failures.move_to_end(client)
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)
        return len(times)

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)

    def _recent(self, client: str) -> list[float]:
        cutoff = self.clock() - self.window
        return [t for t in self._failures.get(client, ()) if t > cutoff]


class Authenticator:
    """Checks basic credentials against bcrypt hashes; results cached by a keyed digest."""

    def __init__(self, web: WebConfig) -> None:
        self.users = web.user_hashes()
        # Cache keys are HMACs under a per-process key: no password is kept in memory.
        self._key = secrets.token_bytes(32)
        self._cache: OrderedDict[bytes, bool] = OrderedDict()
        # One bcrypt at a time, as exporter-toolkit: a flood of logins takes one core at most.
        self._bcrypt = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.users)

    def check(self, user: str, password: str) -> bool:
        """Whether `user`:`password` is valid: one bcrypt per new pair, known user or not."""
        hashed = self.users.get(user)
        digest = hmac.new(
            self._key,
            b"\0".join((user.encode(), hashed or b"", password.encode())),
            hashlib.sha256,
        ).digest()
        cached = self._cache.get(digest)
        if cached is not None:
            self._cache.move_to_end(digest)
            return cached
        # bcrypt.checkpw compares in constant time; the unknown user pays the same cost.
        with self._bcrypt:
            matches = bcrypt.checkpw(password.encode(), hashed or _UNKNOWN_USER_HASH)
        ok = matches and hashed is not None
        self._cache[digest] = ok
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return ok


def basic_credentials(header: str) -> tuple[str, str] | None:
    """(user, password) from an `Authorization: Basic …` header; None if absent or malformed."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.removeprefix("::ffff:")).is_loopback
    except ValueError:
        return False


def may_write(request: Request) -> bool:
    """Whether this request may change state (silences, acks): an authenticated user, or,
    when no `basic_auth_users` are configured, a client on the loopback address."""
    info = request.scope.get(SCOPE_KEY)
    if isinstance(info, AuthInfo) and info.users_configured:
        return info.user is not None
    client = request.client.host if request.client else None
    return is_loopback(client)


class AuthMiddleware:
    """ASGI middleware: 401 + WWW-Authenticate without valid credentials, 429 when locked out.

    `web` is read per request, so a SIGHUP that swaps users takes effect at once.
    """

    def __init__(
        self,
        app: ASGIApp,
        web: Callable[[], tuple[WebConfig, Authenticator]],
        limiter: FailureLimiter | None = None,
    ) -> None:
        self.app = app
        self.web = web
        self.limiter = limiter or FailureLimiter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        web, auth = self.web()
        send = _with_headers(send, web.headers) if web.headers else send
        if not auth.enabled or scope["path"] in OPEN_PATHS:
            scope[SCOPE_KEY] = AuthInfo(user=None, users_configured=auth.enabled)
            await self.app(scope, receive, send)
            return
        client = scope["client"][0] if scope.get("client") else "unknown"
        wait = self.limiter.retry_after(client)
        if wait > 0:
            await _refuse(send, 429, b"too many failed logins; retry later\n", wait)
            return
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        credentials = basic_credentials(header)
        if credentials is not None:
            user, password = credentials
            if await run_in_threadpool(auth.check, user, password):
                self.limiter.succeeded(client)
                scope[SCOPE_KEY] = AuthInfo(user=user, users_configured=True)
                await self.app(scope, receive, send)
                return
            failures = self.limiter.failed(client)
            # The user name only: the password never reaches a log line.
            log.warning(
                "auth_failed",
                client=client,
                user=user,
                path=scope["path"],
                failures=failures,
                locked_out=failures >= self.limiter.max_failures,
            )
        await _refuse(send, 401, b"unauthorized\n", None)


async def _refuse(send: Send, status: int, body: bytes, retry_after: float | None) -> None:
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
    ]
    if status == 401:
        headers.append((b"www-authenticate", b'Basic realm="syncwatch"'))
    if retry_after is not None:
        headers.append((b"retry-after", str(max(1, math.ceil(retry_after))).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _with_headers(send: Send, extra: tuple[tuple[str, str], ...]) -> Send:
    """http_server_config.headers added to every response."""
    encoded = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra]

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *encoded]}
        await send(message)

    return wrapped
