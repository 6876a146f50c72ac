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
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from syncwatch.evaluate import Report, SyncState
from syncwatch.maintenance import Window, is_open

TenantKey = tuple[str, str]  # (source, tenant)

DAY = 86400.0
# The windows shown, shortest first: (name, seconds).
WINDOWS: tuple[tuple[str, float], ...] = (("24h", DAY), ("7d", 7 * DAY), ("30d", 30 * DAY))


@dataclass(frozen=True, slots=True)
class Counts:
    """How many of a tenant's syncs were in each class at one observation."""

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


@dataclass(frozen=True, slots=True)
class Figures:
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
    """When syncwatch was observing: runs of [start, end], sorted and disjoint."""

    def __init__(self, runs: Iterable[tuple[float, float]]) -> None:
        kept = sorted((s, e) for s, e in runs if e >= s)
        self.runs: tuple[tuple[float, float], ...] = tuple(kept)
        self._starts = [s for s, _ in kept]
        self._before: list[float] = []  # observed seconds before each run
        total = 0.0
        for s, e in kept:
            self._before.append(total)
            total += e - s

    def _upto(self, t: float) -> float:
        """Observed seconds before `t`."""
        k = bisect_right(self._starts, t) - 1
        if k < 0:
            return 0.0
        start, end = self.runs[k]
        return self._before[k] + min(t, end) - start

    def within(self, start: float, end: float) -> float:
        """Observed seconds in [start, end)."""
        return self._upto(end) - self._upto(start) if end > start else 0.0


def _at(step: Step) -> float:
    return step.at


def figures(steps: Sequence[Step], observed: Observed, now: float, length: float) -> Figures:
    """One tenant's figures over [now - length, now] from its steps (sorted by `at`)."""
    start = now - length
    if not steps or length <= 0:
        return Figures()
    fresh = stale = excluded = unknown = 0.0
    first = steps[0]
    if first.at > start:  # no data yet: as many syncs as it had when first seen
        unknown += first.counts.total * (min(first.at, now) - start)
    for k in range(max(0, bisect_right(steps, start, key=_at) - 1), len(steps)):
        a = max(steps[k].at, start)
        if a >= now:
            break
        b = min(steps[k + 1].at, now) if k + 1 < len(steps) else now
        if b <= a:
            continue
        seen = observed.within(a, b)
        c = steps[k].counts
        fresh += c.fresh * seen
        stale += c.stale * seen
        excluded += c.excluded * seen
        # Not observed: whatever each sync was, it is unknown (maintenance included).
        unknown += c.unknown * seen + c.total * (b - a - seen)
    return Figures(fresh, stale, excluded, unknown)


def tenant_figures(
    steps: Sequence[Step],
    observed: Observed,
    now: float,
    windows: Sequence[tuple[str, float]] = WINDOWS,
) -> dict[str, Figures]:
    """A tenant's figures for each window, by the window's name."""
    return {name: figures(steps, observed, now, length) for name, length in windows}


# --- from one cycle's report to each tenant's counts ------------------------------------

_CLASS = {
    SyncState.OK: 0,
    SyncState.WARNING: 1,
    SyncState.CRITICAL: 1,
    SyncState.UNKNOWN: 3,
    # DISABLED, IGNORED: not counted
}


def _maintained(windows: Sequence[Window], source: str, tenant: str, sync_id: str) -> bool:
    labels = {"source": source, "tenant": tenant, "sync_id": sync_id}
    return any(w.matches(labels) for w in windows)


def classify(
    report: Report,
    windows: Sequence[Window],
    now: datetime,
    previous: Mapping[TenantKey, Counts],
) -> dict[TenantKey, Counts]:
    """Each listed tenant's counts this cycle.

    An unreachable tenant keeps the number of syncs it last had (`previous`), all unknown,
    or all excluded when a window selecting the tenant as a whole is open.
    """
    opened = [w for w in windows if is_open(w, now)]
    tally: dict[TenantKey, list[int]] = {}
    for listing in report.listings:
        key = (str(listing.source), listing.tenant)
        if listing.error is not None:
            total = previous.get(key, NOTHING).total
            slot = 2 if _maintained(opened, key[0], key[1], "") else 3
            tally[key] = [0, 0, 0, 0]
            tally[key][slot] = total
        else:
            tally[key] = [0, 0, 0, len(listing.invalid_ids)]
    for e in report.evaluations:
        kind = _CLASS.get(e.state)
        if kind is None:
            continue
        sync = e.sync
        source, tenant = str(sync.source), sync.tenant
        if opened and _maintained(opened, source, tenant, sync.id):
            kind = 2
        row = tally.get((source, tenant))
        if row is None:
            row = tally[(source, tenant)] = [0, 0, 0, 0]
        row[kind] += 1
    return {key: Counts(*row) for key, row in tally.items()}


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
