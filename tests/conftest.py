"""Shared fixtures: real processes and servers on 127.0.0.1, polled with deadlines."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from syncwatch.config.sections import PostgresTarget
from syncwatch.simulator import rsa_keypair
from tests.postgres import PostgresServer, postgres_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="run long soak and kill loops")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# Environment that load_config reads besides SYNCWATCH_*: systemd's directories.
ENV_OWNED = ("CREDENTIALS_DIRECTORY", "STATE_DIRECTORY")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No SYNCWATCH_* or systemd directories leak in, and no ./syncwatch.toml is found."""
    for name in list(os.environ):
        if name.startswith("SYNCWATCH_") or name in ENV_OWNED:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def require_tool(name: str, install: str) -> str:
    """The path of a tool the test checks us with; skip without it, but fail under CI=true.

    `install` says how to get it (`apt-get install prometheus`, `pip install ruff`).
    """
    path = os.pathsep.join((str(Path(sys.executable).parent), os.environ.get("PATH", "")))
    found = shutil.which(name, path=path)
    if found is None:
        message = f"{name} is not installed ({install}) - NOT TESTED"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must install it (.ci/run)")
        pytest.skip(message)
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's headless Chromium under Playwright (no Playwright browser download).

    Outside CI a missing browser or Playwright skips; under CI=true it fails. The pages are
    opened with `tests/browsing.py`'s `open_page`.
    """
    executable = require_tool("chromium", "apt-get install chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        message = "playwright is not installed (pip install playwright) - NOT TESTED"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must install it (the test extra)")
        pytest.skip(message)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server per test process (xdist worker); skipped without the package."""
    with postgres_server() as server:
        yield server


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    """The URL (with its password) of an empty database of this test's own."""
    return postgres.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def state_target(request: pytest.FixtureRequest, tmp_path: Path) -> Path | PostgresTarget:
    """The state database, once per backend: a SQLite file not yet made
    and an empty PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "state.db"
    return PostgresTarget(SecretStr(request.getfixturevalue("pg_url")))


_REFUSING: list[socket.socket] = []  # held until the test process exits


def refused_port() -> int:
    """A loopback port that refuses connections until this test process exits, race-free.

    Its socket is bound (nobody else can bind the port, and the kernel never hands it out
    for port 0 or as a client's source port) but never listens, so a connect gets RST.
    No SO_REUSEADDR: a process that asks for exactly this number fails to bind it.
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    _REFUSING.append(sock)
    return int(sock.getsockname()[1])


def wait_until(check: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Poll `check` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except (httpx.HTTPError, OSError) as exc:
            last_exc = exc
        else:
            if result:
                return result
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last error: {last_exc})")


@dataclass
class Proc:
    """A `python -m syncwatch …` subprocess with its output in a file."""

    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)
            raise


def start_syncwatch(
    args: list[str],
    log_path: Path,
    env: dict[str, str] | None = None,
    wrapper: Sequence[str] = (),
) -> Proc:
    """`wrapper` runs it under another command that execs it (prlimit, setpriv, unshare)."""
    # A developer's own systemd session must not leak in; tests pass NOTIFY_SOCKET explicitly.
    full_env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    full_env.update(env or {})
    with log_path.open("wb") as out:
        popen = subprocess.Popen(
            [*wrapper, sys.executable, "-m", "syncwatch", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full_env,
        )
    return Proc(popen, log_path)


@dataclass(frozen=True)
class Keys:
    private_pem: bytes
    public_pem: bytes
    private_path: Path
    public_path: Path


@pytest.fixture(scope="session")
def rsa_keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    """One RS256 key pair: syncwatch signs Paragon user tokens, the simulator verifies."""
    private, public = rsa_keypair()
    directory = tmp_path_factory.mktemp("keys")
    (directory / "paragon.pem").write_bytes(private)
    (directory / "paragon.pub").write_bytes(public)
    return Keys(private, public, directory / "paragon.pem", directory / "paragon.pub")


@dataclass
class SimProcess:
    proc: Proc
    base_url: str

    def control(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=10)

    def fleet(self) -> dict[str, Any]:
        with self.control() as client:
            data: dict[str, Any] = client.get("/_sim/fleet").raise_for_status().json()
            return data

    def reset(self) -> None:
        with self.control() as client:
            client.delete("/_sim/faults").raise_for_status()
            client.delete("/_sim/mutate").raise_for_status()
            client.delete("/_sim/requests").raise_for_status()


SIM_BANNER = re.compile(r"syncwatch simulate: Timbal and Paragon APIs at (http://\S+)")


def start_simulator(tmp_path: Path, keys: Keys, *extra: str) -> SimProcess:
    """`syncwatch simulate` on a port the kernel picks, read back from its banner (no race)."""
    log = tmp_path / f"simulator-{time.monotonic_ns()}.log"
    proc = start_syncwatch(
        [
            "simulate",
            "--listen",
            "127.0.0.1:0",
            "--paragon-public-key",
            str(keys.public_path),
            *extra,
        ],
        log,
    )

    def announced() -> str | None:
        if proc.popen.poll() is not None:
            raise AssertionError(f"simulator exited early:\n{proc.output}")
        match = SIM_BANNER.search(proc.output)
        return match[1] if match else None

    base_url: str = wait_until(announced)
    return SimProcess(proc, base_url)


@pytest.fixture(scope="session")
def simulator(tmp_path_factory: pytest.TempPathFactory, rsa_keys: Keys) -> Iterator[SimProcess]:
    """`syncwatch simulate` in its own process: a static fleet (no churn), seed 7."""
    sim = start_simulator(
        tmp_path_factory.mktemp("sim"),
        rsa_keys,
        "--orgs",
        "3",
        "--syncs-per-org",
        "12",
        "--users",
        "3",
        "--seed",
        "7",
        "--churn",
        "0",
    )
    yield sim
    sim.proc.stop()


@pytest.fixture
def sim(simulator: SimProcess) -> Iterator[SimProcess]:
    """The session simulator, with faults, mutations and request counts cleared after use."""
    simulator.reset()
    yield simulator
    simulator.reset()


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f'"{k}" = {toml_value(v)}' for k, v in value.items()) + " }"
    raise TypeError(value)


