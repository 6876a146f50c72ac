"""A real PostgreSQL server for the tests, from Debian's `postgresql` package.

`initdb` + `pg_ctl` in a temporary directory, listening on a free port of 127.0.0.1 and on a
unix socket inside that directory; stopped and deleted afterwards. PostgreSQL refuses to
run as root (CI runs as root), so there the server runs as the `postgres` user the package
creates, through `runuser`. The binaries are not on PATH: they live in
/usr/lib/postgresql/<version>/bin.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

INSTALL = "apt-get install postgresql"
USER = "syncwatch"
# Distinctive: a test greps every output for it.
PASSWORD = "pg-S3CRET-dsn-5b9e27c1"


def binaries() -> Path | None:
    """The newest installed /usr/lib/postgresql/<version>/bin holding initdb, or None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    return Path(found[-1]).parent if found else None


def require_postgres() -> Path:
    """The binaries' directory; skip without them, but fail under CI=true (.ci/run installs)."""
    found = binaries()
    if found is None:
        message = f"PostgreSQL is not installed ({INSTALL}) - NOT TESTED"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must install it (.ci/run)")
        pytest.skip(message)
    return found


def _free_port() -> int:
    # PostgreSQL cannot be told "port 0"; a port just free is retried if taken meanwhile.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One cluster: `start()`, `stop()` (and start again: the outage tests), `destroy()`."""

    def __init__(self) -> None:
        self.bin = require_postgres()
        self.root = Path(tempfile.mkdtemp(prefix="syncwatch-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.log = self.root / "server.log"
        self.port = 0
        self._databases = itertools.count(1)
        self._as: list[str] = []
        if os.geteuid() == 0:
            # initdb: "cannot be run as root"; the package's postgres user runs the server.
            self._as = ["runuser", "-u", "postgres", "--"]
            os.chmod(self.root, 0o755)
            shutil.chown(self.root, "postgres", "postgres")
        self.sockets.mkdir()
        if self._as:
            shutil.chown(self.sockets, "postgres", "postgres")
        pwfile = self.root / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if self._as:
            shutil.chown(pwfile, "postgres", "postgres")
        try:
            self._init(pwfile)
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise

    def _init(self, pwfile: Path) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        pwfile.unlink()

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*self._as, str(self.bin / tool), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=self.root,
        )
        if result.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise AssertionError(f"{tool} failed:\n{result.stdout}{result.stderr}\n{log}")
        return result

    def start(self) -> None:
        for attempt in range(5):
            self.port = self.port if self.port and attempt == 0 else _free_port()
            options = (
                f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 "
                # Test data: speed over durability (the server is never killed, only stopped).
                "-c fsync=off -c full_page_writes=off -c max_connections=60"
            )
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w",
                          "-t", "60", "start")  # fmt: skip
            except AssertionError:
                if attempt == 4:
                    raise
                continue
            return

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(AssertionError, OSError, subprocess.TimeoutExpired):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres", *, password: bool = True) -> str:
        secret = f":{PASSWORD}" if password else ""
        return f"postgresql://{USER}{secret}@127.0.0.1:{self.port}/{database}?sslmode=disable"

    def sql(self, statement: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            conn.execute(statement)

    def new_database(self) -> str:
        """An empty database of its own for one test: no state leaks between tests."""
        name = f"t{os.getpid()}_{next(self._databases)}"
        self.sql(f"CREATE DATABASE {name} TEMPLATE template0")
        return self.url(name)


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.destroy()
