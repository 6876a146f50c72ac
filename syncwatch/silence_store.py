"""Durable silences: a `silences` table in the state database, mirrored in memory.

Writes are rare (a person runs amtool) and each one is committed before it returns, so an
acknowledged silence survives restart and kill -9. Reads (the API, the engine's Muter) come
from the in-memory copy and never touch the disk. The table is versioned on its own
(`schema_parts`), so its migrations never collide with those of the alert state.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta

import orjson
import structlog
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from syncwatch.silences import (
    DEFAULT_RETENTION,
    AckOf,
    Matcher,
    Muter,
    Silence,
    SilenceState,
    collectable,
    muted_by,
)
from syncwatch.sqldb import Db, Target, open_db, upsert

log = structlog.get_logger("syncwatch.silence_store")

PART = "silences"

# Each entry migrates the silences part from version i to i + 1; append, never edit.
_MIGRATIONS: Sequence[str] = (
    """
    CREATE TABLE silences (
        id TEXT PRIMARY KEY,
        matchers BLOB NOT NULL,
        starts_at TEXT NOT NULL,
        ends_at TEXT NOT NULL,
        created_by TEXT NOT NULL,
        comment TEXT NOT NULL,
        updated_at TEXT NOT NULL
    ) WITHOUT ROWID;
    """,
    # An acknowledgement's marker: {"fingerprint", "severity"} as JSON; NULL for a silence.
    "ALTER TABLE silences ADD COLUMN ack BLOB",
)
# The same part on PostgreSQL; append, never edit.
_PG_MIGRATIONS: Sequence[str] = (
    """
    CREATE TABLE silences (
        id TEXT PRIMARY KEY,
        matchers BYTEA NOT NULL,
        starts_at TEXT NOT NULL,
        ends_at TEXT NOT NULL,
        created_by TEXT NOT NULL,
        comment TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        ack BYTEA
    );
    """,
)
_COLUMNS = ("id", "matchers", "starts_at", "ends_at", "created_by", "comment", "updated_at", "ack")
_UPSERT = upsert("silences", _COLUMNS, ("id",))


class SilenceNotFoundError(KeyError):
    """No silence has that id (or it was collected)."""


@dataclass(frozen=True, slots=True)
class Change:
    """What a POST does: `stored` is saved (and its id answered); `expired` ends the old one."""

    stored: Silence
    expired: Silence | None = None


def plan_set(prev: Silence | None, incoming: Silence, now: datetime, new_id: str) -> Change:
    """Alertmanager's `Silences.Set`: update in place when allowed, else replace.

    An update keeps the id when the matchers are the same and the times may change (an
    active silence keeps its start and does not end in the past; a pending one does not
    start in the past). Otherwise a new silence is made, starting no earlier than `now`,
    and the old one, if not already expired, is expired to keep its history.
    """
    if prev is not None and _can_update(prev, incoming, now):
        # An ack updated in place (amtool silence update) is still that alert's ack.
        return Change(replace(incoming, id=prev.id, updated_at=now, ack=prev.ack))
    fresh = replace(incoming, id=new_id, starts_at=max(incoming.starts_at, now), updated_at=now)
    if prev is not None and prev.state(now) is not SilenceState.EXPIRED:
        return Change(fresh, prev.expired(now))
    return Change(fresh)


def _can_update(prev: Silence, new: Silence, now: datetime) -> bool:
    if prev.matchers != new.matchers:
        return False
    match prev.state(now):
        case SilenceState.ACTIVE:
            # Compared at second precision, as Alertmanager does (amtool sends RFC 3339).
            same_start = int(prev.starts_at.timestamp()) == int(new.starts_at.timestamp())
            return same_start and new.ends_at >= now
        case SilenceState.PENDING:
            return new.starts_at >= now
        case SilenceState.EXPIRED:
            return False


class SilenceStore:
    """The silences of one state database; thread-safe, each write committed on return."""

    def __init__(
        self,
        path: Target,
        retention: timedelta = DEFAULT_RETENTION,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self.path = path
        self.retention = retention
        self._new_id = new_id
        self._lock = threading.Lock()
        # Told of each committed write: ("created" | "updated" | "expired", silence, when).
        self.on_change: Callable[[str, Silence, datetime], None] | None = None
        # durable: an acknowledged silence survives power loss too, not only kill -9.
        self._db: Db = open_db(path, durable=True, busy_ms=5000)
        self.errors = self._db.errors
        self.error_text = self._db.error_text
        try:
            self._migrate()
            self._silences = {s.id: s for s in self._load()}
        except self._db.errors as exc:
            self._db.close()
            raise self._db.describe(exc) from None
        except BaseException:
            self._db.close()
            raise

    def _migrate(self) -> None:
        pg = self._db.dialect == "postgresql"
        self._db.migrate(PART, _PG_MIGRATIONS if pg else _MIGRATIONS)

    def _load(self) -> list[Silence]:
        rows = self._db.execute(
            "SELECT id, matchers, starts_at, ends_at, created_by, comment, updated_at, ack "
            "FROM silences"
        )
        return [_silence(row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- reads: memory only -------------------------------------------------------------

    def all(self, now: datetime) -> list[Silence]:
        """Every silence not yet collectable, oldest update first."""
        kept = (s for s in list(self._silences.values()) if not self._gone(s, now))
        return sorted(kept, key=lambda s: (s.updated_at, s.id))

    def get(self, silence_id: str, now: datetime) -> Silence | None:
        found = self._silences.get(silence_id)
        return None if found is None or self._gone(found, now) else found

    def muter(self) -> Muter:
        """A Muter over the silences as they are now (take a fresh one per cycle)."""
        return muted_by(list(self._silences.values()))

    def counts(self, now: datetime) -> dict[SilenceState, int]:
        """Silences per state (`syncwatch_silences{state}`)."""
        out = dict.fromkeys(SilenceState, 0)
        for s in self.all(now):
            out[s.state(now)] += 1
        return out

    def collectable(self, now: datetime) -> bool:
        """Whether `collect` has anything to delete (memory only: cheap every cycle)."""
        return any(self._gone(s, now) for s in list(self._silences.values()))

    def _gone(self, silence: Silence, now: datetime) -> bool:
        return collectable(silence, now, self.retention)

    # --- writes: committed before they return -------------------------------------------

    def set(self, incoming: Silence, now: datetime) -> Change:
        """Create (empty id) or update a silence as Alertmanager's POST does."""
        with self._lock:
            prev = None
            if incoming.id:
                prev = self.get(incoming.id, now)
                if prev is None:
                    raise SilenceNotFoundError(incoming.id)
            change = plan_set(prev, incoming, now, self._new_id())
            saved = [change.stored] if change.expired is None else [change.expired, change.stored]
            self._write(saved, ())
        if change.expired is not None:
            self._tell("expired", change.expired, now)
        updated = prev is not None and change.stored.id == prev.id
        self._tell("updated" if updated else "created", change.stored, now)
        return change

    def expire(self, silence_id: str, now: datetime) -> Silence:
        """End a silence now (DELETE); an expired one stays as it is."""
        with self._lock:
            found = self.get(silence_id, now)
            if found is None:
                raise SilenceNotFoundError(silence_id)
            ended = found.expired(now)
            if ended is found:
                return ended
            self._write([ended], ())
        self._tell("expired", ended, now)
        return ended

    def collect(self, now: datetime) -> int:
        """Delete the silences expired longer than the retention ago; how many."""
        with self._lock:
            gone = [s.id for s in self._silences.values() if self._gone(s, now)]
            if gone:
                self._write((), gone)
            return len(gone)

    def _tell(self, what: str, silence: Silence, now: datetime) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change(what, silence, now)
        except Exception as exc:  # the silence is stored: a listener's bug must not undo that
            log.error("silence_listener_failed", error=f"{type(exc).__name__}: {exc}")

    def _write(self, saved: Sequence[Silence], deleted: Sequence[str]) -> None:
        # Disk first: memory changes only once the transaction is committed.
        with self._db.transaction():
            self._db.executemany(_UPSERT, [_row(s) for s in saved])
            self._db.executemany("DELETE FROM silences WHERE id = ?", [(i,) for i in deleted])
        for s in saved:
            self._silences[s.id] = s
        for i in deleted:
            self._silences.pop(i, None)


