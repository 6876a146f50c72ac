"""Probe: 1,100 idle connections against `syncwatch run` limited to 256 file descriptors.

    python -m benchmarks.listener_flood [--window 10]

Prints /healthz's answer and latency during the flood, what a 1 MiB request header gets,
the daemon's open descriptors, and its log over the window: bytes, lines, non-JSON lines.
The figures in docs/reliability.md ("Issue 13/14: start-up and the listener") come from it.
"""

from __future__ import annotations

import argparse
import os
import resource
import select
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.harness import bound_url, started_url

FD_LIMIT = 256
FLOOD = 1100


def _get(url: str, **kwargs: object) -> tuple[str, float]:
    started = time.monotonic()
    try:
        status = str(httpx.get(url, timeout=5, **kwargs).status_code)  # type: ignore[arg-type]
    except httpx.HTTPError as exc:
        status = type(exc).__name__
    return status, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=float, default=10.0, help="seconds of flood logged")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    # The upstream: a port bound but never listening, refused for the whole run.
    with tempfile.TemporaryDirectory() as tmp, socket.socket() as upstream:
        upstream.bind(("127.0.0.1", 0))
        config = Path(tmp) / "syncwatch.toml"
        config.write_text(
            f'[daemon]\nlisten = "127.0.0.1:0"\nstate_path = "{tmp}/state.db"\n'
            'log_format = "json"\npoll_interval = "1s"\n'
            f'[timbal]\nbase_url = "http://127.0.0.1:{upstream.getsockname()[1]}"\n'
            'api_key = "k-probe-123"\n[[timbal.orgs]]\nid = "org_1"\n'
        )
        log_path = Path(tmp) / "daemon.log"
        limit = ("prlimit", f"--nofile={FD_LIMIT}:{FD_LIMIT}", "--")
        with log_path.open("wb") as log:
            daemon = subprocess.Popen(
                [*limit, sys.executable, "-m", "syncwatch", "run", "-c", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        url = bound_url(daemon, log_path, started_url, "syncwatch run")
        port = int(url.rpartition(":")[2])
        deadline = time.monotonic() + 30
        while _get(f"{url}/healthz")[0] != "200" and time.monotonic() < deadline:
            time.sleep(0.1)  # polling the daemon's start with a deadline
        flood_started = time.monotonic()
        socks = []
        for _ in range(FLOOD):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            socks.append(sock)
        poller = select.poll()
        for sock in socks:
            poller.register(sock, select.POLLOUT)
        pending = len(socks)
        while pending and time.monotonic() < flood_started + 30:
            events = poller.poll(500)
            for fd, _ in events:
                poller.unregister(fd)
            pending -= len(events)
        health, latency = _get(f"{url}/healthz")
        big, _ = _get(f"{url}/healthz", headers={"X-Big": "a" * (1 << 20)})
        fds = len(os.listdir(f"/proc/{daemon.pid}/fd"))
        time.sleep(max(0.0, flood_started + args.window - time.monotonic()))  # the window
        data = log_path.read_bytes()
        for sock in socks:
            sock.close()
        daemon.terminate()
        daemon.wait(15)
    lines = data.splitlines()
    not_json = sum(1 for line in lines if not line.startswith(b"{"))
    print(
        f"{FLOOD} idle connections at RLIMIT_NOFILE {FD_LIMIT}: /healthz {health} in "
        f"{latency:.2f} s; 1 MiB header -> {big}; daemon fds {fds}; log over "
        f"{args.window:g} s: {len(data):,} bytes, {len(lines):,} lines, {not_json:,} not JSON"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
