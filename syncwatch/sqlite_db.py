"""The SQLite backend of the state database: one file in WAL mode.

Opening checks what SQLite will need first (directory, permissions, a WAL whose last
commits SQLite would silently drop), so that every way the file can be unusable is one
line and a sysexits code (`state_error`).
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from syncwatch import wal
from syncwatch.startup import (
    EX_CANTCREAT,
    EX_DATAERR,
    EX_IOERR,
    EX_NOPERM,
    EX_TEMPFAIL,
    StartupError,
    os_exit_code,
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
    db: sqlite3.Connection | SqliteDb, path: Path | str, part: str, migrations: Sequence[str]
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


class SqliteDb:
    """A `sqldb.Db` on one SQLite file (or ":memory:"), autocommit with explicit BEGINs."""

    dialect: Literal["sqlite"] = "sqlite"
    errors: tuple[type[Exception], ...] = (sqlite3.Error,)
    integrity_errors: tuple[type[Exception], ...] = (sqlite3.IntegrityError,)
    degraded_hint = (
        "polling and delivery go on from memory; check the state file's disk, "
        "permissions and any other process holding it"
    )

    def __init__(self, path: Path | str, *, durable: bool = True, busy_ms: int = 5000) -> None:
        self.path = path
        self.names = {"state_path": str(path)}
        self.where = f"daemon.state_path {path}"
        try:
            self.raw = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise state_error(path, exc) from None
        try:
            self.raw.execute("PRAGMA journal_mode=WAL")
            # FULL: an acknowledged transaction survives power loss too, not only kill -9;
            # NORMAL (history): a power cut may lose the last rows, never corrupt them.
            self.raw.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self.raw.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
        except sqlite3.Error as exc:
            self.raw.close()
            raise state_error(path, exc) from None

    def execute(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Cursor:
        return self.raw.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        self.raw.executemany(sql, rows)

    def executescript(self, script: str) -> None:
        self.raw.executescript(script)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on error."""
        self.raw.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            # SQLite may have rolled back already (SQLITE_FULL, I/O errors): a second
            # ROLLBACK would fail and hide the real error.
            if self.raw.in_transaction:
                self.raw.execute("ROLLBACK")
            raise
        try:
            self.raw.execute("COMMIT")
        except sqlite3.Error:
            # A failed COMMIT (busy, disk full) can leave the transaction open, and every
            # later BEGIN would fail; roll back so the next cycle starts clean.
            if self.raw.in_transaction:
                self.raw.execute("ROLLBACK")
            raise

    def migrate(self, part: str, migrations: Sequence[str]) -> None:
        migrate_part(self, self.path, part, migrations)

    def migrate_user_version(self, migrations: Sequence[str]) -> None:
        """The alert state's own part, versioned by PRAGMA user_version (from before parts)."""
        version: int = self.raw.execute("PRAGMA user_version").fetchone()[0]
        if version > len(migrations):
            raise StartupError(
                f"{self.where}: the database has schema {version}, newer "
                f"than this syncwatch ({len(migrations)}); upgrade syncwatch or point "
                "state_path elsewhere",
                EX_DATAERR,
            )
        for target in range(version, len(migrations)):
            # executescript commits anything open first, so the script carries its own BEGIN.
            self.raw.executescript(
                f"BEGIN IMMEDIATE; {migrations[target]}; PRAGMA user_version={target + 1}; COMMIT;"
            )

    def set_lock_timeout(self, milliseconds: int) -> None:
        self.raw.execute(f"PRAGMA busy_timeout={int(milliseconds)}")

    def describe(self, exc: Exception) -> StartupError:
        if isinstance(exc, sqlite3.Error):
            return state_error(self.path, exc)
        return StartupError(f"{self.where}: {exc}", EX_IOERR)

    def error_text(self, exc: BaseException) -> str:
        return f"{type(exc).__name__}: {exc}"

    def integrity_check(self) -> str:
        return str(self.raw.execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        self.raw.close()


def open_checked(path: Path | str) -> tuple[SqliteDb, WalLoss | None]:
    """The state file opened after every check (preflight, quick_check, the WAL's commits)."""
    on_disk = str(path) != ":memory:"
    frames = _preflight(Path(path)) if on_disk else None
    db = SqliteDb(path)
    try:
        if on_disk:
            _quick_check(db, path)
        loss = _wal_loss(db, Path(path), frames) if frames is not None else None
    except sqlite3.Error as exc:
        db.close()
        raise state_error(path, exc) from None
    except BaseException:
        db.close()
        raise
    return db, loss


def _quick_check(db: SqliteDb, path: Path | str) -> None:
    """A truncated or damaged file is refused now, not in the middle of a cycle."""
    problems = [str(r[0]) for r in db.execute("PRAGMA quick_check(3)")]
    if problems != ["ok"]:
        raise StartupError(
            f"daemon.state_path {path}: the database is corrupt "
            f"({'; '.join(problems)}); {_CORRUPT_HINT}",
            EX_DATAERR,
        )


def _wal_loss(db: SqliteDb, path: Path, frames: wal.WalFrames) -> WalLoss | None:
    """The WAL's commits beyond the frames SQLite recovered; a copy of the WAL kept if any."""
    recovered = int(db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])
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
