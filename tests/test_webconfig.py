"""daemon.web_config_file: exporter-toolkit's web config (basic auth, TLS) on a real daemon."""

from __future__ import annotations

import asyncio
import base64
import shutil
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
import trustme
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from syncwatch.config import ConfigError
from syncwatch.webauth import (
    Authenticator,
    AuthMiddleware,
    FailureLimiter,
    basic_credentials,
    is_loopback,
    may_write,
)
from syncwatch.webconfig import WebConfig, load_web_config
from tests.conftest import (
    Daemon,
    Keys,
    SimProcess,
    daemon_url,
    ready_process,
    require_tool,
    sim_config_toml,
    start_syncwatch,
    wait_until,
)
from tests.test_prometheus import query

PASSWORD = "s3cret-Pa55word"
WRONG = "wrong-Pa55word-xyz"


def hashed(password: str, rounds: int = 4) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()


def write_web_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- the file ---------------------------------------------------------------------------


def test_empty_file_is_plain_http_without_users(tmp_path: Path) -> None:
    web = load_web_config(write_web_config(tmp_path / "web.yml", ""))
    assert web.tls is None
    assert web.users == ()


def test_users_are_read_with_their_hashes(tmp_path: Path) -> None:
    h = hashed(PASSWORD)
    web = load_web_config(
        write_web_config(tmp_path / "web.yml", f"basic_auth_users:\n  alice: '{h}'\n")
    )
    assert web.user_hashes() == {"alice": h.encode()}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("basic_auth_users:\n  alice: plaintext\n", "basic_auth_users.alice: not a bcrypt hash"),
        ("basic_auth_user:\n  alice: x\n", "basic_auth_user: unknown key"),
        ("tls_server_config:\n  cert_file: a.pem\n", "tls_server_config.key_file: missing one"),
        (
            "tls_server_config:\n  cert_file: a.pem\n  key_file: a.key\n  min_version: TLS14\n",
            "tls_server_config.min_version:",
        ),
        (
            "tls_server_config:\n  cert_file: a.pem\n  key_file: a.key\n"
            "  client_auth_type: Sometimes\n",
            "tls_server_config.client_auth_type: invalid ClientAuth",
        ),
        ("tls_server_config:\n  cert_file: a.pem\n  key_file: a.key\n", "cert_file: cannot read"),
        ("- a list\n", "expected a mapping"),
        ("basic_auth_users: [\n", "invalid YAML"),
        ("http_server_config:\n  headers:\n    X-Powered-By: me\n", "can not be configured"),
    ],
)
def test_a_bad_file_is_one_line_naming_the_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write_web_config(tmp_path / "web.yml", text)
    with pytest.raises(ConfigError) as info:
        load_web_config(path)
    assert len(info.value.problems) == 1, info.value.problems
    line = info.value.problems[0]
    assert line.startswith(f"daemon.web_config_file ({path}): ")
    assert expected in line


def test_a_bad_hash_is_not_echoed(tmp_path: Path) -> None:
    path = write_web_config(tmp_path / "web.yml", "basic_auth_users:\n  alice: hunter2-secret\n")
    with pytest.raises(ConfigError) as info:
        load_web_config(path)
    assert "hunter2" not in str(info.value.problems)


def test_validate_exits_78_with_one_line(tmp_path: Path) -> None:
    web = write_web_config(tmp_path / "web.yml", "basic_auth_users:\n  alice: hunter2-secret\n")
    config = tmp_path / "syncwatch.toml"
    config.write_text(
        f"[daemon]\nweb_config_file = '{web}'\n[[timbal.orgs]]\nid = 'o1'\napi_key = 'k'\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "syncwatch", "validate", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 78
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"syncwatch: config: daemon.web_config_file ({web}): basic_auth_users.alice: "
        "not a bcrypt hash; generate one with: htpasswd -nBC 10 \"\" | tr -d ':\\n'"
    ]
    assert "hunter2" not in result.stderr + result.stdout


# --- the checks, pure -------------------------------------------------------------------


