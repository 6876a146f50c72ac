"""What per-tenant freshness costs at the benchmark fleet: `python -m benchmarks.freshness_probe`.

The fleet of docs/benchmarks.md: 1,000 Timbal orgs x 100 syncs and 10,000 Paragon users x
3 syncs (130,000 syncs, 11,000 tenants), with 30 days of history behind it: `--steps`
tenant steps (a step is a tenant whose counts changed at a cycle; the default, 100,000, is
about one stale episode per sync every 40 days, merged per tenant) and a restart a day.

Measured, each beside a baseline from the same run (the machine is shared and noisy):
- per cycle, on the event loop: `classify` (the report to each tenant's counts), beside a
  bare loop reading every evaluation's state; `observe` (the diff against the last counts);
- per cycle, on the history writer: the transaction with that cycle's steps;
- per page view: the first view after a cycle takes the ledger's snapshot and works out a
  page of 100 tenants (each tenant is worked out once per cycle); then every tenant (what
  `/api/v1/freshness` without a filter asks); then a tenant already worked out; beside
  `view.overview`, the rest of the overview page, on the same fleet;
- at start: reading the ledger back, beside a bare `SELECT *` of its steps (also the least
  a page view reading the table would cost).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from syncwatch.evaluate import Evaluation, Report, SyncState
from syncwatch.freshness import DAY, Counts, classify
from syncwatch.freshness_store import FreshnessLedger
from syncwatch.history_store import HistoryStore
from syncwatch.metrics import Snapshot
from syncwatch.models import Listing, ParagonSync, Source, TimbalSync
from syncwatch.web import view

NOW = datetime(2026, 5, 1, 12, tzinfo=UTC)
STATES = [SyncState.OK] * 97 + [SyncState.WARNING, SyncState.CRITICAL, SyncState.DISABLED]
Key = tuple[str, str]


def fleet(rng: random.Random) -> Report:
    listings: list[Listing] = []
    evaluations: list[Evaluation] = []
    for o in range(1000):
        org = f"org_{o:04d}"
        syncs = [
            TimbalSync(
                org, f"sync_{o:04d}_{i:03d}", f"conn_{i}", None, "postgres", "a", "b", 3600,
                True, 60, NOW, NOW, "ok", NOW, None,
            )
            for i in range(100)
        ]  # fmt: skip
        listings.append(Listing(Source.TIMBAL, org, syncs))
        evaluations += [Evaluation(s, rng.choice(STATES)) for s in syncs]
    for u in range(10_000):
        user = f"user_{u:05d}"
        psyncs = [ParagonSync(user, f"p_{u:05d}_{i}", "hubspot", "contacts", "ACTIVE") for i in range(3)]  # fmt: skip # noqa: E501
        listings.append(Listing(Source.PARAGON, user, psyncs))
        evaluations += [Evaluation(s, rng.choice(STATES)) for s in psyncs]
    # As evaluate_listings reports them: each listing's evaluations in turn.
    return Report(evaluations, [], listings, sizes=[len(listing.syncs) for listing in listings])


def best(call: Callable[[], object], repeat: int = 5) -> float:
    """The fastest of `repeat` runs, in ms."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return 1000 * min(times)


def history(path: Path, keys: list[Key], steps: int, rng: random.Random) -> None:
    """30 days in the ledger's tables: every tenant first seen at the start, the rest of
    `steps` spread over the month, a restart each day (a 2-minute gap)."""
    start, end = NOW.timestamp() - 30 * DAY, NOW.timestamp()
    rows = [(k[0], k[1], start, 100 if k[0] == "timbal" else 3, 0, 0, 0) for k in keys]
    for _ in range(max(0, steps - len(keys))):
        source, tenant = keys[rng.randrange(len(keys))]
        total = 100 if source == "timbal" else 3
        stale = rng.randrange(0, min(total, 5) + 1)
        rows.append((source, tenant, rng.uniform(start, end), total - stale, stale, 0, 0))
    runs = [(d + 1, start + d * DAY + 120 * (d > 0), start + (d + 1) * DAY) for d in range(30)]
    store = HistoryStore(path, wall=NOW.timestamp)
    store.attach(FreshnessLedger(max_gap=60.0))  # creates the tables
    # Filled directly: 30 days of cycles would take as long to play.
    with store._db_lock:
        store._db.executemany("INSERT OR REPLACE INTO freshness_steps VALUES (?,?,?,?,?,?,?)", rows)
        store._db.executemany("INSERT INTO freshness_runs VALUES (?,?,?)", runs)
    store.close()


