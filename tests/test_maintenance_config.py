"""`[[maintenance]]` config: each problem is one line naming its key, exit 78; valid entries
become the pure module's windows."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from syncwatch.cli import main
from syncwatch.config import EX_CONFIG
from syncwatch.maintenance import EVERY_DAY, OneOff, Weekday, Weekly, maintenance_muter
from syncwatch.settings import load_config

pytestmark = pytest.mark.usefixtures("clean_env")

PREFIX = "syncwatch: config: "
BASE = """
[timbal]
api_key = "k"
[[timbal.orgs]]
id = "org_1"
"""


def config_file(tmp_path: Path, *entries: str) -> Path:
    path = tmp_path / "syncwatch-test.toml"
    path.write_text(BASE + "".join(f"\n[[maintenance]]\n{e}\n" for e in entries), "utf-8")
    return path


def problems(tmp_path: Path, capsys: pytest.CaptureFixture[str], *entries: str) -> list[str]:
    code = main(["validate", "-c", str(config_file(tmp_path, *entries))])
    out, err = capsys.readouterr()
    assert code == EX_CONFIG, out
    assert all(line.startswith(PREFIX) for line in err.splitlines()), err
    return [line.removeprefix(PREFIX) for line in err.splitlines()]


ACME = 'name = "w"\nmatch = { tenant = "acme" }\n'


@pytest.mark.parametrize(
    ("entry", "line"),
    [
        (
            ACME + "start = 2026-05-01T22:00:00Z\nend = 2026-05-01T21:00:00Z",
            "maintenance[0].end: must be after start",
        ),
        (ACME + "start = 2026-05-01T22:00:00Z", "maintenance[0].end: required with start"),
        (ACME + 'end = "2026-05-01T22:00:00Z"', "maintenance[0].start: required with end"),
        (
            ACME + "start = 2026-05-01T22:00:00\nend = 2026-05-01T23:00:00Z",
            "maintenance[0].start: 2026-05-01T22:00:00 has no UTC offset",
        ),
        (
            ACME + 'start = 2026-05-01T22:00:00Z\nend = 2026-05-02T01:00:00Z\ntimezone = "UTC"',
            "maintenance[0].timezone: only for recurring windows",
        ),
        (
            ACME + 'start = 2026-05-01T22:00:00Z\nend = 2026-05-02T01:00:00Z\ntime = "01:00-02:00"',
            "maintenance[0].time: a window is one-off (start, end) or recurring",
        ),
        (ACME + 'days = ["sat"]', "maintenance[0].time: required with days"),
        (ACME + 'days = []\ntime = "01:00-02:00"', "maintenance[0].days: empty"),
        (
            ACME + 'days = ["fry"]\ntime = "01:00-02:00"',
            "maintenance[0].days[0]: unknown day 'fry'",
        ),
        (ACME + 'time = "1:00-2:00"', "maintenance[0].time: invalid time '1:00-2:00'"),
        (ACME + 'time = "23:00-24:30"', "maintenance[0].time: invalid time '23:00-24:30'"),
        (ACME + 'time = "03:00-03:00"', "maintenance[0].time: invalid time '03:00-03:00': start"),
        (
            ACME + 'time = "01:00-02:00"\ntimezone = "Europe/Berln"',
            "maintenance[0].timezone: unknown time zone 'Europe/Berln': use an IANA name; "
            "did you mean 'Europe/Berlin'?",
        ),
        (ACME + 'time = "01:00-02:00"\ntimezone = "../etc"', "maintenance[0].timezone: unknown"),
        (ACME, "maintenance[0].start: required: a one-off start and end (RFC 3339), or"),
        ('name = "w"\nmatch = {}\ntime = "01:00-02:00"', "maintenance[0].match: at least one"),
        ('name = "w"\ntime = "01:00-02:00"', "maintenance[0].match: field required"),
        ('match = { a = "b" }\ntime = "01:00-02:00"', "maintenance[0].name: field required"),
        (
            'name = "w"\nmatch = { tenant = "[acme" }\ntime = "01:00-02:00"',
            "maintenance[0].match.tenant: invalid glob '[acme': unclosed '['",
        ),
        (ACME + 'time = "01:00-02:00"\ntz = "UTC"', "maintenance[0].tz: unknown key"),
    ],
)
def test_a_bad_entry_is_one_line_naming_its_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], entry: str, line: str
) -> None:
    [got] = problems(tmp_path, capsys, entry)
    assert got.startswith(line), got


def test_window_names_must_be_unique(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    entry = ACME + 'time = "01:00-02:00"'
    assert problems(tmp_path, capsys, entry, entry) == [
        "maintenance[1].name: maintenance window 'w' is named twice; names must be unique"
    ]


def test_every_bad_entry_is_reported_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    got = problems(
        tmp_path, capsys, ACME + 'time = "x"', ACME + 'days = ["x"]\ntime = "01:00-02:00"'
    )
    assert [g.split(":")[0] for g in got] == ["maintenance[0].time", "maintenance[1].days[0]"]


def test_one_off_entry_is_a_one_off_window(tmp_path: Path) -> None:
    config = load_config(
        config_file(
            tmp_path, ACME + 'start = 2026-05-01T22:00:00+02:00\nend = "2026-05-02T01:00:00Z"'
        )
    )
    window = config.maintenance[0].window()
    assert window.match == {"tenant": "acme"}
    assert window.schedule == OneOff(
        datetime(2026, 5, 1, 20, tzinfo=UTC), datetime(2026, 5, 2, 1, tzinfo=UTC)
    )


def test_recurring_entry_reads_days_time_and_zone(tmp_path: Path) -> None:
    entry = ACME + 'days = ["Sat", "sunday"]\ntime = "22:00-24:00"\ntimezone = "Europe/Berlin"'
    schedule = load_config(config_file(tmp_path, entry)).maintenance[0].window().schedule
    assert schedule == Weekly(
        frozenset({Weekday.SAT, Weekday.SUN}), time(22), time(0), ZoneInfo("Europe/Berlin")
    )


def test_recurring_entry_defaults_to_every_day_in_utc(tmp_path: Path) -> None:
    schedule = load_config(config_file(tmp_path, ACME + 'time = "01:00-02:00"'))
    assert schedule.maintenance[0].window().schedule == Weekly(
        EVERY_DAY, time(1), time(2), ZoneInfo("UTC")
    )


def test_maintenance_muter_mutes_by_the_configured_windows(tmp_path: Path) -> None:
    entry = ACME + 'days = ["sun"]\ntime = "02:30-04:00"\ntimezone = "Europe/Berlin"'
    mutes = maintenance_muter(load_config(config_file(tmp_path, entry)))
    jump = datetime(2026, 3, 29, 1, tzinfo=UTC)  # 03:00 CEST: 02:30 was skipped
    assert mutes({"tenant": "acme"}, jump) == ("maintenance:w",)
    assert mutes({"tenant": "acme"}, datetime(2026, 3, 29, 0, 59, tzinfo=UTC)) == ()
    assert mutes({"tenant": "other"}, jump) == ()


def test_maintenance_from_the_environment_as_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "SYNCWATCH_MAINTENANCE",
        '[{"name": "env", "match": {"tenant": "a"}, "time": "01:00-02:00"}]',
    )
    assert [m.name for m in load_config(config_file(tmp_path)).maintenance] == ["env"]


def test_run_refuses_a_bad_window_with_exit_78(tmp_path: Path) -> None:
    """The daemon as a process: one line on stderr, nothing started."""
    path = config_file(tmp_path, ACME + 'time = "01:00-02:00"\ntimezone = "Mars/Olympus"')
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCWATCH_")}
    result = subprocess.run(
        [sys.executable, "-m", "syncwatch", "run", "-c", str(path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == EX_CONFIG
    assert result.stderr.splitlines() == [
        f"{PREFIX}maintenance[0].timezone: unknown time zone 'Mars/Olympus': use an IANA name "
        "such as 'Europe/Berlin' or 'UTC'"
    ]


def test_the_commented_example_windows_are_valid(tmp_path: Path) -> None:
    """config.example.toml's `[[maintenance]]` examples, uncommented, load as written."""
    example = (Path(__file__).resolve().parent.parent / "config.example.toml").read_text("utf-8")
    section = example.partition("# --- maintenance windows")[2]
    lines = re.findall(r"(?m)^# (\[\[maintenance\]\]|\w+ = .*)$", section)
    entries = "\n".join(lines).split("[[maintenance]]")[1:]
    config = load_config(config_file(tmp_path, *entries))
    assert [m.name for m in config.maintenance] == ["acme-migration", "nightly-etl"]


def test_the_documented_windows_load_as_written(tmp_path: Path) -> None:
    """docs/alerts.md's `[[maintenance]]` TOML block is a valid config."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "alerts.md").read_text("utf-8")
    block = doc.partition("## Maintenance windows")[2].partition("```toml\n")[2].partition("```")[0]
    path = tmp_path / "syncwatch-test.toml"
    path.write_text(BASE + block, "utf-8")
    assert [m.name for m in load_config(path).maintenance] == ["acme-migration", "nightly-etl"]
