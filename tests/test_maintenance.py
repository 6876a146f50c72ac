"""Maintenance windows, the pure schedule: one-off and weekly, across DST changes."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from time import time_ns
from zoneinfo import ZoneInfo

import pytest

from syncwatch.maintenance import (
    EVERY_DAY,
    OneOff,
    Weekday,
    Weekly,
    Window,
    active,
    is_open,
    muter,
    next_window,
    window_json,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
# Europe/Berlin: 2026-03-29 02:00 CET jumps to 03:00 CEST (01:00Z);
# 2026-10-25 03:00 CEST falls back to 02:00 CET (01:00Z). Both are Sundays.
SPRING = datetime(2026, 3, 29, tzinfo=UTC)
AUTUMN = datetime(2026, 10, 25, tzinfo=UTC)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, sec, tzinfo=UTC)


def weekly(
    start: str, end: str, zone: ZoneInfo = BERLIN, days: frozenset[Weekday] = EVERY_DAY
) -> Window:
    return Window(
        name="w",
        match={"tenant": "acme"},
        schedule=Weekly(days, time.fromisoformat(start), time.fromisoformat(end), zone),
    )


def test_one_off_is_open_from_start_until_end_exclusive() -> None:
    window = Window("db", {"tenant": "acme"}, OneOff(utc(2026, 5, 1, 10), utc(2026, 5, 1, 12)))
    assert not is_open(window, utc(2026, 5, 1, 9, 59, 59))
    assert is_open(window, utc(2026, 5, 1, 10))
    assert is_open(window, utc(2026, 5, 1, 11, 59, 59))
    assert not is_open(window, utc(2026, 5, 1, 12))
    assert next_window(window, utc(2026, 5, 1, 9)) == (utc(2026, 5, 1, 10), utc(2026, 5, 1, 12))


def test_one_off_that_ended_has_no_next_window() -> None:
    window = Window("db", {}, OneOff(utc(2026, 5, 1, 10), utc(2026, 5, 1, 12)))
    assert next_window(window, utc(2026, 5, 1, 12)) is None


def test_weekly_window_opens_only_on_its_days() -> None:
    window = weekly("01:00", "03:00", ZoneInfo("UTC"), frozenset({Weekday.MON}))
    monday = utc(2026, 6, 1)  # a Monday
    assert is_open(window, monday + timedelta(hours=2))
    assert not is_open(window, monday + timedelta(days=1, hours=2))
    assert next_window(window, monday + timedelta(hours=4)) == (
        monday + timedelta(days=7, hours=1),
        monday + timedelta(days=7, hours=3),
    )


def test_window_across_midnight_ends_the_next_day() -> None:
    window = weekly("22:00", "02:00", ZoneInfo("UTC"), frozenset({Weekday.FRI}))
    friday = utc(2026, 6, 5)
    assert next_window(window, friday + timedelta(days=1, hours=1)) == (
        friday + timedelta(hours=22),
        friday + timedelta(days=1, hours=2),
    )
    assert not is_open(window, friday + timedelta(hours=1))  # Friday early: Thursday's slot


def test_whole_day_window_spans_midnight_to_midnight() -> None:
    window = weekly("00:00", "00:00", ZoneInfo("UTC"), frozenset({Weekday.SAT}))
    saturday = utc(2026, 6, 6)
    assert next_window(window, saturday) == (saturday, saturday + timedelta(days=1))


def test_daily_window_keeps_its_wall_time_across_the_us_dst_change() -> None:
    """09:00-17:00 New York is 14:00Z in winter and 13:00Z once DST starts (2026-03-08)."""
    window = weekly("09:00", "17:00", NEW_YORK)
    assert next_window(window, utc(2026, 3, 6)) == (utc(2026, 3, 6, 14), utc(2026, 3, 6, 22))
    assert next_window(window, utc(2026, 3, 9)) == (utc(2026, 3, 9, 13), utc(2026, 3, 9, 21))


def test_window_across_the_spring_gap_lasts_an_hour_less() -> None:
    """01:00-04:00 on the day 02:00 is skipped: 00:00Z to 02:00Z, two real hours."""
    window = weekly("01:00", "04:00")
    assert next_window(window, SPRING) == (utc(2026, 3, 29, 0), utc(2026, 3, 29, 2))


def test_window_starting_in_the_skipped_hour_starts_when_the_clock_jumps() -> None:
    """02:30 does not exist that night: the window opens at 03:00 CEST (01:00Z)."""
    window = weekly("02:30", "04:00")
    assert next_window(window, SPRING) == (utc(2026, 3, 29, 1), utc(2026, 3, 29, 2))
    assert not is_open(window, utc(2026, 3, 29, 0, 59, 59))
    assert is_open(window, utc(2026, 3, 29, 1))


def test_window_wholly_inside_the_skipped_hour_does_not_happen_that_night() -> None:
    window = weekly("02:00", "02:30", days=frozenset({Weekday.SUN}))
    assert next_window(window, SPRING) == (
        datetime(2026, 4, 5, 2, tzinfo=BERLIN),
        datetime(2026, 4, 5, 2, 30, tzinfo=BERLIN),
    )
    assert not any(is_open(window, SPRING + timedelta(minutes=m)) for m in range(0, 240, 5))


def test_window_ending_in_the_repeated_hour_covers_both_passes() -> None:
    """01:00-02:30 on the night 02:00-03:00 happens twice: 01:00 CEST to 02:30 CET."""
    window = weekly("01:00", "02:30")
    start, end = utc(2026, 10, 24, 23), utc(2026, 10, 25, 1, 30)
    assert next_window(window, AUTUMN) == (start, end)
    assert end - start == timedelta(hours=2, minutes=30)  # 1h30 of wall time, plus 1h
    assert is_open(window, utc(2026, 10, 25, 0, 45))  # 02:45 CEST, between the two 02:30s
    assert not is_open(window, end)


def test_window_starting_in_the_repeated_hour_starts_at_its_first_pass() -> None:
    """02:30-03:30 that night: from 02:30 CEST (00:30Z) to 03:30 CET (02:30Z)."""
    window = weekly("02:30", "03:30")
    assert next_window(window, AUTUMN) == (utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 2, 30))


def test_whole_day_on_the_autumn_change_lasts_25_hours() -> None:
    window = weekly("00:00", "00:00", days=frozenset({Weekday.SUN}))
    start, end = next_window(window, AUTUMN) or (AUTUMN, AUTUMN)
    assert end - start == timedelta(hours=25)


@pytest.mark.parametrize(
    ("labels", "muted"),
    [
        ({"tenant": "acme", "alertname": "SyncStale"}, True),
        ({"tenant": "acme-eu"}, False),
        ({"tenant": "other"}, False),
        ({}, False),  # a missing label is the empty string, which "acme" does not match
    ],
)
def test_active_matches_label_globs_like_routing(labels: dict[str, str], muted: bool) -> None:
    window = Window("migr", {"tenant": "acme"}, OneOff(utc(2026, 1, 1), utc(2027, 1, 1)))
    assert active([window], labels, utc(2026, 6, 1)) == (("migr",) if muted else ())


def test_active_names_only_open_windows() -> None:
    now = utc(2026, 6, 1)
    open_ = Window("open", {"tenant": "a*"}, OneOff(now - timedelta(hours=1), now + timedelta(1)))
    later = Window("later", {"tenant": "*"}, OneOff(now + timedelta(hours=1), now + timedelta(1)))
    over = Window("over", {"tenant": "*"}, OneOff(now - timedelta(hours=2), now))
    assert active([open_, later, over], {"tenant": "acme"}, now) == ("open",)


def test_muter_answers_window_names_prefixed_apart_from_silence_ids() -> None:
    now = utc(2026, 6, 1)
    window = Window("migr", {"sync_id": "s-*"}, OneOff(now, now + timedelta(hours=1)))
    mutes = muter([window])
    assert mutes({"sync_id": "s-1"}, now) == ("maintenance:migr",)
    assert mutes({"sync_id": "t-1"}, now) == ()
    assert mutes({"sync_id": "s-1"}, now + timedelta(hours=1)) == ()


def test_window_json_of_a_one_off_is_pending_then_active_then_expired() -> None:
    window = Window("db", {"tenant": "acme"}, OneOff(utc(2026, 5, 1, 10), utc(2026, 5, 1, 12)))
    pending = window_json(window, utc(2026, 5, 1, 9))
    assert pending == {
        "name": "db",
        "match": {"tenant": "acme"},
        "schedule": {"start": "2026-05-01T10:00:00+00:00", "end": "2026-05-01T12:00:00+00:00"},
        "state": "pending",
        "startsAt": "2026-05-01T10:00:00+00:00",
        "endsAt": "2026-05-01T12:00:00+00:00",
    }
    assert window_json(window, utc(2026, 5, 1, 10))["state"] == "active"
    expired = window_json(window, utc(2026, 5, 1, 12))
    assert (expired["state"], expired["startsAt"], expired["endsAt"]) == ("expired", None, None)


def test_window_json_spells_a_weekly_window_as_configured_and_its_occurrence_in_utc() -> None:
    window = weekly("02:30", "00:00", days=frozenset({Weekday.SUN, Weekday.FRI}))
    got = window_json(window, SPRING)
    assert got["schedule"] == {
        "days": ["fri", "sun"],
        "time": "02:30-24:00",
        "timezone": "Europe/Berlin",
    }
    # 02:30 is skipped that Sunday: the occurrence starts at the jump (01:00Z).
    assert (got["state"], got["startsAt"], got["endsAt"]) == (
        "pending",
        "2026-03-29T01:00:00+00:00",
        "2026-03-29T22:00:00+00:00",
    )


def test_muter_works_out_the_open_windows_once_per_now_not_per_alert() -> None:
    """A cycle asks for every alert at one `now`: muting costs about the globs alone.

    Judged as a ratio to matching the globs, in the same run, so a loaded machine cannot
    fail it; working out each weekly occurrence per alert costs 20-50x the globs.
    """
    windows = [weekly("01:00", "03:00", days=frozenset({Weekday.SAT})) for _ in range(5)]
    alerts = [{"tenant": "acme", "sync_id": f"s-{i}"} for i in range(4000)]
    now = utc(2026, 3, 28, 0, 30)  # Saturday 01:30 in Berlin: all five are open
    mutes = muter(windows)

    started = time_ns()
    for labels in alerts:
        [w for w in windows if w.matches(labels)]
    globs = time_ns() - started
    started = time_ns()
    for labels in alerts:
        assert len(mutes(labels, now)) == len(windows)
    muting = time_ns() - started

    assert muting < 4 * globs, f"muting {muting / 1e6:.0f} ms vs globs {globs / 1e6:.0f} ms"
