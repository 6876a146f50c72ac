"""Freshness per tenant: the share of a window its syncs were within their thresholds. Pure.

The unit is the sync-second: a tenant with 10 syncs observed for an hour has 36,000 of
them, and each is fresh, stale, excluded or unknown. A tenant's figure is the share of its
sync-seconds that were fresh, so a big tenant with one stale sync stays near 100 % and a
tenant whose only sync is stale is at 0 %.

- **fresh**: the sync's evaluation was `ok` (within its thresholds);
- **stale**: `warning` or `critical` (an alert condition held, whatever its `for`, its
  silences or acks: a silence does not make data fresh);
- **excluded**: in an open `[[maintenance]]` window that selects the sync by its `source`,
  `tenant` and `sync_id` labels (a window that also matches other labels, such as
  `alertname` or `severity`, describes alerts, not syncs, and excludes nothing here);
  excluded time counts in neither share;
- **unknown**: the tenant's listing failed (unreachable), the sync's record was unreadable,
  its upstream status is one syncwatch does not know, syncwatch was not observing (down,
  or before the tenant was first seen: "no data yet"). Unknown is never fresh: it is left
  out of the fresh share and shown beside it;
- **not counted**: disabled syncs that are not alerted on and syncs an override ignores.
  Nobody expects their data to be fresh; counting them stale would punish a customer's
  own pause, counting them fresh would flatter. (A disabled sync that is alerted on is
  stale: its alert condition holds.)

A tenant's history is a list of `Step`s: the counts seen at a cycle hold until the next
step. `Observed` says when syncwatch was observing (its runs, from the first to the last
cycle of each); the time between runs is unknown for every sync the tenant had then.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from syncwatch.evaluate import Report, SyncState
from syncwatch.globs import glob_match
from syncwatch.maintenance import Window, is_open

TenantKey = tuple[str, str]  # (source, tenant)

DAY = 86400.0
# The windows shown, shortest first: (name, seconds).
WINDOWS: tuple[tuple[str, float], ...] = (("24h", DAY), ("7d", 7 * DAY), ("30d", 30 * DAY))


class Counts(NamedTuple):
    """How many of a tenant's syncs were in each class at one observation (a tuple:
    compared at C speed, for every tenant each cycle)."""

    fresh: int = 0
    stale: int = 0
    excluded: int = 0
    unknown: int = 0

    @property
    def total(self) -> int:
        return self.fresh + self.stale + self.excluded + self.unknown


NOTHING = Counts()


@dataclass(frozen=True, slots=True)
class Step:
    """From `at` (unix seconds) until the tenant's next step, its syncs were `counts`."""

    at: float
    counts: Counts


class Figures(NamedTuple):
    """One tenant over one window, in sync-seconds."""

    fresh: float = 0.0
    stale: float = 0.0
    excluded: float = 0.0
    unknown: float = 0.0

    @property
    def fresh_share(self) -> float | None:
        """fresh / (fresh + stale); None when nothing was known."""
        known = self.fresh + self.stale
        return self.fresh / known if known > 0 else None

    @property
    def unknown_share(self) -> float | None:
        """unknown / (fresh + stale + unknown): how much of the figure is missing."""
        counted = self.fresh + self.stale + self.unknown
        return self.unknown / counted if counted > 0 else None

    @property
    def excluded_share(self) -> float | None:
        """excluded / everything: how much of the window was maintenance."""
        whole = self.fresh + self.stale + self.unknown + self.excluded
        return self.excluded / whole if whole > 0 else None


class Observed:
    """When syncwatch was observing: runs [start, end] in time order, disjoint.

    `upto(t)` is the observed time before `t`, from an origin of its own: a difference of
    two is what counts. Dropping old runs keeps it (each run remembers the observed time
    before it), so values taken earlier stay comparable for every `t` after those runs.
    """

    def __init__(self, runs: Iterable[tuple[float, float]] = ()) -> None:
        self._starts: list[float] = []
        self._ends: list[float] = []
        self._before: list[float] = []
        for start, end in sorted(runs):
            self.begin(start)
            self.advance(end)

    @property
    def runs(self) -> tuple[tuple[float, float], ...]:
        return tuple(zip(self._starts, self._ends, strict=True))

    def copy(self) -> Observed:
        other = Observed()
        other._starts, other._ends = list(self._starts), list(self._ends)
        other._before = list(self._before)
        return other

    def begin(self, at: float) -> None:
        """A run starts at `at` (after every run so far)."""
        before = self._before[-1] + self._ends[-1] - self._starts[-1] if self._starts else 0.0
        self._starts.append(at)
        self._ends.append(at)
        self._before.append(before)

    def advance(self, at: float) -> None:
        """The current run goes on until `at`."""
        self._ends[-1] = at

    def drop(self, count: int) -> None:
        """Forget the oldest `count` runs."""
        del self._starts[:count], self._ends[:count], self._before[:count]

    def upto(self, t: float) -> float:
        """Observed seconds before `t`."""
        k = bisect_right(self._starts, t) - 1
        if k < 0:
            return self._before[0] if self._before else 0.0
        return self._before[k] + min(t, self._ends[k]) - self._starts[k]

    def within(self, start: float, end: float) -> float:
        """Observed seconds in [start, end)."""
        return self.upto(end) - self.upto(start) if end > start else 0.0


