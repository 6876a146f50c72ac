"""Maintenance windows: label globs and a schedule, one-off or weekly in an IANA time zone.

Pure: no clock, no config loading. A weekly occurrence is the span of every instant whose
wall time in the window's zone lies in its `HH:MM-HH:MM` on one of its days, so it follows
DST: a window in the skipped hour starts when the clock jumps (or never happens when it lies
wholly inside the gap), and one across the repeated hour covers both passes.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from syncwatch.globs import glob_match
from syncwatch.silences import Muter, SilenceState


class Weekday(enum.IntEnum):
    """`datetime.weekday()` numbering, spelt as in the config."""

    MON = 0
    TUE = 1
    WED = 2
    THU = 3
    FRI = 4
    SAT = 5
    SUN = 6


EVERY_DAY = frozenset(Weekday)
# A Muter answers with ids; this prefix tells a window's name from a silence's id.
MUTER_PREFIX = "maintenance:"


@dataclass(frozen=True, slots=True)
class OneOff:
    """From `start` to `end` (both aware), once."""

    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class Weekly:
    """`start`-`end` wall time on `days` in `zone`; `end <= start` ends the next day.

    `end` of `time(0)` with `start` of `time(0)` is the whole day (`00:00-24:00`).
    """

    days: frozenset[Weekday]
    start: time
    end: time
    zone: ZoneInfo

    def wall_span(self, day: date) -> tuple[datetime, datetime]:
        """The wall times of the occurrence that starts on `day` (naive, in `zone`)."""
        start = datetime.combine(day, self.start)
        end = datetime.combine(day, self.end)
        if end <= start:
            end += timedelta(days=1)
        return start, end


Schedule = OneOff | Weekly


@dataclass(frozen=True, slots=True)
class Window:
    """A named maintenance window: alerts whose labels match every glob, while it is open."""

    name: str
    match: Mapping[str, str]
    schedule: Schedule

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Every glob matches its label (a missing label is the empty string), as routing."""
        return all(glob_match(labels.get(k, ""), pat) for k, pat in self.match.items())


def next_window(window: Window, now: datetime) -> tuple[datetime, datetime] | None:
    """The occurrence open at `now`, else the next one; None when none is to come."""
    schedule = window.schedule
    if isinstance(schedule, OneOff):
        return (schedule.start, schedule.end) if schedule.end > now else None
    today = now.astimezone(schedule.zone).date()
    # From yesterday (an occurrence across midnight may still be open) to a week on.
    for offset in range(-1, 8):
        day = today + timedelta(days=offset)
        if Weekday(day.weekday()) not in schedule.days:
            continue
        wall_start, wall_end = schedule.wall_span(day)
        start = _first_at(wall_start, schedule.zone)
        end = _end_at(wall_end, schedule.zone)
        if start < end and end > now:
            return start, end
    # Only when every listed day's occurrence falls wholly inside DST gaps.
    return None


def is_open(window: Window, now: datetime) -> bool:
    found = next_window(window, now)
    return found is not None and found[0] <= now


def active(windows: Iterable[Window], labels: Mapping[str, str], now: datetime) -> tuple[str, ...]:
    """The names of the windows open at `now` whose globs match `labels`."""
    return tuple(w.name for w in windows if w.matches(labels) and is_open(w, now))


def muter(windows: Iterable[Window]) -> Muter:
    """A Muter answering `maintenance:<name>` for each open window matching an alert."""
    kept: Sequence[Window] = tuple(windows)
    # The engine asks for every alert of a cycle at one `now`: which windows are open is
    # worked out once per `now` (70 us each), leaving only the globs per alert.
    memo: dict[datetime, tuple[Window, ...]] = {}

    def mutes(labels: Mapping[str, str], now: datetime) -> tuple[str, ...]:
        opened = memo.get(now)
        if opened is None:
            memo.clear()
            opened = memo[now] = tuple(w for w in kept if is_open(w, now))
        if not opened:
            return ()
        return tuple(MUTER_PREFIX + w.name for w in opened if w.matches(labels))

    return mutes


def state(window: Window, now: datetime) -> SilenceState:
    """Active while open, pending until its next occurrence, expired when none is to come."""
    found = next_window(window, now)
    if found is None:
        return SilenceState.EXPIRED
    return SilenceState.ACTIVE if found[0] <= now else SilenceState.PENDING


def window_json(window: Window, now: datetime) -> dict[str, object]:
    """One entry of GET /api/v1/maintenance: the schedule as configured, and its state and
    occurrence at `now` (the open one, else the next; null when none is to come)."""
    schedule = window.schedule
    if isinstance(schedule, OneOff):
        spelt: dict[str, object] = {
            "start": schedule.start.isoformat(),
            "end": schedule.end.isoformat(),
        }
    else:
        end = "24:00" if schedule.end == time(0) else schedule.end.strftime("%H:%M")
        spelt = {
            "days": [d.name.lower() for d in sorted(schedule.days)],
            "time": f"{schedule.start.strftime('%H:%M')}-{end}",
            "timezone": schedule.zone.key,
        }
    found = next_window(window, now)
    return {
        "name": window.name,
        "match": dict(window.match),
        "schedule": spelt,
        "state": str(state(window, now)),
        "startsAt": None if found is None else found[0].astimezone(UTC).isoformat(),
        "endsAt": None if found is None else found[1].astimezone(UTC).isoformat(),
    }


class _Entry(Protocol):
    def window(self) -> Window: ...


class _HasMaintenance(Protocol):
    @property
    def maintenance(self) -> Sequence[_Entry]: ...


def maintenance_muter(config: _HasMaintenance) -> Muter:
    """The Muter of a Config's `[[maintenance]]` windows (build a new one on reload)."""
    return muter(entry.window() for entry in config.maintenance)


# --- wall time to instants --------------------------------------------------------------


def _wall(instant: datetime, zone: ZoneInfo) -> datetime:
    # Through UTC: astimezone() to an instant's own zone returns it unchanged, gap or not.
    return instant.astimezone(UTC).astimezone(zone).replace(tzinfo=None)


def _first_at(wall: datetime, zone: ZoneInfo) -> datetime:
    """The first instant whose wall time in `zone` is `wall` or later."""
    earlier = wall.replace(tzinfo=zone, fold=0)
    if _wall(earlier, zone) == wall:
        return earlier.astimezone(UTC)
    return _gap_end(wall, zone)


def _end_at(wall: datetime, zone: ZoneInfo) -> datetime:
    """Where a span ending at wall time `wall` ends: its second pass when the clock repeats."""
    later = wall.replace(tzinfo=zone, fold=1)
    if _wall(later, zone) == wall:
        return later.astimezone(UTC)
    return _gap_end(wall, zone)


def _gap_end(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant the clock jumps over `wall`, a wall time skipped by a forward change."""
    # In a gap, fold=1 reads `wall` with the offset after the jump and fold=0 with the one
    # before: the first instant is before the jump, the second after it.
    low = int(wall.replace(tzinfo=zone, fold=1).timestamp())
    high = int(wall.replace(tzinfo=zone, fold=0).timestamp())
    while high - low > 1:
        mid = (low + high) // 2
        if _wall(datetime.fromtimestamp(mid, UTC), zone) >= wall:
            high = mid
        else:
            low = mid
    return datetime.fromtimestamp(high, UTC)