def one_percent_changed(counts: dict[Key, Counts], keys: list[Key]) -> dict[Key, Counts]:
    changed = dict(counts)
    for key in keys[::100]:
        c = changed[key]
        changed[key] = Counts(fresh=c.fresh - 1, stale=c.stale + 1, unknown=c.unknown)
    return changed


def measure(report: Report, keys: list[Key], steps: int) -> list[tuple[str, str]]:
    rng = random.Random(17)
    out = [("fleet", f"{len(report.evaluations):,} syncs in {len(keys):,} tenants")]
    floor = best(lambda: [e.state for e in report.evaluations])
    cls = best(lambda: classify(report, [], NOW, {}))
    out.append(("classify, per cycle", f"{cls:.1f} ms ({cls / floor:.1f}x a bare loop, {floor:.1f} ms)"))  # fmt: skip # noqa: E501
    counts = classify(report, [], NOW, {})
    changed = one_percent_changed(counts, keys)
    snapshot = Snapshot(evaluations=tuple(report.evaluations), source_up=dict.fromkeys(keys, True))
    overview = best(lambda: view.overview(view.index(snapshot), NOW, 50, 50), repeat=3)
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "state.db"
        history(path, keys, steps, rng)
        store = HistoryStore(path, wall=NOW.timestamp)
        ledger = FreshnessLedger(max_gap=60.0)
        load = best(lambda: store.attach(ledger), repeat=1)
        scan = best(lambda: store._db.execute("SELECT * FROM freshness_steps").fetchall(), 3)
        out.append(("steps over 30 days", f"{ledger._count:,}"))
        out.append(("read back at start", f"{load:.0f} ms ({load / scan:.1f}x a bare SELECT *, {scan:.0f} ms)"))  # fmt: skip # noqa: E501

        at = iter(range(1, 1000))
        ledger.observe(counts, NOW.timestamp())
        store.flush(final=True)
        steady = best(lambda: ledger.observe(counts, NOW.timestamp() + next(at)), repeat=3)
        store.flush(final=True)
        started = time.perf_counter()
        recorded = ledger.observe(changed, NOW.timestamp() + next(at))
        diff = 1000 * (time.perf_counter() - started)
        write = best(lambda: store.flush(final=True), repeat=1)
        out.append(("observe, steady cycle", f"{steady:.1f} ms"))
        out.append(("observe, 1 % of tenants changed", f"{diff:.1f} ms ({recorded} steps)"))
        out.append(("  their write on the history writer", f"{write:.1f} ms"))

        page, every = [], []
        for i in range(3):
            ledger.observe(counts if i % 2 else changed, NOW.timestamp() + next(at))
            started = time.perf_counter()
            found = ledger.figures()
            [found.tenants[k] for k in keys[:100]]
            page.append(1000 * (time.perf_counter() - started))
            started = time.perf_counter()
            [found.tenants[k] for k in found.tenants]
            every.append(1000 * (time.perf_counter() - started))
        cached = best(lambda: ledger.figures().tenants[keys[0]], repeat=20)
        first, whole = statistics.median(page), statistics.median(every)
        out.append(("first view after a cycle, 100 tenants", f"{first:.1f} ms ({first / overview:.3f}x view.overview, {overview:.0f} ms)"))  # fmt: skip # noqa: E501
        out.append(("every tenant (the API, unfiltered)", f"{whole:.0f} ms ({whole / overview:.2f}x view.overview)"))  # fmt: skip # noqa: E501
        out.append(("a tenant already worked out", f"{cached * 1000:.1f} us"))
        store.close()
        size = sum(p.stat().st_size for p in Path(work).iterdir())
    out.append(("state file", f"{size / 2**20:.1f} MiB"))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    args = parser.parse_args()
    report = fleet(random.Random(17))
    keys = [(str(listing.source), listing.tenant) for listing in report.listings]
    for name, value in measure(report, keys, args.steps):
        print(f"{name:40} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