def test_basic_credentials_parse_and_reject_malformed() -> None:
    token = base64.b64encode(b"alice:pa:ss").decode()
    assert basic_credentials(f"Basic {token}") == ("alice", "pa:ss")
    assert basic_credentials("Bearer abc") is None
    assert basic_credentials("Basic !!!") is None
    assert basic_credentials("Basic " + base64.b64encode(b"nocolon").decode()) is None


def test_authenticator_accepts_the_right_password_only(tmp_path: Path) -> None:
    path = write_web_config(
        tmp_path / "web.yml", f"basic_auth_users:\n  alice: '{hashed(PASSWORD)}'\n"
    )
    auth = Authenticator(load_web_config(path))
    assert auth.check("alice", PASSWORD)
    assert auth.check("alice", PASSWORD)  # cached
    assert not auth.check("alice", WRONG)
    assert not auth.check("mallory", PASSWORD)


def test_unknown_user_costs_a_bcrypt_like_a_wrong_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No timing oracle for user names: an unknown user runs bcrypt at exporter-toolkit's cost."""
    path = write_web_config(
        tmp_path / "web.yml", f"basic_auth_users:\n  alice: '{hashed(PASSWORD, 10)}'\n"
    )
    auth = Authenticator(load_web_config(path))
    calls: list[bytes] = []
    real = bcrypt.checkpw

    def spy(password: bytes, hashed_password: bytes) -> bool:
        calls.append(hashed_password)
        return real(password, hashed_password)

    # Recording bcrypt's (the library's) calls: which hash each check paid for.
    monkeypatch.setattr(bcrypt, "checkpw", spy)
    assert not auth.check("mallory", WRONG)
    assert not auth.check("alice", WRONG)
    assert [h[:7] for h in calls] == [b"$2y$10$", auth.users["alice"][:7]]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failure_limiter_locks_out_a_client_after_five_failures_for_the_window() -> None:
    clock = FakeClock()
    limiter = FailureLimiter(max_failures=5, window=60, clock=clock)
    for _ in range(4):
        limiter.failed("10.0.0.1")
        clock.now += 1
    assert limiter.retry_after("10.0.0.1") == 0
    limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == pytest.approx(56)
    assert limiter.retry_after("10.0.0.2") == 0  # per client
    clock.now += 56.5
    assert limiter.retry_after("10.0.0.1") == 0


def test_failure_limiter_forgets_a_client_that_logs_in() -> None:
    limiter = FailureLimiter(max_failures=2, window=60, clock=FakeClock())
    limiter.failed("a")
    limiter.succeeded("a")
    limiter.failed("a")
    assert limiter.retry_after("a") == 0


def test_failure_limiter_is_bounded_in_clients() -> None:
    limiter = FailureLimiter(clock=FakeClock(), max_clients=3)
    for i in range(10):
        limiter.failed(f"c{i}")
    assert len(limiter._failures) == 3


def test_loopback_addresses() -> None:
    assert is_loopback("127.0.0.1")
    assert is_loopback("::1")
    assert is_loopback("127.3.4.5")
    assert not is_loopback("10.1.2.3")
    assert not is_loopback(None)
    assert not is_loopback("host")


# --- a real daemon ----------------------------------------------------------------------


def start_daemon(
    tmp_path: Path,
    sim: SimProcess,
    keys: Keys,
    web_config: Path,
    *,
    tls: ssl.SSLContext | None = None,
) -> Daemon:
    """`syncwatch run` with `web_config`, awaited on /readyz (https when TLS is on)."""
    config_path = tmp_path / "syncwatch.toml"
    config_path.write_text(
        sim_config_toml(
            sim,
            keys,
            state_path=tmp_path / "state.db",
            listen="127.0.0.1:0",
            daemon_extra=f"web_config_file = '{web_config}'",
        )
    )
    proc = start_syncwatch(["run", "-c", str(config_path)], tmp_path / "daemon.log")
    url = daemon_url(proc)
    if tls is not None:
        url = url.replace("http://", "https://")
    daemon = Daemon(proc, url, config_path)

    def ready() -> bool:
        if proc.popen.poll() is not None:
            raise AssertionError(f"daemon exited early ({proc.popen.returncode}):\n{proc.output}")
        response = httpx.get(f"{url}/readyz", verify=tls or True, timeout=5)
        return response.status_code == 200

    wait_until(ready, timeout=30)
    return daemon


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    return write_web_config(
        tmp_path / "web.yml", f"basic_auth_users:\n  prometheus: '{hashed(PASSWORD)}'\n"
    )


