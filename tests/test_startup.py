"""`syncwatch run` that cannot start: exactly one stderr line naming the file or address, what
is wrong and what to do, and a documented sysexits code; never a traceback.

Every case starts a real `syncwatch run` process on a real broken file. The tests run as
root, so "unreadable" and "read-only" drop root's DAC override with `setpriv`, a read-only
file system is a read-only bind mount and a full disk a tiny tmpfs, both inside a private
mount namespace (`unshare -m`) that vanishes with the process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from syncwatch.demo import DEMO_LISTEN_PORT
from syncwatch.lifecycle import Transition
from syncwatch.startup import EX_CANTCREAT, EX_DATAERR, EX_IOERR, EX_NOPERM, EX_UNAVAILABLE
from syncwatch.state import SCHEMA_VERSION, StateStore
from tests.conftest import refused_port, start_syncwatch, toml_value, wait_until

NO_DAC = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--")


def _works(*cmd: str) -> bool:
    if shutil.which(cmd[0]) is None:
        return False
    return subprocess.run(cmd, capture_output=True, timeout=30, check=False).returncode == 0


CAN_DROP_DAC = _works(*NO_DAC, "true")
CAN_UNSHARE = _works("unshare", "-m", "sh", "-c", "mount -t tmpfs tmpfs /mnt")
needs_setpriv = pytest.mark.skipif(
    not CAN_DROP_DAC, reason="setpriv cannot drop CAP_DAC_OVERRIDE here - NOT TESTED"
)
needs_unshare = pytest.mark.skipif(
    not CAN_UNSHARE, reason="no private mount namespace (unshare -m, mount) - NOT TESTED"
)


def write_config(tmp_path: Path, state_path: Path, listen: str | None = None) -> Path:
    """A valid config; its upstream refuses connections (start-up never reaches it)."""
    path = tmp_path / "syncwatch.toml"
    path.write_text(
        f"""
[daemon]
listen = {toml_value(listen or "127.0.0.1:0")}
state_path = {toml_value(str(state_path))}
log_format = "json"
poll_interval = "1s"

