"""The state store at run time: its database on one worker thread, the outbox mirrored in memory.

Every database call runs on one dedicated thread (one connection, serialised), so a locked,
slow or unreachable database never blocks the event loop. Writes are journalled: each
operation is appended to an in-memory journal and the worker writes the whole journal in
one transaction. When that fails (SQLite locked by another process, disk full, I/O error;
PostgreSQL down or unreachable) the journal is kept and written again at the next
operation, so cycles and deliveries go on from memory while the database is sick, and
everything is committed once it recovers.

The outbox's order, attempts and due times are mirrored in memory (read by the dispatcher
and the metrics without touching the disk); payloads stay in memory only until written,
then are read back when their row is delivered. A delivered row leaves the mirror at
once, so it is never sent again by this process, whether or not its deletion is written yet.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import structlog

from syncwatch.lifecycle import Alert, Identity, TenantKey, Transition
from syncwatch.outbox import Batch
from syncwatch.state import (
    Ack,
    CycleWrite,
    NewRow,
    Reschedule,
    ShiftOutbox,
    StateStore,
    Write,
)

log = structlog.get_logger("syncwatch.store")

T = TypeVar("T")

# A healthy write waits this long for another connection's lock; a sick store retries
# without waiting, so that a locked file costs a cycle nothing.
BUSY_TIMEOUT_MS = 1000


class StoreUnavailableError(Exception):
    """A read from the state database failed; the caller retries later (safe to log)."""


@dataclass(frozen=True, slots=True)
class Row:
    """One outbox row as the dispatcher sees it."""

    delivery_id: str
    notifier: str
    created_at: datetime
    attempts: int
    next_attempt_at: datetime
    created_mono: float | None = None  # monotonic time it was queued, if by this process
    held: bool = False  # its cycle's commit is still being written: not deliverable yet


class Store:
    """What the daemon's async code talks to; the StateStore is only touched by its worker."""

    def __init__(self, db: StateStore) -> None:
        self.db = db
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="syncwatch-state")
        self._lock = threading.Lock()  # journal and payloads: shared with the worker
        self._journal: list[Write] = []
        self._payloads: dict[str, bytes] = {}  # rows not yet written
        self._queues: dict[str, dict[str, Row]] = {}  # notifier → rows in queue order
        self._where: dict[str, str] = {}  # delivery id → notifier
        self._held: list[str] = []
        self._error = ""  # the last failure; "" while the store works
        self._scheduled: Future[bool] | None = None
        self._closed = False
        for r in self._starting(db.queued):
            self._add(Row(r.delivery_id, r.notifier, r.created_at, r.attempts, r.next_attempt_at))

    # --- state of the store ---------------------------------------------------------------

    @property
    def up(self) -> bool:
        """False while the last operation failed or writes wait in memory after a failure."""
        return not self._error

    @property
    def problem(self) -> str:
        """Why the store is degraded ("" when it is not)."""
        if not self._error:
            return ""
        with self._lock:
            waiting = len(self._journal)
        return f"{self._error}; {waiting} write(s) kept in memory"

    def unflushed(self) -> int:
        with self._lock:
            return len(self._journal)

    # --- alerts -------------------------------------------------------------------------

    def load(self) -> tuple[dict[Identity, Alert], dict[TenantKey, int]]:
        """Alerts and failure counts as the last committed cycle left them (at start)."""
        return self._starting(self.db.load)

    def commit_cycle(
        self, transition: Transition, batches: Iterable[Batch], created_mono: float | None = None
    ) -> int:
        """Journal a cycle; its rows are deliverable once a flush has tried to write it."""
        write = CycleWrite.of(transition, batches)
        self._append(write, write.rows, created_mono, held=True)
        return write.size

    def write_alerts(self, alerts: Sequence[Alert]) -> None:
        """Journal alerts changed outside a cycle (re-based after a clock step)."""
        if alerts:
            self._journal_and_flush(CycleWrite(changed=tuple(alerts)))

    # --- outbox writes ------------------------------------------------------------------

    def enqueue(self, batches: Iterable[Batch], created_mono: float | None = None) -> int:
        rows = tuple(NewRow.of(b) for b in batches)
        self._append(CycleWrite(rows=rows), rows, created_mono, held=False)
        return len(rows)

    def ack(self, delivery_id: str) -> None:
        """Delivered: gone from memory now, and its deletion is written at once."""
        self._remove(delivery_id)
        self._journal_and_flush(Ack(delivery_id))

    drop = ack

    def reschedule(self, delivery_id: str, next_attempt_at: datetime, error: str) -> None:
        notifier = self._where.get(delivery_id)
        if notifier is not None:
            queue = self._queues[notifier]
            row = queue[delivery_id]
            queue[delivery_id] = replace(
                row, attempts=row.attempts + 1, next_attempt_at=next_attempt_at
            )
        self._journal_and_flush(Reschedule(delivery_id, next_attempt_at.timestamp(), error))

    def shift(self, offset: float) -> None:
        """The wall clock stepped: stored row times move with it, so ages are kept."""
        delta = timedelta(seconds=offset)
        for queue in self._queues.values():
            for key, row in queue.items():
                queue[key] = replace(
                    row,
                    created_at=row.created_at + delta,
                    next_attempt_at=row.next_attempt_at + delta,
                )
        self._journal_and_flush(ShiftOutbox(offset))

    # --- outbox reads (memory only) -------------------------------------------------------

    def head(self, notifier: str) -> Row | None:
        queue = self._queues.get(notifier)
        return next(iter(queue.values())) if queue else None

    def heads(self) -> list[Row]:
        return [row for n in self.notifiers() if (row := self.head(n)) is not None]

    def notifiers(self) -> list[str]:
        """Notifiers with queued rows."""
        return [n for n, queue in self._queues.items() if queue]

    def pending(self) -> dict[str, int]:
        """Undelivered rows per notifier (`syncwatch_outbox_pending`)."""
        # Also read by the metrics thread: copy the items first (one step under the GIL).
        return {n: len(queue) for n, queue in list(self._queues.items()) if queue}

    async def payload(self, delivery_id: str) -> bytes:
        """The row's stored batch; from memory until written, then from the database."""
        with self._lock:
            payload = self._payloads.get(delivery_id)
        if payload is not None:
            return payload
        try:
            found = await asyncio.wrap_future(self._worker.submit(self.db.payload, delivery_id))
        except self.db.errors as exc:
            self._failed(exc)
            raise StoreUnavailableError(f"state store: {self.db.error_text(exc)}") from None
        return b"" if found is None else found  # gone from the database: unreadable

    # --- writing --------------------------------------------------------------------------

    async def flush(self) -> bool:
        """Write the journal now; True when everything is committed. Releases held rows."""
        held = len(self._held)
        try:
            ok = await asyncio.wrap_future(self._schedule())
        finally:
            # Written, or the store is sick and memory must carry on: deliverable either way.
            for delivery_id in self._held[:held]:
                notifier = self._where.get(delivery_id)
                if notifier is not None:
                    queue = self._queues[notifier]
                    queue[delivery_id] = replace(queue[delivery_id], held=False)
            del self._held[:held]
        return ok

    def close(self) -> None:
        """Write what is left (one last try), then close the database."""
        if self._closed:
            return
        self._closed = True
        try:
            if not self._worker.submit(self._flush_now).result():
                log.error(
                    "state_unflushed_at_exit",
                    writes=self.unflushed(),
                    error=self._error,
                    hint="these changes are lost; notifications may be sent again",
                )
            self._worker.submit(self.db.close).result()
        finally:
            self._worker.shutdown(wait=True)

    def _append(
        self, write: Write, rows: Sequence[NewRow], created_mono: float | None, *, held: bool
    ) -> None:
        with self._lock:
            self._journal.append(write)
            for r in rows:
                self._payloads[r.delivery_id] = r.payload
        for r in rows:
            created = datetime.fromtimestamp(r.created_at, UTC)
            self._add(Row(r.delivery_id, r.notifier, created, 0, created, created_mono, held))
            if held:
                self._held.append(r.delivery_id)
        if not held:
            self._schedule()

    def _add(self, row: Row) -> None:
        self._queues.setdefault(row.notifier, {})[row.delivery_id] = row
        self._where[row.delivery_id] = row.notifier

    def _remove(self, delivery_id: str) -> None:
        notifier = self._where.pop(delivery_id, None)
        if notifier is not None:
            self._queues[notifier].pop(delivery_id, None)
        with self._lock:
            self._payloads.pop(delivery_id, None)

    def _journal_and_flush(self, write: Write) -> None:
        with self._lock:
            self._journal.append(write)
        self._schedule()

    def _schedule(self) -> Future[bool]:
        """One flush queued on the worker at a time; it writes whatever the journal holds."""
        scheduled = self._scheduled
        if scheduled is not None and not scheduled.running() and not scheduled.done():
            return scheduled
        if self._closed:
            done: Future[bool] = Future()
            done.set_result(False)
            return done
        self._scheduled = self._worker.submit(self._flush_now)
        return self._scheduled

    def _flush_now(self) -> bool:
        """On the worker: write the journal in one transaction."""
        with self._lock:
            writes = list(self._journal)
        if not writes:
            return not self._error or self._recovered(0)
        try:
            # Sick: a retry must not wait out another process's lock on every operation.
            self.db.set_busy_timeout(0 if self._error else BUSY_TIMEOUT_MS)
            self.db.write(writes)
        except self.db.integrity_errors as exc:
            # Can never succeed (a duplicate delivery id): write the rest one by one.
            written = self._write_one_by_one(writes, exc)
            if written is None:
                return False
        except self.db.errors as exc:
            self._failed(exc)
            return False
        with self._lock:
            del self._journal[: len(writes)]
            for w in writes:
                if isinstance(w, CycleWrite):
                    for r in w.rows:
                        self._payloads.pop(r.delivery_id, None)
        return not self._error or self._recovered(len(writes))

    def _write_one_by_one(self, writes: list[Write], first: Exception) -> int | None:
        for w in writes:
            try:
                self.db.write([w])
            except self.db.integrity_errors as exc:
                log.error("state_write_rejected", error=self.db.error_text(exc))
            except self.db.errors as exc:
                self._failed(exc)
                return None
        log.error("state_write_split", error=self.db.error_text(first))
        return len(writes)

    def _failed(self, exc: Exception) -> None:
        was_up = not self._error
        self._error = self.db.error_text(exc)
        if was_up:
            log.error(
                "state_degraded",
                error=self._error,
                **self.db.names,
                # What is wrong with the database and what to do, as at start (disk full…).
                state_problem=str(self.db.describe(exc)),
                writes_in_memory=self.unflushed(),
                hint=self.db.degraded_hint,
            )

    def _recovered(self, writes: int) -> bool:
        log.info("state_recovered", writes_flushed=writes, after=self._error)
        self._error = ""
        return True

    def _on_worker(self, call: Callable[[], T]) -> T:
        return self._worker.submit(call).result()

    def _starting(self, call: Callable[[], T]) -> T:
        """A read at start: a database that fails it stops the start with one line."""
        try:
            return self._on_worker(call)
        except self.db.errors as exc:
            raise self.db.describe(exc) from None