@pytest.fixture
def auth_daemon(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys, users_file: Path
) -> Iterator[Daemon]:
    d = start_daemon(tmp_path, sim, rsa_keys, users_file)
    yield d
    d.proc.stop()


def test_no_credentials_get_401_with_www_authenticate(auth_daemon: Daemon) -> None:
    for path in ("/metrics", "/api/v1/alerts", "/"):
        response = auth_daemon.get(path)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"].startswith("Basic")


def test_the_right_password_is_served(auth_daemon: Daemon) -> None:
    response = auth_daemon.get("/metrics", auth=("prometheus", PASSWORD))
    assert response.status_code == 200
    assert "syncwatch_cycle_duration_seconds" in response.text


def test_probes_stay_open(auth_daemon: Daemon) -> None:
    assert auth_daemon.get("/healthz").status_code == 200
    assert auth_daemon.get("/readyz").status_code == 200


def _curl() -> str:
    return require_tool("curl", "apt-get install curl")


def test_curl_without_and_with_credentials(auth_daemon: Daemon) -> None:
    binary = _curl()

    def curl(*args: str) -> str:
        out = subprocess.run(
            [binary, "-s", "-o", "/dev/null", "-w", "%{http_code}", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return out.stdout

    assert curl(f"{auth_daemon.url}/metrics") == "401"
    assert curl("-u", f"prometheus:{PASSWORD}", f"{auth_daemon.url}/metrics") == "200"
    assert curl("-u", f"prometheus:{WRONG}", f"{auth_daemon.url}/metrics") == "401"


def test_wrong_passwords_are_rate_limited_and_logged_without_the_password(
    auth_daemon: Daemon,
) -> None:
    codes = [
        auth_daemon.get("/metrics", auth=("prometheus", f"{WRONG}{i}")).status_code
        for i in range(6)
    ]
    assert codes == [401] * 5 + [429]
    locked = auth_daemon.get("/metrics", auth=("prometheus", PASSWORD))
    assert locked.status_code == 429  # even the right password waits out the lockout
    assert int(locked.headers["retry-after"]) > 0
    assert auth_daemon.get("/healthz").status_code == 200  # probes are never locked out
    wait_until(lambda: auth_daemon.proc.output.count('"auth_failed"') >= 5)
    output = auth_daemon.proc.output
    assert '"user": "prometheus"' in output or '"user":"prometheus"' in output
    assert WRONG not in output
    assert PASSWORD not in output


# --- TLS ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    directory: Path
    ca: trustme.CA
    client_ca: trustme.CA

    @property
    def ca_pem(self) -> Path:
        return self.directory / "ca.pem"

    def client(self, ca: trustme.CA, name: str = "prometheus@example.com") -> ssl.SSLContext:
        """A client context trusting the server's CA, presenting a certificate of `ca`."""
        context = ssl.create_default_context(cafile=str(self.ca_pem))
        ca.issue_cert(name).configure_cert(context)
        return context

    def trusting(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_pem))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("web-pki")
    ca, client_ca = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    client_ca.cert_pem.write_to_path(str(directory / "client-ca.pem"))
    server.cert_chain_pems[0].write_to_path(str(directory / "server.crt"))
    server.private_key_pem.write_to_path(str(directory / "server.key"))
    return Pki(directory, ca, client_ca)


def tls_file(tmp_path: Path, pki: Pki, extra: str = "", users: str = "") -> Path:
    """Relative names: exporter-toolkit reads them from the web config file's folder."""
    for name in ("server.crt", "server.key", "client-ca.pem"):
        shutil.copy(pki.directory / name, tmp_path / name)
    text = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n" + extra
    return write_web_config(tmp_path / "web.yml", text + users)


def handshake_fails(url: str, context: ssl.SSLContext) -> bool:
    try:
        httpx.get(f"{url}/metrics", verify=context, timeout=10)
    except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
        return True
    return False


def test_a_key_that_does_not_match_the_cert_is_one_line(tmp_path: Path, pki: Pki) -> None:
    path = tls_file(tmp_path, pki)
    shutil.copy(pki.directory / "client-ca.pem", tmp_path / "server.crt")
    with pytest.raises(ConfigError) as info:
        load_web_config(path)
    assert info.value.problems == [
        f"daemon.web_config_file ({path}): tls_server_config.key_file: "
        f"key_file {tmp_path / 'server.key'} is not the key of cert_file "
        f"{tmp_path / 'server.crt'} (or not PEM)"
    ]


def test_client_ca_without_a_client_auth_policy_is_refused(tmp_path: Path, pki: Pki) -> None:
    path = tls_file(tmp_path, pki, "  client_ca_file: client-ca.pem\n")
    with pytest.raises(ConfigError, match="without a Client Auth Policy"):
        load_web_config(path)


def test_https_serves_with_the_configured_certificate(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys, pki: Pki
) -> None:
    d = start_daemon(tmp_path, sim, rsa_keys, tls_file(tmp_path, pki), tls=pki.trusting())
    try:
        assert d.url.startswith("https://127.0.0.1:")
        assert d.get("/metrics", verify=pki.trusting()).status_code == 200
        with pytest.raises(httpx.HTTPError):
            httpx.get(d.url.replace("https://", "http://") + "/metrics", timeout=10)
    finally:
        d.proc.stop()


def test_client_certificates_are_required_and_verified(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys, pki: Pki
) -> None:
    web = tls_file(
        tmp_path,
        pki,
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: client-ca.pem\n",
    )
    good = pki.client(pki.client_ca)
    binary = _curl()
    d = start_daemon(tmp_path, sim, rsa_keys, web, tls=good)
    try:
        assert d.get("/metrics", verify=good).status_code == 200
        assert handshake_fails(d.url, pki.trusting())  # no certificate
        assert handshake_fails(d.url, pki.client(pki.ca))  # a certificate of another CA
        curl = [binary, "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", str(pki.ca_pem)]
        assert subprocess.run(
            [*curl, f"{d.url}/metrics"], capture_output=True, text=True, timeout=30, check=False
        ).stdout in ("000", "")
        cert = pki.client_ca.issue_cert("curl@example.com")
        cert.cert_chain_pems[0].write_to_path(str(tmp_path / "client.crt"))
        cert.private_key_pem.write_to_path(str(tmp_path / "client.key"))
        ok = subprocess.run(
            [
                *curl,
                "--cert",
                str(tmp_path / "client.crt"),
                "--key",
                str(tmp_path / "client.key"),
                f"{d.url}/metrics",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert ok.stdout == "200", ok.stderr
    finally:
        d.proc.stop()


def test_client_allowed_sans_refuse_other_names(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys, pki: Pki
) -> None:
    web = tls_file(
        tmp_path,
        pki,
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: client-ca.pem\n"
        "  client_allowed_sans: [prometheus@example.com]\n",
    )
    good = pki.client(pki.client_ca)
    d = start_daemon(tmp_path, sim, rsa_keys, web, tls=good)
    try:
        assert d.get("/metrics", verify=good).status_code == 200
        assert handshake_fails(d.url, pki.client(pki.client_ca, "intruder@example.com"))
        wait_until(lambda: "client_certificate_refused" in d.proc.output)
    finally:
        d.proc.stop()


def test_min_version_refuses_older_clients(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys, pki: Pki
) -> None:
    web = tls_file(tmp_path, pki, "  min_version: TLS13\n")
    d = start_daemon(tmp_path, sim, rsa_keys, web, tls=pki.trusting())
    try:
        old = pki.trusting()
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        assert handshake_fails(d.url, old)
    finally:
        d.proc.stop()


# --- SIGHUP -------------------------------------------------------------------------------


def reload_and_wait(d: Daemon, event: str) -> None:
    before = d.proc.output.count(f'"{event}"')
    d.proc.popen.send_signal(signal.SIGHUP)
    wait_until(lambda: d.proc.output.count(f'"{event}"') > before)


def test_sighup_rereads_the_users(tmp_path: Path, auth_daemon: Daemon, users_file: Path) -> None:
    assert auth_daemon.get("/metrics", auth=("prometheus", PASSWORD)).status_code == 200
    users_file.write_text(f"basic_auth_users:\n  bob: '{hashed('bobs-Pa55word')}'\n")
    reload_and_wait(auth_daemon, "reloaded")
    assert auth_daemon.get("/metrics", auth=("bob", "bobs-Pa55word")).status_code == 200
    assert auth_daemon.get("/metrics", auth=("prometheus", PASSWORD)).status_code == 401


def test_sighup_with_a_broken_web_config_keeps_the_old_one(
    auth_daemon: Daemon, users_file: Path
) -> None:
    users_file.write_text("basic_auth_users:\n  prometheus: not-a-hash\n")
    reload_and_wait(auth_daemon, "reload_failed")
    assert auth_daemon.get("/metrics").status_code == 401
    assert auth_daemon.get("/metrics", auth=("prometheus", PASSWORD)).status_code == 200
    assert "not-a-hash" not in auth_daemon.proc.output


def test_sighup_rotates_the_certificate_and_the_client_ca(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys, pki: Pki
) -> None:
    """New connections get the new certificate and trust only the new client CA."""
    web = tls_file(
        tmp_path,
        pki,
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: client-ca.pem\n",
    )
    old_client = pki.client(pki.client_ca)
    d = start_daemon(tmp_path, sim, rsa_keys, web, tls=old_client)
    try:
        new_ca, new_client_ca = trustme.CA(), trustme.CA()
        server = new_ca.issue_cert("127.0.0.1")
        server.cert_chain_pems[0].write_to_path(str(tmp_path / "server.crt"))
        server.private_key_pem.write_to_path(str(tmp_path / "server.key"))
        new_client_ca.cert_pem.write_to_path(str(tmp_path / "client-ca.pem"))
        reload_and_wait(d, "reloaded")
        new_client = ssl.create_default_context()
        new_ca.configure_trust(new_client)
        new_client_ca.issue_cert("prometheus@example.com").configure_cert(new_client)
        assert d.get("/metrics", verify=new_client).status_code == 200
        assert handshake_fails(d.url, old_client)  # the old server CA no longer matches
        stale = ssl.create_default_context()
        new_ca.configure_trust(stale)
        pki.client_ca.issue_cert("prometheus@example.com").configure_cert(stale)
        assert handshake_fails(d.url, stale)  # a client certificate of the old client CA
    finally:
        d.proc.stop()


# --- a real Prometheus --------------------------------------------------------------------


def test_prometheus_scrapes_over_tls_with_basic_auth_and_a_client_certificate(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys, pki: Pki
) -> None:
    binary = require_tool("prometheus", "apt-get install prometheus")
    web = tls_file(
        tmp_path,
        pki,
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: client-ca.pem\n",
        users=f"basic_auth_users:\n  prometheus: '{hashed(PASSWORD)}'\n",
    )
    client = pki.client(pki.client_ca)
    d = start_daemon(tmp_path, sim, rsa_keys, web, tls=client)
    cert = pki.client_ca.issue_cert("prometheus@example.com")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "prom.crt"))
    cert.private_key_pem.write_to_path(str(tmp_path / "prom.key"))
    (tmp_path / "password").write_text(PASSWORD)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n  - job_name: syncwatch\n    scheme: https\n"
        f"    basic_auth:\n      username: prometheus\n"
        f"      password_file: {tmp_path / 'password'}\n"
        f"    tls_config:\n      ca_file: {pki.ca_pem}\n"
        f"      cert_file: {tmp_path / 'prom.crt'}\n      key_file: {tmp_path / 'prom.key'}\n"
        f"    static_configs:\n      - targets: ['{d.url.removeprefix('https://')}']\n"
        "  - job_name: nopassword\n    scheme: https\n"
        f"    tls_config:\n      ca_file: {pki.ca_pem}\n"
        f"      cert_file: {tmp_path / 'prom.crt'}\n      key_file: {tmp_path / 'prom.key'}\n"
        f"    static_configs:\n      - targets: ['{d.url.removeprefix('https://')}']\n"
    )
    try:
        with ready_process(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                "--web.listen-address=127.0.0.1:0",
            ],
            tmp_path / "prometheus.log",
        ) as url:
            ok = wait_until(lambda: query(url, 'up{job="syncwatch"} == 1'), timeout=30)
            assert len(ok) == 1
            cycles = wait_until(
                lambda: query(url, 'syncwatch_cycle_duration_seconds_count{job="syncwatch"}'),
                timeout=30,
            )
            assert cycles
            # The same scrape without the password is refused: up is 0 there.
            assert wait_until(lambda: query(url, 'up{job="nopassword"} == 0'), timeout=30)
    finally:
        d.proc.stop()


