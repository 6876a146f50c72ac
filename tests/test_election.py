"""One active replica per shard, on a real PostgreSQL (issue 19): the election, its fencing
and what a change of term does to the outbox and to memory. Store-level, no daemon."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest
from pydantic import SecretStr

from syncwatch.config.sections import PostgresTarget
from syncwatch.election import LOCK_CLASS, FencedError, Role, Shard, Verdict
from syncwatch.lifecycle import Transition
from syncwatch.state import StateStore
from syncwatch.store import Store, StoreUnavailableError
from tests.postgres import PostgresServer, postgres_server
from tests.test_runtime import queued
from tests.test_state import alert, write


def nothing() -> Transition:
    return write()


@pytest.fixture
def target(pg_url: str) -> PostgresTarget:
    return PostgresTarget(SecretStr(pg_url))


@pytest.fixture
def opened() -> Iterator[list[StateStore]]:
    """Stores a test opens, closed after it (a test may close some itself)."""
    stores: list[StateStore] = []
    yield stores
    for s in stores:
        s.close()


def replica(
    target: PostgresTarget, stores: list[StateStore], shard: Shard | None = None, name: str = ""
) -> StateStore:
    s = StateStore(target, shard, holder=name)
    stores.append(s)
    return s


def end_the_holders_session(url: str) -> None:
    """What a dead node or a partition does in the end: the server drops the session."""
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
            " AND granted AND classid::bigint = %s"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (LOCK_CLASS,),
        )


def rows(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as db:
        return [(r[0], r[1]) for r in db.execute("SELECT delivery_id, shard FROM outbox")]


def test_the_second_replica_of_a_shard_is_a_standby_and_takes_over_when_the_first_closes(
    target: PostgresTarget, opened: list[StateStore]
) -> None:
    first = replica(target, opened, name="pod-0")
    second = replica(target, opened, name="pod-2")
    won = first.elect(time.time())
    assert won.role is Role.ACTIVE
    assert won.new_term
    lost = second.elect(time.time())
    assert lost.role is Role.STANDBY
    assert lost.why == "shard 0/1 is active on pod-0"
    with pytest.raises(FencedError):
        second.commit_cycle(write([alert()]), [])  # a standby writes nothing
    assert first.elect(time.time()) == Verdict(Role.ACTIVE, won.term)  # still the same
    first.close()  # its lock goes with it, at once
    taken = second.elect(time.time())
    assert taken.role is Role.ACTIVE
    assert taken.new_term
    assert taken.term == won.term + 1
    second.commit_cycle(write([alert()]), [queued("d1", "hook")])
    assert second.load()[0]


def test_a_replica_whose_session_ended_writes_nothing_until_it_wins_again(
    target: PostgresTarget, opened: list[StateStore], pg_url: str
) -> None:
    store = replica(target, opened)
    term = store.elect(time.time()).term
    store.commit_cycle(write([alert("s1")]), [])
    end_the_holders_session(pg_url)
    # The next write reconnects, but a new session holds nothing: refused, not committed.
    with pytest.raises(store.errors):
        store.commit_cycle(write([alert("s2")]), [])
    with pytest.raises(FencedError):
        store.commit_cycle(write([alert("s2")]), [])
    # Nobody else was active meanwhile: the same term is won back, memory still holds.
    again = store.elect(time.time())
    assert again.role is Role.ACTIVE
    assert again.resumed
    assert again.term == term
    store.commit_cycle(write([alert("s2")]), [])
    assert len(store.load()[0]) == 2


def test_shard_counts_never_mix_and_the_new_layout_adopts_the_old_outbox(
    target: PostgresTarget, opened: list[StateStore], pg_url: str
) -> None:
    old = [replica(target, opened, Shard(i, 2), f"old-{i}") for i in range(2)]
    for i, s in enumerate(old):
        assert s.elect(time.time()).active  # shards of one count are active side by side
        s.commit_cycle(nothing(), [queued(f"old{i}", "hook")])
    assert sorted(rows(pg_url)) == [("old0", "0/2"), ("old1", "1/2")]
    assert [r.delivery_id for r in old[0].queued()] == ["old0"]  # each shard its own rows
    new = [replica(target, opened, Shard(i, 3), f"new-{i}") for i in range(3)]
    for s in new:
        verdict = s.elect(time.time())
        assert verdict.role is Role.STANDBY
        assert verdict.why.startswith("replicas of 2 shards are active in this database")
    old[0].close()
    assert not new[1].elect(time.time()).active  # 1/2 is still active
    old[1].close()
    first = new[1].elect(time.time())
    assert first.active
    assert first.adopted == 2
    assert sorted(rows(pg_url)) == [("old0", "1/3"), ("old1", "1/3")]
    assert [s.elect(time.time()).adopted for s in (new[0], new[2])] == [0, 0]
    # And the old layout cannot come back while the new one is active.
    back = replica(target, opened, Shard(0, 2))
    assert back.elect(time.time()).why.startswith("replicas of 3 shards are active")


def test_a_claim_is_fenced_and_says_whether_the_row_is_still_queued(
    target: PostgresTarget, opened: list[StateStore]
) -> None:
    active = replica(target, opened, name="a")
    standby = replica(target, opened, name="b")
    active.elect(time.time())
    standby.elect(time.time())
    active.commit_cycle(nothing(), [queued("d1", "hook")])
    with pytest.raises(FencedError):
        standby.claim("d1", time.time())
    assert active.claim("d1", time.time()) is True
    assert active.claim("nope", time.time()) is False
    active.ack("d1")
    assert active.claim("d1", time.time()) is False
    active.commit_cycle(nothing(), [queued("d2", "hook")])
    active.claim("d2", time.time())
    active.close()  # died after claiming d2, before its ack
    verdict = standby.elect(time.time())
    assert verdict.active
    assert verdict.cut_off == 1
    assert [r.delivery_id for r in standby.queued()] == ["d2"]


# --- the async store over it ---------------------------------------------------------------


async def test_a_new_term_discards_what_the_old_one_kept_in_memory(
    target: PostgresTarget, opened: list[StateStore], pg_url: str
) -> None:
    a = Store(replica(target, opened, name="a"))
    b = Store(replica(target, opened, name="b"))
    try:
        assert a.load() == ({}, {})
        assert a.active
        assert b.load() == ({}, {})
        assert not b.active
        a.commit_cycle(nothing(), [queued("d1", "hook")])
        assert await a.flush()
        # a loses its session; b takes over before a can write what it did meanwhile.
        end_the_holders_session(pg_url)
        a.commit_cycle(write([alert("stale")]), [queued("d2", "hook")])
        assert await a.flush() is False
        with pytest.raises(StoreUnavailableError):
            await a.claim("d2")  # never sent: it cannot be recorded
        elected = await b.elect()
        assert elected is not None
        assert elected.verdict.active
        assert b.pending() == {"hook": 1}  # d1, from the database
        assert await b.claim("d1")
        lost = await a.elect()
        assert lost is not None
        assert not lost.verdict.active
        assert lost.discarded == 1
        assert a.pending() == {}
        assert not a.active
    finally:
        a.close()
        b.close()
    assert rows(pg_url) == [("d1", "0/1")]  # d2 and the stale alert were never written


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


async def test_a_restarted_server_resumes_the_term_and_writes_what_waited(
    own_server: PostgresServer,
) -> None:
    store = Store(StateStore(PostgresTarget(SecretStr(own_server.url()))))
    try:
        store.load()
        store.commit_cycle(nothing(), [queued("d1", "hook")])
        assert await store.flush() is True
        own_server.stop()
        store.commit_cycle(nothing(), [queued("d2", "hook"), queued("d3", "hook")])
        assert await store.flush() is False
        assert not store.up
        assert await store.elect() is None  # cannot say: it carries on as it was
        assert store.active
        assert store.pending() == {"hook": 3}
        with pytest.raises(StoreUnavailableError):
            await store.claim("d1")  # nothing is sent that could not be recorded
        own_server.start()
        elected = await store.elect()
        assert elected is not None
        assert elected.verdict.resumed
        assert await store.claim("d2")  # writes the journal first
        assert store.up
    finally:
        store.close()
    with psycopg.connect(own_server.url()) as db:
        found = db.execute("SELECT delivery_id FROM outbox ORDER BY seq").fetchall()
    assert found == [("d1",), ("d2",), ("d3",)]


def test_each_session_asks_the_server_to_end_it_when_the_client_vanishes(
    target: PostgresTarget, opened: list[StateStore]
) -> None:
    """The server's keepalives, per session: a dead node's lock goes within about 11 s."""
    store = replica(target, opened)
    found = {
        name: store._db.execute(f"SHOW {name}").fetchone()[0]
        for name in ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count")
    }
    assert found == {
        "tcp_keepalives_idle": "5",
        "tcp_keepalives_interval": "2",
        "tcp_keepalives_count": "3",
    }
    assert store._db.execute("SHOW tcp_user_timeout").fetchone()[0] == "15000"  # ms