_WIDTH = 9  # per step: observed-before, 4 counts, 4 sync-second sums since the first step


class Track:
    """One tenant's steps, each with the sync-seconds of every class from the first step
    to it, so that any window costs one bisection (the steps are only ever appended)."""

    __slots__ = ("_rows", "ats")

    def __init__(self) -> None:
        self.ats = array("d")
        self._rows = array("d")

    def __len__(self) -> int:
        return len(self.ats)

    def counts(self, k: int) -> Counts:
        r = self._rows[k * _WIDTH + 1 : k * _WIDTH + 5]
        return Counts(int(r[0]), int(r[1]), int(r[2]), int(r[3]))

    def step(self, k: int) -> Step:
        return Step(self.ats[k], self.counts(k))

    def append(self, step: Step, observed: Observed) -> None:
        """Add a step after the last; `observed` must already reach `step.at`."""
        seen_to = observed.upto(step.at)
        if self.ats:
            obs, f, s, x, u, cf, cs, cx, cu = self._rows[-_WIDTH:]
            seen = seen_to - obs
            unseen = step.at - self.ats[-1] - seen
            sums = (cf + f * seen, cs + s * seen, cx + x * seen,
                    cu + u * seen + (f + s + x + u) * unseen)  # fmt: skip
        else:
            sums = (0.0, 0.0, 0.0, 0.0)
        self.ats.append(step.at)
        self._rows.extend((seen_to, *step.counts, *sums))

    def since(self, k: int) -> Track:
        """A copy without the first `k` steps."""
        other = Track()
        other.ats = self.ats[k:]
        other._rows = self._rows[k * _WIDTH :]
        return other

    def _at(self, t: float, seen_to: float, n: int) -> tuple[float, float, float, float]:
        """The sums from the first step to `t` (`seen_to`: `upto(t)`), over the first `n`
        steps; before the first step, its syncs are unknown ("no data yet")."""
        k = bisect_right(self.ats, t, 0, n) - 1
        if k < 0:
            _, f, s, x, u, cf, cs, cx, cu = self._rows[:_WIDTH]
            return (cf, cs, cx, cu - (f + s + x + u) * (self.ats[0] - t))
        obs, f, s, x, u, cf, cs, cx, cu = self._rows[k * _WIDTH : (k + 1) * _WIDTH]
        seen = seen_to - obs
        unseen = t - self.ats[k] - seen
        # Not observed: whatever each sync was, it is unknown (maintenance too).
        return (cf + f * seen, cs + s * seen, cx + x * seen,
                cu + u * seen + (f + s + x + u) * unseen)  # fmt: skip

    def between(
        self, start: float, end: float, observed: Observed, n: int | None = None
    ) -> Figures:
        """Its figures over [start, end] (over its first `n` steps)."""
        n = len(self.ats) if n is None else n
        if not n or end <= start:
            return Figures()
        return _difference(
            self._at(start, observed.upto(start), n), self._at(end, observed.upto(end), n)
        )


def _difference(a: Sequence[float], b: Sequence[float]) -> Figures:
    return Figures(b[0] - a[0], b[1] - a[1], b[2] - a[2], b[3] - a[3])


def track_of(steps: Iterable[Step], observed: Observed) -> Track:
    track = Track()
    for step in steps:
        track.append(step, observed)
    return track


def figures(steps: Sequence[Step], observed: Observed, now: float, length: float) -> Figures:
    """One tenant's figures over [now - length, now] from its steps (sorted by `at`)."""
    return track_of(steps, observed).between(now - length, now, observed)


