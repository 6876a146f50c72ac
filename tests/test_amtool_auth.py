"""The real amtool against `syncwatch run` behind basic auth (`daemon.web_config_file`).

amtool reads its credentials from `--http.config.file`, Prometheus' HTTP client config, as
it does against an Alertmanager behind exporter-toolkit: without them, or with a wrong
password, nothing is read or written.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Daemon, Keys, SimProcess, require_tool
from tests.test_webconfig import PASSWORD, hashed, start_daemon, write_web_config


@pytest.fixture
def amtool_path() -> str:
    return require_tool("amtool", "apt-get install prometheus-alertmanager")


@pytest.fixture
def guarded(tmp_path: Path, sim: SimProcess, rsa_keys: Keys) -> Iterator[Daemon]:
    web = write_web_config(
        tmp_path / "web.yml", f"basic_auth_users:\n  ops: '{hashed(PASSWORD)}'\n"
    )
    d = start_daemon(tmp_path, sim, rsa_keys, web)
    yield d
    d.proc.stop()


def client_config(tmp_path: Path, password: str) -> Path:
    path = tmp_path / f"amtool-{len(password)}.yml"
    path.write_text(f"basic_auth:\n  username: ops\n  password: '{password}'\n")
    return path


def amtool(
    path: str, daemon: Daemon, *args: str, http_config: Path | None = None
) -> subprocess.CompletedProcess[str]:
    auth = [f"--http.config.file={http_config}"] if http_config else []
    return subprocess.run(
        [path, f"--alertmanager.url={daemon.url}", *auth, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_amtool_with_credentials_adds_queries_and_expires(
    amtool_path: str, guarded: Daemon, tmp_path: Path
) -> None:
    creds = client_config(tmp_path, PASSWORD)
    added = amtool(
        amtool_path,
        guarded,
        "silence",
        "add",
        "--comment=migration",
        "--author=ops",
        "tenant=org_1",
        http_config=creds,
    )
    assert added.returncode == 0, added.stderr
    silence_id = added.stdout.strip()
    listed = amtool(amtool_path, guarded, "silence", "query", "-q", http_config=creds)
    assert listed.stdout.split() == [silence_id]
    expired = amtool(amtool_path, guarded, "silence", "expire", silence_id, http_config=creds)
    assert expired.returncode == 0, expired.stderr
    after = amtool(amtool_path, guarded, "silence", "query", "-q", http_config=creds)
    assert after.stdout.split() == []


@pytest.mark.parametrize("password", [None, "not-the-password"])
def test_amtool_without_the_password_reads_and_writes_nothing(
    amtool_path: str, guarded: Daemon, tmp_path: Path, password: str | None
) -> None:
    creds = None if password is None else client_config(tmp_path, password)
    add = ["silence", "add", "--comment=x", "--author=ops", "tenant=org_1"]
    assert amtool(amtool_path, guarded, *add, http_config=creds).returncode != 0
    assert amtool(amtool_path, guarded, "silence", "query", http_config=creds).returncode != 0
    # Nothing was stored: the right password sees no silence.
    right = client_config(tmp_path, PASSWORD)
    assert amtool(amtool_path, guarded, "silence", "query", "-q", http_config=right).stdout == ""