def _row(s: Silence) -> tuple[object, ...]:
    matchers = [
        {"name": m.name, "value": m.value, "isRegex": m.is_regex, "isEqual": m.is_equal}
        for m in s.matchers
    ]
    return (
        s.id,
        orjson.dumps(matchers),
        s.starts_at.isoformat(),
        s.ends_at.isoformat(),
        s.created_by,
        s.comment,
        s.updated_at.isoformat(),
        None if s.ack is None else orjson.dumps(asdict(s.ack)),
    )


def _silence(row: tuple[str, bytes, str, str, str, str, str, bytes | None]) -> Silence:
    matchers = tuple(
        Matcher(m["name"], m["value"], is_regex=m["isRegex"], is_equal=m["isEqual"])
        for m in orjson.loads(row[1])
    )
    return Silence(
        id=row[0],
        matchers=matchers,
        starts_at=datetime.fromisoformat(row[2]),
        ends_at=datetime.fromisoformat(row[3]),
        created_by=row[4],
        comment=row[5],
        updated_at=datetime.fromisoformat(row[6]),
        ack=None if row[7] is None else AckOf(**orjson.loads(row[7])),
    )


class SilenceCollector(Collector):
    """`syncwatch_silences{state}`: the stored silences per state, at scrape time."""

    def __init__(self, store: SilenceStore, now: Callable[[], datetime]) -> None:
        self.store = store
        self.now = now

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "syncwatch_silences",
            "Silences by state (expired ones until collected after silence_retention).",
            labels=["state"],
        )
        for state, n in self.store.counts(self.now()).items():
            family.add_metric([str(state)], n)
        yield family