class FiguresAt(Mapping[TenantKey, Mapping[str, Figures]]):
    """Every tenant's figures for each window (by name) at `now`, each tenant worked out
    the first time it is asked for (a page shows a few; `/api/v1/freshness` all of them).

    `tracks`: each tenant's track over its first n steps (what it held when taken).
    """

    def __init__(
        self,
        tracks: Mapping[TenantKey, tuple[Track, int]],
        observed: Observed,
        now: float,
        windows: Sequence[tuple[str, float]] = WINDOWS,
    ) -> None:
        self._tracks = {key: t for key, t in tracks.items() if t[1]}
        self._now = (now, observed.upto(now))
        # The observed time at each window's start, worked out once for every tenant.
        self._edges = [
            (name, now - length, observed.upto(now - length)) for name, length in windows
        ]
        self._done: dict[TenantKey, Mapping[str, Figures]] = {}
        self._order: list[TenantKey] | None = None

    def __getitem__(self, key: TenantKey) -> Mapping[str, Figures]:
        found = self._done.get(key)
        if found is None:
            track, n = self._tracks[key]
            at_now = track._at(*self._now, n)
            found = self._done[key] = {
                name: _difference(track._at(start, seen, n), at_now)
                for name, start, seen in self._edges
            }
        return found

    def __iter__(self) -> Iterator[TenantKey]:
        if self._order is None:
            self._order = sorted(self._tracks)
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._tracks)

    def __contains__(self, key: object) -> bool:
        return key in self._tracks


# --- from one cycle's report to each tenant's counts ------------------------------------

_OK, _WARNING, _CRITICAL = SyncState.OK, SyncState.WARNING, SyncState.CRITICAL
_UNKNOWN = SyncState.UNKNOWN


def _selecting(windows: Sequence[Window], source: str, tenant: str) -> list[Window]:
    """The windows whose globs select (some of) this tenant's syncs."""
    labels = {"source": source, "tenant": tenant}
    return [
        w
        for w in windows
        if all(glob_match(labels.get(k, ""), pat) for k, pat in w.match.items() if k != "sync_id")
    ]


def _excluded(windows: Sequence[Window], sync_id: str) -> bool:
    return any(glob_match(sync_id, w.match.get("sync_id", "*")) for w in windows)


def classify(
    report: Report,
    windows: Sequence[Window],
    now: datetime,
    previous: Mapping[TenantKey, Counts],
) -> dict[TenantKey, Counts]:
    """Each listed tenant's counts this cycle.

    An unreachable tenant keeps the number of syncs it last had (`previous`), all unknown,
    or all excluded when a window selecting every sync of the tenant is open.
    """
    opened = [w for w in windows if is_open(w, now)]
    out: dict[TenantKey, Counts] = {}
    for listing, evaluations in report.by_listing():
        key = (str(listing.source), listing.tenant)
        selecting = _selecting(opened, *key) if opened else []
        if listing.error is not None:
            total = previous.get(key, NOTHING).total
            whole = any(w.match.get("sync_id", "*") == "*" for w in selecting)
            out[key] = Counts(excluded=total) if whole else Counts(unknown=total)
            continue
        row = [0, 0, 0, len(listing.invalid_ids)]  # fresh, stale, excluded, unknown
        for e in evaluations:
            # By identity, not by a dict of states: this runs for every sync each cycle.
            state = e.state
            if state is _OK:
                kind = 0
            elif state is _WARNING or state is _CRITICAL:
                kind = 1
            elif state is _UNKNOWN:
                kind = 3
            else:
                continue  # disabled (not alerted on) or ignored: not counted
            # Only while a window selecting this tenant is open: its sync_id glob.
            row[2 if selecting and _excluded(selecting, e.sync.id) else kind] += 1
        out[key] = Counts(*row)
    return out


# --- text for people ----------------------------------------------------------------------


def percent(share: float) -> str:
    """`99.2 %`, rounded down so that only all-fresh reads `100 %`."""
    if share >= 1.0:
        return "100 %"
    return f"{math.floor(share * 1000) / 10:.1f} %"


def share_percent(share: float) -> str:
    """`3 %`, `2.5 %`, `<0.1 %`: a share never rounded to nothing (unknown, maintenance)."""
    if share >= 1.0:
        return "100 %"
    if share < 0.001:
        return "<0.1 %"
    return f"{min(round(share * 100, 1), 99.9):g} %"


def text(f: Figures) -> str:
    """`99.2 % (3 % unknown)`; `unknown` when nothing was known; `no data` before any."""
    share, unknown = f.fresh_share, f.unknown_share
    if share is None:
        return "unknown" if unknown else "no data"
    if not unknown:
        return percent(share)
    return f"{percent(share)} ({share_percent(unknown)} unknown)"
