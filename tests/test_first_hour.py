"""What a new user meets in the first hour: every message says what happened and what to do."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import (
    SIM_BANNER,
    Keys,
    SimProcess,
    launch,
    sim_config_toml,
    start_syncwatch,
    wait_until,
)
from tests.test_config import run_cli

MINIMAL = '[timbal]\napi_key = "abcdefgh"\n[[timbal.orgs]]\nid = "org_1"\n'


def test_simulate_prints_where_it_listens_and_a_config_that_check_accepts(tmp_path: Path) -> None:
    proc = start_syncwatch(
        ["simulate", "--listen", "127.0.0.1:0", "--orgs", "2", "--users", "2", "--churn", "0"],
        tmp_path / "sim.log",
    )
    try:
        wait_until(lambda: SIM_BANNER.search(proc.output) and "]\n" in proc.output)
        banner = proc.output
        assert "Timbal API key: sim-timbal-key" in banner
        assert "Paragon project id: sim-project" in banner
        config = tmp_path / "sim.toml"
        config.write_text(banner[banner.index("[timbal]") :])
        result = run_cli("check", "-c", str(config), "--format", "json", cwd=tmp_path)
        assert result.returncode in (0, 1, 2), result.stderr
        sources = {s["tenant"]: s["up"] for s in json.loads(result.stdout)["sources"]}
        assert sources == dict.fromkeys(("org_0001", "org_0002", "user-0001", "user-0002"), True)
    finally:
        proc.stop()


def test_without_any_config_file_validate_names_the_files_it_looked_for(tmp_path: Path) -> None:
    result = run_cli("validate", cwd=tmp_path)
    assert result.returncode == 78
    assert f"looked for {tmp_path}/syncwatch.toml, /etc/syncwatch/config.toml" in result.stderr
    assert "pass -c FILE or set $SYNCWATCH_CONFIG" in result.stderr


def test_a_relative_secret_file_outside_systemd_names_the_path_it_tried(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[timbal]\napi_key_file = "timbal"\n[[timbal.orgs]]\nid = "org_1"\n')
    result = run_cli("validate", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 78
    assert f"cannot read secret file {tmp_path}/timbal: No such file" in result.stderr
    assert "$CREDENTIALS_DIRECTORY is unset" in result.stderr


def test_test_notify_with_no_notifiers_says_so(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(MINIMAL)
    result = run_cli("test-notify", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == "syncwatch: no notifiers configured: add a [[notifiers]] table"


def _logged(output: str, event: str) -> list[dict[str, object]]:
    lines = (json.loads(line) for line in output.splitlines() if line.startswith("{"))
    return [line for line in lines if line.get("event") == event]


def test_run_without_notifiers_warns_at_start_and_with_one_does_not(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys
) -> None:
    """Alerts that go nowhere are worth one warning at start, naming the fix."""
    for name in ("bare", "wired"):
        (tmp_path / name).mkdir()
    bare = launch(tmp_path / "bare", sim, rsa_keys)
    try:
        warned = wait_until(lambda: _logged(bare.proc.output, "no_notifiers"))
        assert warned[0]["level"] == "warning"
        assert "add a [[notifiers]] table" in str(warned[0]["hint"])
    finally:
        bare.proc.stop()
    console = '[[notifiers]]\nname = "console"\ntype = "console"\n'
    wired = launch(tmp_path / "wired", sim, rsa_keys, extra=console)
    try:
        wired.wait_cycles(1)  # well past the start: the warning would have been logged
    finally:
        wired.proc.stop()
    assert _logged(wired.proc.output, "started")
    assert not _logged(wired.proc.output, "no_notifiers")


def test_config_keys_are_case_sensitive_at_every_level(tmp_path: Path) -> None:
    for text, key in (
        ('[Daemon]\npoll_interval = "5m"\n', "Daemon"),
        ('[daemon]\nPoll_Interval = "5m"\n', "daemon.Poll_Interval"),
        ('[alerting]\nFor = "5m"\n', "alerting.For"),
    ):
        config = tmp_path / "c.toml"
        config.write_text(MINIMAL + text)
        result = run_cli("validate", "-c", str(config), cwd=tmp_path)
        assert result.returncode == 78, text
        assert re.search(rf"config: {re.escape(key)}: unknown key; did you mean", result.stderr)


def test_check_counts_read_in_the_singular_and_the_plural(tmp_path: Path) -> None:
    from syncwatch.check import plural

    assert [plural(n, "alert") for n in (0, 1, 2)] == ["0 alerts", "1 alert", "2 alerts"]
    assert plural(1, "tenant") + " unreachable" == "1 tenant unreachable"


def test_on_a_terminal_a_console_notifier_prints_each_alert_once(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys
) -> None:
    """Logs and the console notifier share the terminal: an alert is told there once."""
    text = sim_config_toml(
        sim,
        rsa_keys,
        state_path=tmp_path / "state.db",
        listen="127.0.0.1:0",
        extra='[[notifiers]]\nname = "console"\ntype = "console"\n',
    )
    config = tmp_path / "c.toml"
    config.write_text(
        text.replace('log_format = "json"', 'log_format = "auto"').replace(
            'log_level = "debug"', 'log_level = "info"'
        )
    )
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncwatch", "run", "-c", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=secondary,
    )
    os.close(secondary)
    seen = b""
    try:
        deadline = time.monotonic() + 30
        # The console lines come when the cycle's batch is delivered, after cycle_complete.
        while b"notification_sent" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 1.0)
            if ready:
                seen += os.read(primary, 65536)
    finally:
        proc.terminate()
        proc.wait(15)
        os.close(primary)
    output = seen.decode(errors="replace")
    assert "notification_sent" in output, output
    fired = [line for line in output.splitlines() if " FIRING " in line]
    assert fired, output
    assert "alert_transition" not in output
