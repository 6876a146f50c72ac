"""TLS: a private CA is trusted only through daemon.ca_bundle, and never silently ignored.

The upstream and the notifier receiver are real loopback HTTPS servers with certificates
issued by a throwaway trustme CA.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncwatch.simulator import SimConfig, build_app
from tests.conftest import toml_value
from tests.test_secrets import serve_asgi

try:
    import trustme
except ImportError:  # pragma: no cover - depends on the environment
    if os.environ.get("CI"):
        raise ImportError(
            "trustme is required for the TLS tests in CI: pip install trustme"
        ) from None
    pytest.skip(
        "TLS TESTS SKIPPED: trustme is not installed (pip install trustme)",
        allow_module_level=True,
    )

TIMBAL_KEY = "tls-timbal-key"


@dataclass(frozen=True)
class Pki:
    ca_pem: Path
    certfile: Path
    keyfile: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(str(directory / "server.pem"))
    cert.private_key_pem.write_to_path(str(directory / "server.key"))
    return Pki(directory / "ca.pem", directory / "server.pem", directory / "server.key")


@pytest.fixture(scope="module")
def https_sim(pki: Pki) -> Iterator[tuple[str, str]]:
    """The simulator over HTTPS: (base_url, an org id)."""
    config = SimConfig(orgs=1, syncs_per_org=3, users=0, seed=7, churn=0, timbal_api_key=TIMBAL_KEY)
    with serve_asgi(build_app(config), certfile=pki.certfile, keyfile=pki.keyfile) as port:
        base_url = f"https://localhost:{port}"
        verify = ssl.create_default_context(cafile=str(pki.ca_pem))
        fleet = httpx.get(f"{base_url}/_sim/fleet", timeout=5, verify=verify).json()
        yield base_url, fleet["orgs"][0]


class Receiver:
    """A minimal ASGI app recording every request it gets."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self._lock = threading.Lock()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        with self._lock:
            self.bodies.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def write_config(
    tmp_path: Path, *, ca_bundle: Path | None, timbal: str = "", extra: str = ""
) -> Path:
    path = tmp_path / ("with-ca.toml" if ca_bundle else "without-ca.toml")
    path.write_text(
        f"""
[daemon]
listen = "127.0.0.1:0"
state_path = {toml_value(str(tmp_path / "state.db"))}
request_timeout = "5s"
retries = 0
log_format = "json"
ca_bundle = {toml_value(str(ca_bundle) if ca_bundle else "")}

{timbal}

{extra}
"""
    )
    return path


def timbal_table(base_url: str, org: str) -> str:
    return f"""
[timbal]
base_url = {toml_value(base_url)}
api_key = {toml_value(TIMBAL_KEY)}

[[timbal.orgs]]
id = {toml_value(org)}
"""


def syncwatch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncwatch", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def check_json(config: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    result = syncwatch("check", "-c", str(config), "--format", "json")
    try:
        doc = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"check did not print JSON:\n{result.stdout}\n{result.stderr}")
    return result, doc


def test_check_trusts_a_private_ca_through_ca_bundle(
    tmp_path: Path, pki: Pki, https_sim: tuple[str, str]
) -> None:
    base_url, org = https_sim
    config = write_config(tmp_path, ca_bundle=pki.ca_pem, timbal=timbal_table(base_url, org))
    result, doc = check_json(config)
    assert result.returncode != 3, result.stdout + result.stderr
    [source] = doc["sources"]
    assert source["up"] is True, source
    assert source["reason"] is None
    assert source["syncs"] == 3
    assert len(doc["syncs"]) == 3


def test_check_without_ca_bundle_fails_the_tenant_with_reason_tls(
    tmp_path: Path, pki: Pki, https_sim: tuple[str, str]
) -> None:
    base_url, org = https_sim
    config = write_config(tmp_path, ca_bundle=None, timbal=timbal_table(base_url, org))
    result, doc = check_json(config)
    assert result.returncode == 3, result.stdout + result.stderr
    assert doc["status"] == "UNKNOWN"
    [source] = doc["sources"]
    assert source["up"] is False, source
    assert source["reason"] == "tls", source
    assert "daemon.ca_bundle" in source["error"], source
    assert source["syncs"] == 0
    assert doc["syncs"] == []

    table = syncwatch("check", "-c", str(config))
    assert table.returncode == 3, table.stdout + table.stderr
    assert "tls" in table.stdout


def test_test_notify_over_https_needs_the_ca(tmp_path: Path, pki: Pki) -> None:
    receiver = Receiver()
    with serve_asgi(receiver, certfile=pki.certfile, keyfile=pki.keyfile) as port:
        notifier = f"""
[[notifiers]]
name = "tls-hook"
type = "webhook"
url = "https://127.0.0.1:{port}/hook"
"""
        # A tenant is required by the config; test-notify never polls it.
        timbal = timbal_table("https://127.0.0.1:9", "org_unused")

        without = write_config(tmp_path, ca_bundle=None, timbal=timbal, extra=notifier)
        failed = syncwatch("test-notify", "-c", str(without))
        out = failed.stdout + failed.stderr
        assert failed.returncode == 1, out
        line = next(ln for ln in failed.stdout.splitlines() if ln.startswith("tls-hook:"))
        assert "FAILED" in line, out
        assert "certificate" in line.lower() or "ssl" in line.lower(), out
        assert receiver.bodies == [], "a request got through an unverified TLS connection"

        with_ca = write_config(tmp_path, ca_bundle=pki.ca_pem, timbal=timbal, extra=notifier)
        delivered = syncwatch("test-notify", "-c", str(with_ca))
        assert delivered.returncode == 0, delivered.stdout + delivered.stderr
        assert "tls-hook: delivered" in delivered.stdout
        assert len(receiver.bodies) == 1
        assert json.loads(receiver.bodies[0])["alerts"]
