"""HTTP endpoints: /metrics, /healthz, /readyz, /api/v1/alerts."""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from syncwatch.lifecycle import Alert
from syncwatch.metrics import Telemetry


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


def build_app(telemetry: Telemetry, liveness: Liveness) -> Starlette:
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

    async def index(_: Request) -> Response:
        return JSONResponse({"endpoints": ["/metrics", "/healthz", "/readyz", "/api/v1/alerts"]})

    return Starlette(
        routes=[
            Route("/", index),
            Route("/metrics", metrics),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/api/v1/alerts", alerts),
        ]
    )