def sim_config_toml(
    sim: SimProcess,
    keys: Keys,
    *,
    state_path: Path,
    listen: str,
    poll_interval: str = "1s",
    request_timeout: str = "5s",
    extra: str = "",
    daemon_extra: str = "",
    orgs: list[str] | None = None,
    users: list[str] | None = None,
    state_url: str | None = None,
) -> str:
    """A config watching the simulated fleet; `extra` appends tables (e.g. notifiers).
    `state_url` (a PostgreSQL URL) replaces `state_path`."""
    fleet = sim.fleet()
    orgs = orgs if orgs is not None else sorted({s["org_id"] for s in fleet["timbal"]})
    users = users if users is not None else sorted({s["user_id"] for s in fleet["paragon"]})
    org_tables = "\n".join(f"[[timbal.orgs]]\nid = {toml_value(o)}" for o in orgs)
    state_line = (
        f"state_url = {toml_value(state_url)}"
        if state_url
        else f"state_path = {toml_value(str(state_path))}"
    )
    return f"""
[daemon]
poll_interval = {toml_value(poll_interval)}
listen = {toml_value(listen)}
{state_line}
request_timeout = {toml_value(request_timeout)}
retries = 0
log_format = "json"
log_level = "debug"
{daemon_extra}

[timbal]
base_url = {toml_value(sim.base_url)}
api_key = "sim-timbal-key"
{org_tables}

[paragon]
base_url = {toml_value(sim.base_url)}
project_id = "sim-project"
signing_key_file = {toml_value(str(keys.private_path))}
users = {toml_value(users)}

{extra}
"""


@dataclass
class Daemon:
    proc: Proc
    url: str
    config_path: Path

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        # Generous: a loaded machine (or libfaketime) may be slow; this bounds, not measures.
        return httpx.get(f"{self.url}{path}", timeout=20, **kwargs)

    def metrics(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        text = self.get("/metrics").raise_for_status().text
        out: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out.setdefault(sample.name, []).append((sample.labels, sample.value))
        return out

    def cycles(self) -> float:
        for labels, value in self.metrics().get("syncwatch_cycle_duration_seconds_count", []):
            if not labels:
                return value
        return 0.0

    def wait_cycles(self, n: int = 1, timeout: float = 20) -> None:
        start = self.cycles()
        wait_until(lambda: self.cycles() >= start + n, timeout=timeout)


def daemon_url(proc: Proc, timeout: float = 30) -> str:
    """The URL a `syncwatch run` serves, from its `started` log line (the port 0 resolved)."""

    def announced() -> str | None:
        if proc.popen.poll() is not None:
            raise AssertionError(f"daemon exited early ({proc.popen.returncode}):\n{proc.output}")
        for line in proc.output.splitlines():
            event = json.loads(line) if line.startswith("{") and '"started"' in line else {}
            if event.get("event") == "started":
                return f"http://{str(event['listen']).split(',')[0]}"
        return None

    url: str = wait_until(announced, timeout=timeout)
    return url


def launch(
    tmp_path: Path,
    sim: SimProcess,
    keys: Keys,
    *,
    env: dict[str, str] | None = None,
    wrapper: Sequence[str] = (),
    **config: Any,
) -> Daemon:
    """`syncwatch run` on a port the kernel picks (read back from its log), awaited on /readyz."""
    config_path = tmp_path / "syncwatch.toml"
    config_path.write_text(
        sim_config_toml(sim, keys, state_path=tmp_path / "state.db", listen="127.0.0.1:0", **config)
    )
    proc = start_syncwatch(
        ["run", "-c", str(config_path)], tmp_path / "daemon.log", env=env, wrapper=wrapper
    )
    daemon = Daemon(proc, daemon_url(proc), config_path)

    def ready() -> bool:
        if proc.popen.poll() is not None:
            raise AssertionError(f"daemon exited early ({proc.popen.returncode}):\n{proc.output}")
        return daemon.get("/readyz").status_code == 200

    wait_until(ready, timeout=30)
    return daemon


# Prometheus and Alertmanager (exporter-toolkit) log the address they really bound.
LISTENING_ON = re.compile(r'msg="Listening on" address=(\S+)')


@contextmanager
def ready_process(args: list[str], log_path: Path, timeout: float = 60) -> Iterator[str]:
    """A Prometheus-family server: started, awaited on `/-/ready`, always stopped; yields url.

    `args` give it `--web.listen-address=127.0.0.1:0`: the port is the kernel's pick, read
    back from its log, so no other process can take it first.
    """
    with log_path.open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)

    def alive() -> None:
        if proc.poll() is not None:
            raise AssertionError(f"{args[0]} exited early:\n{log_path.read_text()}")

    def announced() -> str | None:
        alive()
        match = LISTENING_ON.search(log_path.read_text(errors="replace"))
        return f"http://{match[1]}" if match else None

    def ready() -> bool:
        alive()
        return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200

    try:
        url: str = wait_until(announced, timeout=timeout)
        wait_until(ready, timeout=timeout)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
