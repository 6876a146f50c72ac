"""Durable state: alerts, tenant failure counts and the outbox, in one SQLite database.

A cycle's transitions and the notifications they cause are written in one transaction, so
a crash either keeps both or neither. Only what changed is written.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from syncwatch import alert_rows, wal
from syncwatch.failures import redact_urls
from syncwatch.lifecycle import Alert, Identity, TenantKey, Transition
from syncwatch.outbox import Batch
from syncwatch.startup import (
    EX_CANTCREAT,
    EX_DATAERR,
    EX_IOERR,
    EX_NOPERM,
    EX_TEMPFAIL,
    StartupError,
    os_exit_code,
)

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


# --- opening: every way the file can be unusable is one line and a sysexits code ---------

_CORRUPT_HINT = (
    "move it (and its -wal and -shm files) aside to start with empty state (alerts are "
    "re-derived from the next poll; firing ones are notified again), or restore a backup"
)
_ACCESS_HINT = (
    "give the syncwatch user read and write access to it and its directory "
    "(under systemd, keep state_path inside StateDirectory=, /var/lib/syncwatch)"
)


_NEARLY_FULL = 1 << 20  # bytes: below this an I/O error at start is reported as a full disk


@dataclass(frozen=True, slots=True)
class WalLoss:
    """Commits in the WAL that SQLite's recovery ignored (bad checksum, torn or bad header)."""

    wal: Path
    frames: int
    recovered: int
    lost_commits: int
    header_ok: bool
    copy: Path | None
    copy_error: str | None


def _free_bytes(path: Path) -> int | None:
    try:
        st = os.statvfs(path.parent)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _access_error(path: Path, exc: OSError, what: str) -> StartupError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return _full_error(path, exc.strerror or str(exc))
    hint = _ACCESS_HINT if os_exit_code(exc) == EX_NOPERM else "point state_path at a file"
    return StartupError(
        f"daemon.state_path {path}: {what} ({exc.strerror or exc}); {hint}", os_exit_code(exc)
    )


def _full_error(path: Path, detail: str) -> StartupError:
    free = _free_bytes(path)
    room = "" if free is None else f"{free} bytes free on its file system; "
    return StartupError(
        f"daemon.state_path {path}: the disk is full ({detail}); {room}free some space",
        EX_IOERR,
    )


def _preflight(path: Path) -> wal.WalFrames | None:
    """Check what SQLite will need, to name the exact problem; returns the WAL's frames."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _access_error(path, exc, f"cannot create its directory {path.parent}") from None
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if not file.exists():
            continue
        if file.is_dir():
            raise StartupError(
                f"daemon.state_path {path}: {file} is a directory; point state_path at a file",
                EX_CANTCREAT,
            )
        try:
            os.close(os.open(file, os.O_RDWR))
        except OSError as exc:
            readable = os.access(file, os.R_OK)
            what = f"{file} is read-only" if readable else f"cannot read {file}"
            raise _access_error(path, exc, what) from None
    try:
        # SQLite creates the -wal and -shm files beside the database.
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as exc:
        raise _access_error(path, exc, f"cannot create files in {path.parent}") from None
    wal_path = Path(f"{path}-wal")
    try:
        with wal_path.open("rb") as wal_file:
            return wal.scan(wal_file, os.fstat(wal_file.fileno()).st_size)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _access_error(path, exc, f"cannot read {wal_path}") from None


def migrate_part(
    db: sqlite3.Connection, path: Path | str, part: str, migrations: Sequence[str]
) -> None:
    """Bring one part of the state database (its own tables, versioned in `schema_parts`)
    to `len(migrations)`; a part newer than this syncwatch stops the start."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS schema_parts (part TEXT PRIMARY KEY, version INTEGER "
        "NOT NULL) WITHOUT ROWID"
    )
    row = db.execute("SELECT version FROM schema_parts WHERE part = ?", (part,)).fetchone()
    version, latest = (0 if row is None else int(row[0])), len(migrations)
    if version > latest:
        raise StartupError(
            f"daemon.state_path {path}: its {part} table has schema {version}, "
            f"newer than this syncwatch ({latest}); upgrade syncwatch or point "
            "state_path elsewhere",
            EX_DATAERR,
        )
    for target in range(version, latest):
        # executescript commits anything open first, so the script carries its own BEGIN.
        script = f"BEGIN IMMEDIATE; {migrations[target]}; INSERT OR REPLACE INTO "
        script += f"schema_parts VALUES ('{part}', {target + 1}); COMMIT;"
        db.executescript(script)


