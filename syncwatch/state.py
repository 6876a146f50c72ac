"""Durable state: alerts, tenant failure counts and the outbox, in one SQLite database.

A cycle's transitions and the notifications they cause are written in one transaction, so
a crash either keeps both or neither. Only what changed is written.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson

from syncwatch.failures import redact_urls
from syncwatch.lifecycle import Alert, Identity, TenantKey, Transition
from syncwatch.models import Severity
from syncwatch.notifiers.base import AlertStatus, Batch

SCHEMA_VERSION = 1

# Each entry migrates from version i to i + 1; append, never edit.
_MIGRATIONS: Sequence[str] = (
    """
    CREATE TABLE alerts (
        alertname TEXT NOT NULL,
        source TEXT NOT NULL,
        tenant TEXT NOT NULL,
        sync_id TEXT NOT NULL,
        severity TEXT NOT NULL,
        status TEXT,
        labels BLOB NOT NULL,
        annotations BLOB NOT NULL,
        active_since REAL NOT NULL,
        fired_at REAL,
        last_notified_at REAL,
        cleared_since REAL,
        PRIMARY KEY (alertname, source, tenant, sync_id)
    ) WITHOUT ROWID;
    CREATE TABLE tenants (
        source TEXT NOT NULL,
        tenant TEXT NOT NULL,
        failures INTEGER NOT NULL,
        PRIMARY KEY (source, tenant)
    ) WITHOUT ROWID;
    CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        delivery_id TEXT NOT NULL UNIQUE,
        notifier TEXT NOT NULL,
        created_at REAL NOT NULL,
        payload BLOB NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        last_error TEXT
    );
    CREATE INDEX outbox_by_notifier ON outbox (notifier, seq);
    """,
)


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    seq: int
    delivery_id: str
    notifier: str
    created_at: datetime
    attempts: int
    next_attempt_at: datetime
    payload: bytes

    def batch(self) -> Batch:
        return Batch.from_json(self.payload)


# --- writes: what a run-time operation changes, applied in order in one transaction ------


@dataclass(frozen=True, slots=True)
class NewRow:
    """An outbox row to insert: one batch."""

    delivery_id: str
    notifier: str
    created_at: float
    payload: bytes

    @classmethod
    def of(cls, batch: Batch) -> NewRow:
        return cls(batch.delivery_id, batch.notifier, batch.created_at.timestamp(), batch.to_json())


@dataclass(frozen=True, slots=True)
class CycleWrite:
    """A cycle's alert and tenant changes with the notifications they cause."""

    changed: Sequence[Alert] = ()
    removed: Sequence[Identity] = ()
    failures_changed: Mapping[TenantKey, int] = field(default_factory=dict)
    rows: Sequence[NewRow] = ()

    @classmethod
    def of(cls, transition: Transition, batches: Iterable[Batch]) -> CycleWrite:
        return cls(
            changed=tuple(transition.changed),
            removed=tuple(transition.removed),
            failures_changed=dict(transition.failures_changed),
            rows=tuple(NewRow.of(b) for b in batches),
        )

    @property
    def size(self) -> int:
        """Rows this write touches (`rows_written` of the cycle)."""
        return len(self.changed) + len(self.removed) + len(self.failures_changed) + len(self.rows)


@dataclass(frozen=True, slots=True)
class Ack:
    """Delivered or dropped: the row goes, so a restart cannot send it again."""

    delivery_id: str


@dataclass(frozen=True, slots=True)
class Reschedule:
    delivery_id: str
    next_attempt_at: float
    error: str


@dataclass(frozen=True, slots=True)
class ShiftOutbox:
    """The wall clock stepped by `offset` seconds: stored row times move with it."""

    offset: float


Write = CycleWrite | Ack | Reschedule | ShiftOutbox


@dataclass(frozen=True, slots=True)
class QueuedRow:
    """An outbox row without its payload (which is read when the row is delivered)."""

    seq: int
    delivery_id: str
    notifier: str
    created_at: datetime
    attempts: int
    next_attempt_at: datetime


