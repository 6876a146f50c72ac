"""The HTTP listener under hostile clients: an idle flood, slow and huge request heads.

The daemon runs as a real process with RLIMIT_NOFILE lowered to 256 (soft and hard, so its
own raise to the hard limit cannot lift it): a flood of a thousand connections is then
cheap, and is four times what the descriptors allow.
"""

from __future__ import annotations

import json
import math
import os
import resource
import select
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from syncwatch.server import HEAD_TIMEOUT, MAX_HEAD_BYTES, ListenerLimits
from tests.conftest import Daemon, Keys, SimProcess, launch, wait_until

FD_LIMIT = 256
FLOOD = 1100


@pytest.fixture(scope="module")
def bounded(
    tmp_path_factory: pytest.TempPathFactory, simulator: SimProcess, rsa_keys: Keys
) -> Iterator[Daemon]:
    daemon = launch(
        tmp_path_factory.mktemp("listener"),
        simulator,
        rsa_keys,
        wrapper=("prlimit", f"--nofile={FD_LIMIT}:{FD_LIMIT}", "--"),
        poll_interval="2s",
    )
    yield daemon
    daemon.proc.stop()


def address(daemon: Daemon) -> tuple[str, int]:
    host, _, port = daemon.url.removeprefix("http://").rpartition(":")
    return host, int(port)


def log_events(daemon: Daemon) -> list[dict[str, object]]:
    """Every line of the daemon's log, each of which must be one JSON object."""
    return [json.loads(line) for line in daemon.proc.output.splitlines()]


def open_idle(target: tuple[str, int], count: int) -> list[socket.socket]:
    """`count` connections that never send a byte, each settled (connected or refused)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 1000), hard))
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(target)
        socks.append(sock)
    pending = {s.fileno(): s for s in socks}
    poller = select.poll()
    for fd in pending:
        poller.register(fd, select.POLLOUT)
    deadline = time.monotonic() + 30
    while pending and time.monotonic() < deadline:
        for fd, _ in poller.poll(500):
            poller.unregister(fd)
            pending.pop(fd)
    assert not pending, f"{len(pending)} connection attempts never settled"
    return socks


def head_request(target: tuple[str, int], head: bytes) -> bytes:
    """Send a raw request head in one write; the server's answer, up to its close."""
    with socket.create_connection(target, timeout=10) as sock:
        sock.sendall(head)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def seconds_until_closed(sock: socket.socket, trickle: bytes | None, limit: float) -> float:
    """Time until the server closes `sock`, sending `trickle` every 0.25 s meanwhile."""
    started = time.monotonic()
    sock.settimeout(0.25)
    while time.monotonic() - started < limit:
        try:
            if sock.recv(1024) == b"":
                break
        except TimeoutError:
            if trickle:
                try:
                    sock.sendall(trickle)  # a slowloris: always one byte more
                except (BrokenPipeError, ConnectionResetError):
                    break
        except ConnectionResetError:
            break
    return time.monotonic() - started


def test_1100_idle_connections_leave_healthz_answering_within_a_second(bounded: Daemon) -> None:
    socks = open_idle(address(bounded), FLOOD)
    try:
        for _ in range(5):
            started = time.monotonic()
            assert bounded.get("/healthz").status_code == 200
            assert time.monotonic() - started < 1.0
        open_fds = len(os.listdir(f"/proc/{bounded.proc.popen.pid}/fd"))
        assert open_fds < FD_LIMIT
        bounded.wait_cycles(1)  # outbound polls still get their descriptors
    finally:
        for sock in socks:
            sock.close()
    events = log_events(bounded)  # only JSON
    assert not [e for e in events if "out of system resource" in str(e["event"])]
    assert len(bounded.proc.output) < 256 * 1024


def test_an_idle_connection_is_closed_after_the_head_timeout(bounded: Daemon) -> None:
    with socket.create_connection(address(bounded), timeout=5) as sock:
        elapsed = seconds_until_closed(sock, None, HEAD_TIMEOUT + 10)
    assert HEAD_TIMEOUT - 0.5 < elapsed < HEAD_TIMEOUT + 2


def test_a_slow_header_client_is_disconnected_after_the_head_timeout(bounded: Daemon) -> None:
    with socket.create_connection(address(bounded), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: syncwatch\r\nX-Slow: ")
        elapsed = seconds_until_closed(sock, b"a", HEAD_TIMEOUT + 10)
    assert HEAD_TIMEOUT - 0.5 < elapsed < HEAD_TIMEOUT + 2


def test_a_1_mib_header_is_refused_with_431(bounded: Daemon) -> None:
    try:
        response = bounded.get("/healthz", headers={"X-Big": "a" * (1 << 20)})
    except httpx.TransportError:
        pass  # closed while the client was still sending: refused all the same
    else:
        assert response.status_code == 431
    assert bounded.get("/healthz").status_code == 200


def test_a_too_big_head_arriving_in_one_read_is_refused_with_431(bounded: Daemon) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: syncwatch\r\nX-Big: " + b"a" * (MAX_HEAD_BYTES + 1024)
    answer = head_request(address(bounded), head + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]


def test_an_ordinary_8_kib_header_is_served(bounded: Daemon) -> None:
    assert bounded.get("/healthz", headers={"X-Ok": "a" * 8192}).status_code == 200


def test_a_flood_of_bad_requests_logs_a_few_json_lines(bounded: Daemon) -> None:
    """uvicorn warns once per malformed request; the log gets a handful of those, as JSON."""

    def invalid() -> int:
        return sum(e["event"] == "Invalid HTTP request received." for e in log_events(bounded))

    before = invalid()
    started = time.monotonic()
    for _ in range(300):
        head_request(address(bounded), b"NOT HTTP AT ALL\r\n\r\n")
    wait_until(lambda: invalid() > before)
    # A burst of 10, then one token per 10 s of however long the flood took.
    assert invalid() - before <= 10 + math.ceil((time.monotonic() - started) / 10)
    warned = [e for e in log_events(bounded) if e["event"] == "Invalid HTTP request received."]
    assert warned[-1]["logger"] == "uvicorn.error"
    assert warned[-1]["level"] == "warning"


@pytest.mark.parametrize(
    ("fd_limit", "outbound", "max_connections", "backlog"),
    [
        (1024, 32, 464, 116),  # systemd's default soft limit
        (8192, 32, 1024, 128),  # the unit's LimitNOFILE: capped
        (256, 32, 80, 20),  # the tests above
        (64, 32, 4, 4),  # too few descriptors: still a working minimum
    ],
)
def test_listener_limits_leave_the_outbound_connections_their_descriptors(
    fd_limit: int, outbound: int, max_connections: int, backlog: int
) -> None:
    limits = ListenerLimits.for_fd_limit(fd_limit, outbound)
    assert (limits.max_connections, limits.backlog) == (max_connections, backlog)