# --- may_write and headers, through the middleware in-process ---------------------------


def probe_app(web: WebConfig) -> AuthMiddleware:
    """A one-route app answering whether `may_write` lets the request change state."""

    async def write(request: Request) -> Response:
        return PlainTextResponse("yes" if may_write(request) else "no")

    app = Starlette(routes=[Route("/api/v2/silences", write, methods=["POST"])])
    auth = Authenticator(web)
    return AuthMiddleware(app, lambda: (web, auth))


def post(app: AuthMiddleware, client: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(client, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://syncwatch") as c:
            return await c.post("/api/v2/silences", **kwargs)

    return asyncio.run(go())


def test_may_write_without_users_only_from_loopback() -> None:
    app = probe_app(WebConfig())
    assert post(app, "127.0.0.1").text == "yes"
    assert post(app, "::1").text == "yes"
    assert post(app, "10.1.2.3").text == "no"


def test_may_write_with_users_needs_an_authenticated_user(tmp_path: Path) -> None:
    path = write_web_config(
        tmp_path / "web.yml", f"basic_auth_users:\n  amtool: '{hashed(PASSWORD)}'\n"
    )
    app = probe_app(load_web_config(path))
    assert post(app, "127.0.0.1").status_code == 401  # loopback is no login when users exist
    assert post(app, "10.1.2.3", auth=("amtool", PASSWORD)).text == "yes"


def test_configured_headers_are_added_to_every_response(tmp_path: Path) -> None:
    path = write_web_config(
        tmp_path / "web.yml",
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
        "    Strict-Transport-Security: max-age=31536000\n",
    )
    response = post(probe_app(load_web_config(path)), "127.0.0.1")
    assert response.headers["x-frame-options"] == "deny"
    assert response.headers["strict-transport-security"] == "max-age=31536000"


def test_run_with_a_broken_web_config_exits_78_with_one_line(tmp_path: Path) -> None:
    web = write_web_config(tmp_path / "web.yml", "tls_server_config:\n  cert_file: missing.pem\n")
    config = tmp_path / "syncwatch.toml"
    config.write_text(
        f"[daemon]\nweb_config_file = '{web}'\nlisten = '127.0.0.1:0'\n"
        f"state_path = '{tmp_path / 'state.db'}'\n[[timbal.orgs]]\nid = 'o1'\napi_key = 'k'\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "syncwatch", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 78
    assert result.stderr.strip().splitlines() == [
        f"syncwatch: config: daemon.web_config_file ({web}): tls_server_config.key_file: "
        "missing one of key or key_file"
    ]
    assert not (tmp_path / "state.db").exists()


def test_sighup_can_start_requiring_client_certificates(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys, pki: Pki
) -> None:
    web = tls_file(tmp_path, pki)
    d = start_daemon(tmp_path, sim, rsa_keys, web, tls=pki.trusting())
    try:
        assert d.get("/metrics", verify=pki.trusting()).status_code == 200
        tls_file(
            tmp_path,
            pki,
            "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: client-ca.pem\n",
        )
        reload_and_wait(d, "reloaded")
        assert handshake_fails(d.url, pki.trusting())
        assert d.get("/metrics", verify=pki.client(pki.client_ca)).status_code == 200
    finally:
        d.proc.stop()
