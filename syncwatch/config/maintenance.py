"""The `[[maintenance]]` entries: a name, label globs, and a one-off or weekly schedule."""

from __future__ import annotations

import difflib
import re
import zoneinfo
from datetime import datetime
from datetime import time as wall_time
from typing import Annotated, Self

from pydantic import AfterValidator, Field, model_validator

from syncwatch.config.sections import _Model
from syncwatch.config.types import Glob, KeyProblemError
from syncwatch.maintenance import EVERY_DAY, OneOff, Weekday, Weekly, Window

_DAYS = {day.name.lower(): day for day in Weekday} | {
    name: Weekday(i)
    for i, name in enumerate(
        ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
    )
}
_HOURS = re.compile(r"^(\d\d):(\d\d)-(\d\d):(\d\d)$")
_HOURS_HINT = "expected 'HH:MM-HH:MM' in 24-hour wall time, e.g. '22:00-02:00'"


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{value.isoformat()} has no UTC offset: write it in RFC 3339, "
            "e.g. 2026-05-01T22:00:00Z or 2026-05-01T22:00:00+02:00"
        )
    return value


def _day(value: str) -> str:
    if value.strip().lower() not in _DAYS:
        raise ValueError(f"unknown day {value!r}: use mon, tue, wed, thu, fri, sat or sun")
    return value


def _hours(value: str) -> str:
    m = _HOURS.match(value.strip())
    if not m:
        raise ValueError(f"invalid time {value!r}: {_HOURS_HINT}")
    sh, sm, eh, em = (int(g) for g in m.groups())
    if sh > 23 or sm > 59 or em > 59 or eh > 24 or (eh == 24 and em):
        raise ValueError(f"invalid time {value!r}: {_HOURS_HINT} (24:00 only as an end)")
    if (sh, sm) == (eh, em):
        raise ValueError(f"invalid time {value!r}: start equals end; a whole day is 00:00-24:00")
    return value.strip()


def _zone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        close = difflib.get_close_matches(value, sorted(zoneinfo.available_timezones()), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else " such as 'Europe/Berlin' or 'UTC'"
        raise ValueError(f"unknown time zone {value!r}: use an IANA name{hint}") from None
    return value


RFC3339 = Annotated[datetime, AfterValidator(_aware)]


class MaintenanceConfig(_Model):
    """One window; alerts whose labels match every glob of `match` are muted while open."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    match: dict[str, Glob]
    # One-off.
    start: RFC3339 | None = None
    end: RFC3339 | None = None
    # Recurring: `time` on `days` (every day when left out), wall time in `timezone`.
    days: list[Annotated[str, AfterValidator(_day)]] | None = None
    time: Annotated[str, AfterValidator(_hours)] | None = None
    timezone: Annotated[str, AfterValidator(_zone)] | None = None

    @model_validator(mode="after")
    def _check_schedule(self) -> Self:
        if not self.match:
            raise KeyProblemError(
                "match",
                'at least one label glob is required, e.g. {tenant = "acme"} '
                '({alertname = "*"} mutes every alert)',
            )
        one_off = self.start is not None or self.end is not None
        recurring = self.days is not None or self.time is not None
        if one_off and recurring:
            raise KeyProblemError(
                "time" if self.time is not None else "days",
                "a window is one-off (start, end) or recurring (days, time), not both",
            )
        if one_off:
            self._check_one_off()
        elif recurring:
            if self.time is None:
                raise KeyProblemError("time", f"required with days: {_HOURS_HINT}")
            if self.days == []:
                raise KeyProblemError("days", "empty: list days, or leave days out for every day")
        else:
            raise KeyProblemError(
                "start",
                "required: a one-off start and end (RFC 3339), or a recurring "
                "time = 'HH:MM-HH:MM' (with days and timezone)",
            )
        return self

    def _check_one_off(self) -> None:
        if self.start is None:
            raise KeyProblemError("start", "required with end (RFC 3339)")
        if self.end is None:
            raise KeyProblemError("end", "required with start (RFC 3339)")
        if self.end <= self.start:
            raise KeyProblemError("end", "must be after start")
        if self.timezone is not None:
            raise KeyProblemError(
                "timezone", "only for recurring windows: give start and end a UTC offset"
            )

    def window(self) -> Window:
        """The schedule as the pure module's Window."""
        if self.start is not None and self.end is not None:
            return Window(self.name, self.match, OneOff(self.start, self.end))
        assert self.time is not None  # the validator admits no other shape
        start, _, end = self.time.partition("-")
        days = frozenset(_DAYS[d.strip().lower()] for d in self.days) if self.days else EVERY_DAY
        weekly = Weekly(
            days=days,
            start=wall_time.fromisoformat(start),
            # 24:00 is midnight at the end of the day: Weekly reads end <= start as next day.
            end=wall_time(0) if end == "24:00" else wall_time.fromisoformat(end),
            zone=zoneinfo.ZoneInfo(self.timezone or "UTC"),
        )
        return Window(self.name, self.match, weekly)
