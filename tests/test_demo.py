"""`syncwatch demo` tells its story in under a minute, in lines a person can read."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "syncwatch", "demo", "--duration", "30s"],
        cwd=tmp_path_factory.mktemp("demo"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def alert_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if re.match(r"^\d{4}-\d\d-\d\dT", line)]


def test_the_banner_says_which_times_are_simulated(demo: str) -> None:
    assert "Times in alert lines and /api/v1/alerts are simulated time" in demo
    assert "/metrics timestamps are real time" in demo


def test_alert_lines_are_short_enough_to_read(demo: str) -> None:
    lines = alert_lines(demo)
    assert lines
    # They were 200-260 characters; upstream reasons (Paragon's error text) are the only
    # part of unbounded length.
    assert max(len(line) for line in lines if "ERRORED:" not in line) <= 190


def test_an_escalation_shows_the_severities_it_moved_between(demo: str) -> None:
    assert any(" ESCALATED warning → critical " in line for line in alert_lines(demo))


def test_a_resolved_line_says_the_state_now(demo: str) -> None:
    resolved = [line for line in alert_lines(demo) if " RESOLVED " in line]
    assert resolved
    assert all(": now " in line for line in resolved), resolved


def test_the_demo_ends_with_a_summary_that_counts_what_it_printed(demo: str) -> None:
    lines = alert_lines(demo)
    summary = demo.rstrip().splitlines()[-1]
    match = re.fullmatch(
        r"syncwatch demo: done\. (\d+) fired, (?:(\d+) escalated, )?(?:\d+ de-escalated, )?"
        r"(?:\d+ repeated, )?(\d+) resolved; (\d+) still firing\.",
        summary,
    )
    assert match, summary
    assert int(match[1]) == sum(" FIRING " in line for line in lines)
    assert int(match[2] or 0) == sum(" ESCALATED " in line for line in lines)
    assert int(match[3]) == sum(" RESOLVED " in line for line in lines)
    assert int(match[4]) == int(match[1]) - int(match[3])


def test_evaluated_ages_read_in_two_units() -> None:
    from syncwatch.evaluate import age_text, ratio_text

    assert [age_text(s) for s in (0, 45, 587, 4372, 3600, 1_222_313)] == [
        "0s",
        "45s",
        "9m47s",
        "1h12m",
        "1h",
        "14d3h",
    ]
    assert [ratio_text(r) for r in (0.3, 4.94, 4078.4)] == ["0.3x", "4.9x", "4078x"]


def test_the_banner_names_the_status_page(demo: str) -> None:
    assert re.search(r"status page: http://127\.0\.0\.1:\d+/\?refresh=5 ", demo)
