"""`daemon.state_url`: SQLite or PostgreSQL, a secret with a `*_file` twin, never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncwatch.cli import main
from syncwatch.config import EX_CONFIG, DaemonConfig, secrets_of
from syncwatch.config.sections import PostgresTarget
from syncwatch.settings import load_config

PASSWORD = "pw-S3CRET-state-4d1c0e"
DSN = f"postgresql://syncwatch:{PASSWORD}@db.internal:5433/syncwatch?sslmode=require"
WATCH = '[timbal]\napi_key = "k-123456"\n[[timbal.orgs]]\nid = "org_1"\n'

pytestmark = pytest.mark.usefixtures("clean_env")


def validate(tmp_path: Path, daemon: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    config = tmp_path / "syncwatch.toml"
    config.write_text(f"[daemon]\n{daemon}\n{WATCH}")
    code = main(["validate", "-c", str(config)])
    out, err = capsys.readouterr()
    return code, out + err


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("sqlite:///state.db", Path("state.db"), id="relative"),
        pytest.param("sqlite:////var/lib/sw/state.db", Path("/var/lib/sw/state.db"), id="absolute"),
    ],
)
def test_a_sqlite_url_is_a_file(url: str, expected: Path) -> None:
    assert DaemonConfig(state_url=url).state_target() == expected


def test_without_state_url_the_target_is_state_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/syncwatch")
    assert DaemonConfig().state_target() == Path("/var/lib/syncwatch/syncwatch-state.db")
    daemon = DaemonConfig(state_url="sqlite:///x.db")
    assert daemon.state_target() == Path("/var/lib/syncwatch/x.db")


def test_a_postgresql_url_keeps_the_dsn_secret() -> None:
    target = DaemonConfig(state_url=DSN).state_target()
    assert isinstance(target, PostgresTarget)
    assert target.dsn.get_secret_value() == DSN
    assert PASSWORD not in repr(target)


def test_the_password_alone_is_a_secret_for_the_scrubber() -> None:
    found = secrets_of(DaemonConfig(state_url=DSN))
    assert DSN in found
    assert PASSWORD in found
    query = DaemonConfig(state_url=f"postgresql://h/db?password={PASSWORD}")
    assert PASSWORD in secrets_of(query)


def test_validate_shows_no_part_of_the_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = validate(tmp_path, f'state_url = "{DSN}"', capsys)
    assert code == 0, out
    assert 'state_url = "**********"' in out
    assert PASSWORD not in out
    assert "db.internal" not in out


def test_state_url_file_is_read_like_every_secret_file(tmp_path: Path) -> None:
    (tmp_path / "dsn").write_text(DSN + "\n")
    config = tmp_path / "syncwatch.toml"
    config.write_text(f'[daemon]\nstate_url_file = "{tmp_path / "dsn"}"\n{WATCH}')
    target = load_config(config).daemon.state_target()
    assert isinstance(target, PostgresTarget)
    assert target.dsn.get_secret_value() == DSN


@pytest.mark.parametrize(
    ("daemon", "expected"),
    [
        pytest.param(
            f'state_path = "/data/state.db"\nstate_url = "{DSN}"',
            "daemon.state_url: set either state_path or state_url, not both",
            id="both",
        ),
        pytest.param(
            f'state_url = "{DSN}"\nstate_url_file = "{{tmp}}/dsn"',
            "daemon.state_url_file: set either state_url or state_url_file, not both",
            id="url-and-file",
        ),
        pytest.param(
            f'state_url = "mysql://root:{PASSWORD}@h/db"',
            "daemon.state_url: unsupported state_url: expected sqlite:///path or postgresql://",
            id="other-scheme",
        ),
        pytest.param(
            f'state_url = "postgresql://u:{PASSWORD}@h:port/db"',
            "daemon.state_url: invalid PostgreSQL URL",
            id="bad-port",
        ),
        pytest.param(
            'state_url = "sqlite://state.db"',
            "daemon.state_url: invalid sqlite URL",
            id="sqlite-no-path",
        ),
    ],
)
def test_a_bad_state_url_is_one_line_and_exit_78_without_the_value(
    daemon: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "dsn").write_text(DSN)
    code, out = validate(tmp_path, daemon.replace("{tmp}", str(tmp_path)), capsys)
    assert code == EX_CONFIG
    lines = out.splitlines()
    assert len(lines) == 1, out
    assert lines[0].startswith(f"syncwatch: config: {expected}"), out
    assert PASSWORD not in out
