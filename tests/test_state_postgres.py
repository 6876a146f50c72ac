"""The state database on PostgreSQL: a real server from Debian's package, started by the suite.

While the server is down the daemon goes on: it polls, serves /metrics, says
`syncwatch_state_up 0`, delivers from memory without repeating itself, and writes
everything once the server is back. The URL's password, user and host never show in a
log line, a page, a metric or an error.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from pydantic import SecretStr

from syncwatch.config.sections import PostgresTarget
from syncwatch.startup import EX_NOPERM, EX_TEMPFAIL, StartupError
from syncwatch.state import StateStore
from syncwatch.store import Store
from tests.capture import CaptureServer
from tests.conftest import Keys, SimProcess, launch, refused_port, wait_until
from tests.postgres import PASSWORD, USER, PostgresServer, postgres_server
from tests.test_crash import _flip
from tests.test_runtime import queued
from tests.test_state_faults import delivery_ids, nothing, notified, state_up


def target(url: str) -> PostgresTarget:
    return PostgresTarget(SecretStr(url))


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    """A server of this test's own, to stop and start (the shared one serves other tests)."""
    with postgres_server() as server:
        yield server


def assert_hidden(where: str, text: str, server: PostgresServer) -> None:
    """No password, user, host or port of the URL in `text` (the host as libpq quotes it:
    the daemon itself listens on 127.0.0.1 too)."""
    quoted = ('"127.0.0.1"', '\\"127.0.0.1\\"', f'"{USER}"', f'\\"{USER}\\"')
    for secret in (PASSWORD, f"{USER}@", f":{server.port}", f"port {server.port}", *quoted):
        assert secret not in text, f"{where} shows {secret!r}:\n{text[:3000]}"


# --- opening ------------------------------------------------------------------------------


def test_a_wrong_password_is_one_line_naming_no_credential(postgres: PostgresServer) -> None:
    wrong = postgres.url().replace(PASSWORD, "not-the-S3CRET-password")
    with pytest.raises(StartupError) as err:
        StateStore(target(wrong))
    assert err.value.exit_code == EX_NOPERM
    text = str(err.value)
    assert text.startswith("daemon.state_url (PostgreSQL): access refused (")
    assert "password authentication failed" in text
    assert "not-the-S3CRET-password" not in text
    assert_hidden("the error", text, postgres)


def test_a_second_syncwatch_on_the_same_database_is_refused(pg_url: str) -> None:
    first = StateStore(target(pg_url))
    try:
        with pytest.raises(StartupError, match="another syncwatch is using this database") as err:
            StateStore(target(pg_url))
        assert err.value.exit_code == EX_TEMPFAIL
    finally:
        first.close()
    StateStore(target(pg_url)).close()  # released by the clean close, at once


def test_a_server_that_is_not_there_stops_the_start_with_exit_75(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys
) -> None:
    url = f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{refused_port()}/syncwatch"
    config = tmp_path / "syncwatch.toml"
    fleet = sim.fleet()
    config.write_text(
        f'[daemon]\nstate_url = "{url}"\nlisten = "127.0.0.1:0"\n'
        f'[timbal]\nbase_url = "{sim.base_url}"\napi_key = "k-123456"\n'
        f'[[timbal.orgs]]\nid = "{fleet["orgs"][0]}"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "syncwatch", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == EX_TEMPFAIL, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("syncwatch: daemon.state_url (PostgreSQL): cannot use the database")
    assert PASSWORD not in result.stderr + result.stdout
    assert "127.0.0.1" not in lines[0]


# --- the store while the server is down ----------------------------------------------------


async def test_a_stopped_server_keeps_writes_in_memory_until_it_is_back(
    own_server: PostgresServer,
) -> None:
    store = Store(StateStore(target(own_server.url())))
    try:
        store.commit_cycle(nothing(), [queued("d1", "hook")])
        assert await store.flush() is True
        own_server.stop()
        store.commit_cycle(nothing(), [queued("d2", "hook"), queued("d3", "hook")])
        assert await store.flush() is False
        assert not store.up
        assert_hidden("the store's problem", store.problem, own_server)
        assert store.pending() == {"hook": 3}  # still deliverable, from memory
        assert await store.payload("d2")  # not written yet: from memory
        store.ack("d1")
        own_server.start()
        assert await store.flush() is True
        assert store.up
    finally:
        store.close()
    with psycopg.connect(own_server.url()) as db:
        rows = db.execute("SELECT delivery_id FROM outbox ORDER BY seq").fetchall()
    assert rows == [("d2",), ("d3",)]


# --- the daemon -------------------------------------------------------------------------


def test_the_daemon_survives_postgresql_stopping_and_sends_nothing_twice(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys, own_server: PostgresServer
) -> None:
    flipped = next(s for s in sim.fleet()["paragon"] if s["intended"] == "ok")
    with CaptureServer() as capture:
        notifier = f'[[notifiers]]\nname = "hook"\ntype = "webhook"\nurl = "{capture.url}/hook"\n'
        daemon = launch(
            tmp_path, sim, rsa_keys, extra=notifier, poll_interval="1s", state_url=own_server.url()
        )
        try:
            wait_until(lambda: capture.requests and state_up(daemon) == 1)
            own_server.stop()
            # Something to notify while nothing can be written.
            _flip(sim, flipped, errored=True)
            wait_until(lambda: notified(capture, flipped["sync_id"], "firing"), timeout=20)
            wait_until(lambda: state_up(daemon) == 0)
            before = daemon.cycles()
            daemon.wait_cycles(3)  # it keeps polling
            assert daemon.cycles() >= before + 3
            health = daemon.get("/healthz")
            assert health.status_code == 200
            assert health.text.startswith("degraded: state store: ")
            assert_hidden("/healthz", health.text, own_server)
            metrics = daemon.get("/metrics").text
            assert "syncwatch_state_up 0.0" in metrics
            assert_hidden("/metrics", metrics, own_server)
            own_server.start()
            wait_until(lambda: state_up(daemon) == 1, timeout=30)
            assert httpx.get(f"{daemon.url}/healthz", timeout=5).text == "ok\n"
            _flip(sim, flipped, errored=False)
            wait_until(lambda: notified(capture, flipped["sync_id"], "resolved"), timeout=20)
            daemon.wait_cycles(2)
            for page in ("/", "/api/v1/alerts", "/api/v1/history", "/api/v2/silences"):
                assert_hidden(page, daemon.get(page).text, own_server)
        finally:
            assert daemon.proc.stop() == 0
        repeated = {d: n for d, n in Counter(delivery_ids(capture)).items() if n > 1}
        assert not repeated, repeated
    # Everything reached the database in the end: nothing left to send, the resolve stored.
    with psycopg.connect(own_server.url()) as db:
        assert db.execute("SELECT COUNT(*) FROM outbox").fetchone() == (0,)
        errored = db.execute(
            "SELECT COUNT(*) FROM alerts WHERE alertname = 'SyncErrored' AND sync_id = %s",
            (flipped["sync_id"],),
        ).fetchone()
        assert errored == (0,)
        history = db.execute("SELECT COUNT(*) FROM history").fetchone()
        assert history is not None
        assert history[0] > 0
    log = daemon.proc.output
    assert log.count('"state_degraded"') == 1
    assert '"state_recovered"' in log
    assert '"cycle_failed"' not in log
    assert '"state_url": "postgresql"' in log
    assert_hidden("the daemon log", log, own_server)
