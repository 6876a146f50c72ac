"""No configured secret ever shows up in output, logs, the HTTP API or notifier payloads.

Every secret below is distinctive, so one substring search per place is a sound check. The
simulator runs in-process (uvicorn in a thread) so it can accept these exact credentials.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from syncwatch.simulator import SimConfig, build_app
from tests.capture import Captured, CaptureServer
from tests.conftest import daemon_url, refused_port, start_syncwatch, toml_value, wait_until
from tests.hostile import HostileServer, Stall, http

TIMBAL_KEY = "tk-S3CRET-timbal-7c1e94ab"
PARAGON_PREFIX = "pg-S3CRET-static-52d0f3-"
SLACK_TOKEN = "slk-S3CRET-hook-a8b6e210"
WEBHOOK_TOKEN = "wh-S3CRET-urltok-3f7d9c55"
REFUSED_TOKEN = "wh-S3CRET-refused-91be04"
HMAC_SECRET = "hmac-S3CRET-e4c2a7d1"
AM_PASSWORD = "am-S3CRET-pw-60f1b8"

# Headers that legitimately carry a value derived from a secret.
DERIVED_HEADERS = {"authorization", "x-syncwatch-signature"}


def all_secrets(users: list[str]) -> list[str]:
    return [
        TIMBAL_KEY,
        PARAGON_PREFIX,
        *(PARAGON_PREFIX + u for u in users),
        SLACK_TOKEN,
        WEBHOOK_TOKEN,
        REFUSED_TOKEN,
        HMAC_SECRET,
        AM_PASSWORD,
    ]


def assert_no_secret(where: str, text: str, secrets: list[str]) -> None:
    leaked = [s for s in secrets if s in text]
    assert not leaked, f"{where} leaks {leaked}:\n{text[:4000]}"


@contextmanager
def serve_asgi(
    app: Any, *, certfile: Path | None = None, keyfile: Path | None = None
) -> Iterator[int]:
    """Serve an ASGI app on 127.0.0.1 (HTTPS when a cert is given) in a thread; yields the port."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,  # the kernel's pick, read back once started: no other process can take it
        log_level="warning",
        access_log=False,
        lifespan="off",
        log_config=None,
        ssl_certfile=str(certfile) if certfile else None,
        ssl_keyfile=str(keyfile) if keyfile else None,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="asgi", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), timeout=15)
        assert server.started, "the ASGI server did not start"
        yield int(server.servers[0].sockets[0].getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def secret_sim() -> Iterator[tuple[str, dict[str, Any]]]:
    """A simulator that accepts only TIMBAL_KEY and static tokens PARAGON_PREFIX + user."""
    config = SimConfig(
        orgs=2,
        syncs_per_org=4,
        users=2,
        syncs_per_user=2,
        seed=7,
        churn=0,
        timbal_api_key=TIMBAL_KEY,
        paragon_static_token_prefix=PARAGON_PREFIX,
    )
    with serve_asgi(build_app(config)) as port:
        base_url = f"http://127.0.0.1:{port}"
        fleet = httpx.get(f"{base_url}/_sim/fleet", timeout=5).raise_for_status().json()
        yield base_url, fleet


@pytest.fixture
def captures() -> Iterator[dict[str, CaptureServer]]:
    servers = {name: CaptureServer().start() for name in ("slack", "webhook", "am")}
    try:
        yield servers
    finally:
        for server in servers.values():
            server.close()


def secret_config(
    tmp_path: Path,
    base_url: str,
    fleet: dict[str, Any],
    captures: dict[str, CaptureServer],
) -> Path:
    orgs = sorted({s["org_id"] for s in fleet["timbal"]})
    users = sorted({s["user_id"] for s in fleet["paragon"]})
    org_tables = "\n".join(f"[[timbal.orgs]]\nid = {toml_value(o)}" for o in orgs)
    user_tables = "\n".join(
        f"[[paragon.users]]\nid = {toml_value(u)}\ntoken = {toml_value(PARAGON_PREFIX + u)}"
        for u in users
    )
    am_url = f"http://syncwatch:{AM_PASSWORD}@127.0.0.1:{captures['am'].port}"
    refused = refused_port()
    path = tmp_path / "secrets.toml"
    path.write_text(
        f"""
[daemon]
poll_interval = "1s"
listen = "127.0.0.1:0"
state_path = {toml_value(str(tmp_path / "state.db"))}
request_timeout = "3s"
retries = 0
log_format = "json"
log_level = "debug"

[timbal]
base_url = {toml_value(base_url)}
api_key = {toml_value(TIMBAL_KEY)}
{org_tables}

[paragon]
base_url = {toml_value(base_url)}
{user_tables}

[alerting]
source_failure_threshold = 1
repeat_interval = "1s"
external_url = "http://syncwatch.example"

[[notifiers]]
name = "slack"
type = "slack"
webhook_url = {toml_value(f"{captures['slack'].url}/services/T0/B0/{SLACK_TOKEN}")}

[[notifiers]]
name = "hook"
type = "webhook"
url = {toml_value(f"{captures['webhook'].url}/hook/{WEBHOOK_TOKEN}")}
secret = {toml_value(HMAC_SECRET)}
headers = {{ "X-Team" = "data" }}

[[notifiers]]
name = "am"
type = "alertmanager"
urls = [{toml_value(am_url)}]

[[notifiers]]
name = "refused"
type = "webhook"
url = {toml_value(f"http://127.0.0.1:{refused}/hook/{REFUSED_TOKEN}")}
secret = {toml_value(HMAC_SECRET)}
"""
    )
    return path


def syncwatch(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncwatch", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def captured_text(requests: list[Captured]) -> str:
    parts = []
    for r in requests:
        headers = "\n".join(
            f"{k}: {v}" for k, v in r.headers.items() if k.lower() not in DERIVED_HEADERS
        )
        parts.append(f"{r.method} {r.query}\n{headers}\n{r.body.decode(errors='replace')}")
    return "\n\n".join(parts)


def fault(base_url: str, **payload: Any) -> None:
    httpx.post(f"{base_url}/_sim/faults", json=payload, timeout=5).raise_for_status()


def test_validate_check_and_test_notify_never_show_a_secret(
    tmp_path: Path,
    secret_sim: tuple[str, dict[str, Any]],
    captures: dict[str, CaptureServer],
) -> None:
    base_url, fleet = secret_sim
    users = sorted({s["user_id"] for s in fleet["paragon"]})
    secrets = all_secrets(users)
    config = secret_config(tmp_path, base_url, fleet, captures)
    fault(base_url, source="timbal", tenant=fleet["orgs"][0], kind="http_401")
    fault(base_url, source="paragon", tenant=users[0], kind="http_401")

    validate = syncwatch("validate", "-c", str(config))
    assert validate.returncode == 0, validate.stderr
    assert "**********" in validate.stdout
    assert_no_secret("validate", validate.stdout + validate.stderr, secrets)

    for fmt in ("json", "table"):
        check = syncwatch("check", "-c", str(config), "--format", fmt)
        assert check.returncode in (0, 1, 2, 3), check.stdout + check.stderr
        assert "http_401" in check.stdout, check.stdout
        assert_no_secret(f"check --format {fmt}", check.stdout + check.stderr, secrets)

    notify = syncwatch("test-notify", "-c", str(config))
    out = notify.stdout + notify.stderr
    assert notify.returncode == 1, out
    for name in ("slack", "hook", "am"):
        assert f"{name}: delivered" in notify.stdout, out
    assert "refused: FAILED" in notify.stdout, out
    assert_no_secret("test-notify", out, secrets)
    for name, server in captures.items():
        received = server.wait_for(1, timeout=10)
        assert_no_secret(f"{name} payload", captured_text(received), secrets)


def test_the_daemon_never_shows_a_secret(
    tmp_path: Path,
    secret_sim: tuple[str, dict[str, Any]],
    captures: dict[str, CaptureServer],
) -> None:
    base_url, fleet = secret_sim
    users = sorted({s["user_id"] for s in fleet["paragon"]})
    secrets = all_secrets(users)
    config = secret_config(tmp_path, base_url, fleet, captures)
    org = fleet["orgs"][0]
    fault(base_url, source="timbal", tenant=org, kind="http_401")
    fault(base_url, source="paragon", tenant=users[0], kind="http_401")

    proc = start_syncwatch(["run", "-c", str(config)], tmp_path / "daemon.log")
    try:
        url = daemon_url(proc)

        def ready() -> bool:
            if proc.popen.poll() is not None:
                raise AssertionError(f"daemon exited early:\n{proc.output}")
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200

        wait_until(ready, timeout=30)

        def unreachable_sent(r: Captured) -> bool:
            return b"SourceUnreachable" in r.body

        captures["webhook"].wait_for(1, timeout=30, where=unreachable_sent)
        captures["am"].wait_for(1, timeout=30, where=unreachable_sent)
        captures["slack"].wait_for(1, timeout=30)
        # A few more cycles, so retries towards the refused notifier get logged too.
        wait_until(lambda: "refused" in proc.output, timeout=30)

        alerts = httpx.get(f"{url}/api/v1/alerts", timeout=5).raise_for_status().text
        assert "SourceUnreachable" in alerts
        assert_no_secret("/api/v1/alerts", alerts, secrets)
        metrics = httpx.get(f"{url}/metrics", timeout=5).raise_for_status().text
        assert 'reason="http_401"' in metrics
        assert_no_secret("/metrics", metrics, secrets)
    finally:
        code = proc.stop()
    assert code == 0, proc.output
    assert "http_401" in proc.output
    assert_no_secret("daemon log", proc.output, secrets)
    for name, server in captures.items():
        assert_no_secret(f"{name} payload", captured_text(server.requests), secrets)


# --- every failure path of every notifier -----------------------------------------------------

KINDS = ("slack", "webhook", "alertmanager")
# failure → words its DeliveryError must carry (the short, fixed form)
FAILURES = {
    "refused": "connection failed (connection refused)",
    "timeout": "timed out",
    "garbage_status": "invalid HTTP response (bad status line)",
    "huge_header": "invalid HTTP response (status line or header too long)",
    "echo_4xx": "HTTP 404",
    "echo_5xx": "HTTP 502",
    "tls": "TLS failed (",
}


def failure_token(kind: str, failure: str) -> str:
    return f"{kind[:4]}-S3CRET-{failure.replace('_', '')}-7e1d"


def _echo_page(status: str) -> Any:
    def answer(request_line: bytes) -> bytes:
        return http(b"Cannot POST " + request_line + b" (no such hook)", status)

    return answer


def _garbage_status(request_line: bytes) -> bytes:
    return b"HTTZ/9.9 garbage " + request_line + b"\r\n\r\n"


def _huge_header(request_line: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nX-Echo: " + request_line + b"a" * 9000 + b"\r\n\r\n"


@dataclass
class Receivers:
    """Every notifier kind by every failure path, each notifier with its own URL token."""

    plain: HostileServer
    tls_port: int
    refused_port: int

    def url(self, kind: str, failure: str) -> str:
        token = failure_token(kind, failure)
        port = {"refused": self.refused_port, "tls": self.tls_port}.get(failure, self.plain.port)
        scheme = "https" if failure == "tls" else "http"
        # The token is in the path (Slack, webhooks) and, for Alertmanager, the password too.
        userinfo = f"syncwatch:{token}@" if kind == "alertmanager" else ""
        return f"{scheme}://{userinfo}127.0.0.1:{port}/{kind}-{failure}/{token}"

    def toml(self) -> str:
        tables = []
        for kind in KINDS:
            for failure in FAILURES:
                name, url = f"{kind}-{failure}", toml_value(self.url(kind, failure))
                key = {"slack": "webhook_url", "webhook": "url"}.get(kind)
                target = f"{key} = {url}" if key else f"urls = [{url}]"
                tables.append(f'[[notifiers]]\nname = "{name}"\ntype = "{kind}"\n{target}\n')
        return "\n".join(tables)

    @property
    def secrets(self) -> list[str]:
        return [failure_token(k, f) for k in KINDS for f in FAILURES]


@pytest.fixture
def receivers(tmp_path: Path) -> Iterator[Receivers]:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "receiver.pem", tmp_path / "receiver.key"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    routes: dict[str, Any] = {}
    for kind in KINDS:
        routes[f"/{kind}-timeout/"] = Stall()
        routes[f"/{kind}-garbage_status/"] = _garbage_status
        routes[f"/{kind}-huge_header/"] = _huge_header
        routes[f"/{kind}-echo_4xx/"] = _echo_page("404 Not Found")
        routes[f"/{kind}-echo_5xx/"] = _echo_page("502 Bad Gateway")
    # An untrusted certificate (its CA is not in the trust store): a TLS failure.
    app = build_app(SimConfig(orgs=1, syncs_per_org=1, users=0, seed=1, churn=0))
    with (
        HostileServer(routes, http(b"ok")) as plain,
        serve_asgi(app, certfile=certfile, keyfile=keyfile) as tls_port,
    ):
        yield Receivers(plain, tls_port, refused_port())


def failing_config(
    tmp_path: Path, base_url: str, fleet: dict[str, Any], receivers: Receivers
) -> Path:
    orgs = sorted({s["org_id"] for s in fleet["timbal"]})
    org_tables = "\n".join(f"[[timbal.orgs]]\nid = {toml_value(o)}" for o in orgs)
    path = tmp_path / "failing.toml"
    path.write_text(
        f"""
[daemon]
poll_interval = "1s"
listen = "127.0.0.1:0"
state_path = {toml_value(str(tmp_path / "state.db"))}
request_timeout = "1s"
retries = 0
log_format = "json"
log_level = "debug"

[timbal]
base_url = {toml_value(base_url)}
api_key = {toml_value(TIMBAL_KEY)}
{org_tables}

[alerting]
source_failure_threshold = 1

{receivers.toml()}
"""
    )
    return path


def test_test_notify_failures_of_every_kind_and_path_never_show_a_secret(
    tmp_path: Path, secret_sim: tuple[str, dict[str, Any]], receivers: Receivers
) -> None:
    base_url, fleet = secret_sim
    config = failing_config(tmp_path, base_url, fleet, receivers)
    notify = syncwatch("test-notify", "-c", str(config))
    out = notify.stdout + notify.stderr
    assert notify.returncode == 1, out
    for kind in KINDS:
        for failure, words in FAILURES.items():
            [line] = [x for x in notify.stdout.splitlines() if x.startswith(f"{kind}-{failure}:")]
            assert "FAILED" in line, line
            assert words in line, line
    assert_no_secret("test-notify", out, [*receivers.secrets, TIMBAL_KEY])


def test_the_outbox_and_log_keep_no_secret_from_any_failure_of_any_notifier(
    tmp_path: Path, secret_sim: tuple[str, dict[str, Any]], receivers: Receivers
) -> None:
    base_url, fleet = secret_sim
    fault(base_url, source="timbal", tenant=fleet["orgs"][0], kind="http_401")
    config = failing_config(tmp_path, base_url, fleet, receivers)
    proc = start_syncwatch(["run", "-c", str(config)], tmp_path / "daemon.log")
    names = {f"{k}-{f}" for k in KINDS for f in FAILURES}
    try:

        def every_notifier_failed() -> bool:
            if proc.popen.poll() is not None:
                raise AssertionError(f"daemon exited early:\n{proc.output}")
            failed = {
                event.get("notifier")
                for line in proc.output.splitlines()
                if line.startswith("{")
                and (event := json.loads(line)).get("event")
                in ("notification_failed", "notification_dropped")
            }
            return names <= failed

        wait_until(every_notifier_failed, timeout=60)
    finally:
        code = proc.stop()
    assert code == 0, proc.output
    db = tmp_path / "state.db"
    with sqlite3.connect(db) as conn:
        query = "SELECT DISTINCT notifier FROM outbox WHERE last_error IS NOT NULL"
        stored = {row[0] for row in conn.execute(query)}
    # A 4xx is permanent: its row is dropped (and logged), every other one kept for a retry.
    assert stored == {n for n in names if not n.endswith("-echo_4xx")}
    secrets = [*receivers.secrets, TIMBAL_KEY]
    assert_no_secret("daemon log", proc.output, secrets)
    for path in tmp_path.glob("state.db*"):  # the database, its -wal and -shm
        data = path.read_bytes()
        leaked = [s for s in secrets if s.encode() in data]
        assert not leaked, f"{path.name} holds {leaked}"
