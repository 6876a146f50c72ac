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
database: `figures` works each tenant out from memory when first asked for, once per
observed cycle. While the file cannot be written, what waits for it is bounded by the
same caps (a step pruned before it was written is simply not written).

Bounded: steps older than the retention go, except each tenant's last one before it (its
state when the oldest window opens); beyond `max_steps` the oldest go first (that part of
the past then reads "no data yet"); runs older than the retention go, and at most
`MAX_RUNS` are kept.
"""

from __future__ import annotations

import heapq
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby
from operator import itemgetter

import structlog

from syncwatch.evaluate import Report
from syncwatch.freshness import (
    NOTHING,
    WINDOWS,
    Counts,
    Figures,
    FiguresAt,
    Observed,
    Step,
    TenantKey,
    Track,
    classify,
)
from syncwatch.maintenance import Window
from syncwatch.sqldb import Db, upsert

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

# The same part on PostgreSQL; append, never edit.
_PG_MIGRATIONS: Sequence[str] = (
    """
    CREATE TABLE freshness_runs (
        id BIGINT PRIMARY KEY,
        started DOUBLE PRECISION NOT NULL,
        last DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE freshness_steps (
        source TEXT NOT NULL,
        tenant TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        fresh INTEGER NOT NULL,
        stale INTEGER NOT NULL,
        excluded INTEGER NOT NULL,
        unknown INTEGER NOT NULL,
        PRIMARY KEY (source, tenant, at)
    );
    """,
)
_STEP = upsert(
    "freshness_steps",
    ("source", "tenant", "at", "fresh", "stale", "excluded", "unknown"),
    ("source", "tenant", "at"),
)
_RUN = upsert("freshness_runs", ("id", "started", "last"), ("id",))


def max_gap(poll_interval: float) -> float:
    """A longer pause between two cycles ends the run (the pause reads unknown): as
    /healthz's 3 x poll_interval, but at least a minute."""
    return max(60.0, 3 * poll_interval)


@dataclass(frozen=True, slots=True)
class Freshness:
    """Every tenant's figures as of one observed cycle (`as_of`), with the runs behind them
    (`tenants` works each out when first asked for, once per cycle)."""

    as_of: float | None
    runs: tuple[tuple[float, float], ...]
    tenants: Mapping[TenantKey, Mapping[str, Figures]]


EMPTY = Freshness(None, (), {})


class FreshnessLedger:
    """Thread-safe: `observe` on the cycle, `write` on the history writer, `figures` anywhere.

    A track is only ever appended to (pruning replaces it), so `figures` reads each over
    the length it had under the lock, without holding it.
    """

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
        self._tracks: dict[TenantKey, Track] = {}
        self._count = 0  # steps in memory
        self._current: dict[TenantKey, Counts] = {}  # the last counts of every tenant with syncs
        self._observed = Observed()
        self._run_ids: list[int] = []  # beside the observed runs
        self._last = float("-inf")  # the latest cycle ever observed
        self._new_run = True  # the next observation starts a run
        # Not yet written: steps to insert, steps and runs to delete, runs to upsert.
        self._unwritten: list[tuple[str, str, Step]] = []
        self._deletes: set[tuple[str, str, float]] = set()
        self._run_deletes: set[int] = set()
        self._run_writes: dict[int, tuple[float, float]] = {}
        self._run_written_at = float("-inf")  # monotonic time a run end was last written
        self._pruned = float("-inf")
        self._version = 0  # changes so far: the cache key of `figures`
        self._cache: tuple[int, Freshness] = (-1, EMPTY)
        self._computing = threading.Lock()

    # --- opening (the history writer's connection, at start) ----------------------------

    def open(self, db: Db) -> None:
        """Migrate this part of the state database and read it into memory."""
        db.migrate(PART, _PG_MIGRATIONS if db.dialect == "postgresql" else _MIGRATIONS)
        runs = sorted(
            db.execute("SELECT started, last, id FROM freshness_runs"), key=lambda r: r[0]
        )
        observed = Observed((start, end) for start, end, _ in runs)
        tracks: dict[TenantKey, Track] = {}
        found = db.execute(
            "SELECT source, tenant, at, fresh, stale, excluded, unknown FROM freshness_steps"
            " ORDER BY source, tenant, at"  # the primary key's order: no sort
        )
        for key, rows in groupby(found, itemgetter(0, 1)):
            track = tracks[key] = Track()
            for r in rows:
                track.append(Step(r[2], Counts(r[3], r[4], r[5], r[6])), observed)
        with self._lock:
            self._observed, self._run_ids = observed, [r[2] for r in runs]
            self._tracks = tracks
            self._count = sum(len(t) for t in tracks.values())
            self._current = {}
            for key, track in tracks.items():
                if (last := track.counts(len(track) - 1)).total:
                    self._current[key] = last
            ends = [r[1] for r in runs] + [t.ats[-1] for t in tracks.values()]
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
            runs = self._observed.runs
            if self._new_run or not runs or at - runs[-1][1] > self.max_gap:
                self._observed.begin(at)
                self._run_ids.append(max(self._run_ids, default=0) + 1)
                self._new_run = False
                self._run_written_at = float("-inf")
            else:
                self._observed.advance(at)
            self._run_writes[self._run_ids[-1]] = self._observed.runs[-1]
            self._last = at
            recorded = 0
            gone = dict.fromkeys(self._current.keys() - counts.keys(), NOTHING)
            for key, now in (*counts.items(), *gone.items()):
                track = self._tracks.get(key)
                last = None if track is None else self._current.get(key, NOTHING)
                if last == now:
                    continue
                if track is None:
                    track = self._tracks[key] = Track()
                step = Step(at, now)
                track.append(step, self._observed)
                self._unwritten.append((key[0], key[1], step))
                recorded += 1
            self._count += recorded
            self._current = {k: c for k, c in counts.items() if c.total}
            self._version += 1
            return recorded

    # --- the history writer -------------------------------------------------------------

    def prepare(self, cutoff: float, final: bool = False) -> bool:
        """Apply the retention and caps to memory (every `PRUNE_EVERY`; `cutoff`: the
        retention's start); then whether there is something to write: steps, deletions, a
        new or ended run, or the current run's end unwritten for `OBSERVED_EVERY` (`final`:
        at exit, any unwritten end)."""
        if self._monotonic() - self._pruned >= PRUNE_EVERY:
            self._prune(cutoff)
        with self._lock:
            if self._unwritten or self._deletes or self._run_deletes:
                return True
            if not self._run_writes:
                return False
            current = self._run_ids[-1] if self._run_ids else None
            return (
                final
                or set(self._run_writes) != {current}  # a run began or one ended
                or self._monotonic() - self._run_written_at >= OBSERVED_EVERY
            )

    def write(self, db: Db) -> Callable[[], None]:
        """Inside the writer's transaction: write what is due; returns what to do once it
        is committed."""
        with self._lock:
            steps = list(self._unwritten)
            deletes = set(self._deletes)
            run_deletes = set(self._run_deletes)
            runs = dict(self._run_writes)
        db.executemany(
            _STEP,
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
        db.executemany(_RUN, [(i, start, end) for i, (start, end) in runs.items()])
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
            for key, track in list(self._tracks.items()):
                ats = track.ats
                if ats[0] > cutoff or (len(ats) > 1 and ats[1] > cutoff and ats[-1] > cutoff):
                    continue  # nothing to drop: the common case, checked cheaply
                # Keep the last step at or before the cutoff (the state when the longest
                # window opens), unless the tenant was gone by then and never came back.
                keep = bisect_right(ats, cutoff) - 1
                if keep == len(track) - 1 and not track.counts(keep).total:
                    keep = len(track)
                if keep > 0:
                    dropped += [(key[0], key[1], at) for at in track.ats[:keep]]
                    self._set(key, track.since(keep))
            over = self._count - len(dropped) - self.max_steps
            if over > 0:  # down to 90 % of the cap, so that this does not run every time
                oldest = heapq.nsmallest(
                    over + self.max_steps // 10,
                    # Never a tenant's last step: it is what it is now.
                    ((at, k) for k, track in self._tracks.items() for at in track.ats[:-1]),
                )
                for key, oldest_ats in _grouped(oldest).items():
                    # A track's oldest steps are its first.
                    self._set(key, self._tracks[key].since(len(oldest_ats)))
                    dropped += [(key[0], key[1], at) for at in oldest_ats]
            self._count -= len(dropped)
            if dropped and self._unwritten:  # a sick disk: what it never got, it need not
                gone = set(dropped)
                self._unwritten = [w for w in self._unwritten if (w[0], w[1], w[2].at) not in gone]
            self._deletes.update(dropped)
            runs = self._observed.runs
            old = sum(1 for _, end in runs[:-1] if end < cutoff)  # in time order
            old = max(old, len(runs) - MAX_RUNS)
            if old > 0:
                self._observed.drop(old)
                for run_id in self._run_ids[:old]:
                    self._run_writes.pop(run_id, None)
                    self._run_deletes.add(run_id)
                del self._run_ids[:old]
            if dropped or old > 0:
                self._version += 1

    def _set(self, key: TenantKey, track: Track) -> None:
        if len(track):
            self._tracks[key] = track
        else:
            del self._tracks[key]

    # --- reading ------------------------------------------------------------------------

    def figures(self) -> Freshness:
        """Every tenant's figures as of the latest observed cycle: one per cycle, shared."""
        with self._computing:
            with self._lock:
                version, cached = self._cache
                if version == self._version:
                    return cached
                version = self._version
                tracks = {key: (t, len(t)) for key, t in self._tracks.items()}
                observed = self._observed.copy()
                as_of = self._last if self._last > float("-inf") else None
            if as_of is None:
                result = EMPTY
            else:
                longest = max(length for _, length in WINDOWS)
                runs = tuple(r for r in observed.runs if r[1] >= as_of - longest)
                result = Freshness(as_of, runs, FiguresAt(tracks, observed, as_of))
            with self._lock:
                self._cache = (version, result)
            return result


def _grouped(found: list[tuple[float, TenantKey]]) -> dict[TenantKey, set[float]]:
    out: dict[TenantKey, set[float]] = {}
    for at, key in found:
        out.setdefault(key, set()).add(at)
    return out
