"""Peak RSS of one poll whose answer is huge: `python -m benchmarks.body_probe`.

A raw server in another process answers one Timbal org with a 200 MB body (with and without
Content-Length), then with a 2 MiB gzip body that inflates to 2 GiB. Each poll runs in a
fresh child process that reports its RSS before and its peak RSS (VmHWM) after, so the
figures are the poller's alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path

from syncwatch.http import make_transport
from syncwatch.settings import load_config
from syncwatch.sources import Poller

BODY = 200 * 1000 * 1000
BOMB = 2 << 30


def _bomb() -> bytes:
    out = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    block = bytes(1 << 24)
    return b"".join(out.compress(block) for _ in range(BOMB // len(block))) + out.flush()


async def _serve(port_file: Path) -> None:
    bomb = _bomb()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            if b"/orgs/bomb/" in head:
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n"
                    + f"Content-Length: {len(bomb)}\r\n\r\n".encode()
                    + bomb
                )
            else:
                # Without Content-Length (read until close) the reader cannot refuse up front.
                length = b"" if b"/orgs/big-unsized/" in head else b"Content-Length: %d\r\n" % BODY
                writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n" + length + b"\r\n")
                chunk = b" " * (1 << 20)
                for _ in range(BODY // len(chunk)):
                    writer.write(chunk)
                    await writer.drain()
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    await asyncio.to_thread(port_file.write_text, str(server.sockets[0].getsockname()[1]))
    await server.serve_forever()


def _rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(field)


def _poll(base_url: str, org: str) -> None:
    config = load_config(
        None,
        daemon={"request_timeout": 120, "retries": 0},
        timbal={"base_url": base_url, "api_key": "k", "orgs": [{"id": org}]},
    )
    before = _rss_mib("VmRSS")

    async def run() -> str:
        async with make_transport(max_connections=2) as transport:
            [listing] = await Poller(config, transport).poll()
        return "ok" if listing.error is None else str(listing.error.reason)

    outcome = asyncio.run(run())
    print(json.dumps({"before": before, "peak": _rss_mib("VmHWM"), "outcome": outcome}))


def main() -> None:
    port_file = Path(f"/tmp/syncwatch-body-probe-{os.getpid()}")
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.body_probe", "serve", str(port_file)]
    )
    try:
        while not port_file.exists() or not port_file.read_text():
            if server.poll() is not None:
                raise SystemExit("server failed")
            time.sleep(0.1)
        base_url = f"http://127.0.0.1:{port_file.read_text()}"
        cases = (
            ("200 MB, Content-Length", "big"),
            ("200 MB, no length", "big-unsized"),
            ("2 MiB gzip -> 2 GiB", "bomb"),
        )
        for name, org in cases:
            out = subprocess.run(
                [sys.executable, "-m", "benchmarks.body_probe", "poll", base_url, org],
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"{name:<22} RSS {result['before']:.0f} -> {result['peak']:.0f} MiB (peak), "
                f"tenant: {result['outcome']}"
            )
    finally:
        server.terminate()
        server.wait(10)
        port_file.unlink(missing_ok=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        asyncio.run(_serve(Path(sys.argv[2])))
    elif sys.argv[1:2] == ["poll"]:
        _poll(sys.argv[2], sys.argv[3])
    else:
        main()
