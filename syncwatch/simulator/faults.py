"""Injected faults: their kinds, the queue they wait in, and what each does to an answer."""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import struct
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from syncwatch.simulator.wire import (
    HOUR,
    JSON_TYPE,
    PARAGON,
    TIMBAL,
    is_int,
    json_response,
    utc,
)

# The scope key under which the app keeps the server's own `send` (see `_abort_connection`).
RAW_SEND: Final = "syncwatch.simulator.raw_send"

_HTTP_FAULTS: Final = {
    "http_500": (500, "internal server error"),
    "http_502": (502, "bad gateway"),
    "http_503": (503, "service unavailable"),
    "http_429": (429, "rate limit exceeded"),
    "http_401": (401, "unauthorized"),
    "http_403": (403, "forbidden"),
}
FAULT_KINDS: Final = frozenset(
    {
        *_HTTP_FAULTS,
        "timeout",
        "slow_body",
        "reset",
        "truncated",
        "html",
        "wrong_shape",
        "poison",
        # An upstream that answers with the whole listing whatever the filter asked for.
        "ignore_filter",
        # A listing that repeats its first sync id with a worse record (a paging bug).
        "duplicate",
    }
)
# The first variant of each source is the default.
POISON_VARIANTS: Final = {
    TIMBAL: ("interval_negative", "interval_zero", "bad_date", "missing_id"),
    PARAGON: ("missing_id", "bad_date", "missing_status"),
}
_DATE_FIELD: Final = {TIMBAL: "created_at", PARAGON: "dateCreated"}
_FAULT_KEYS: Final = frozenset(
    {"source", "tenant", "kind", "count", "retry_after", "delay", "status", "variant"}
)
_DEFAULT_TIMEOUT_DELAY: Final = 30.0
_DEFAULT_SLOW_BODY_DELAY: Final = 10.0
_SLOW_BODY_CHUNKS: Final = 8


@dataclass(slots=True)
class Fault:
    source: str
    tenant: str
    kind: str
    remaining: int | None = None
    retry_after: float | None = None
    delay: float | None = None
    status: int | None = None
    variant: str | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "tenant": self.tenant,
            "kind": self.kind,
            "count": self.remaining,
            "retry_after": self.retry_after,
            "delay": self.delay,
            "status": self.status,
            "variant": self.variant,
        }


def _number(payload: Mapping[str, Any], key: str) -> float | None:
    value = payload.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{key} must be a number >= 0")
    return float(value)


def parse_fault(payload: Any) -> Fault:
    if not isinstance(payload, dict):
        raise ValueError("the body must be a JSON object")
    unknown = sorted(set(payload) - _FAULT_KEYS)
    if unknown:
        raise ValueError(f"unknown keys {unknown}; allowed: {sorted(_FAULT_KEYS)}")
    source = payload.get("source")
    if source not in (TIMBAL, PARAGON):
        raise ValueError("source must be 'timbal' or 'paragon'")
    kind = payload.get("kind")
    if kind not in FAULT_KINDS:
        raise ValueError(f"kind must be one of {sorted(FAULT_KINDS)}")
    tenant = payload.get("tenant", "*")
    if not isinstance(tenant, str) or not tenant:
        raise ValueError("tenant must be an org id, a user id or '*'")
    count = payload.get("count")
    if count is not None and (not is_int(count) or count < 1):
        raise ValueError("count must be a positive integer (or absent: until cleared)")
    status = payload.get("status")
    if status is not None and (not is_int(status) or not 200 <= status <= 599):
        raise ValueError("status must be an HTTP status code")
    variant = payload.get("variant")
    if variant is not None and variant not in POISON_VARIANTS[source]:
        raise ValueError(f"variant for {source} must be one of {list(POISON_VARIANTS[source])}")
    return Fault(
        source=source,
        tenant=tenant,
        kind=kind,
        remaining=count,
        retry_after=_number(payload, "retry_after"),
        delay=_number(payload, "delay"),
        status=status,
        variant=variant,
    )


def _poison(views: list[dict[str, Any]], source: str, variant: str) -> str | None:
    """Break the first record in place; returns its sync id (None for an empty listing)."""
    if not views:
        return None
    record = views[0]
    sync_id = str(record.get("id", ""))
    if variant == "interval_negative":
        record["interval_secs"] = -5
    elif variant == "interval_zero":
        record["interval_secs"] = 0
    elif variant == "bad_date":
        record[_DATE_FIELD[source]] = "not-a-date"
    elif variant == "missing_id":
        record.pop("id", None)
    elif variant == "missing_status":
        record.pop("status", None)
    return sync_id


def _duplicate(views: list[dict[str, Any]], source: str, now: int) -> str | None:
    """Append a worse copy of the first record: Timbal 10 intervals stale, Paragon ERRORED."""
    if not views:
        return None
    copy = dict(views[0])
    if source == TIMBAL:
        interval = copy.get("interval_secs")
        lag = 10 * interval if is_int(interval) and interval > 0 else 10 * HOUR
        copy.update(seconds_since_success=lag, last_success_at=utc(now - lag), last_state="failed")
    else:
        copy.update(status="ERRORED", reason="duplicated by the simulator")
    views.append(copy)
    return str(copy.get("id", ""))