class StateStore:
    """SQLite in WAL mode; every public method is one short transaction."""

    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: an acknowledged transaction survives power loss too, not only kill -9.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._migrate()
        except BaseException:
            # Refused (newer schema, not a database…): do not leak the open connection.
            self._db.close()
            raise

    def _migrate(self) -> None:
        version: int = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"state database {self.path} has schema {version}, newer than this syncwatch "
                f"({SCHEMA_VERSION}); upgrade syncwatch or point state_path elsewhere"
            )
        for target in range(version, SCHEMA_VERSION):
            # executescript commits anything open first, so the script carries its own BEGIN.
            self._db.executescript(
                f"BEGIN IMMEDIATE; {_MIGRATIONS[target]}; PRAGMA user_version={target + 1}; COMMIT;"
            )

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)

    def close(self) -> None:
        self._db.close()

    def integrity_check(self) -> str:
        return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])

    # --- alerts and tenants -------------------------------------------------------------

    def load(self) -> tuple[dict[Identity, Alert], dict[TenantKey, int]]:
        """Alerts and failure counts as the last committed cycle left them."""
        alerts: dict[Identity, Alert] = {}
        for row in self._db.execute(
            "SELECT alertname, source, tenant, sync_id, severity, status, labels, annotations,"
            " active_since, fired_at, last_notified_at, cleared_since FROM alerts"
        ):
            alert = Alert(
                alertname=row[0],
                source=row[1],
                tenant=row[2],
                sync_id=row[3],
                severity=Severity(row[4]),
                status=None if row[5] is None else AlertStatus(row[5]),
                labels=orjson.loads(row[6]),
                annotations=orjson.loads(row[7]),
                active_since=datetime.fromtimestamp(row[8], UTC),
                fired_at=_dt(row[9]),
                last_notified_at=_dt(row[10]),
                cleared_since=_dt(row[11]),
            )
            alerts[alert.identity] = alert
        failures = {
            (source, tenant): failures
            for source, tenant, failures in self._db.execute(
                "SELECT source, tenant, failures FROM tenants"
            )
        }
        return alerts, failures

    def commit_cycle(self, transition: Transition, batches: Iterable[Batch]) -> int:
        """Write the cycle's changes and its notifications atomically; returns rows written."""
        return self.write([CycleWrite.of(transition, batches)])

    def write(self, writes: Sequence[Write]) -> int:
        """Apply `writes` in order in one transaction (all or none); returns rows written."""
        with self._tx():
            return sum(self._apply(w) for w in writes)

    def _apply(self, w: Write) -> int:
        if isinstance(w, Ack):
            self._db.execute("DELETE FROM outbox WHERE delivery_id=?", (w.delivery_id,))
            return 1
        if isinstance(w, Reschedule):
            self._db.execute(
                "UPDATE outbox SET attempts=attempts+1, next_attempt_at=?, last_error=?"
                " WHERE delivery_id=?",
                # Errors are clean when made; a URL (a receiver's secret) never lands on disk.
                (w.next_attempt_at, redact_urls(w.error), w.delivery_id),
            )
            return 1
        if isinstance(w, ShiftOutbox):
            self._db.execute(
                "UPDATE outbox SET created_at=created_at+?1, next_attempt_at=next_attempt_at+?1",
                (w.offset,),
            )
            return 0
        if w.changed:
            self._db.executemany(
                "INSERT OR REPLACE INTO alerts VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [_alert_row(a) for a in w.changed],
            )
        if w.removed:
            self._db.executemany(
                "DELETE FROM alerts WHERE alertname=? AND source=? AND tenant=? AND sync_id=?",
                w.removed,
            )
        for (source, tenant), count in w.failures_changed.items():
            if count:
                self._db.execute(
                    "INSERT OR REPLACE INTO tenants VALUES (?,?,?)", (source, tenant, count)
                )
            else:
                self._db.execute(
                    "DELETE FROM tenants WHERE source=? AND tenant=?", (source, tenant)
                )
        if w.rows:
            self._db.executemany(
                "INSERT INTO outbox (delivery_id, notifier, created_at, payload, next_attempt_at)"
                " VALUES (?,?,?,?,?)",
                [
                    (r.delivery_id, r.notifier, r.created_at, r.payload, r.created_at)
                    for r in w.rows
                ],
            )
        return w.size

    def set_busy_timeout(self, milliseconds: int) -> None:
        """How long a write waits for another connection's lock before failing."""
        self._db.execute(f"PRAGMA busy_timeout={int(milliseconds)}")

    # --- outbox -------------------------------------------------------------------------

    def enqueue(self, batches: Iterable[Batch]) -> int:
        return self.write([CycleWrite(rows=tuple(NewRow.of(b) for b in batches))])

    _ROW = "SELECT seq, delivery_id, notifier, created_at, attempts, next_attempt_at, payload"

    def queued(self) -> list[QueuedRow]:
        """Every undelivered row in queue order, without payloads."""
        return [
            QueuedRow(seq, delivery_id, notifier, _utc(created), attempts, _utc(next_at))
            for seq, delivery_id, notifier, created, attempts, next_at in self._db.execute(
                "SELECT seq, delivery_id, notifier, created_at, attempts, next_attempt_at"
                " FROM outbox ORDER BY seq"
            )
        ]

    def payload(self, delivery_id: str) -> bytes | None:
        row = self._db.execute(
            "SELECT payload FROM outbox WHERE delivery_id=?", (delivery_id,)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def heads(self) -> list[OutboxRow]:
        """The oldest undelivered row of each notifier: delivery is in order per notifier."""
        return [
            _outbox_row(r)
            for r in self._db.execute(
                f"{self._ROW} FROM outbox"  # noqa: S608 - constant fragments only
                " WHERE seq IN (SELECT MIN(seq) FROM outbox GROUP BY notifier) ORDER BY seq"
            )
        ]

    def head(self, notifier: str) -> OutboxRow | None:
        """The oldest undelivered row of one notifier."""
        row = self._db.execute(
            f"{self._ROW} FROM outbox WHERE notifier=? ORDER BY seq LIMIT 1",
            (notifier,),
        ).fetchone()
        return None if row is None else _outbox_row(row)

    def ack(self, delivery_id: str) -> None:
        """Delivered: the row goes, so a restart cannot send it again."""
        self.write([Ack(delivery_id)])

    drop = ack

    def reschedule(self, delivery_id: str, next_attempt_at: datetime, error: str) -> None:
        self.write([Reschedule(delivery_id, next_attempt_at.timestamp(), error)])

    def pending(self) -> dict[str, int]:
        """Undelivered rows per notifier (`syncwatch_outbox_pending`)."""
        return dict(self._db.execute("SELECT notifier, COUNT(*) FROM outbox GROUP BY notifier"))


def _utc(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _outbox_row(r: tuple[int, str, str, float, int, float, bytes]) -> OutboxRow:
    return OutboxRow(
        seq=r[0],
        delivery_id=r[1],
        notifier=r[2],
        created_at=datetime.fromtimestamp(r[3], UTC),
        attempts=r[4],
        next_attempt_at=datetime.fromtimestamp(r[5], UTC),
        payload=r[6],
    )


def _alert_row(a: Alert) -> tuple[object, ...]:
    return (
        a.alertname,
        a.source,
        a.tenant,
        a.sync_id,
        str(a.severity),
        None if a.status is None else str(a.status),
        orjson.dumps(a.labels),
        orjson.dumps(a.annotations),
        a.active_since.timestamp(),
        _ts(a.fired_at),
        _ts(a.last_notified_at),
        _ts(a.cleared_since),
    )


class _Transaction:
    """`with store._tx():` BEGIN IMMEDIATE … COMMIT, or ROLLBACK on error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            # SQLite may have rolled back already (SQLITE_FULL, I/O errors): a second
            # ROLLBACK would fail and hide the real error.
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            return
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error:
            # A failed COMMIT (busy, disk full) can leave the transaction open, and every
            # later BEGIN would fail; roll back so the next cycle starts clean.
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
