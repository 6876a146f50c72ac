"""The freshness ledger: each tenant's steps and syncwatch's observed runs, in memory and in
the state database.

Each successful cycle `observe`s every tenant's counts: a step is recorded only for a
tenant whose counts changed, and the current run's last cycle moves on. The history writer
(`HistoryStore.attach`) writes both in one transaction of its own, so a crash keeps a
consistent past: the time after the last written cycle is a gap, and a gap is unknown. The
run's end alone is written at most every `OBSERVED_EVERY` seconds (a quiet cycle costs the
state file nothing); a crash may lose that much observed time, which then reads unknown,
never fresh.

Everything is kept in memory as well (read at start), so a page view never reads the
database: `figures` is computed from memory once per observed cycle and cached.

Bounded: steps older than the retention go, except each tenant's last one before it (its
state when the oldest window opens); beyond `max_steps` the oldest go first (that part of
the past then reads "no data yet"); runs older than the retention go, and at most
`MAX_RUNS` are kept.
"""

from __future__ import annotations

import heapq
import sqlite3
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import structlog

from syncwatch.evaluate import Report
from syncwatch.freshness import (
    NOTHING,
    WINDOWS,
    Counts,
    Figures,
    Observed,
    Step,
    TenantKey,
    classify,
    tenant_figures,
)
from syncwatch.maintenance import Window
from syncwatch.state import migrate_part

log = structlog.get_logger("syncwatch.freshness")

PART = "freshness"
DEFAULT_MAX_STEPS = 300_000
MAX_RUNS = 2_000
OBSERVED_EVERY = 60.0  # s: how often a quiet run's end is written
PRUNE_EVERY = 60.0  # s between applications of retention and caps

_MIGRATIONS: Sequence[str] = (
    """
    CREATE TABLE freshness_runs (
        id INTEGER PRIMARY KEY,
        started REAL NOT NULL,
        last REAL NOT NULL
    );
    CREATE TABLE freshness_steps (
        source TEXT NOT NULL,
        tenant TEXT NOT NULL,
        at REAL NOT NULL,
        fresh INTEGER NOT NULL,
        stale INTEGER NOT NULL,
        excluded INTEGER NOT NULL,
        unknown INTEGER NOT NULL,
        PRIMARY KEY (source, tenant, at)
    ) WITHOUT ROWID;
    """,
)


def max_gap(poll_interval: float) -> float:
    """A longer pause between two cycles ends the run (the pause reads unknown): as
    /healthz's 3 x poll_interval, but at least a minute."""
    return max(60.0, 3 * poll_interval)


@dataclass(frozen=True, slots=True)
class Run:
    id: int
    started: float
    last: float


@dataclass(frozen=True, slots=True)
class Freshness:
    """Every tenant's figures as of one observed cycle (`as_of`), with the runs behind them."""

    as_of: float | None
    runs: tuple[tuple[float, float], ...]
    tenants: Mapping[TenantKey, Mapping[str, Figures]]


EMPTY = Freshness(None, (), {})


