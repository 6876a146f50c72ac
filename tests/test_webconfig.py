"""daemon.web_config_file: exporter-toolkit's web config (basic auth, TLS) on a real daemon."""

from __future__ import annotations

import base64
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import httpx
import pytest

from syncwatch.config import ConfigError
from syncwatch.webauth import Authenticator, FailureLimiter, basic_credentials, is_loopback
from syncwatch.webconfig import load_web_config
from tests.conftest import (
    Daemon,
    Keys,
    SimProcess,
    daemon_url,
    sim_config_toml,
    start_syncwatch,
    wait_until,
)

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


def test_unknown_user_costs_a_bcrypt_like_a_wrong_password(tmp_path: Path) -> None:
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

    bcrypt.checkpw = spy  # type: ignore[assignment]
    try:
        assert not auth.check("mallory", WRONG)
        assert not auth.check("alice", WRONG)
    finally:
        bcrypt.checkpw = real  # type: ignore[assignment]
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


def test_curl_without_and_with_credentials(auth_daemon: Daemon) -> None:
    def curl(*args: str) -> str:
        out = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *args],
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
