"""The tests' own ports are race-free: a refused port and a stopped sink's port stay ours."""

from __future__ import annotations

import errno
import socket

import httpx
import pytest

from tests.capture import CaptureServer
from tests.conftest import refused_port


def taken(port: int) -> bool:
    """Whether another process asking for exactly `port` (as a stale free_port() did) fails."""
    with socket.socket() as other:
        try:
            other.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            return True
    return False


def test_a_refused_port_refuses_and_nobody_else_can_bind_it() -> None:
    port = refused_port()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
    assert taken(port)


def test_a_stopped_capture_server_keeps_its_port_until_it_serves_again() -> None:
    with CaptureServer() as sink:
        port = sink.port
        sink.stop()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{sink.url}/down", timeout=5)  # the outage: connections refused
        assert taken(port)
        sink.start()
        assert sink.port == port
        assert httpx.get(f"{sink.url}/back", timeout=5).status_code == 200
    assert not taken(port)  # closed: released
