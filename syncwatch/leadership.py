"""Sharding, and which replica of a shard is active: what the daemon does about both.

A replica polls the tenants of its shard (`owns`). With the state on PostgreSQL, every
replica of every shard shares one database and the replicas of a shard elect an active one
(`election`): the active polls, commits and delivers; a standby only checks, every
`standby_interval`, whether it can take over, and re-reads the silences. It does not poll
upstream: its `/metrics` carry no sync or alert series (so nothing is exported twice) and
its upstream cost is nil; `docs/reliability.md` has the measurement. On SQLite there is no
election: the one process is active.

Taking over loads the shard's stored alerts, failure counts and outbox rows; a delivery the
predecessor was making when it died is made again under the same delivery id. Stepping
down stops delivery and forgets the shard's alerts (they are the new active's now).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import socket
import time
from collections.abc import Callable, Iterable, Iterator

import structlog
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from syncwatch.config import ConfigError, DaemonConfig
from syncwatch.dispatch import Dispatcher
from syncwatch.election import Role, Shard
from syncwatch.engine import Engine
from syncwatch.metrics import Snapshot, Telemetry
from syncwatch.silence_store import SilenceStore
from syncwatch.silences import Silence
from syncwatch.store import Elected, Store

log = structlog.get_logger("syncwatch.leadership")

STANDBY_CHECK_MAX = 5.0  # s between a standby's attempts, whatever the poll interval


def standby_interval(poll_interval: float) -> float:
    """How often a standby tries to take over: twice per poll interval, 0.1 s to 5 s apart,
    so a dead active is replaced well within 2 x poll_interval."""
    return min(max(poll_interval / 2, 0.1), STANDBY_CHECK_MAX)


# --- sharding ---------------------------------------------------------------------------


def shard_of(daemon: DaemonConfig, hostname: str | None = None) -> tuple[int, int]:
    """(i, n) from `shard = "i/n"`, or from the StatefulSet ordinal when `shard = "auto"`."""
    if daemon.shard != "auto":
        index, count = daemon.shard.split("/")
        return int(index), int(count)
    assert daemon.shard_count is not None
    hostname = hostname or socket.gethostname()
    match = re.search(r"-(\d+)$", hostname)
    if match is None:
        raise ConfigError(
            [
                "daemon.shard: 'auto' needs a StatefulSet pod name like syncwatch-0; "
                f"got {hostname!r}"
            ]
        )
    # Replicas beyond shard_count double up on shards: two per shard is the HA setup.
    return int(match[1]) % daemon.shard_count, daemon.shard_count


def owns(index: int, count: int) -> Callable[[str, str], bool]:
    """Whether this replica polls a tenant: a stable hash of (source, tenant) mod n."""
    if count == 1:
        return lambda _source, _tenant: True

    def check(source: str, tenant: str) -> bool:
        digest = hashlib.sha256(f"{source}/{tenant}".encode()).digest()
        return int.from_bytes(digest[:8], "big") % count == index

    return check


def owned_acks(silences: Iterable[Silence], owner: Callable[[str, str], bool]) -> list[Silence]:
    """The silences but the acks of alerts of other shards' tenants (in a shared store, a
    shard must not end an ack because the alert is not one of its own)."""
    kept = []
    for s in silences:
        if s.ack is not None:
            labels = {m.name: m.value for m in s.matchers if m.is_equal and not m.is_regex}
            if not owner(labels.get("source", ""), labels.get("tenant", "")):
                continue
        kept.append(s)
    return kept


# --- the replica ------------------------------------------------------------------------


class Replica:
    """This process's part in its shard: active or standby, and delivery to match."""

    def __init__(
        self,
        shard: Shard,
        *,
        state: Store,
        engine: Engine,
        dispatcher: Dispatcher,
        telemetry: Telemetry,
        silences: SilenceStore,
    ) -> None:
        self.shard = shard
        self.owner = state.owner
        self.state = state
        self.engine = engine
        self.dispatcher = dispatcher
        self.telemetry = telemetry
        self.silences = silences
        # Shared: as the first election (when the engine loaded its state) found.
        first = state.elected.verdict if state.elected is not None else None
        self.role = Role.STANDBY if first is not None and not first.active else Role.ACTIVE
        self.known = True
        self.why = "" if first is None else first.why
        self.term = 0 if first is None else first.term
        self.active_since: float | None = time.monotonic() if self.leader else None
        self._delivery: tuple[asyncio.Event, asyncio.Task[None]] | None = None
        self._silences_failed = False
        if state.elected is not None:
            self._said(state.elected)

    @property
    def leader(self) -> bool:
        """`syncwatch_leader`: holds the shard as of its last check (always, on SQLite)."""
        return self.role is Role.ACTIVE and self.known

    @property
    def cycles(self) -> bool:
        """Whether this replica runs full cycles: active, or active until the database
        went away (it keeps polling and journalling, and delivers nothing meanwhile)."""
        return self.state.active

    def standing(self) -> str:
        """For /readyz: "" when active, else what this replica waits for."""
        if self.role is Role.ACTIVE:
            return ""
        return f"standby of shard {self.shard}: {self.why or 'the database did not answer'}"

    # --- the election -------------------------------------------------------------------

    async def check(self) -> None:
        """One election check (shared state only), and what follows from its verdict."""
        try:
            elected = await self.state.elect()
        except Exception as exc:  # a bug must not stop the loop: the next check tries again
            log.error("election_failed", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
            elected = None
        if elected is None:
            self.known = False  # PostgreSQL did not answer: keep doing what we did
            return
        verdict, self.known = elected.verdict, True
        if verdict.active:
            self.term, self.why = verdict.term, ""
            if elected.state is not None:
                self.engine.restore(*elected.state)
            self._said(elected)
            if self.role is not Role.ACTIVE:
                self.role, self.active_since = Role.ACTIVE, time.monotonic()
            self.start_delivery()
            if elected.state is not None or verdict.resumed:
                self.dispatcher.wake()
            return
        was_active = self.role is Role.ACTIVE
        self.role, self.active_since = Role.STANDBY, None
        if was_active or elected.discarded:
            log.warning(
                "leader_lost",
                shard=str(self.shard),
                why=verdict.why,
                writes_discarded=elected.discarded,
                hint="another replica is active now; it carries on from the stored state",
            )
            await self.stop_delivery()
            self.engine.restore({}, {})
            self.telemetry.snapshot = Snapshot()  # its series are the active's to export
        elif verdict.why != self.why:
            self._said(elected)
        self.why = verdict.why

    def _said(self, elected: Elected) -> None:
        """One log line per change of role (or of what a standby waits for)."""
        verdict = elected.verdict
        if not verdict.active:
            log.info("standby", shard=str(self.shard), why=verdict.why)
        elif elected.state is not None:
            log.info(
                "leader_elected",
                shard=str(self.shard),
                term=verdict.term,
                alerts_restored=len(elected.state[0]),
                outbox_rows=sum(self.state.pending().values()),
                rows_adopted=verdict.adopted,
                deliveries_cut_off=verdict.cut_off,
                writes_discarded=elected.discarded,
            )
        elif verdict.resumed:
            log.info("leader_resumed", shard=str(self.shard), term=verdict.term)

    async def refresh_silences(self) -> None:
        """Shared: re-read the silences, which any replica may have written (once a cycle)."""
        if not self.silences.shared:
            return
        try:
            await asyncio.to_thread(self.silences.refresh)
        except self.silences.errors as exc:
            if not self._silences_failed:
                log.warning(
                    "silences_refresh_failed",
                    error=self.silences.error_text(exc),
                    hint="the silences read last are applied until the database answers",
                )
            self._silences_failed = True
            return
        self._silences_failed = False

    # --- delivery -----------------------------------------------------------------------

    def start_delivery(self) -> None:
        if self._delivery is None:
            stop = asyncio.Event()
            task = asyncio.create_task(self.dispatcher.run(stop), name="dispatcher")
            self._delivery = (stop, task)

    async def stop_delivery(self, grace: float = 5.0) -> None:
        """In-flight deliveries get `grace` seconds, then are cancelled (retried later)."""
        if self._delivery is None:
            return
        (stop, task), self._delivery = self._delivery, None
        stop.set()
        try:
            await asyncio.wait_for(task, grace)
        except TimeoutError:
            log.warning("delivery_cancelled", reason="shutdown grace elapsed; will retry")
        with contextlib.suppress(asyncio.CancelledError):
            await task


class LeaderCollector(Collector):
    """`syncwatch_leader{shard}`: 1 while this replica is its shard's active one."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "syncwatch_leader",
            "1 while this replica is the active one of its shard (polls, commits and "
            "delivers), 0 while it is a standby or cannot reach the state database.",
            labels=["shard"],
        )
        family.add_metric([str(self.replica.shard)], 1.0 if self.replica.leader else 0.0)
        yield family
