"""What a standby replica costs, and how long a takeover takes: `python -m benchmarks.standby`.

Two `syncwatch run` replicas of one shard share a PostgreSQL database (a server of its own,
from Debian's package, as the tests start it; or `--state-url`) and poll a simulated fleet.
Over `--cycles` poll intervals it reads, from `/proc`, the CPU each replica used and, from
the simulator, the upstream requests made: the active's figures are what a standby that
polled too (to serve fresh /metrics) would cost, measured in the same run as the standby
that does not. Then it kills the active (`kill -9`) `--kills` times, each time starting a
new standby, and times the takeover: until the survivor says `syncwatch_leader 1`, and
until it has finished its first cycle (its shard's alerts loaded, the fleet polled).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import httpx

from benchmarks.harness import (
    QUICK,
    Daemon,
    Simulator,
    bound_url,
    config_toml,
    process,
    simulator,
    started_url,
    wait_for,
)
from syncwatch.simulator import rsa_keypair


def leader(url: str) -> bool:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return any(
        line.startswith("syncwatch_leader{") and line.endswith(" 1.0") for line in text.splitlines()
    )


def requests_made(sim: Simulator) -> int:
    counts = httpx.get(f"{sim.base_url}/_sim/requests", timeout=30).json()
    return sum(n for per_source in counts.values() for n in per_source.values())


@contextlib.contextmanager
def replica(config: Path, work: Path, name: str) -> Iterator[Daemon]:
    log = work / f"replica-{name}.log"
    with process(["run", "-c", str(config)], log) as proc:
        yield Daemon(proc, log, bound_url(proc, log, started_url, "syncwatch run"))


def shared_config(sim: Simulator, work: Path, state_url: str, poll_interval: float) -> Path:
    path = config_toml(
        sim, work, orgs=sim.orgs, users=sim.users, poll_interval=poll_interval, concurrency=64
    )
    lines = [
        f'state_url = "{state_url}"' if line.startswith("state_path") else line
        for line in path.read_text().splitlines()
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def cost(sim: Simulator, active: Daemon, standby: Daemon, cycles: int, poll: float) -> None:
    active.wait_cycles(2, timeout=600)  # past the first cycle's notifications
    httpx.delete(f"{sim.base_url}/_sim/requests", timeout=30)
    cpu = (active.cpu_seconds(), standby.cpu_seconds())
    started = time.monotonic()
    active.wait_cycles(2 + cycles, timeout=600 + cycles * poll * 4)
    elapsed = time.monotonic() - started
    used = (active.cpu_seconds() - cpu[0], standby.cpu_seconds() - cpu[1])
    per_cycle = requests_made(sim) / cycles
    done = active.cycles[2 : 2 + cycles]
    print(f"{len(sim.orgs)} orgs + {len(sim.users)} users, {done[0].syncs} syncs, every {poll:g}s")
    print(f"{'':24}{'CPU s / cycle':>15}{'CPU %':>8}{'upstream req / cycle':>22}")
    print(f"{'active (polls)':24}{used[0] / cycles:>15.3f}{100 * used[0] / elapsed:>8.1f}"
          f"{per_cycle:>22.0f}")  # fmt: skip
    print(f"{'standby (does not poll)':24}{used[1] / cycles:>15.3f}{100 * used[1] / elapsed:>8.1f}"
          f"{0:>22}")  # fmt: skip
    ratio = used[1] / used[0] if used[0] else 0.0
    print(f"standby / active CPU: {ratio:.3f}; a polling standby would add {per_cycle:.0f} "
          f"upstream requests and ~{used[0] / cycles:.3f} CPU s per cycle")  # fmt: skip
    print(f"active cycle: median {statistics.median(c.duration for c in done):.3f} s")


def takeovers(config: Path, work: Path, kills: int) -> None:
    to_leader: list[float] = []
    to_cycle: list[float] = []
    with contextlib.ExitStack() as stack:
        live = [stack.enter_context(replica(config, work, f"{i}")) for i in range(2)]
        for n in range(kills):
            active = wait_for(
                lambda: next((d for d in live if leader(d.url)), None), "a leader", 300
            )
            standby = next(d for d in live if d is not active)
            wait_for(lambda s=standby: not leader(s.url), "a standby", 60)  # type: ignore[misc]
            standby.poll_log()
            seen = len(standby.cycles)
            active.wait_cycles(len(active.cycles) + 1, timeout=600)  # mid-run, not at its start
            active.proc.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            active.proc.wait(10)
            live.remove(active)
            wait_for(lambda s=standby: leader(s.url), "the takeover", 300)  # type: ignore[misc]
            to_leader.append(time.monotonic() - killed)
            standby.wait_cycles(seen + 1, timeout=600)
            to_cycle.append(standby.cycles[seen].at - killed)
            live.append(stack.enter_context(replica(config, work, f"new{n}")))
    print(f"{kills} kill -9 of the active: leader after max {max(to_leader):.2f} s, "
          f"median {statistics.median(to_leader):.2f} s; first cycle done after max "
          f"{max(to_cycle):.2f} s, median {statistics.median(to_cycle):.2f} s")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.standby", description=__doc__)
    parser.add_argument("--orgs", type=int, default=200, help="Timbal orgs (100 syncs each)")
    parser.add_argument("--users", type=int, default=2000, help="Paragon users (3 syncs each)")
    parser.add_argument("--poll-interval", type=float, default=5.0)
    parser.add_argument("--cycles", type=int, default=6)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--state-url", default="", help="postgresql://… (else a server of its own)")
    args = parser.parse_args(argv)
    size = replace(QUICK, syncs_per_org=100, syncs_per_user=3)
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="syncwatch-standby-")))
        private, public = rsa_keypair()
        (work / "private.pem").write_bytes(private)
        (work / "public.pem").write_bytes(public)
        state_url = args.state_url
        if not state_url:
            from tests.postgres import postgres_server  # noqa: PLC0415 - only without --state-url

            state_url = stack.enter_context(postgres_server()).new_database()
        sim = stack.enter_context(simulator(work, size, orgs=args.orgs, users=args.users))
        config = shared_config(sim, work, state_url, args.poll_interval)
        with replica(config, work, "a") as active:
            wait_for(lambda: leader(active.url), "the first leader", 300)
            with replica(config, work, "b") as standby:
                wait_for(lambda: httpx.get(f"{standby.url}/readyz").is_success, "standby", 60)
                cost(sim, active, standby, args.cycles, args.poll_interval)
        takeovers(config, work, args.kills)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
