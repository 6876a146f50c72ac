"""What history costs in a storm: `python -m benchmarks.history_probe`.

One delivery attempt of a 20,000-alert batch: the time `record_later` takes on the caller
(the dispatcher's event loop) and building and writing its entries on the writer; then
500,000 rows (the default `alerting.history_max_rows`) and the bytes they take on disk.
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from syncwatch.history import Attempt, Outcome, attempt_entries
from syncwatch.history_store import HistoryStore
from syncwatch.outbox import AlertPayload, AlertStatus, EventKind

ALERTS = 20_000


def main() -> int:
    now = datetime.now(UTC)
    alerts = [
        AlertPayload(
            AlertStatus.FIRING,
            EventKind.FIRING,
            {
                "alertname": "SyncStale",
                "source": "timbal",
                "tenant": f"org_{i % 100:04d}",
                "sync_id": f"sync_{i:06d}",
                "severity": "warning",
            },
            {},
            now,
            None,
            f"{i:016x}",
        )
        for i in range(ALERTS)
    ]
    error = "HTTP 503 from https://hooks.slack.com/[redacted]"
    attempt = Attempt(now, "ops-slack", "5f0c" * 8, Outcome.FAILED, 1, alerts, 503, error)
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "state.db"
        store = HistoryStore(path)
        started = time.perf_counter()
        store.record_later(lambda: attempt_entries(attempt))
        recorded = time.perf_counter()
        store.flush()
        written = time.perf_counter()
        entries = attempt_entries(attempt)
        for _ in range(500_000 // ALERTS - 1):
            store.record(entries)
            store.flush()
        rows = store.rows
        store.close()
        size = sum(p.stat().st_size for p in Path(work).iterdir())
    print(
        f"{ALERTS:,}-alert attempt: {1000 * (recorded - started):.1f} ms on the caller, "
        f"{1000 * (written - recorded):.0f} ms to build and write on the writer thread"
    )
    print(f"{rows:,} rows: {size / 2**20:.0f} MiB on disk ({size / rows:.0f} B/row)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
