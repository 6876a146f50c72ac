"""One active replica per shard, elected through PostgreSQL itself.

Every replica of a shard (`daemon.shard`, "i/n") competes for one session advisory lock
keyed by the shard; its holder is the active replica: it commits transitions and delivers.
The others are standbys that try again every `standby_interval` and take over when the lock
is free: at once when the active exits or is killed (its session ends with its socket),
within about 11 s when its node or network vanishes (the server's keepalives, set per
session by `pgdb`), within 15 s when its connection is half-open (`tcp_user_timeout`; the
active checks its session every cycle, so it notices too).

A lock rather than a lease row with a heartbeat: the server itself ends the holder's term
when its session ends, no clock is compared, and nothing must be written every few seconds
to keep it. What a lease gives besides, a number that tells terms apart, is the `leaders`
table: each new term gets a term number (one sequence over every shard), so a replica that
lost its connection and wins the lock back knows whether anyone else was active meanwhile.
If not, what it kept in memory is still the truth and is written; if so, it is discarded and
the stored state (and outbox) is loaded again.

Fencing: every write of the alert state and every outbox claim runs on the very session that
holds the lock (`holds`), so a replica that lost it (even without noticing yet) cannot
commit anything: its session is gone, and a new session has to win the election first.

Shard counts never mix: while any replica of one shard count is active, replicas of another
count stay standbys (a resharding rollout: the new layout takes over once the old one is
gone), so two replicas never own one tenant at the same time. The first active of a new
count adopts the outbox rows the old layout left behind.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # psycopg is imported only when PostgreSQL is configured
    from syncwatch.pgdb import PgDb

# Key 1 of the two-int4 advisory locks (an arbitrary constant: "sw" + 1); key 2 is the shard.
LOCK_CLASS = 0x73770001
MAX_COUNT = 0x7FFF  # key 2 = count << 16 | index must stay a positive int4

_OTHER_COUNT = (
    "SELECT l.objid::bigint >> 16 FROM pg_locks l"
    " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2"
    " AND l.classid::bigint = ? AND l.objid::bigint >= 65536 AND l.objid::bigint >> 16 <> ?"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " LIMIT 1"
)


class FencedError(Exception):
    """This replica does not hold its shard's lock on this very session: it may not write the
    alert state nor deliver (another replica is active, or the election is not decided)."""

    sqlstate = None


def default_holder() -> str:
    """How a replica names itself in `leaders` and in a standby's logs: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True, slots=True)
class Shard:
    index: int = 0
    count: int = 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def lock_key(self) -> int:
        return self.count << 16 | self.index


class Role(StrEnum):
    ACTIVE = "active"
    STANDBY = "standby"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one election check found."""

    role: Role
    term: int = 0
    # A term of its own started by this check: memory is stale, the stored state is loaded.
    new_term: bool = False
    # The same term won back after the connection was lost: nobody else was active meanwhile.
    resumed: bool = False
    why: str = ""  # a standby: who holds the shard, or which other shard count is active
    adopted: int = 0  # outbox rows of another shard count taken over (new term only)
    cut_off: int = 0  # rows a predecessor claimed and never acknowledged: sent again, same id

    @property
    def active(self) -> bool:
        return self.role is Role.ACTIVE


class Election:
    """The election for one shard, on the state store's own connection (its worker thread)."""

    def __init__(self, db: PgDb, shard: Shard, holder: str) -> None:
        if not 0 <= shard.index < shard.count <= MAX_COUNT:
            raise ValueError(f"shard {shard}: at most {MAX_COUNT} shards")
        self.db = db
        self.shard = shard
        self.holder = holder
        self.term: int | None = None  # the last term this process held
        self._session: int | None = None  # the PgDb session that holds the lock

    @property
    def holds(self) -> bool:
        """Whether the current session holds the shard's lock (so far as the client knows)."""
        return self._session is not None and self._session == self.db.session and self.db.connected

    def fence(self) -> None:
        """Raise FencedError unless this replica is active on this very session."""
        if not self.holds:
            raise FencedError(f"this replica is not the active one of shard {self.shard}")

    def check(self, now: float) -> Verdict:
        """Active: prove the session is alive (one round trip, bounded by the connection's
        timeouts). Otherwise: try to win the lock. Raises the database's errors."""
        if self.holds:
            self.db.execute("SELECT 1")
            if self.holds:
                assert self.term is not None
                return Verdict(Role.ACTIVE, self.term)
        self._session = None
        return self._elect(now)

    def _elect(self, now: float) -> Verdict:
        db, shard = self.db, self.shard
        with db.transaction():
            # One election at a time in this database: the shard-count check and the lock
            # below must not interleave with another replica's.
            db.execute("SELECT pg_advisory_xact_lock(?::int, 0)", (LOCK_CLASS,))
            other = db.execute(_OTHER_COUNT, (LOCK_CLASS, shard.count)).fetchone()
            if other is not None:
                return Verdict(
                    Role.STANDBY,
                    why=f"replicas of {int(other[0])} shards are active in this database; "
                    f"this one (of {shard.count}) waits until they are gone",
                )
            won = db.execute(
                "SELECT pg_try_advisory_lock(?::int, ?::int)", (LOCK_CLASS, shard.lock_key)
            ).fetchone()
            if not won or not won[0]:
                row = db.execute("SELECT holder FROM leaders WHERE shard = ?", (str(shard),))
                found = row.fetchone()
                holder = "another replica" if found is None else str(found[0])
                return Verdict(Role.STANDBY, why=f"shard {shard} is active on {holder}")
            # Re-entrant: should this transaction fail, the next check wins it again.
            verdict = self._term(now)
        self._session = db.session  # committed: the term is ours
        return verdict

    def _term(self, now: float) -> Verdict:
        db, shard = self.db, str(self.shard)
        found = db.execute("SELECT term FROM leaders WHERE shard = ?", (shard,)).fetchone()
        stored = None if found is None else int(found[0])
        if self.term is not None and stored == self.term and not self._other_count_since():
            return Verdict(Role.ACTIVE, self.term, resumed=True)
        latest = db.execute("SELECT COALESCE(MAX(term), 0) FROM leaders").fetchone()
        term = int(latest[0]) + 1 if latest else 1
        db.execute(
            "INSERT INTO leaders (shard, term, holder, since) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (shard) DO UPDATE SET term = excluded.term,"
            " holder = excluded.holder, since = excluded.since",
            (shard, term, self.holder, now),
        )
        # Rows of another shard count (a reshard) or from before shards were stored ('').
        adopted = db.execute(
            "UPDATE outbox SET shard = ? WHERE shard NOT LIKE ?", (shard, f"%/{self.shard.count}")
        ).rowcount
        cut_off = db.execute(
            "SELECT COUNT(*) FROM outbox WHERE shard = ? AND claimed_by IS NOT NULL", (shard,)
        ).fetchone()
        self.term = term
        return Verdict(
            Role.ACTIVE,
            term,
            new_term=True,
            adopted=max(0, adopted),
            cut_off=int(cut_off[0]) if cut_off else 0,
        )

    def _other_count_since(self) -> bool:
        """Whether a shard of another count started a term after ours (terms are one
        sequence): it may have written our tenants' alerts, so memory is stale."""
        row = self.db.execute(
            "SELECT 1 FROM leaders WHERE shard NOT LIKE ? AND term > ? LIMIT 1",
            (f"%/{self.shard.count}", self.term),
        ).fetchone()
        return row is not None