def _html_page(status: int) -> bytes:
    if status == 200:
        title, text = "Scheduled maintenance", "We'll be back shortly."
    else:
        title, text = f"{status} Bad Gateway", "nginx"
    return (
        f"<!DOCTYPE html>\n<html><head><title>{title}</title></head>"
        f"<body><center><h1>{title}</h1></center><hr><center>{text}</center></body></html>\n"
    ).encode()


async def _abort_connection(request: Request) -> bool:
    """Reset the client's TCP connection with no response; False when the server hides it."""
    send = request.scope.get(RAW_SEND)
    # uvicorn's ASGI `send` is a method of the request cycle, which holds the transport.
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None or not hasattr(transport, "abort"):
        return False
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Linger 0 turns the close into a RST: the client sees "connection reset by peer".
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    # Let uvicorn see the connection lost, so it discards our response instead of logging.
    for _ in range(3):
        await asyncio.sleep(0)
    return True


def spoil(views: list[dict[str, Any]], fault: Fault, now: int) -> str | None:
    """Apply a poison or duplicate fault to records in place; the sync id it changed."""
    if fault.kind == "duplicate":
        return _duplicate(views, fault.source, now)
    return _poison(views, fault.source, fault.variant or POISON_VARIANTS[fault.source][0])


class FaultQueue:
    """The faults in force, oldest first, and the answers they turn a normal one into."""

    def __init__(self) -> None:
        self._queue: list[Fault] = []
        # One event per event loop: an app may be served by more than one (e.g. TestClient).
        self._closing: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    def add(self, fault: Fault) -> None:
        self._queue.append(fault)

    def clear(self) -> None:
        self._queue.clear()

    def describe(self) -> list[dict[str, Any]]:
        return [f.describe() for f in self._queue]

    def take(self, source: str, tenant: str) -> Fault | None:
        """The oldest matching fault (faults queue up); a counted one is used up here."""
        if not self._queue:
            return None
        index = next(
            (
                i
                for i, f in enumerate(self._queue)
                if f.source == source and f.tenant in ("*", tenant)
            ),
            None,
        )
        if index is None:
            return None
        fault = self._queue[index]
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                del self._queue[index]
        return fault

    def begin_shutdown(self) -> None:
        """Wake every fault that is sleeping, so a server shutdown stays bounded."""
        self._closing_event().set()

    def _closing_event(self) -> asyncio.Event:
        loop = asyncio.get_running_loop()
        if self._closing is None or self._closing[0] is not loop:
            self._closing = (loop, asyncio.Event())
        return self._closing[1]

    async def _pause(self, seconds: float) -> None:
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing_event().wait(), seconds)

    async def respond(
        self,
        request: Request,
        fault: Fault | None,
        status: int,
        body: bytes,
        poisoned: str | None = None,
    ) -> Response:
        """The normal answer, or what the fault turns it into."""
        if fault is None:
            return Response(body, status, media_type=JSON_TYPE)
        headers = {"X-Sim-Fault": fault.kind}
        kind = fault.kind
        if kind in _HTTP_FAULTS:
            code, detail = _HTTP_FAULTS[kind]
            if kind == "http_429" or (kind == "http_503" and fault.retry_after is not None):
                retry_after = 1.0 if fault.retry_after is None else fault.retry_after
                headers["Retry-After"] = str(math.ceil(retry_after))
            return json_response(code, {"detail": detail}, headers)
        if kind == "timeout":
            delay = _DEFAULT_TIMEOUT_DELAY if fault.delay is None else fault.delay
            await self._pause(delay)
            return Response(body, status, headers, media_type=JSON_TYPE)
        if kind == "slow_body":
            delay = _DEFAULT_SLOW_BODY_DELAY if fault.delay is None else fault.delay
            return StreamingResponse(self._trickle(body, delay), status, headers, JSON_TYPE)
        if kind == "reset":
            if await _abort_connection(request):
                return Response(b"", 500)  # the connection is gone; uvicorn drops this
            # Not served by uvicorn (no transport to abort): the closest is a cut-off body.
            headers["Connection"] = "close"
            return Response(body[: len(body) // 2], status, headers, media_type=JSON_TYPE)
        if kind == "truncated":
            return Response(body[: len(body) // 2], status, headers, media_type=JSON_TYPE)
        if kind == "html":
            code = fault.status or 502
            return Response(_html_page(code), code, headers, media_type="text/html")
        if kind == "wrong_shape":
            return Response(b'{"items":[]}', 200, headers, media_type=JSON_TYPE)
        # poison / duplicate: the caller already changed one record; say which.
        if poisoned is not None:
            headers["X-Sim-Duplicated" if kind == "duplicate" else "X-Sim-Poisoned"] = poisoned
        return Response(body, status, headers, media_type=JSON_TYPE)

    async def _trickle(self, body: bytes, seconds: float) -> AsyncIterator[bytes]:
        size = max(1, math.ceil(len(body) / _SLOW_BODY_CHUNKS))
        chunks = [body[i : i + size] for i in range(0, len(body), size)]
        for chunk in chunks:
            await self._pause(seconds / len(chunks))
            yield chunk
