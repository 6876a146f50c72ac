"""Silences, as Alertmanager defines them: matchers on alert labels, and a time range.

Pure: no storage, no clock of its own. A silence mutes an alert when it is active (its
range holds `now`) and every one of its matchers matches the alert's labels. A matcher on a
label the alert lacks matches it as the empty string; a regex is anchored at both ends.
"""

from __future__ import annotations

import enum
import json
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import cached_property

# Expired silences are kept this long (Alertmanager's default retention), then collected.
DEFAULT_RETENTION = timedelta(days=5)


class SilenceState(enum.StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    EXPIRED = "expired"


@dataclass(frozen=True)
class Matcher:
    """`name` = / != / =~ / !~ `value`, as Alertmanager's `matcher` object."""

    name: str
    value: str
    is_regex: bool = False
    is_equal: bool = True

    @cached_property
    def _pattern(self) -> re.Pattern[str]:
        return re.compile(f"^(?:{self.value})$")

    def matches(self, labels: Mapping[str, str]) -> bool:
        got = labels.get(self.name, "")
        hit = self._pattern.match(got) is not None if self.is_regex else got == self.value
        return hit is self.is_equal

    @property
    def operator(self) -> str:
        """`=`, `!=`, `=~` or `!~`."""
        return _OPERATORS[(self.is_regex, self.is_equal)]

    def __str__(self) -> str:
        """`name="value"` (or `!=`, `=~`, `!~`), JSON-quoted as the silence form reads it back."""
        name = self.name if _PLAIN_NAME.fullmatch(self.name) else json.dumps(self.name)
        return f"{name}{self.operator}{json.dumps(self.value, ensure_ascii=False)}"


_PLAIN_NAME = re.compile(r'[^=!~"\s]+')  # a label name that needs no quotes in a matcher
_OPERATORS = {(False, True): "=", (False, False): "!=", (True, True): "=~", (True, False): "!~"}


@dataclass(frozen=True, slots=True)
class AckOf:
    """Marks a silence as the acknowledgement of one alert, at the severity it was acked at."""

    fingerprint: str
    severity: str


@dataclass(frozen=True, slots=True)
class Silence:
    """One silence; `updated_at` is when it was created or last changed; `ack` when it is
    an acknowledgement (it ends when that alert resolves or changes severity)."""

    id: str
    matchers: tuple[Matcher, ...]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    updated_at: datetime
    ack: AckOf | None = None

    def state(self, now: datetime) -> SilenceState:
        if now >= self.ends_at:
            return SilenceState.EXPIRED
        if now < self.starts_at:
            return SilenceState.PENDING
        return SilenceState.ACTIVE

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether every matcher matches `labels` (whatever the time)."""
        return all(m.matches(labels) for m in self.matchers)

    def mutes(self, labels: Mapping[str, str], now: datetime) -> bool:
        """Whether this silence mutes an alert with `labels` at `now`."""
        return self.state(now) is SilenceState.ACTIVE and self.matches(labels)

    def expired(self, now: datetime) -> Silence:
        """This silence ended at `now` (a pending one never starts), as DELETE does."""
        if self.state(now) is SilenceState.EXPIRED:
            return self
        starts = min(self.starts_at, now)
        return replace(self, starts_at=starts, ends_at=now, updated_at=now)


def problems(silence: Silence) -> list[str]:
    """Why Alertmanager would refuse `silence`; empty when it is valid."""
    found = []
    if not silence.matchers:
        found.append("at least one matcher is required")
    for m in silence.matchers:
        if not m.name:
            found.append("a matcher has an empty label name")
        if m.is_regex:
            try:
                re.compile(m.value)
            except re.error as exc:
                found.append(f"matcher {m}: invalid regular expression: {exc}")
    if silence.matchers and all(_matches_empty(m) for m in silence.matchers):
        # It would silence every alert, even those without the labels named.
        found.append("at least one matcher must not match the empty string")
    if silence.ends_at <= silence.starts_at:
        found.append("endsAt must be after startsAt")
    if not silence.created_by.strip():
        found.append("createdBy is required")
    if not silence.comment.strip():
        found.append("comment is required")
    return found


def _matches_empty(m: Matcher) -> bool:
    try:
        return m.matches({})
    except re.error:
        return False


# What mutes an alert right now: the ids (or names) of the silences and maintenance windows
# that do, given its labels and the time; empty when nothing does.
Muter = Callable[[Mapping[str, str], datetime], tuple[str, ...]]


class _Active:
    """The silences active at one time, indexed by one `name="value"` matcher of each:
    an alert is matched against the silences that can mute it, not against every one."""

    def __init__(self, silences: Sequence[Silence]) -> None:
        self.by_label: dict[str, dict[str, list[tuple[int, Silence]]]] = {}
        self.rest: list[tuple[int, Silence]] = []  # no such matcher: asked of every alert
        for n, s in enumerate(silences):
            key = next((m for m in s.matchers if m.is_equal and not m.is_regex), None)
            if key is None:
                self.rest.append((n, s))
            else:
                self.by_label.setdefault(key.name, {}).setdefault(key.value, []).append((n, s))

    def __call__(self, labels: Mapping[str, str]) -> tuple[str, ...]:
        found: list[tuple[int, Silence]] | None = None  # no list at all for most alerts
        for name, values in self.by_label.items():
            if hit := values.get(labels.get(name, "")):  # a missing label is ""
                found = hit if found is None else found + hit
        if self.rest:
            found = self.rest if found is None else found + self.rest
        if not found:
            return ()
        if len(found) > 1:  # in the order given, as one list would be
            found = sorted(found, key=operator.itemgetter(0))
        return tuple(s.id for _, s in found if s.matches(labels))


def muted_by(silences: Iterable[Silence]) -> Muter:
    """A Muter over a fixed set of silences (the store hands out a fresh set per cycle).

    Which are active is worked out once per `now` (a cycle, or a page, asks about every
    alert at one time), and only the silences an alert's labels can match are checked.
    """
    kept: Sequence[Silence] = tuple(silences)
    memo: dict[datetime, _Active] = {}

    def muter(labels: Mapping[str, str], now: datetime) -> tuple[str, ...]:
        active = memo.get(now)
        if active is None:
            memo.clear()
            active = memo[now] = _Active([s for s in kept if s.state(now) is SilenceState.ACTIVE])
        return active(labels)

    return muter


def collectable(silence: Silence, now: datetime, retention: timedelta) -> bool:
    """Whether an expired silence has been kept long enough to be deleted."""
    return silence.state(now) is SilenceState.EXPIRED and now - silence.ends_at >= retention


def any_of(muters: Iterable[Muter]) -> Muter:
    """Mutes what any of `muters` mutes (silences and maintenance windows), naming each."""
    kept: Sequence[Muter] = tuple(muters)

    def muter(labels: Mapping[str, str], now: datetime) -> tuple[str, ...]:
        found: tuple[str, ...] = ()
        for m in kept:  # asked of every alert of a cycle or a page: a loop, no generator
            if names := m(labels, now):
                found += names
        return found

    return muter
