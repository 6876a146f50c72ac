"""Durable state: alerts, tenant failure counts and the outbox, in one database.

A cycle's transitions and the notifications they cause are written in one transaction, so
a crash either keeps both or neither. Only what changed is written. The database is a
SQLite file (`daemon.state_path`) or PostgreSQL (`daemon.state_url`), behind `sqldb.Db`:
the statements below are the same for both; each dialect has its own DDL.

State is keyed by what it is about — (alertname, source, tenant, sync_id), (source,
tenant), a delivery id — never by the replica that wrote it, so whoever owns a tenant
carries on its alerts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from syncwatch import alert_rows
from syncwatch.config.sections import PostgresTarget
from syncwatch.failures import redact_urls
from syncwatch.lifecycle import Alert, Identity, TenantKey, Transition
from syncwatch.outbox import Batch
from syncwatch.sqldb import Db, upsert
from syncwatch.sqlite_db import SqliteDb, WalLoss, migrate_part, open_checked, state_error
from syncwatch.startup import StartupError

__all__ = [  # the SQLite helpers the other parts of the state database use
    "SCHEMA_VERSION",
    "StateStore",
    "WalLoss",
    "migrate_part",
    "state_error",
]

SCHEMA_VERSION = 2

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
    # Per alert, which notifiers were told it fires (JSON: name → severity); see routing.
    "ALTER TABLE alerts ADD COLUMN told BLOB",
)

# The same part on PostgreSQL, versioned in `schema_parts` as "state"; append, never edit.
PG_MIGRATIONS: Sequence[str] = (
    """
    CREATE TABLE alerts (
        alertname TEXT NOT NULL,
        source TEXT NOT NULL,
        tenant TEXT NOT NULL,
        sync_id TEXT NOT NULL,
        severity TEXT NOT NULL,
        status TEXT,
        labels BYTEA NOT NULL,
        annotations BYTEA NOT NULL,
        active_since DOUBLE PRECISION NOT NULL,
        fired_at DOUBLE PRECISION,
        last_notified_at DOUBLE PRECISION,
        cleared_since DOUBLE PRECISION,
        told BYTEA,
        PRIMARY KEY (alertname, source, tenant, sync_id)
    );
    CREATE TABLE tenants (
        source TEXT NOT NULL,
        tenant TEXT NOT NULL,
        failures INTEGER NOT NULL,
        PRIMARY KEY (source, tenant)
    );
    CREATE TABLE outbox (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        delivery_id TEXT NOT NULL UNIQUE,
        notifier TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        payload BYTEA NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at DOUBLE PRECISION NOT NULL,
        last_error TEXT
    );
    CREATE INDEX outbox_by_notifier ON outbox (notifier, seq);
    """,
)

_TENANT_UPSERT = upsert("tenants", ("source", "tenant", "failures"), ("source", "tenant"))


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
    """The alert state on SQLite (a path) or PostgreSQL; every public method is one short
    transaction. Raises StartupError when the database cannot be used."""

    def __init__(self, target: Path | str | PostgresTarget) -> None:
        # Set when the WAL held commits that SQLite's recovery dropped (see `wal.py`).
        self.wal_loss: WalLoss | None = None
        self._db: Db
        if isinstance(target, PostgresTarget):
            from syncwatch.pgdb import PgDb  # noqa: PLC0415 - psycopg only when configured

            self._db = PgDb(target, exclusive=True)
        else:
            sqlite, self.wal_loss = open_checked(target)
            self._db = sqlite
        self.target = target
        try:
            self._migrate()
        except self._db.errors as exc:
            self._db.close()
            raise self._db.describe(exc) from None
        except BaseException:
            # Refused (newer schema…): do not leak the open connection.
            self._db.close()
            raise

    @property
    def path(self) -> str:
        """How logs name the database (the file, or "postgresql")."""
        return next(iter(self._db.names.values()))

    @property
    def names(self) -> dict[str, str]:
        return self._db.names

    @property
    def errors(self) -> tuple[type[Exception], ...]:
        return self._db.errors

    @property
    def integrity_errors(self) -> tuple[type[Exception], ...]:
        return self._db.integrity_errors

    @property
    def degraded_hint(self) -> str:
        return self._db.degraded_hint

    def describe(self, exc: Exception) -> StartupError:
        return self._db.describe(exc)

    def error_text(self, exc: BaseException) -> str:
        return self._db.error_text(exc)

    def _migrate(self) -> None:
        if isinstance(self._db, SqliteDb):
            self._db.migrate_user_version(_MIGRATIONS)
        else:
            self._db.migrate("state", PG_MIGRATIONS)

    def close(self) -> None:
        self._db.close()

    def integrity_check(self) -> str:
        return self._db.integrity_check()

    # --- alerts and tenants -------------------------------------------------------------

    def load(self) -> tuple[dict[Identity, Alert], dict[TenantKey, int]]:
        """Alerts and failure counts as the last committed cycle left them."""
        alerts: dict[Identity, Alert] = {}
        for row in self._db.execute(alert_rows.SELECT):
            alert = alert_rows.alert_of(row)
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
        with self._db.transaction():
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
                "UPDATE outbox SET created_at=created_at+?, next_attempt_at=next_attempt_at+?",
                (w.offset, w.offset),
            )
            return 0
        if w.changed:
            self._db.executemany(alert_rows.UPSERT, [alert_rows.alert_row(a) for a in w.changed])
        if w.removed:
            self._db.executemany(
                "DELETE FROM alerts WHERE alertname=? AND source=? AND tenant=? AND sync_id=?",
                w.removed,
            )
        for (source, tenant), count in w.failures_changed.items():
            if count:
                self._db.execute(_TENANT_UPSERT, (source, tenant, count))
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
        self._db.set_lock_timeout(milliseconds)

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
        payload=bytes(r[6]),
    )
