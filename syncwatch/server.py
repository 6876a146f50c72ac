"""HTTP endpoints: /metrics, /healthz, /readyz, /api/v1/alerts; the bounded listener."""

from __future__ import annotations

import asyncio
import errno
import functools
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from syncwatch.lifecycle import Alert
from syncwatch.maintenance import Window, window_json
from syncwatch.metrics import Telemetry
from syncwatch.startup import EX_NOPERM, EX_UNAVAILABLE, StartupError
from syncwatch.webauth import may_write

__all__ = ["may_write"]  # for the write endpoints: see syncwatch.webauth.may_write


@dataclass
class Liveness:
    """What /healthz and /readyz judge by; the daemon updates it after every cycle."""

    poll_interval: float
    problem: Callable[[], str] = str  # a degraded part ("" when none): the state store
    clock: Callable[[], float] = time.monotonic
    started: float = field(default_factory=time.monotonic)
    last_cycle: float | None = None

    def cycle_done(self) -> None:
        self.last_cycle = self.clock()

    @property
    def ready(self) -> bool:
        return self.last_cycle is not None

    @property
    def healthy(self) -> bool:
        """A cycle completed within 3 x poll_interval (counted from start before the first)."""
        reference = self.last_cycle if self.last_cycle is not None else self.started
        return self.clock() - reference <= 3 * self.poll_interval