[timbal]
base_url = "http://127.0.0.1:{refused_port()}"
api_key = "sim-timbal-key"
[[timbal.orgs]]
id = "org_1"
"""
    )
    return path


def start(config: Path, wrapper: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """`syncwatch run` expected to exit at start; the timeout is the deadline."""
    return subprocess.run(
        [*wrapper, sys.executable, "-m", "syncwatch", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_one_line(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    assert result.returncode == code, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def real_db(path: Path, tenants: int = 2000) -> Path:
    """A state database with some pages to damage: one failure-count row per tenant."""
    store = StateStore(path)
    store.commit_cycle(
        Transition(
            alerts={},
            failures={},
            events=[],
            changed=[],
            removed=[],
            failures_changed={("timbal", f"org_{i:05d}_{'x' * 40}"): 1 for i in range(tenants)},
        ),
        [],
    )
    store.close()  # a clean close checkpoints: everything is in the main file
    return path


# --- corrupt ----------------------------------------------------------------------------


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not SQLite " * 200)


def _truncated(path: Path) -> None:
    real_db(path)
    os.truncate(path, path.stat().st_size // 2)


def _damaged_page(path: Path) -> None:
    # The header and schema intact: only reading that table's pages finds the damage.
    real_db(path)
    with path.open("r+b") as db:
        db.seek(path.stat().st_size // 2)
        db.write(b"\xa5" * 8192)


def _newer_schema(path: Path) -> None:
    real_db(path, tenants=1)
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()


@dataclass(frozen=True)
class Broken:
    id: str
    make: Callable[[Path], None]
    says: str


CORRUPT = [
    Broken("not_a_database", _garbage, "not a usable SQLite database (file is not a database)"),
    Broken("truncated", _truncated, "database disk image is malformed"),
    Broken("damaged_page", _damaged_page, "corrupt"),
    Broken("newer_schema", _newer_schema, "newer than this syncwatch"),
]


@pytest.mark.parametrize("case", CORRUPT, ids=[c.id for c in CORRUPT])
def test_a_corrupt_database_is_one_line_and_exit_65(case: Broken, tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    case.make(db)
    before = db.read_bytes()
    line = assert_one_line(start(write_config(tmp_path, db)), EX_DATAERR, str(db), case.says)
    assert "move it" in line or "upgrade syncwatch" in line  # what to do
    assert db.read_bytes() == before  # refused, not "repaired"


# --- permissions and read-only ----------------------------------------------------------


@needs_setpriv
def test_an_unreadable_database_is_one_line_and_exit_77(tmp_path: Path) -> None:
    db = real_db(tmp_path / "state.db")
    db.chmod(0)
    result = start(write_config(tmp_path, db), NO_DAC)
    assert_one_line(result, EX_NOPERM, f"cannot read {db}", "Permission denied", "read and write")


@needs_setpriv
def test_a_read_only_database_file_is_one_line_and_exit_77(tmp_path: Path) -> None:
    db = real_db(tmp_path / "state.db")
    db.chmod(0o444)
    result = start(write_config(tmp_path, db), NO_DAC)
    assert_one_line(result, EX_NOPERM, f"{db} is read-only", "Permission denied")


@needs_setpriv
def test_a_read_only_state_directory_is_one_line_and_exit_77(tmp_path: Path) -> None:
    """SQLite needs to create state.db-wal and -shm beside the database."""
    directory = tmp_path / "state"
    directory.mkdir()
    db = real_db(directory / "state.db")
    directory.chmod(0o555)
    try:
        result = start(write_config(tmp_path, db), NO_DAC)
    finally:
        directory.chmod(0o755)
    assert_one_line(result, EX_NOPERM, str(db), f"cannot create files in {directory}")


@needs_unshare
def test_a_read_only_file_system_is_one_line_and_exit_77(tmp_path: Path) -> None:
    """What ProtectSystem=strict does to a state_path outside StateDirectory=."""
    directory = tmp_path / "state"
    directory.mkdir()
    db = real_db(directory / "state.db")
    remount = f"mount --bind {directory} {directory} && mount -o remount,ro,bind {directory}"
    result = start(
        write_config(tmp_path, db), ("unshare", "-m", "sh", "-c", f'{remount} && exec "$@"', "sh")
    )
    assert_one_line(result, EX_NOPERM, str(db), "Read-only file system", "StateDirectory=")


def test_a_state_path_that_is_a_directory_is_one_line_and_exit_73(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    db.mkdir()
    assert_one_line(start(write_config(tmp_path, db)), EX_CANTCREAT, f"{db} is a directory")


# --- full disk --------------------------------------------------------------------------


def _on_full_tmpfs(directory: Path, copy: Path | None = None) -> tuple[str, ...]:
    """A wrapper: a 1 MiB tmpfs on `directory`, `copy` put there, the rest filled up."""
    put = f"cp {copy} {directory}/ && " if copy else ""
    script = (
        f"mount -t tmpfs -o size=1m tmpfs {directory} && {put}"
        f'{{ dd if=/dev/zero of={directory}/filler bs=4k 2>/dev/null; exec "$@"; }}'
    )
    return ("unshare", "-m", "sh", "-c", script, "sh")


@needs_unshare
def test_a_full_disk_at_start_is_one_line_and_exit_74(tmp_path: Path) -> None:
    source = real_db(tmp_path / "state.db", tenants=200)
    directory = tmp_path / "full"
    directory.mkdir()
    db = directory / "state.db"
    result = start(write_config(tmp_path, db), _on_full_tmpfs(directory, source))
    assert_one_line(result, EX_IOERR, str(db), "the disk is full", "free some space")


@needs_unshare
def test_a_full_disk_for_a_new_database_is_one_line_and_exit_74(tmp_path: Path) -> None:
    directory = tmp_path / "full"
    directory.mkdir()
    db = directory / "state.db"
    result = start(write_config(tmp_path, db), _on_full_tmpfs(directory))
    assert_one_line(result, EX_IOERR, str(db), "the disk is full")


# --- the listen address -----------------------------------------------------------------


def test_a_taken_listen_port_is_one_line_and_exit_69(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        listen = f"127.0.0.1:{holder.getsockname()[1]}"
        db = tmp_path / "state.db"
        result = start(write_config(tmp_path, db, listen))
    assert_one_line(result, EX_UNAVAILABLE, f"daemon.listen {listen}", "Address already in use")
    assert not db.exists()  # bound before anything else: nothing was created


def test_a_listen_address_not_on_this_host_is_one_line_and_exit_69(tmp_path: Path) -> None:
    listen = "192.0.2.1:9875"  # TEST-NET-1: never an address of this host
    result = start(write_config(tmp_path, tmp_path / "state.db", listen))
    assert_one_line(
        result, EX_UNAVAILABLE, f"daemon.listen {listen}", "not an address of this host"
    )


# --- a disk that fills while running ----------------------------------------------------


@needs_unshare
def test_a_disk_that_fills_while_running_is_named_and_recovered_from(tmp_path: Path) -> None:
    """Each cycle writes (the unreachable tenant's failure count); a full disk keeps those
    writes in memory, the log names the file and what to do, cycles go on, and once space
    is freed everything is written."""
    directory = tmp_path / "state"
    directory.mkdir()
    db = directory / "state.db"
    config = write_config(tmp_path, db)
    config.write_text(config.read_text().replace('poll_interval = "1s"', 'poll_interval = "0.5s"'))
    mount = f'mount -t tmpfs -o size=2m tmpfs {directory} && exec "$@"'
    proc = start_syncwatch(
        ["run", "-c", str(config)],
        tmp_path / "daemon.log",
        wrapper=("unshare", "-m", "sh", "-c", mount, "sh"),
    )

    def in_namespace(script: str) -> None:
        # The tmpfs exists only in the daemon's mount namespace: reach it there.
        subprocess.run(
            ["nsenter", "-t", str(proc.popen.pid), "-m", "--", "sh", "-c", script],
            capture_output=True,
            timeout=30,
            check=False,
        )

    def events() -> list[dict[str, object]]:
        return [json.loads(line) for line in proc.output.splitlines()]

    def after(index: int, name: str) -> list[dict[str, object]]:
        assert proc.popen.poll() is None, proc.output
        return [e for e in events()[index:] if e["event"] == name]

    try:
        wait_until(lambda: [e for e in after(0, "cycle_complete") if e["rows_written"]])
        in_namespace(f"dd if=/dev/zero of={directory}/filler bs=4k 2>/dev/null; true")
        (degraded,) = wait_until(lambda: after(0, "state_degraded"), timeout=20)
        assert degraded["state_path"] == str(db)
        assert "the disk is full" in str(degraded["state_problem"])
        assert "free some space" in str(degraded["state_problem"])
        since = len(events())
        wait_until(lambda: len(after(since, "cycle_complete")) >= 2, timeout=20)  # goes on
        assert not after(0, "cycle_failed")
        in_namespace(f"rm {directory}/filler")
        (recovered,) = wait_until(lambda: after(since, "state_recovered"), timeout=20)
        assert int(str(recovered["writes_flushed"])) >= 1
    finally:
        assert proc.stop() == 0


# --- the demo starts the same way -------------------------------------------------------


def _hold(port: int) -> socket.socket:
    """Listen on `port`; if another test's demo has it, wait until that one lets go."""

    def bind() -> socket.socket | None:
        holder = socket.socket()
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            holder.bind(("127.0.0.1", port))
            holder.listen()
        except OSError:
            holder.close()
            return None
        return holder

    held: socket.socket = wait_until(bind, timeout=90, interval=0.2)
    return held


def test_the_demo_binds_first_and_serves_on_the_port_it_prints(tmp_path: Path) -> None:
    """With its usual port taken it binds another and prints that one: no bind race."""
    with _hold(DEMO_LISTEN_PORT):
        proc = start_syncwatch(["demo", "--duration", "60s"], tmp_path / "demo.log")
        try:
            found = wait_until(
                lambda: re.search(r"metrics: http://127\.0\.0\.1:(\d+)/metrics", proc.output),
                timeout=30,
            )
            port = int(found[1])
            assert port != DEMO_LISTEN_PORT
            wait_until(
                lambda: httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200,
                timeout=30,
            )
        finally:
            assert proc.stop() == 0
    assert "Traceback" not in proc.output


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_right_after_the_banner_is_a_clean_stop(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """Stopped while the daemon is still starting: exit 0 with its summary, never a kill."""
    proc = start_syncwatch(["demo", "--duration", "60s"], tmp_path / "demo.log")
    try:
        wait_until(lambda: "metrics: http://" in proc.output, timeout=30, interval=0.01)
    finally:
        code = proc.stop(sig)
    assert code == 0, proc.output
    assert "syncwatch demo: done." in proc.output
    assert "Traceback" not in proc.output
