"""`syncwatch demo`: syncwatch against built-in simulated Timbal and Paragon APIs."""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from syncwatch import logs
from syncwatch.check import nagios_status, poll_and_evaluate, render_table
from syncwatch.config import Config, load_config
from syncwatch.simulator import SimConfig, SimulatorThread

# Simulated seconds per real second: a 1 h stall plays out in under a minute.
DEMO_TIME_SCALE = 120.0
DEMO_REFRESH = 5.0


def _keypair() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def demo_config(base_url: str, fleet: dict[str, Any], signing_key_file: Path) -> Config:
    """A config watching every tenant of the simulated fleet, minting Paragon tokens."""
    orgs = sorted({s["org_id"] for s in fleet["timbal"]})
    users = sorted({s["user_id"] for s in fleet["paragon"]})
    return load_config(
        None,
        daemon={"poll_interval": DEMO_REFRESH, "log_format": "console", "log_level": "warning"},
        timbal={"base_url": base_url, "api_key": "sim-timbal-key",
                "orgs": [{"id": o} for o in orgs]},
        paragon={
            "base_url": base_url,
            "project_id": "sim-project",
            "signing_key_file": str(signing_key_file),
            "users": users,
        },
        notifiers=[{"name": "console", "type": "console"}],
    )


def run_demo(duration: float | None, out: Any = None) -> int:
    """Start the simulator in-process and print the evaluated fleet every few seconds."""
    out = out or sys.stdout
    private, public = _keypair()
    with tempfile.TemporaryDirectory(prefix="syncwatch-demo-") as tmp:
        key_file = Path(tmp) / "paragon-signing-key.pem"
        key_file.write_bytes(private)
        key_file.chmod(0o600)
        sim = SimulatorThread(
            SimConfig(time_scale=DEMO_TIME_SCALE, churn=0.3, paragon_public_key_pem=public)
        )
        sim.start()
        try:
            fleet = httpx.get(f"{sim.base_url}/_sim/fleet", timeout=5).json()
            config = demo_config(sim.base_url, fleet, key_file)
            logs.configure("warning", "console")
            print(
                f"syncwatch demo: simulated Timbal + Paragon APIs at {sim.base_url} "
                f"(time runs {DEMO_TIME_SCALE:g}x faster); Ctrl-C to stop.",
                file=out,
            )
            return _loop(config, duration, out)
        finally:
            sim.stop()


def _loop(config: Config, duration: float | None, out: Any) -> int:
    deadline = None if duration is None else time.monotonic() + duration
    try:
        while True:
            report = asyncio.run(poll_and_evaluate(config))
            stamp = time.strftime("%H:%M:%S")
            print(f"\n── {stamp} ── {nagios_status(report).name}", file=out)
            print(render_table(report), file=out, flush=True)
            if deadline is not None and time.monotonic() + DEMO_REFRESH > deadline:
                return 0
            time.sleep(DEMO_REFRESH)
    except KeyboardInterrupt:
        return 0