def alert_json(alert: Alert) -> dict[str, object]:
    return {
        "labels": alert.labels,
        "annotations": alert.annotations,
        "state": alert.state,
        "severity": str(alert.severity),
        "activeAt": alert.active_since.isoformat(),
        "startsAt": (alert.fired_at or alert.active_since).isoformat(),
        "fingerprint": alert.fingerprint,
    }


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header admits gzip (Prometheus always sends it)."""
    for item in accept_encoding.split(","):
        name, _, params = item.partition(";")
        if name.strip().lower() in ("gzip", "*"):
            q = params.strip().removeprefix("q=").strip()
            return not q or _positive(q)
    return False


def _positive(q: str) -> bool:
    try:
        return float(q) > 0
    except ValueError:
        return False


def wants_html(accept: str) -> bool:
    """A browser lists text/html before JSON or `*/*`; curl, httpx and JSON clients do not."""
    for item in accept.split(","):
        kind = item.split(";", 1)[0].strip().lower()
        if kind in ("text/html", "application/xhtml+xml"):
            return True
        if kind in ("application/json", "*/*"):
            return False
    return False


def _utc_now() -> datetime:
    return datetime.now(UTC)


def build_app(
    telemetry: Telemetry,
    liveness: Liveness,
    extra: Sequence[BaseRoute] = (),
    *,
    maintenance: Callable[[], Sequence[Window]] = tuple,
    now: Callable[[], datetime] = _utc_now,
    html_index: Callable[[Request], Awaitable[Response]] | None = None,
) -> Starlette:
    """The app; `extra` mounts more routes (the Alertmanager API of `amapi`), `maintenance`
    gives the configured windows (as of the last reload); `html_index` answers `/` to a
    browser (Accept: text/html), every other client keeps the JSON list."""

    async def metrics(request: Request) -> Response:
        # Rendering a large fleet is CPU work: keep it off the loop that runs the cycle.
        gzip = accepts_gzip(request.headers.get("accept-encoding", ""))
        chunks, content_type = await run_in_threadpool(
            functools.partial(telemetry.render_chunks, request.headers.get("accept", ""), gzip=gzip)
        )

        async def stream() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        headers = {"Content-Length": str(sum(len(c) for c in chunks)), "Vary": "Accept-Encoding"}
        if gzip:
            headers["Content-Encoding"] = "gzip"
        return StreamingResponse(stream(), media_type=content_type, headers=headers)

    async def healthz(_: Request) -> Response:
        if liveness.healthy:
            # Degraded is still alive: a restart cannot unlock a file or free a disk, so
            # the answer stays 200 and syncwatch_state_up (and its rule) raise the alarm.
            problem = liveness.problem()
            return PlainTextResponse(f"degraded: state store: {problem}\n" if problem else "ok\n")
        return PlainTextResponse("no cycle completed within 3 x poll_interval\n", 503)

    async def readyz(_: Request) -> Response:
        if liveness.ready:
            return PlainTextResponse("ok\n")
        return PlainTextResponse("first cycle not complete\n", 503)

    # The body changes only with the snapshot: built once per cycle, not once per request.
    alerts_page: tuple[tuple[Alert, ...] | None, bytes] = (None, b"")

    async def alerts(_: Request) -> Response:
        nonlocal alerts_page
        current = telemetry.snapshot.alerts
        if alerts_page[0] is not current:
            alerts_page = (current, orjson.dumps([alert_json(a) for a in current]))
        return Response(alerts_page[1], media_type="application/json")

    listed = ["/metrics", "/healthz", "/readyz", "/api/v1/alerts", "/api/v1/maintenance"]
    listed += dict.fromkeys(r.path for r in extra if isinstance(r, Route))

    async def maintenance_windows(_: Request) -> Response:
        at = now()
        return Response(
            orjson.dumps([window_json(w, at) for w in maintenance()]), media_type="application/json"
        )

    async def index(request: Request) -> Response:
        if html_index is not None and wants_html(request.headers.get("accept", "")):
            return await html_index(request)
        return JSONResponse({"endpoints": listed})

    async def favicon(_: Request) -> Response:
        # Browsers ask for it on every site: no icon, said plainly (and cached), not a 404.
        return Response(status_code=204, headers={"Cache-Control": "max-age=86400"})

    return Starlette(
        routes=[
            Route("/", index),
            Route("/favicon.ico", favicon),
            Route("/metrics", metrics),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/api/v1/alerts", alerts),
            Route("/api/v1/maintenance", maintenance_windows),
            *extra,
        ]
    )


# --- the listener: bounded, so that no client can take the daemon's file descriptors ------

HEAD_TIMEOUT = 5.0  # s from connect (or the last response) to a complete request head
KEEP_ALIVE_TIMEOUT = 5  # s an idle keep-alive connection is kept (uvicorn)
MAX_HEAD_BYTES = 16 * 1024  # request line and headers; a bigger head is answered 431
MAX_CONNECTIONS = 1024  # scrapers and probes are a handful; this is far beyond them
FD_RESERVE = 64  # SQLite, the event loop, logging, the listener itself, …


@dataclass(frozen=True, slots=True)
class ListenerLimits:
    """How many connections and accepts per wake-up the fd limit leaves room for."""

    max_connections: int
    backlog: int

    @classmethod
    def for_fd_limit(cls, fd_limit: int, outbound: int) -> ListenerLimits:
        # Outbound polls and deliveries come first: a flood of clients must not starve them.
        spare = max(0, fd_limit - outbound - FD_RESERVE)
        # asyncio accepts up to `backlog` sockets per wake-up before a protocol sees them;
        # half the spare for live connections leaves the rest for those bursts.
        return cls(
            max_connections=max(4, min(MAX_CONNECTIONS, spare // 2)),
            backlog=max(4, min(128, spare // 8)),
        )


def bind_listener(listen: str, backlog: int = 128) -> list[socket.socket]:
    """Bind and listen on `daemon.listen` now, so a taken port is one line and an exit code.

    Port 0 takes any free port (one per address the host resolves to): `bound_address`.
    """
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(
            host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise StartupError(
            f"daemon.listen {listen}: cannot resolve {host!r} ({exc.strerror}); "
            "use an IP address of this host, e.g. 0.0.0.0:9875",
            EX_UNAVAILABLE,
        ) from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            # As asyncio does: a restart may bind while old connections are in TIME_WAIT.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise _listen_error(listen, exc) from None
    return sockets


def bound_address(sockets: list[socket.socket]) -> str:
    """Where the sockets listen, `HOST:PORT[,HOST:PORT]`: port 0 resolved to the real one."""
    parts = []
    for sock in sockets:
        host, port = sock.getsockname()[:2]
        parts.append(f"[{host}]:{port}" if sock.family == socket.AF_INET6 else f"{host}:{port}")
    return ",".join(parts)


def _listen_error(listen: str, exc: OSError) -> StartupError:
    if exc.errno == errno.EADDRINUSE:
        hint = "another process listens there (ss -ltnp); stop it or set daemon.listen"
    elif exc.errno == errno.EADDRNOTAVAIL:
        hint = "that is not an address of this host; set daemon.listen, e.g. 0.0.0.0:9875"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        hint = "ports below 1024 need CAP_NET_BIND_SERVICE; use a higher port"
        return StartupError(f"daemon.listen {listen}: {exc.strerror}; {hint}", EX_NOPERM)
    else:
        hint = "set daemon.listen"
    return StartupError(f"daemon.listen {listen}: {exc.strerror}; {hint}", EX_UNAVAILABLE)


_TOO_LARGE = b"request header fields too large\n"
_TOO_LARGE_RESPONSE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: " + str(len(_TOO_LARGE)).encode() + b"\r\n"
    b"connection: close\r\n\r\n" + _TOO_LARGE
)


async def _head_too_large(_scope: Any, _receive: Any, send: Any) -> None:
    """The ASGI answer to a request whose head arrived whole but too big."""
    await send(
        {
            "type": "http.response.start",
            "status": 431,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": _TOO_LARGE})


class _Guard:
    """What the connections of one listener share: the cap and who is waiting for a request."""

    def __init__(
        self, max_connections: int, admit: Callable[[asyncio.Transport], bool] | None = None
    ) -> None:
        self.max_connections = max_connections
        self.admit = admit  # e.g. client_allowed_sans: checked once the handshake is done
        self.live: set[BoundedHttpProtocol] = set()
        # Insertion-ordered: the connection that has waited longest for a request comes first.
        self.waiting: dict[BoundedHttpProtocol, None] = {}


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's protocol with what it lacks: a request-head deadline, a head size cap,
    and a connection cap that closes the longest-idle connection to admit a new one."""

    guard: ClassVar[_Guard]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._awaiting_head = False
        self._head_bytes = self._head_size = 0
        self.guard.live.add(self)
        self._await_head()
        # Evict idle connections (never one serving a request); the newest goes last.
        while len(self.guard.live) > self.guard.max_connections and self.guard.waiting:
            next(iter(self.guard.waiting)).evict()
        if self.guard.admit is not None and not self.guard.admit(transport):
            self.evict()

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()
        super().connection_lost(exc)

    def evict(self) -> None:
        self._forget()
        self.transport.close()

    def _forget(self) -> None:
        self._stop_waiting()
        self.guard.live.discard(self)

    def _await_head(self) -> None:
        self._awaiting_head = True
        self._head_bytes = self._head_size = 0
        self.guard.waiting.pop(self, None)
        self.guard.waiting[self] = None
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(HEAD_TIMEOUT, self._head_timed_out)

    def _stop_waiting(self) -> None:
        self._awaiting_head = False
        self.guard.waiting.pop(self, None)
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        # Idle or slow-header (slowloris) client: it has had HEAD_TIMEOUT for a few bytes.
        self._head_timer = None
        if self._awaiting_head:
            self.evict()

    def data_received(self, data: bytes) -> None:
        if self._awaiting_head:
            self._head_bytes += len(data)
        super().data_received(data)
        # Still in the head after all these bytes: refuse before buffering any more.
        if self._awaiting_head and self._head_bytes > MAX_HEAD_BYTES:
            self._stop_waiting()
            if not self.transport.is_closing():
                self.transport.write(_TOO_LARGE_RESPONSE)
                self.evict()

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._stop_waiting()
        if self._head_size <= MAX_HEAD_BYTES:
            super().on_headers_complete()
            return
        # The head came whole within one read: answer 431 through the normal cycle.
        app, self.app = self.app, _head_too_large
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)
        super().on_response_complete()
        if not pipelined and not self.transport.is_closing():
            self._await_head()


def server_config(
    app: ASGIApp,
    limits: ListenerLimits,
    tls: ssl.SSLContext | None = None,
    admit: Callable[[asyncio.Transport], bool] | None = None,
) -> uvicorn.Config:
    """uvicorn for pre-bound sockets: bounded, logging through ours, no websockets; HTTPS
    with `tls` (daemon.web_config_file's tls_server_config)."""
    guard = _Guard(limits.max_connections, admit)
    protocol = type("BoundedHttpProtocol", (BoundedHttpProtocol,), {"guard": guard})
    return uvicorn.Config(
        app,
        http=protocol,
        ws="none",  # an upgrade would hand the connection to a protocol without the guard
        log_config=None,  # records propagate to the root handler of syncwatch.logs
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_keep_alive=KEEP_ALIVE_TIMEOUT,
        # No limit_concurrency: it counts connections already accepted and answers 503
        # without freeing their descriptors; the guard bounds connections before that.
        backlog=limits.backlog,
        ssl_context_factory=None if tls is None else (lambda _config, _default: tls),
    )
