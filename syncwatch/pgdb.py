"""The PostgreSQL backend of the state database (`daemon.state_url = "postgresql://…"`).

Synchronous psycopg 3 on the thread its store already owns (the state store's worker, the
history writer, the silences' callers): one connection per store, as with SQLite, opened
lazily again after the server went away, so a restart of PostgreSQL is a few failed writes
kept in memory, then a reconnect. TCP keepalives and a user timeout bound a half-open
connection; a connect times out after `CONNECT_TIMEOUT` seconds.

Errors never carry the DSN, password, host, user or database name: every psycopg error is
re-raised as `PgError`, its text scrubbed of each part of the connection string.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, Literal

import psycopg
from psycopg import conninfo, errors

from syncwatch.config.sections import PostgresTarget
from syncwatch.config.types import EX_CONFIG
from syncwatch.startup import (
    EX_DATAERR,
    EX_IOERR,
    EX_NOPERM,
    EX_TEMPFAIL,
    EX_UNAVAILABLE,
    StartupError,
)

CONNECT_TIMEOUT = 5  # s (libpq's minimum is 2)
# Unless the URL says otherwise: a dead peer or a half-open connection is noticed within
# about 15 s, not the kernel's two hours.
DEFAULTS = {
    "connect_timeout": str(CONNECT_TIMEOUT),
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "2",
    "keepalives_count": "3",
    "tcp_user_timeout": "15000",
    "application_name": "syncwatch",
}
# One syncwatch per database until replicas elect a leader: a second one would deliver the
# same outbox rows. A session advisory lock, gone with the connection (kill -9 included).
EXCLUSIVE_LOCK = 0x73796E6377617463  # "syncwatc"
EXCLUSIVE_WAIT_MS = 5000
_PLACEHOLDER = re.compile(r"\?")
_HIDDEN = ("password", "user", "host", "hostaddr", "port", "dbname", "service", "passfile")


class PgError(Exception):
    """A PostgreSQL failure; `str()` is safe to log (no connection details)."""

    def __init__(self, message: str, sqlstate: str | None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class PgIntegrityError(PgError):
    """A constraint refused the write (a duplicate delivery id): retrying cannot help."""


class PgDb:
    """A `sqldb.Db` on one PostgreSQL connection (autocommit, explicit transactions)."""

    dialect: Literal["postgresql"] = "postgresql"
    where = "daemon.state_url (PostgreSQL)"
    errors: tuple[type[Exception], ...] = (PgError,)
    integrity_errors: tuple[type[Exception], ...] = (PgIntegrityError,)
    degraded_hint = (
        "polling and delivery go on from memory and are written when PostgreSQL answers "
        "again; check the server, the network and the credentials"
    )

    def __init__(
        self,
        target: PostgresTarget,
        *,
        durable: bool = True,
        lock_ms: int = 5000,
        exclusive: bool = False,
    ) -> None:
        self.names = {"state_url": "postgresql"}
        dsn = target.dsn.get_secret_value()
        try:
            params = conninfo.conninfo_to_dict(dsn)
        except psycopg.Error:
            raise StartupError(f"{self.where}: not a valid connection URL", EX_CONFIG) from None
        self._secrets = _secret_values(dsn, params)
        self._conninfo = conninfo.make_conninfo(
            dsn, **{k: v for k, v in DEFAULTS.items() if k not in params}
        )
        self._durable = durable
        self._exclusive = exclusive
        self._lock_ms = max(1, int(lock_ms))
        self._conn: psycopg.Connection[Any] | None = None
        try:
            self._connection()
        except PgError as exc:
            raise self.describe(exc) from None

    # --- the connection -----------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        self._drop()
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise self._error(exc) from None
        try:
            # PostgreSQL's 0 means "wait for ever"; SQLite's means "do not wait".
            conn.execute(f"SET lock_timeout = {self._lock_ms}")
            if not self._durable:
                # As SQLite's synchronous=NORMAL: a crash of the server may lose the last
                # history rows, never corrupt them.
                conn.execute("SET synchronous_commit = off")
            if self._exclusive:
                # A killed predecessor's session may take a moment to end: wait that long.
                conn.execute(f"SET lock_timeout = {EXCLUSIVE_WAIT_MS}")
                conn.execute("SELECT pg_advisory_lock(%s)", (EXCLUSIVE_LOCK,))
                conn.execute(f"SET lock_timeout = {self._lock_ms}")
        except errors.LockNotAvailable:
            conn.close()
            raise PgError(
                "another syncwatch is using this database (one process per database until "
                "replicas elect a leader); stop it, or give this one its own database",
                errors.LockNotAvailable.sqlstate,
            ) from None
        except psycopg.Error as exc:
            conn.close()
            raise self._error(exc) from None
        self._conn = conn
        return conn

    def _drop(self) -> None:
        if self._conn is not None:
            with suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    def _error(self, exc: psycopg.Error) -> PgError:
        kind = PgIntegrityError if isinstance(exc, psycopg.IntegrityError) else PgError
        if self._conn is not None and (self._conn.broken or self._conn.closed):
            self._drop()  # reconnect on the next statement
        return kind(f"{type(exc).__name__}: {self._scrub(str(exc))}", _sqlstate(exc))

    def _scrub(self, text: str) -> str:
        text = " ".join(text.split())  # libpq's messages span lines
        for value in self._secrets:
            text = text.replace(f'"{value}"', '"[redacted]"')
            if len(value) >= 3:
                text = re.sub(rf"(?<![\w.-]){re.escape(value)}(?![\w-])", "[redacted]", text)
        return text

    # --- statements ---------------------------------------------------------------------

    def execute(self, sql: str, params: Sequence[object] = ()) -> psycopg.Cursor[Any]:
        conn = self._connection()
        try:
            if not params:
                # Built from constants only: psycopg's LiteralString is not for us.
                return conn.execute(sql)
            return conn.execute(_pg(sql), tuple(params))
        except psycopg.Error as exc:
            raise self._error(exc) from None

    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        batch = [tuple(r) for r in rows]
        if not batch:
            return
        conn = self._connection()
        try:
            with conn.cursor() as cursor:
                cursor.executemany(_pg(sql), batch)
        except psycopg.Error as exc:
            raise self._error(exc) from None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        conn = self._connection()
        try:
            with conn.transaction():
                yield
        except psycopg.Error as exc:
            raise self._error(exc) from None

    def migrate(self, part: str, migrations: Sequence[str]) -> None:
        """Each step in its own transaction (DDL is transactional here), serialised across
        replicas that start together by a transaction-scoped advisory lock."""
        for _ in range(len(migrations) + 1):
            with self.transaction():
                self.execute("SELECT pg_advisory_xact_lock(?)", (EXCLUSIVE_LOCK + 1,))
                self.execute(
                    "CREATE TABLE IF NOT EXISTS schema_parts "
                    "(part TEXT PRIMARY KEY, version INTEGER NOT NULL)"
                )
                row = self.execute("SELECT version FROM schema_parts WHERE part = ?", (part,))
                found = row.fetchone()
                version, latest = (0 if found is None else int(found[0])), len(migrations)
                if version > latest:
                    raise StartupError(
                        f"{self.where}: its {part} tables have schema {version}, newer than "
                        f"this syncwatch ({latest}); upgrade syncwatch or point state_url "
                        "elsewhere",
                        EX_DATAERR,
                    )
                if version == latest:
                    return
                self.execute(migrations[version])
                self.execute(
                    "INSERT INTO schema_parts VALUES (?, ?) ON CONFLICT (part) DO UPDATE "
                    "SET version = excluded.version",
                    (part, version + 1),
                )

    def set_lock_timeout(self, milliseconds: int) -> None:
        wanted = max(1, int(milliseconds))
        if wanted != self._lock_ms:
            self._lock_ms = wanted
            if self._conn is not None and not self._conn.broken:
                self.execute(f"SET lock_timeout = {wanted}")

    def integrity_check(self) -> str:
        """What SQLite's PRAGMA integrity_check says of a sound file (PostgreSQL checks its
        own pages); this only proves the tables answer."""
        self.execute("SELECT count(*) FROM schema_parts").fetchone()
        return "ok"

    def close(self) -> None:
        if self._exclusive and self._conn is not None and not self._conn.broken:
            # Now, not when the server notices the closed socket: a successor may be waiting.
            with suppress(psycopg.Error):
                self._conn.execute("SELECT pg_advisory_unlock_all()")
        self._drop()

    # --- what failures mean -------------------------------------------------------------

    def error_text(self, exc: BaseException) -> str:
        if isinstance(exc, PgError):
            return str(exc)
        if isinstance(exc, psycopg.Error):
            return str(self._error(exc))
        return f"{type(exc).__name__}: {self._scrub(str(exc))}"

    def describe(self, exc: Exception) -> StartupError:
        text = self.error_text(exc)
        state = getattr(exc, "sqlstate", None) or ""
        if state.startswith("28") or state == errors.InsufficientPrivilege.sqlstate:
            return StartupError(
                f"{self.where}: access refused ({text}); check the user, its password and "
                "its privileges on the database",
                EX_NOPERM,
            )
        if state == errors.InvalidCatalogName.sqlstate:
            return StartupError(
                f"{self.where}: the database does not exist ({text}); create it "
                "(CREATE DATABASE … OWNER …) or fix the URL",
                EX_UNAVAILABLE,
            )
        if state in (errors.DiskFull.sqlstate, errors.OutOfMemory.sqlstate):
            return StartupError(f"{self.where}: the server is out of space ({text})", EX_IOERR)
        if state == errors.LockNotAvailable.sqlstate:
            return StartupError(f"{self.where}: {text}", EX_TEMPFAIL)
        return StartupError(
            f"{self.where}: cannot use the database ({text}); is the server running and reachable?",
            EX_TEMPFAIL,
        )


# A failed connect carries no SQLSTATE in psycopg: the server's FATAL line tells.
_CONNECT_STATES = (
    ("password authentication failed", "28P01"),
    ("no pg_hba.conf entry", "28000"),
    ("authentication failed", "28000"),
    ("permission denied for database", "42501"),
    ('role "', "28000"),  # FATAL: role "…" does not exist
    ("does not exist", "3D000"),  # FATAL: database "…" does not exist
)


def _sqlstate(exc: psycopg.Error) -> str | None:
    if exc.sqlstate:
        return exc.sqlstate
    text = str(exc)
    return next((state for words, state in _CONNECT_STATES if words in text), None)


def _pg(sql: str) -> str:
    """`?` placeholders (the shared SQL) as psycopg's `%s`."""
    return _PLACEHOLDER.sub("%s", sql.replace("%", "%%"))


def _secret_values(dsn: str, params: dict[str, Any]) -> list[str]:
    found = {dsn}
    for key in _HIDDEN:
        value = params.get(key)
        if value:
            # host and hostaddr may list several, comma-separated.
            found.update(str(value).split(",") if key in ("host", "hostaddr", "port") else [])
            found.add(str(value))
    return sorted((v for v in found if v), key=len, reverse=True)
