"""The history table in the state database, written behind the cycle by its own thread.

`record` only appends to memory and wakes the writer, so the cycle and the dispatcher
never wait for a history write. The writer commits whatever has accumulated in one
transaction, deleting in it what is past the retention and, beyond the row cap, the oldest
rows (counted). While the disk is sick the entries wait in memory, bounded by the same
cap (the oldest dropped first, counted), and are written once it recovers. The table is
versioned on its own (`schema_parts`), like the silences. Other parts of the database that
are written behind the cycle (the freshness ledger) `attach` to the same writer and write
in the same transactions.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

import orjson
import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from syncwatch.history import Entry, Kind, Query
from syncwatch.sqldb import Db, Target, open_db

log = structlog.get_logger("syncwatch.history")

PART = "history"
DEFAULT_RETENTION = 30 * 86400.0
DEFAULT_MAX_ROWS = 500_000
PRUNE_EVERY = 60.0  # s: the writer also wakes this often to apply the retention

_MIGRATIONS: Sequence[str] = (
    """
    CREATE TABLE history (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        event TEXT NOT NULL,
        alertname TEXT NOT NULL,
        source TEXT NOT NULL,
        tenant TEXT NOT NULL,
        sync_id TEXT NOT NULL,
        detail BLOB NOT NULL
    );
    CREATE INDEX history_by_at ON history (at);
    CREATE INDEX history_by_tenant ON history (tenant, sync_id, id);
    """,
)

# The same part on PostgreSQL; append, never edit.
_PG_MIGRATIONS: Sequence[str] = (
    """
    CREATE TABLE history (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at DOUBLE PRECISION NOT NULL,
        kind TEXT NOT NULL,
        event TEXT NOT NULL,
        alertname TEXT NOT NULL,
        source TEXT NOT NULL,
        tenant TEXT NOT NULL,
        sync_id TEXT NOT NULL,
        detail BYTEA NOT NULL
    );
    CREATE INDEX history_by_at ON history (at);
    CREATE INDEX history_by_tenant ON history (tenant, sync_id, id);
    """,
)

_COLUMNS = "id, at, kind, event, alertname, source, tenant, sync_id, detail"


class Attached(Protocol):
    """A part of the state database written by the history writer, in its transactions."""

    def open(self, db: Db) -> None:
        """Migrate its tables and read what it needs (at attach, on the writer's connection)."""

    def prepare(self, cutoff: float, final: bool = False) -> bool:
        """Before each write, even one the database will refuse: apply the retention
        (`cutoff`: its start) to what it holds; whether it has something to write
        (`final`: the last flush before closing)."""
        ...

    def write(self, db: Db) -> Callable[[], None]:
        """Write inside the open transaction; returns what to do once it is committed."""
        ...


class HistoryStore:
    """Thread-safe; `record` never blocks on the disk. `start` the writer, `close` flushes."""

    def __init__(
        self,
        path: Target,
        retention: float = DEFAULT_RETENTION,
        max_rows: int = DEFAULT_MAX_ROWS,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.retention = retention
        self.max_rows = max_rows
        self._wall = wall
        self.dropped: Counter[str] = Counter()  # reason (cap, unwritten) → entries
        self._pending: deque[Entry] = deque()
        self._overflowed = 0  # entries ever dropped from the front of _pending
        self._builds: list[Callable[[], Sequence[Entry]]] = []  # record_later, not yet run
        self._lock = threading.Lock()  # _pending
        self._db_lock = threading.Lock()  # the connection: writer and readers take turns
        self._wake = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._error = ""
        self._secrets: list[str] = []
        self._pruned = float("-inf")  # monotonic time of the last write (retention applied)
        self._parts: list[Attached] = []
        # Not durable: a power cut may lose the last history rows, never the alert state.
        self._db: Db = open_db(path, durable=False, busy_ms=1000)
        try:
            self._migrate()
            self.rows = int(self._db.execute("SELECT count(*) FROM history").fetchone()[0])
        except self._db.errors as exc:
            self._db.close()
            raise self._db.describe(exc) from None
        except BaseException:
            self._db.close()
            raise

    @property
    def errors(self) -> tuple[type[Exception], ...]:
        return self._db.errors

    def error_text(self, exc: BaseException) -> str:
        return self._db.error_text(exc)

    def _migrate(self) -> None:
        pg = self._db.dialect == "postgresql"
        self._db.migrate(PART, _PG_MIGRATIONS if pg else _MIGRATIONS)

    def attach(self, part: Attached) -> None:
        """Write `part` with the history from now on; it is opened on this connection."""
        try:
            with self._db_lock:
                part.open(self._db)
        except self._db.errors as exc:
            raise self._db.describe(exc) from None
        self._parts.append(part)

    def wake(self) -> None:
        """Something attached has rows to write: write them soon."""
        self._wake.set()

    def set_secrets(self, secrets: Iterable[str]) -> None:
        """Configured secrets are blanked in what is stored (a last guard, as in the logs)."""
        self._secrets = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def _scrub(self, detail: bytes) -> bytes:
        for secret in self._secrets:
            detail = detail.replace(secret.encode(), b"[redacted]")
        return detail

    # --- recording: memory only ---------------------------------------------------------

    def record(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        with self._lock:
            self._pending.extend(entries)
            over = len(self._pending) - self.max_rows
            if over > 0:  # the disk has been sick for long: keep the newest
                for _ in range(over):
                    self._pending.popleft()
                self._overflowed += over
                self.dropped["unwritten"] += over
        self._wake.set()

    def record_later(self, build: Callable[[], Sequence[Entry]]) -> None:
        with self._lock:
            self._builds.append(build)
        self._wake.set()

    def _build(self) -> None:
        with self._lock:
            builds, self._builds = self._builds, []
        for build in builds:
            try:
                self.record(build())
            except Exception as exc:  # one bad event must not lose the others
                log.error("history_record_failed", error=f"{type(exc).__name__}: {exc}")

    def unwritten(self) -> int:
        with self._lock:
            return len(self._pending) + len(self._builds)

    # --- the writer ---------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="syncwatch-history", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._closing:
            self._wake.wait(PRUNE_EVERY)
            self._wake.clear()
            try:
                self.flush()
            except Exception as exc:  # a bug here must not end history for good
                log.error("history_write_failed", error=f"{type(exc).__name__}: {exc}")

    def flush(self, final: bool = False) -> bool:
        """Write what is pending and apply retention and cap, in one transaction."""
        self._build()
        with self._lock:
            batch, overflowed = list(self._pending), self._overflowed
        rows = [
            (e.at, str(e.kind), e.event, e.alertname, e.source, e.tenant, e.sync_id,
             self._scrub(orjson.dumps(e.detail)))
            for e in batch
        ]  # fmt: skip
        cutoff = self._wall() - self.retention
        due = [part.prepare(cutoff, final) for part in self._parts]
        if not rows and not any(due) and time.monotonic() - self._pruned < PRUNE_EVERY:
            return True  # nothing to write, retention applied lately: leave the lock alone
        try:
            with self._db_lock, self._db.transaction():
                self._db.executemany(
                    "INSERT INTO history (at, kind, event, alertname, source, tenant, "
                    "sync_id, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                aged = self._db.execute("DELETE FROM history WHERE at < ?", (cutoff,))
                count = self.rows + len(rows) - aged.rowcount
                over = count - self.max_rows
                if over > 0:
                    self._db.execute(
                        "DELETE FROM history WHERE id IN "
                        "(SELECT id FROM history ORDER BY id LIMIT ?)",
                        (over,),
                    )
                after = [part.write(self._db) for part in self._parts]
        except self._db.errors as exc:
            if not self._error:
                log.warning(
                    "history_write_failed",
                    error=self._db.error_text(exc),
                    entries_in_memory=len(batch),
                    hint="kept in memory and written when the state database works again",
                )
            self._error = self._db.error_text(exc)
            return False
        for done in after:
            done()
        self.rows = count - max(over, 0)
        self._pruned = time.monotonic()
        if over > 0:
            self.dropped["cap"] += over
        with self._lock:
            # What `record` dropped meanwhile came off the front: that much less to remove.
            written = len(batch) - (self._overflowed - overflowed)
            for _ in range(max(0, min(written, len(self._pending)))):
                self._pending.popleft()
        if self._error:
            log.info("history_recovered", after=self._error)
            self._error = ""
        return True

    def close(self) -> None:
        """Stop the writer, write what is left (one last try), close the database."""
        self._closing = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if (self.unwritten() or self._parts) and not self.flush(final=True):
            log.error("history_unwritten_at_exit", entries=self.unwritten())
        with self._db_lock:
            self._db.close()

    # --- reading ------------------------------------------------------------------------

    def query(self, q: Query) -> tuple[list[tuple[int, Entry]], int | None]:
        """Entries matching `q`, newest first, and the id to continue after (None: the end)."""
        where: list[str] = []
        args: list[object] = []
        for column, value in (("tenant", q.tenant), ("sync_id", q.sync_id)):
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        if q.alertname:
            where.append("alertname = ?")
            args.append(q.alertname)
        if q.since is not None:
            where.append("at >= ?")
            args.append(q.since)
        if q.until is not None:
            where.append("at < ?")
            args.append(q.until)
        if q.before is not None:
            where.append("id < ?")
            args.append(q.before)
        sql = f"SELECT {_COLUMNS} FROM history"  # noqa: S608 - only fixed column names
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        with self._db_lock:
            found = self._db.execute(sql, (*args, q.limit + 1)).fetchall()
        out = [(int(r[0]), _entry(r)) for r in found[: q.limit]]
        more = len(found) > q.limit
        return out, (out[-1][0] if more else None)


def _entry(r: tuple[int, float, str, str, str, str, str, str, bytes]) -> Entry:
    return Entry(r[1], Kind(r[2]), r[3], r[4], r[5], r[6], r[7], orjson.loads(r[8]))


class HistoryCollector(Collector):
    """`syncwatch_history_rows` and `syncwatch_history_dropped_total{reason}`."""

    def __init__(self, store: HistoryStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        rows = GaugeMetricFamily(
            "syncwatch_history_rows", "Entries in the history table (alerting.history_max_rows)."
        )
        rows.add_metric([], self.store.rows)
        yield rows
        dropped = CounterMetricFamily(
            "syncwatch_history_dropped",
            "History entries dropped before their retention: over the row cap (cap) or "
            "never written while the state file failed (unwritten).",
            labels=["reason"],
        )
        for reason in ("cap", "unwritten"):
            dropped.add_metric([reason], self.store.dropped[reason])
        yield dropped
