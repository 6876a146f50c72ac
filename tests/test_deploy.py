"""deploy/ is checked by the real tools of its ecosystem, not just present."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from syncwatch.config import EX_CONFIG
from syncwatch.startup import PERMANENT
from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "systemd" / "syncwatch.service"


def _unit_with_real_exec(tmp_path: Path) -> Path:
    """The unit, its ExecStart pointed at the installed syncwatch so verify can resolve it."""
    installed = shutil.which("syncwatch")
    assert installed is not None, "pip install . first"
    unit = tmp_path / "syncwatch.service"
    unit.write_text(UNIT.read_text().replace("/opt/syncwatch/bin/syncwatch", installed))
    return unit


def test_systemd_unit_verifies_clean(tmp_path: Path) -> None:
    systemd_analyze = require_tool("systemd-analyze", "apt-get install systemd")
    result = subprocess.run(
        [systemd_analyze, "verify", str(_unit_with_real_exec(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""
    assert result.stderr.strip() == ""


def test_systemd_unit_exposure_is_at_most_2() -> None:
    systemd_analyze = require_tool("systemd-analyze", "apt-get install systemd")
    result = subprocess.run(
        [systemd_analyze, "security", "--offline=yes", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert match is not None, result.stdout + result.stderr
    assert float(match[1]) <= 2.0, result.stdout


def test_systemd_unit_has_what_operations_rely_on() -> None:
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "RestartPreventExitStatus=",
        "LimitNOFILE=",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "DynamicUser=yes",
        "StateDirectory=syncwatch",
        "WatchdogSec=",
        "LoadCredential=timbal:",
    ):
        assert line in text, line


def test_systemd_unit_stops_restarting_exactly_on_the_permanent_exit_codes() -> None:
    """A corrupt or unreadable state file or a broken config: restarting cannot help; a
    taken port, a full disk or a locked database may clear, so those are retried."""
    match = re.search(r"^RestartPreventExitStatus=(.+)$", UNIT.read_text(), re.MULTILINE)
    assert match is not None
    assert sorted(int(code) for code in match[1].split()) == sorted((*PERMANENT, EX_CONFIG))
