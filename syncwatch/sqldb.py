"""The one seam between the stores and their database: SQLite or PostgreSQL.

Every store (alerts and outbox in `state`, `silence_store`, `history_store`) talks to a
`Db`: a connection that runs the SQL both dialects agree on, written with `?` placeholders,
in short transactions. What differs lives behind it: opening and checking the file or the
server, the schema's DDL (each part keeps one migration list per dialect), error meaning
and wording. `open_db` picks the backend from the configured target.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Literal, Protocol

from syncwatch.config.sections import PostgresTarget
from syncwatch.startup import StartupError

Dialect = Literal["sqlite", "postgresql"]
Target = Path | str | PostgresTarget


class Cursor(Protocol):
    """What a statement returns: rows, and how many it changed."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Db(Protocol):
    """One connection to the state database, used by one thread at a time."""

    @property
    def dialect(self) -> Dialect: ...

    # How logs and errors name the database (never a password, host or user):
    # {"state_path": "/var/lib/…"} or {"state_url": "postgresql"}.
    names: dict[str, str]
    # The start of a one-line problem: "daemon.state_path /x.db" / "daemon.state_url (PostgreSQL)".
    where: str
    # What a failed statement raises; the integrity ones can never succeed when retried.
    errors: tuple[type[Exception], ...]
    integrity_errors: tuple[type[Exception], ...]
    # What to do while writes fail at run time (logged once with state_degraded).
    degraded_hint: str

    def execute(self, sql: str, params: Sequence[object] = ()) -> Cursor: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None: ...

    def transaction(self) -> AbstractContextManager[None]:
        """BEGIN … COMMIT, or ROLLBACK when the block raises."""
        ...

    def migrate(self, part: str, migrations: Sequence[str]) -> None:
        """Bring one part (its tables, versioned in `schema_parts`) to len(migrations)."""
        ...

    def set_lock_timeout(self, milliseconds: int) -> None:
        """How long a write waits for another connection's lock before failing."""
        ...

    def describe(self, exc: Exception) -> StartupError:
        """The one line, and exit code, for a failure of this database."""
        ...

    def error_text(self, exc: BaseException) -> str:
        """`exc` as a log or API may show it: no password, host or user."""
        ...

    def integrity_check(self) -> str:
        """ "ok" when the database is sound (SQLite's PRAGMA integrity_check)."""
        ...

    def close(self) -> None: ...


def upsert(table: str, columns: Sequence[str], key: Sequence[str]) -> str:
    """INSERT … ON CONFLICT (key) DO UPDATE: the same text in SQLite (3.24+) and PostgreSQL."""
    rest = [c for c in columns if c not in key]
    update = ", ".join(f"{c}=excluded.{c}" for c in rest)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({','.join('?' * len(columns))})"  # noqa: S608 - constant names
        f" ON CONFLICT ({', '.join(key)}) DO " + (f"UPDATE SET {update}" if rest else "NOTHING")
    )


def open_db(target: Target, *, durable: bool = True, busy_ms: int = 5000) -> Db:
    """A connection to `target`. `durable`: a commit survives power loss (history is not:
    a crash may lose its last rows, never the alert state). Raises StartupError."""
    if isinstance(target, PostgresTarget):
        from syncwatch.pgdb import PgDb  # noqa: PLC0415 - psycopg only when configured

        return PgDb(target, durable=durable, lock_ms=busy_ms)
    from syncwatch.sqlite_db import SqliteDb  # noqa: PLC0415 - symmetric with PgDb

    return SqliteDb(target, durable=durable, busy_ms=busy_ms)
