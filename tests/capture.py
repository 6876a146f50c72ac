"""A real HTTP capture server for tests: records every request, answers as scripted.

It runs aiohttp in its own thread and event loop on 127.0.0.1 (an OS-chosen port), so the
same server serves in-process async tests and `syncwatch run` / `test-notify` subprocesses.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy


@dataclass(frozen=True)
class Reply:
    """One scripted answer; `delay` (seconds) is waited before answering; `after` is called
    the moment the answer has been written to the socket (e.g. to kill the sender)."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | str = b"ok"
    delay: float = 0.0
    after: Callable[[], None] | None = None


@dataclass(frozen=True)
class Captured:
    """One request as the server saw it."""

    method: str
    path: str
    query: str
    headers: CIMultiDictProxy[str]
    body: bytes
    received_at: float  # time.time()

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


class CaptureServer:
    """Records requests in arrival order; answers from a queue of replies, then `default`."""

    def __init__(self, default: Reply | None = None) -> None:
        self.default = default or Reply()
        self._replies: deque[Reply] = deque()
        self._requests: list[Captured] = []
        self._cond = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._held: socket.socket | None = None  # the port, bound but not listening, while down
        self.port = 0

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> CaptureServer:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="capture-server", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        self.port = asyncio.run_coroutine_threadsafe(self._serve(), loop).result(timeout=10)
        self._release()
        return self

    async def _serve(self) -> int:
        # Large enough for a 500-alert storm; the default 1 MiB would answer 413.
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # A short shutdown timeout: stop() must not wait out a scripted delay.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        # After a stop(), start() binds the same port again: a sink back from an outage.
        # (SO_REUSEADDR, as asyncio sets it, shares the port with the holder until then.)
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        return int(self._runner.addresses[0][1])

    def stop(self) -> None:
        """Down: connections are refused until start(), which serves on the same port again.

        The port stays bound (not listening) meanwhile, so no other process can take it;
        close() releases it.
        """
        loop, thread, runner = self._loop, self._thread, self._runner
        if loop is None or thread is None:
            return
        if runner is not None:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        self._hold()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._loop = self._thread = self._runner = None

    def close(self) -> None:
        """Stopped for good: the port is released."""
        self.stop()
        self._release()

    def _hold(self) -> None:
        held = socket.socket()
        # As asyncio sets it, so that start() can bind beside the holder; a port bound with
        # it is still never handed out for another process's port 0.
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.bind(("127.0.0.1", self.port))
        self._held = held

    def _release(self) -> None:
        if self._held is not None:
            self._held.close()
            self._held = None

    def __enter__(self) -> CaptureServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def url(self) -> str:
        assert self.port, "start() the capture server first"
        return f"http://127.0.0.1:{self.port}"

    # --- scripting and inspection ----------------------------------------------------------

    def reply(
        self,
        status: int = 200,
        body: bytes | str = b"ok",
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
        after: Callable[[], None] | None = None,
    ) -> None:
        """Queue one answer; requests beyond the queue get `default`."""
        with self._cond:
            self._replies.append(Reply(status, dict(headers or {}), body, delay, after))

    @property
    def requests(self) -> list[Captured]:
        with self._cond:
            return list(self._requests)

    def clear(self) -> None:
        with self._cond:
            self._requests.clear()
            self._replies.clear()

    def wait_for(
        self,
        n: int,
        timeout: float = 10.0,
        where: Callable[[Captured], bool] | None = None,
    ) -> list[Captured]:
        """The first `n` requests (matching `where`), or fail at the deadline."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                matching = [r for r in self._requests if where is None or where(r)]
                if len(matching) >= n:
                    return matching[:n]
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [f"{r.method} {r.path}" for r in self._requests]
                    raise AssertionError(
                        f"capture server: {len(matching)} of {n} requests within {timeout}s "
                        f"(all received: {seen})"
                    )
                self._cond.wait(left)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        with self._cond:
            self._requests.append(
                Captured(
                    method=request.method,
                    path=request.path,
                    query=request.query_string,
                    headers=CIMultiDictProxy(CIMultiDict(request.headers)),
                    body=body,
                    received_at=time.time(),
                )
            )
            reply = self._replies.popleft() if self._replies else self.default
            self._cond.notify_all()
        if reply.delay:
            await asyncio.sleep(reply.delay)
        payload = reply.body.encode() if isinstance(reply.body, str) else reply.body
        response = web.Response(status=reply.status, headers=dict(reply.headers), body=payload)
        if reply.after is not None:
            await response.prepare(request)
            await response.write_eof()
            reply.after()
        return response