class FreshnessLedger:
    """Thread-safe: `observe` on the cycle, `write` on the history writer, `figures` anywhere."""

    def __init__(
        self,
        max_gap: float,
        max_steps: int = DEFAULT_MAX_STEPS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_gap = max_gap  # s between cycles beyond which a new run starts
        self.max_steps = max_steps
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._steps: dict[TenantKey, tuple[Step, ...]] = {}
        self._count = 0  # steps in memory
        self._current: dict[TenantKey, Counts] = {}
        self._runs: list[Run] = []
        self._last = float("-inf")  # the latest cycle ever observed
        self._new_run = True  # the next observation starts a run
        # Not yet written: steps to insert, steps and runs to delete, runs to upsert.
        self._unwritten: list[tuple[str, str, Step]] = []
        self._deletes: set[tuple[str, str, float]] = set()
        self._run_deletes: set[int] = set()
        self._run_writes: dict[int, Run] = {}
        self._run_written_at = float("-inf")  # monotonic time the current run was written
        self._pruned = float("-inf")
        self._version = 0  # observations so far: the cache key of `figures`
        self._cache: tuple[int, Freshness] = (-1, EMPTY)
        self._computing = threading.Lock()

    # --- opening (the history writer's connection, at start) ----------------------------

    def open(self, db: sqlite3.Connection, path: Path | str) -> None:
        """Migrate this part of the state database and read it into memory."""
        migrate_part(db, path, PART, _MIGRATIONS)
        runs = [Run(*r) for r in db.execute("SELECT id, started, last FROM freshness_runs")]
        steps: dict[TenantKey, list[Step]] = {}
        for source, tenant, at, *counts in db.execute(
            "SELECT source, tenant, at, fresh, stale, excluded, unknown FROM freshness_steps"
            " ORDER BY source, tenant, at"
        ):
            steps.setdefault((source, tenant), []).append(Step(at, Counts(*counts)))
        with self._lock:
            self._runs = sorted(runs, key=lambda r: r.started)
            self._steps = {key: tuple(found) for key, found in steps.items()}
            self._count = sum(len(s) for s in self._steps.values())
            self._current = {k: s[-1].counts for k, s in self._steps.items() if s[-1].counts.total}
            ends = [r.last for r in runs] + [s[-1].at for s in self._steps.values()]
            self._last = max(ends, default=float("-inf"))
            self._new_run = True
            self._version += 1

    # --- the cycle ----------------------------------------------------------------------

    def current(self) -> dict[TenantKey, Counts]:
        """Each tenant's counts as last observed (an unreachable one keeps its size)."""
        with self._lock:
            return dict(self._current)

    def observe_report(self, report: Report, windows: Sequence[Window], now: datetime) -> int:
        """`observe` a cycle's report (each tenant's counts by `freshness.classify`)."""
        try:
            return self.observe(classify(report, windows, now, self.current()), now.timestamp())
        except Exception as exc:  # a record, never a reason to fail the cycle
            log.error("freshness_record_failed", error=f"{type(exc).__name__}: {exc}")
            return 0

    def observe(self, counts: Mapping[TenantKey, Counts], at: float) -> int:
        """One successful cycle at wall time `at`; returns the steps it recorded.

        A tenant no longer listed gets an empty step. A cycle at or before the latest one
        observed (the wall clock stepped back) is not recorded: observing resumes once the
        clock passes it, so no time is ever counted twice.
        """
        with self._lock:
            if at <= self._last:
                return 0
            if self._new_run or not self._runs or at - self._runs[-1].last > self.max_gap:
                run = Run(max((r.id for r in self._runs), default=0) + 1, at, at)
                self._runs.append(run)
                self._new_run = False
                self._run_written_at = float("-inf")
            else:
                run = self._runs[-1] = Run(self._runs[-1].id, self._runs[-1].started, at)
            self._run_writes[run.id] = run
            self._last = at
            recorded = 0
            gone = dict.fromkeys(self._current.keys() - counts.keys(), NOTHING)
            for key, now in (*counts.items(), *gone.items()):
                if self._current.get(key, NOTHING if key in self._steps else None) == now:
                    continue
                step = Step(at, now)
                self._steps[key] = (*self._steps.get(key, ()), step)
                self._unwritten.append((key[0], key[1], step))
                recorded += 1
            self._count += recorded
            self._current = {k: c for k, c in counts.items() if c.total}
            self._version += 1
            return recorded

    # --- the history writer -------------------------------------------------------------

    def due(self, final: bool = False) -> bool:
        """Something to write: steps, deletions, a new or ended run, or the current run's
        end unwritten for `OBSERVED_EVERY` (`final`: at exit, any unwritten end)."""
        with self._lock:
            if self._unwritten or self._deletes or self._run_deletes:
                return True
            if not self._run_writes:
                return False
            current = self._runs[-1].id if self._runs else None
            return (
                final
                or set(self._run_writes) != {current}  # a run began or one ended
                or self._monotonic() - self._run_written_at >= OBSERVED_EVERY
            )

    def write(self, db: sqlite3.Connection, cutoff: float) -> Callable[[], None]:
        """Inside the writer's transaction: write what is due; returns what to do once it
        is committed. `cutoff`: the retention's start (unix seconds)."""
        if self._monotonic() - self._pruned >= PRUNE_EVERY:
            self._prune(cutoff)
        with self._lock:
            steps = list(self._unwritten)
            deletes = set(self._deletes)
            run_deletes = set(self._run_deletes)
            runs = dict(self._run_writes)
        db.executemany(
            "INSERT OR REPLACE INTO freshness_steps VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (source, tenant, s.at, s.counts.fresh, s.counts.stale, s.counts.excluded,
                 s.counts.unknown)
                for source, tenant, s in steps
            ],
        )  # fmt: skip
        db.executemany(
            "DELETE FROM freshness_steps WHERE source = ? AND tenant = ? AND at = ?",
            sorted(deletes),
        )
        db.executemany(
            "INSERT OR REPLACE INTO freshness_runs VALUES (?, ?, ?)",
            [(r.id, r.started, r.last) for r in runs.values()],
        )
        db.executemany("DELETE FROM freshness_runs WHERE id = ?", [(i,) for i in run_deletes])

        def committed() -> None:
            with self._lock:
                del self._unwritten[: len(steps)]
                self._deletes -= deletes
                self._run_deletes -= run_deletes
                for run_id, run in runs.items():
                    if self._run_writes.get(run_id) == run:  # not moved on meanwhile
                        del self._run_writes[run_id]
                if runs:
                    self._run_written_at = self._monotonic()

        return committed

    def _prune(self, cutoff: float) -> None:
        with self._lock:
            self._pruned = self._monotonic()
            dropped: list[tuple[str, str, float]] = []
            for key, steps in list(self._steps.items()):
                # Keep the last step at or before the cutoff (the state when the longest
                # window opens), unless the tenant was gone by then and never came back.
                keep = bisect_right(steps, cutoff, key=_at) - 1
                if keep == len(steps) - 1 and not steps[-1].counts.total:
                    keep = len(steps)
                if keep > 0:
                    dropped += [(key[0], key[1], s.at) for s in steps[:keep]]
                    self._set(key, steps[keep:])
            over = self._count - len(dropped) - self.max_steps
            if over > 0:  # down to 90 % of the cap, so that this does not run every time
                oldest = heapq.nsmallest(
                    over + self.max_steps // 10,
                    ((s.at, k) for k, steps in self._steps.items() for s in steps),
                )
                for key, ats in _grouped(oldest).items():
                    self._set(key, tuple(s for s in self._steps[key] if s.at not in ats))
                    dropped += [(key[0], key[1], at) for at in ats]
            self._count -= len(dropped)
            self._deletes.update(dropped)
            old = [r for r in self._runs if r.last < cutoff]
            kept = [r for r in self._runs if r.last >= cutoff]
            old += kept[: max(0, len(kept) - MAX_RUNS)]
            for r in old:
                self._runs.remove(r)
                self._run_writes.pop(r.id, None)
                self._run_deletes.add(r.id)
            if dropped or old:
                self._version += 1

    def _set(self, key: TenantKey, steps: tuple[Step, ...]) -> None:
        if steps:
            self._steps[key] = steps
        else:
            del self._steps[key]

    # --- reading ------------------------------------------------------------------------

    def figures(self) -> Freshness:
        """Every tenant's figures as of the latest observed cycle; computed once per cycle."""
        with self._computing:
            with self._lock:
                version, cached = self._cache
                if version == self._version:
                    return cached
                version = self._version
                steps = dict(self._steps)
                runs = tuple((r.started, r.last) for r in self._runs)
                as_of = self._last if self._last > float("-inf") else None
            if as_of is None:
                result = EMPTY
            else:
                observed = Observed(runs)
                longest = max(length for _, length in WINDOWS)
                result = Freshness(
                    as_of,
                    tuple(r for r in runs if r[1] >= as_of - longest),
                    {key: tenant_figures(s, observed, as_of) for key, s in sorted(steps.items())},
                )
            with self._lock:
                self._cache = (version, result)
            return result


def _at(step: Step) -> float:
    return step.at


def _grouped(found: list[tuple[float, TenantKey]]) -> dict[TenantKey, set[float]]:
    out: dict[TenantKey, set[float]] = {}
    for at, key in found:
        out.setdefault(key, set()).add(at)
    return out
