"""A raw TCP server for tests: answers each request path with scripted bytes, valid HTTP or not.

aiohttp (tests/capture.py) cannot send a 9 KB header, a garbage status line or broken chunked
encoding; this writes whatever bytes it is given. It runs asyncio in its own thread on
127.0.0.1, so in-process async tests and `syncwatch run` subprocesses can both use it.
"""

from __future__ import annotations

import asyncio
import gzip
import threading
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

FIXTURES = Path(__file__).parent / "fixtures"


@dataclass(frozen=True)
class Stall:
    """Accept, read the request, never answer (until the server stops)."""


# An answer builder gets the request line (e.g. b"POST /hook/tok HTTP/1.1"): hostile
# receivers echo it, URL token and all.
Answer = bytes | Callable[[bytes], bytes] | Stall


@dataclass(frozen=True)
class Stream:
    """A valid head, then `total` bytes of body made of `chunk` repeated, written as they go."""

    head: bytes
    chunk: bytes
    total: int


def http(
    body: bytes = b"",
    status: str = "200 OK",
    headers: Mapping[str, str] | None = None,
) -> bytes:
    """A well-formed HTTP/1.1 answer (the connection closes after it)."""
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def timbal_listing() -> bytes:
    """A valid Timbal listing: one fresh sync, one far past its interval (an alert)."""
    return (FIXTURES / "timbal_listing.json").read_bytes()


def gzip_bomb(size: int) -> bytes:
    """`size` zero bytes gzip-compressed (about size / 1000 on the wire)."""
    out = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    block = bytes(1 << 20)
    parts = [out.compress(block) for _ in range(size >> 20)]
    parts.append(out.compress(bytes(size & ((1 << 20) - 1))))
    parts.append(out.flush())
    return b"".join(parts)


def gzipped(body: bytes) -> bytes:
    return gzip.compress(body)


class HostileServer:
    """Answers by the longest matching path prefix in `routes`, else `default`."""

    def __init__(self, routes: Mapping[str, Answer | Stream], default: Answer | Stream) -> None:
        self.routes = dict(routes)
        self.default = default
        self.request_lines: list[bytes] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    def start(self) -> HostileServer:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="hostile-server", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        self.port = asyncio.run_coroutine_threadsafe(self._serve(), loop).result(timeout=10)
        return self

    async def _serve(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        loop, thread, server = self._loop, self._thread, self._server
        if loop is None or thread is None:
            return

        async def close() -> None:
            if server is not None:
                server.close()
            for writer in list(self._writers):
                writer.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._loop = self._thread = self._server = None

    def __enter__(self) -> HostileServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self.port, "start() the server first"
        return f"http://127.0.0.1:{self.port}"

    def _answer_for(self, path: str) -> Answer | Stream:
        matches = [p for p in self.routes if path.startswith(p)]
        return self.routes[max(matches, key=len)] if matches else self.default

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await self._answer(reader, writer)
        except asyncio.CancelledError:
            pass  # stop(): a stalled or streaming answer ends here, quietly
        finally:
            self._writers.discard(writer)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        request_line = head.split(b"\r\n", 1)[0]
        self.request_lines.append(request_line)
        parts = request_line.split(b" ")
        path = parts[1].decode(errors="replace") if len(parts) > 1 else "/"
        answer = self._answer_for(path)
        try:
            if isinstance(answer, Stall):
                await asyncio.sleep(3600)
            elif isinstance(answer, Stream):
                writer.write(answer.head)
                sent = 0
                while sent < answer.total:
                    writer.write(answer.chunk)
                    sent += len(answer.chunk)
                    await writer.drain()
            else:
                writer.write(answer(request_line) if callable(answer) else answer)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


# --- hostile answers ----------------------------------------------------------------------


def _huge_header(line: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nX-Echo: " + line + b"a" * 9000 + b"\r\nContent-Length: 2\r\n\r\n{}"


def _garbage_status(line: bytes) -> bytes:
    return b"HTTZ/9.9 garbage " + line + b"\r\n\r\n"


def _many_headers(_line: bytes) -> bytes:
    headers = b"".join(b"X-%d: y\r\n" % i for i in range(100_000))
    return b"HTTP/1.1 200 OK\r\n" + headers + b"Content-Length: 2\r\n\r\n{}"


# name → (the bytes, the reason a tenant answered so must fail with)
HOSTILE: dict[str, tuple[Answer, str]] = {
    "huge_header": (_huge_header, "invalid_response"),
    "huge_status_line": (b"HTTP/1.1 200 " + b"O" * 9000 + b"\r\n\r\n", "invalid_response"),
    "100k_headers": (_many_headers, "invalid_response"),
    "garbage_status_line": (_garbage_status, "invalid_response"),
    "http_0_9_junk": (b'{"syncs": []}\n', "invalid_response"),
    "binary_junk": (bytes(range(256)) * 4, "invalid_response"),
    "invalid_chunked": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\nhello\r\n0\r\n\r\n",
        "invalid_response",
    ),
    "bad_content_length": (
        b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n{}",
        "invalid_response",
    ),
    "duplicate_content_length": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        "invalid_response",
    ),
    "header_without_colon": (
        b"HTTP/1.1 200 OK\r\nNoColonHere\r\nContent-Length: 2\r\n\r\n{}",
        "invalid_response",
    ),
    "nul_in_header": (
        b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\n{}",
        "invalid_response",
    ),
    "closed_without_answer": (b"", "connect_error"),
    "body_shorter_than_content_length": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}",
        "connect_error",
    ),
    "unsupported_content_encoding": (
        http(b"{}", headers={"Content-Encoding": "br"}),
        "invalid_response",
    ),
    "truncated_gzip": (
        http(gzipped(b'{"syncs": []}')[:-12], headers={"Content-Encoding": "gzip"}),
        "invalid_response",
    ),
}


def hostile_cases() -> Iterator[tuple[str, Answer, str]]:
    for name, (answer, reason) in HOSTILE.items():
        yield name, answer, reason
