"""`syncwatch demo`: the whole daemon against built-in simulated Timbal and Paragon APIs."""

from __future__ import annotations

import socket
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

import httpx

from syncwatch.daemon import Daemon, catch_early_stop, run_daemon
from syncwatch.server import bind_listener
from syncwatch.settings import Config, load_config
from syncwatch.simulator import ScaledClock, SimConfig, SimulatorThread, rsa_keypair
from syncwatch.startup import StartupError

# Simulated seconds per real second: an hour-long stall plays out in half a minute.
DEMO_TIME_SCALE = 120.0
DEMO_POLL_INTERVAL = 3.0
DEMO_LISTEN_PORT = 9875
DEMO_REFRESH = 5  # the page's auto-refresh, seconds: ten simulated minutes


def _listen() -> list[socket.socket]:
    """The usual port when it is free, else any free one: a demo should just start."""
    try:
        return bind_listener(f"127.0.0.1:{DEMO_LISTEN_PORT}")
    except StartupError:
        return bind_listener("127.0.0.1:0")


def demo_config(
    base_url: str, fleet: dict[str, Any], workdir: Path, signing_key_file: Path, port: int
) -> Config:
    """Watch every simulated tenant; mint Paragon tokens; alert on the console."""
    return load_config(
        None,
        daemon={
            "poll_interval": DEMO_POLL_INTERVAL,
            "listen": f"127.0.0.1:{port}",
            "state_path": str(workdir / "state.db"),
            "log_format": "console",
            "log_level": "warning",
        },
        timbal={
            "base_url": base_url,
            "api_key": "sim-timbal-key",
            "orgs": [{"id": o} for o in fleet["orgs"]],
        },
        paragon={
            "base_url": base_url,
            "project_id": "sim-project",
            "signing_key_file": str(signing_key_file),
            "users": fleet["users"],
        },
        # In simulated time: re-notify a still-firing alert every 2 real minutes.
        alerting={"repeat_interval": "4h"},
        notifiers=[{"name": "console", "type": "console"}],
    )


def demo_summary(daemon: Daemon) -> str:
    """The closing line: what the console printed, and what is still firing."""
    # The console notifier tallies the lines it printed by their word (FIRING, ESCALATED…).
    tally = getattr(daemon.dispatcher.notifiers.get("console"), "counts", None)
    counts: Counter[str] = tally if isinstance(tally, Counter) else Counter()
    firing = sum(1 for a in daemon.engine.alerts.values() if a.firing)
    told = ", ".join(
        f"{counts[word]} {label}"
        for word, label in (
            ("FIRING", "fired"),
            ("ESCALATED", "escalated"),
            ("DE-ESCALATED", "de-escalated"),
            ("REPEAT", "repeated"),
            ("RESOLVED", "resolved"),
        )
        if counts[word] or word in ("FIRING", "RESOLVED")
    )
    return f"\nsyncwatch demo: done. {told}; {firing} still firing."


def run_demo(duration: float | None, out: TextIO | None = None) -> int:
    """Start the simulator in-process and run the daemon against it."""
    out = out or sys.stdout
    catch_early_stop()  # a SIGTERM just after the banner stops it cleanly, with its summary
    private, public = rsa_keypair()
    # The daemon and the simulator share one compressed clock, so ages agree.
    clock = ScaledClock(DEMO_TIME_SCALE)
    with tempfile.TemporaryDirectory(prefix="syncwatch-demo-") as tmp:
        workdir = Path(tmp)
        key_file = workdir / "paragon-signing-key.pem"
        key_file.write_bytes(private)
        key_file.chmod(0o600)
        sim = SimulatorThread(
            SimConfig(
                time_scale=DEMO_TIME_SCALE,
                churn=0.3,
                # Histories count from the demo's start: every run tells the same story.
                epoch=int(clock.wall()),
                paragon_public_key_pem=public,
            ),
            clock=clock,
        )
        sim.start()
        try:
            fleet = httpx.get(f"{sim.base_url}/_sim/fleet", timeout=5).json()
            # Bound here and handed over: the port printed is the port served, no race.
            sockets = _listen()
            port = int(sockets[0].getsockname()[1])
            config = demo_config(sim.base_url, fleet, workdir, key_file, port)
            syncs = len(fleet["timbal"]) + len(fleet["paragon"])
            print(
                f"syncwatch demo: watching {syncs} simulated syncs of {len(fleet['orgs'])} "
                f"Timbal orgs and {len(fleet['users'])} Paragon users at {sim.base_url}\n"
                f"  time runs {DEMO_TIME_SCALE:g}x faster; polling every "
                f"{DEMO_POLL_INTERVAL:g}s; alerts print below as they fire and resolve.\n"
                "  Times in alert lines and /api/v1/alerts are simulated time (from now, "
                f"{DEMO_TIME_SCALE:g}x);\n  /metrics timestamps are real time.\n"
                f"  status page: http://127.0.0.1:{port}/?refresh={DEMO_REFRESH}  (open it "
                f"in a browser; it refreshes itself every {DEMO_REFRESH}s)\n"
                f"  metrics: http://127.0.0.1:{port}/metrics\n"
                f"  alerts:  http://127.0.0.1:{port}/api/v1/alerts\n"
                "  Ctrl-C to stop.\n",
                file=out,
                flush=True,
            )
            return run_daemon(
                config,
                None,
                clock=clock,
                sockets=sockets,
                duration=duration,
                after=lambda daemon: print(demo_summary(daemon), file=out, flush=True),
            )
        finally:
            sim.stop()
