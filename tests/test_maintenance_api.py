"""GET /api/v1/maintenance on a running `syncwatch run`: the configured windows with their
state and open-or-next occurrence, following a SIGHUP reload."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import Daemon, Keys, SimProcess, launch, wait_until

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime.now(UTC).replace(microsecond=0)
OPEN = (NOW - timedelta(hours=1), NOW + timedelta(hours=1))


def entry(name: str, schedule: str) -> str:
    return f'[[maintenance]]\nname = "{name}"\nmatch = {{ tenant = "org_*" }}\n{schedule}\n'


WINDOWS = [
    entry("migr", f"start = {OPEN[0].isoformat()}\nend = {OPEN[1].isoformat()}"),
    entry("done", "start = 2020-01-01T00:00:00Z\nend = 2020-01-02T00:00:00+01:00"),
    entry("later", "start = 2099-01-01T00:00:00Z\nend = 2099-01-02T00:00:00Z"),
    entry("daily", 'time = "00:00-24:00"'),
    entry("weekend", 'days = ["sun", "sat"]\ntime = "22:00-02:00"\ntimezone = "Europe/Berlin"'),
]


@pytest.fixture
def daemon(tmp_path: Path, sim: SimProcess, rsa_keys: Keys) -> Iterator[Daemon]:
    d = launch(tmp_path, sim, rsa_keys, extra="\n".join(WINDOWS))
    yield d
    d.proc.stop()


def listing(daemon: Daemon) -> dict[str, dict[str, object]]:
    response = daemon.get("/api/v1/maintenance").raise_for_status()
    assert response.headers["content-type"] == "application/json"
    return {w["name"]: w for w in response.json()}


def test_maintenance_lists_each_window_with_its_state_and_occurrence(daemon: Daemon) -> None:
    got = listing(daemon)
    assert list(got) == ["migr", "done", "later", "daily", "weekend"]
    assert got["migr"] == {
        "name": "migr",
        "match": {"tenant": "org_*"},
        "schedule": {"start": OPEN[0].isoformat(), "end": OPEN[1].isoformat()},
        "state": "active",
        "startsAt": OPEN[0].isoformat(),
        "endsAt": OPEN[1].isoformat(),
    }
    assert got["done"]["state"] == "expired"
    assert (got["done"]["startsAt"], got["done"]["endsAt"]) == (None, None)
    assert got["later"]["state"] == "pending"
    assert got["later"]["startsAt"] == "2099-01-01T00:00:00+00:00"


def test_maintenance_gives_a_recurring_window_as_configured_with_its_occurrence(
    daemon: Daemon,
) -> None:
    got = listing(daemon)
    daily = got["daily"]
    assert daily["schedule"] == {
        "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        "time": "00:00-24:00",
        "timezone": "UTC",
    }
    assert daily["state"] == "active"
    starts = datetime.fromisoformat(str(daily["startsAt"]))
    ends = datetime.fromisoformat(str(daily["endsAt"]))
    assert starts <= datetime.now(UTC) < ends
    assert ends - starts == timedelta(days=1)
    weekend = got["weekend"]
    assert weekend["schedule"] == {
        "days": ["sat", "sun"],
        "time": "22:00-02:00",
        "timezone": "Europe/Berlin",
    }
    # Given in UTC; in Berlin it is a Saturday or Sunday at 22:00, whatever DST says.
    starts = datetime.fromisoformat(str(weekend["startsAt"]))
    ends = datetime.fromisoformat(str(weekend["endsAt"]))
    assert starts.utcoffset() == timedelta(0)
    assert starts.astimezone(BERLIN).strftime("%a %H:%M") in ("Sat 22:00", "Sun 22:00")
    assert ends.astimezone(BERLIN).strftime("%a %H:%M") in ("Sun 02:00", "Mon 02:00")


def test_maintenance_follows_a_sighup_reload(daemon: Daemon) -> None:
    text = daemon.config_path.read_text()
    daemon.config_path.write_text(text.replace(WINDOWS[1], "").replace('"later"', '"renamed"'))
    daemon.proc.popen.send_signal(signal.SIGHUP)
    wait_until(lambda: list(listing(daemon)) == ["migr", "renamed", "daily", "weekend"])