def state_error(path: Path | str, exc: sqlite3.Error) -> StartupError:
    """The one line, and exit code, for a SQLite error on the state database."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    path = Path(path)
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return StartupError(
            f"daemon.state_path {path}: not a usable SQLite database ({exc}); {_CORRUPT_HINT}",
            EX_DATAERR,
        )
    if code == sqlite3.SQLITE_FULL:
        return _full_error(path, str(exc))
    if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM, sqlite3.SQLITE_CANTOPEN):
        return StartupError(
            f"daemon.state_path {path}: cannot open it read-write ({exc}); {_ACCESS_HINT}",
            EX_NOPERM if path.exists() else EX_CANTCREAT,
        )
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StartupError(
            f"daemon.state_path {path}: locked by another process ({exc}); is another "
            "syncwatch using the same state_path?",
            EX_TEMPFAIL,
        )
    free = _free_bytes(path)
    if free is not None and free < _NEARLY_FULL:
        # SQLite reports a full disk as an I/O error when it cannot grow its -shm file.
        return _full_error(path, str(exc))
    return StartupError(
        f"daemon.state_path {path}: I/O error ({exc}); check the disk and its free space",
        EX_IOERR,
    )


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
        self.path = path
        # Set when the WAL held commits that SQLite's recovery dropped (see `wal.py`).
        self.wal_loss: WalLoss | None = None
        on_disk = str(path) != ":memory:"
        frames = _preflight(Path(path)) if on_disk else None
        try:
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise state_error(path, exc) from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: an acknowledged transaction survives power loss too, not only kill -9.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            if on_disk:
                self._quick_check()
            if frames is not None:
                self.wal_loss = self._wal_loss(Path(path), frames)
            self._migrate()
        except sqlite3.Error as exc:
            self._db.close()
            raise state_error(path, exc) from None
        except BaseException:
            # Refused (newer schema…): do not leak the open connection.
            self._db.close()
            raise

    def _quick_check(self) -> None:
        """A truncated or damaged file is refused now, not in the middle of a cycle."""
        problems = [str(r[0]) for r in self._db.execute("PRAGMA quick_check(3)")]
        if problems != ["ok"]:
            raise StartupError(
                f"daemon.state_path {self.path}: the database is corrupt "
                f"({'; '.join(problems)}); {_CORRUPT_HINT}",
                EX_DATAERR,
            )

    def _wal_loss(self, path: Path, frames: wal.WalFrames) -> WalLoss | None:
        """The WAL's commits beyond the frames SQLite recovered; a copy of the WAL kept if any."""
        recovered = int(self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])
        lost = frames.lost_commits(max(recovered, 0))
        if not lost:
            return None
        wal_path = Path(f"{path}-wal")
        target = Path(f"{wal_path}.corrupt-{datetime.now(UTC):%Y%m%dT%H%M%SZ}")
        copy: Path | None = target
        copy_error = None
        try:
            # Now, before the first write: that restarts the WAL over the evidence.
            shutil.copyfile(wal_path, target)
        except OSError as exc:
            copy, copy_error = None, f"{exc.strerror or exc}"
        return WalLoss(
            wal=wal_path,
            frames=frames.frames,
            recovered=max(recovered, 0),
            lost_commits=len(lost),
            header_ok=frames.header_ok,
            copy=copy,
            copy_error=copy_error,
        )

    def _migrate(self) -> None:
        version: int = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StartupError(
                f"daemon.state_path {self.path}: the database has schema {version}, newer "
                f"than this syncwatch ({SCHEMA_VERSION}); upgrade syncwatch or point "
                "state_path elsewhere",
                EX_DATAERR,
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
            self._db.executemany(alert_rows.UPSERT, [alert_rows.alert_row(a) for a in w.changed])
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
