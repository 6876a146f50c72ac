"""The daemon: the polling loop, the dispatcher beside it, HTTP, signals and sd_notify."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog
import uvicorn

from syncwatch import __version__, logs
from syncwatch.acks import ack_routes, acks_to_end
from syncwatch.amapi import ApiContext, api_routes
from syncwatch.clock import SYSTEM, Clock
from syncwatch.config import ConfigError, secrets_of
from syncwatch.dispatch import Dispatcher
from syncwatch.election import Shard
from syncwatch.engine import Engine
from syncwatch.evaluate import evaluate_listings
from syncwatch.freshness_api import freshness_routes
from syncwatch.freshness_store import FreshnessLedger, max_gap
from syncwatch.history import ended_between, silence_entry
from syncwatch.history_api import history_routes
from syncwatch.history_store import HistoryCollector, HistoryStore
from syncwatch.http import make_http_client, make_transport
from syncwatch.leadership import (
    LeaderCollector,
    Replica,
    owned_acks,
    owns,
    shard_of,
    standby_interval,
)
from syncwatch.maintenance import maintenance_muter
from syncwatch.metrics import Telemetry
from syncwatch.notifiers.registry import make_notifier
from syncwatch.outbox import Notifier
from syncwatch.server import (
    ListenerLimits,
    Liveness,
    bind_listener,
    bound_address,
    build_app,
    server_config,
)
from syncwatch.settings import Config, load_config
from syncwatch.silence_store import SilenceCollector, SilenceStore
from syncwatch.silences import Muter, any_of
from syncwatch.sources import Poller
from syncwatch.sources.registry import rules_of
from syncwatch.sqlite_db import log_wal_loss
from syncwatch.startup import raise_fd_limit
from syncwatch.state import StateStore
from syncwatch.store import Store
from syncwatch.web.forms import FormsContext, form_routes
from syncwatch.web.pages import Indexed, PagesContext, overview_page, page_routes
from syncwatch.webauth import Authenticator, AuthMiddleware, may_write
from syncwatch.webconfig import LiveTls, TlsError, WebConfig, load_web_config

log = structlog.get_logger("syncwatch.daemon")

__all__ = ["Daemon", "owns", "run_daemon", "shard_of"]  # sharding lives in leadership

SHUTDOWN_GRACE = 5.0  # in-flight deliveries get this long before they are cancelled
LOG_SUPPRESSED_EVERY = 60.0  # s between reports of rate-limited library log lines

# A SIGTERM/SIGINT that arrives while starting up, before the loop owns the signals, is
# remembered here and honoured as soon as the loop starts: a clean stop, never a kill.
_EARLY_STOP = threading.Event()


def catch_early_stop() -> None:
    """From now until `Daemon.run` takes over, SIGTERM and SIGINT request a clean stop."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: _EARLY_STOP.set())


# --- systemd ----------------------------------------------------------------------------


def sd_notify(message: str) -> bool:
    """Send one sd_notify datagram when $NOTIFY_SOCKET is set; never fails the daemon."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        log.warning("sd_notify_failed", error=str(exc))
        return False
    return True


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon owns SIGTERM/SIGINT/SIGHUP."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


# --- the daemon -------------------------------------------------------------------------


class Daemon:
    def __init__(
        self,
        config: Config,
        config_path: Path | None,
        clock: Clock = SYSTEM,
        sockets: list[socket.socket] | None = None,
        limits: ListenerLimits | None = None,
    ) -> None:
        self.config = config
        self.maintenance = maintenance_muter(config)  # rebuilt on reload
        self.clock = clock
        self.config_path = config_path
        self.stop = asyncio.Event()
        self.reload_requested = asyncio.Event()
        # Bound by run_daemon before anything else, so a taken port is one line and exit 69.
        self.sockets = sockets
        self.limits = limits or ListenerLimits.for_fd_limit(
            raise_fd_limit(), config.daemon.concurrency
        )
        target = config.daemon.state_target()  # a SQLite file or a PostgreSQL DSN
        # Fixed for the process: its shard names its lock and outbox rows in a shared database.
        self.shard = Shard(*shard_of(config.daemon))
        self.store = StateStore(target, self.shard)
        if self.store.wal_loss is not None:
            log_wal_loss(self.store.path, self.store.wal_loss)
        # Silences live in the same database; their writes are rare and committed on return.
        self.silences = SilenceStore(target, timedelta(seconds=config.alerting.silence_retention))
        # History too; written behind the cycle by its own thread (history_store).
        self.history = HistoryStore(
            target,
            config.alerting.history_retention,
            config.alerting.history_max_rows,
            wall=clock.wall,
        )
        self.history.set_secrets(secrets_of(config))
        # Per-tenant freshness: written by the history writer, in memory for the pages.
        self.freshness = FreshnessLedger(max_gap(config.daemon.poll_interval))
        self.history.attach(self.freshness)
        self.indexed = Indexed()  # the status pages' index of each cycle's snapshot
        # One connection pool: the poller uses the transport directly, notifiers the client.
        self.transport = make_transport(
            max_connections=config.daemon.concurrency, ca_bundle=config.daemon.ca_bundle
        )
        self.client = make_http_client(
            timeout=config.daemon.request_timeout,
            max_connections=config.daemon.concurrency,
            transport=self.transport,
        )
        # Every state database call from here on runs on the state store's own thread.
        self.state = Store(self.store, owns(self.shard.index, self.shard.count))
        self.engine = Engine(config, self.state)
        # What mutes alerts (silences, maintenance windows): each asked once per cycle.
        self.muters: list[Callable[[], Muter]] = [self.silences.muter, lambda: self.maintenance]
        self.dispatcher = Dispatcher(
            self.state,
            self._notifiers(config),
            send_timeout=config.daemon.request_timeout * 3,
            # One time source: outbox rows are stamped with the cycle's clock.
            clock=clock,
        )
        self.telemetry = Telemetry(
            notifier_outcomes=lambda: self.dispatcher.outcomes,
            outbox_pending=lambda: self.dispatcher.pending_counts,
            notifier_names=lambda: list(self.dispatcher.notifiers),
            state_up=lambda: self.state.up,
            per_sync_series=config.metrics.per_sync_series,
        )
        wall = clock.wall
        self.telemetry.registry.register(
            SilenceCollector(self.silences, lambda: datetime.fromtimestamp(wall(), UTC))
        )
        self.telemetry.registry.register(HistoryCollector(self.history))
        # Active or standby (PostgreSQL: elected per shard; SQLite: always active).
        self.replica = Replica(
            self.shard,
            state=self.state,
            engine=self.engine,
            dispatcher=self.dispatcher,
            telemetry=self.telemetry,
            silences=self.silences,
        )
        self.telemetry.registry.register(LeaderCollector(self.replica))
        self.engine.history = self.dispatcher.history = self.history
        self.silences.on_change = lambda what, s, at: self.history.record(
            [silence_entry(what, s, at)]
        )
        # Silences that end by their own time are recorded by the first cycle after it.
        self._silences_checked = datetime.fromtimestamp(wall(), UTC)
        self.liveness = Liveness(
            poll_interval=config.daemon.poll_interval,
            problem=lambda: self.state.problem,
            standing=self.replica.standing,
        )
        self.poller = self._poller(config)
        self._set_web(load_web_config(config.daemon.web_config_file))
        self.tls = None if self.web.tls is None else LiveTls(self.web.tls)

    def _set_web(self, web: WebConfig) -> None:
        self.web, self.auth = web, Authenticator(web)

    def _notifiers(self, config: Config) -> dict[str, Notifier]:
        return {
            n.name: make_notifier(
                n,
                self.client,
                poll_interval=config.daemon.poll_interval,
                ca_bundle=config.daemon.ca_bundle,
            )
            for n in config.notifiers
        }

    def _poller(self, config: Config) -> Poller:
        wall = self.clock.wall
        # Shared state: the shard stays the one elected for (a reload cannot move it).
        shard = (
            (self.shard.index, self.shard.count) if self.state.shared else shard_of(config.daemon)
        )
        return Poller(
            config,
            self.transport,
            owns=owns(*shard),
            clock=lambda: datetime.fromtimestamp(wall(), UTC),
        )

    # --- one cycle ----------------------------------------------------------------------

    def _muter(self) -> Muter | None:
        """This cycle's muter; a part that cannot say what it mutes now mutes nothing."""
        found = []
        for make in self.muters:
            try:
                found.append(make())
            except Exception as exc:  # a broken silence store must not stop the cycle
                log.error("muter_unavailable", error=f"{type(exc).__name__}: {exc}")
        return any_of(found) if found else None

    async def cycle(self) -> None:
        started = time.monotonic()
        mono, wall = self.clock.monotonic(), self.clock.wall()
        # Durations must not jump with the wall clock: on a step, alerts and rows move with it.
        self.engine.observe_clock(wall, mono)
        now = datetime.fromtimestamp(wall, UTC)
        listings = await self.poller.poll()
        report = evaluate_listings(listings, rules_of(self.config), now)
        result = self.engine.apply(report, now, created_mono=mono, muter=self._muter())
        # Committed before anything is sent; a sick store keeps it in memory and goes on.
        committed = await self.state.flush()
        self.freshness.observe_report(report, [m.window() for m in self.config.maintenance], now)
        self.history.wake()
        await self._end_acks(now)
        self._record_ended_silences(now)
        if self.silences.collectable(now):
            await self._collect_silences(now)
        if result.batches:
            self.dispatcher.wake()
        self.telemetry.record(report, self.engine.alerts.values(), time.time())
        elapsed = time.monotonic() - started
        self.telemetry.cycle_duration.observe(elapsed)
        self.liveness.cycle_done()
        log.info(
            "cycle_complete",
            duration=round(elapsed, 3),
            tenants=len(listings),
            tenants_failed=len(report.failures),
            syncs=len(report.evaluations),
            alerts=len(self.engine.alerts),
            notifications=len(result.batches),
            rows_written=result.rows_written,
            committed=committed,
            cpu_seconds=round(time.process_time(), 3),  # the process's, all threads, so far
        )
        await asyncio.to_thread(self.indexed.prepare, self.telemetry.snapshot)  # if pages read
        await asyncio.to_thread(self.telemetry.prepare)  # /metrics too, if it is scraped

    # --- the loop -----------------------------------------------------------------------

    async def run(self, duration: float | None = None) -> int:
        """Until SIGTERM/SIGINT (or `duration` seconds); 0 on a clean stop."""
        loop = asyncio.get_running_loop()
        if duration is not None:
            loop.call_later(duration, self.stop.set)
        loop.add_signal_handler(signal.SIGTERM, self.stop.set)
        loop.add_signal_handler(signal.SIGINT, self.stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload_requested.set)
        if _EARLY_STOP.is_set():
            _EARLY_STOP.clear()
            self.stop.set()  # asked to stop while starting: start, then stop at once

        self.history.start()
        server = self._start_server()
        if self.replica.cycles:  # as elected when the engine loaded its state
            self.replica.start_delivery()
        watchdog = asyncio.create_task(self._watchdog(), name="watchdog")
        log_report = asyncio.create_task(_report_suppressed_logs(), name="log-report")
        sd_notify(f"READY=1\nSTATUS=polling every {self.config.daemon.poll_interval:g}s")
        log.info(
            "started",
            version=__version__,
            listen=bound_address(self.sockets or []),  # where it really listens: port 0 resolved
            **self.store.names,
            notifiers=sorted(self.dispatcher.notifiers),
            alerts_restored=len(self.engine.alerts),
            shard=str(self.shard),
            role=str(self.replica.role),
        )
        if not self.dispatcher.notifiers:
            log.warning(
                "no_notifiers",
                hint="alerts show in /metrics and /api/v1/alerts but are sent nowhere; "
                "add a [[notifiers]] table",
            )
        try:
            await self._loop()
        finally:
            sd_notify("STOPPING=1")
            log.info("stopping")
            watchdog.cancel()
            log_report.cancel()
            await self.replica.stop_delivery(SHUTDOWN_GRACE)
            server.should_exit = True
            await self.client.aclose()
            self.state.close()
            self.silences.close()
            self.history.close()
        log.info("stopped")
        return 0

    async def _loop(self) -> None:
        checked = True  # the engine's load has just held the first election
        while not self.stop.is_set():
            started = time.monotonic()
            if self.state.shared:
                if not checked:
                    await self.replica.check()
                checked = False
                await self.replica.refresh_silences()
            if not self.replica.cycles:
                # A standby: ready to take over, polling nothing (docs/reliability.md).
                self.liveness.cycle_done()
                self._silences_checked = datetime.fromtimestamp(self.clock.wall(), UTC)
                await self._pause(started + standby_interval(self.config.daemon.poll_interval))
                continue
            cycle = asyncio.create_task(self.cycle(), name="cycle")
            if not await self._until(cycle, None):
                cycle.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await cycle
                return
            if (exc := cycle.exception()) is not None:
                log.error(
                    "cycle_failed",
                    error=f"{type(exc).__name__}: {exc}",
                    **_state_problem(self.store, exc),
                    exc_info=exc,
                )
            deadline = started + self.config.daemon.poll_interval
            if time.monotonic() > deadline:
                self.telemetry.cycle_overruns.inc()
                log.warning(
                    "cycle_overrun",
                    duration=round(time.monotonic() - started, 3),
                    poll_interval=self.config.daemon.poll_interval,
                )
            await self._pause(deadline)

    async def _pause(self, deadline: float) -> None:
        """Until `deadline` (monotonic) or a stop; a SIGHUP meanwhile reloads."""
        while not self.stop.is_set():
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                self.reload()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            waiter = asyncio.create_task(self.reload_requested.wait())
            await self._until(waiter, remaining)
            waiter.cancel()

    async def _until(
        self, task: asyncio.Task[None] | asyncio.Task[bool], limit: float | None
    ) -> bool:
        """Wait for `task` (or `limit` seconds); False if a stop was requested first."""
        stopper = asyncio.create_task(self.stop.wait())
        try:
            await asyncio.wait({task, stopper}, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        return not self.stop.is_set()

    def _start_server(self) -> _Server:
        """Serve on the pre-bound sockets: they listen already, so there is nothing to wait for."""
        if self.sockets is None:
            self.sockets = bind_listener(self.config.daemon.listen, self.limits.backlog)
        context = self._api_context()
        figures, indexed, now = self.freshness.figures, self.indexed, context.now
        pages = PagesContext(lambda: self.telemetry.snapshot, self.history, now, figures, indexed)
        app = AuthMiddleware(
            build_app(
                self.telemetry,
                self.liveness,
                [
                    *api_routes(context),
                    *ack_routes(context),
                    *history_routes(self.history),
                    *freshness_routes(figures),
                    *page_routes(pages),
                    *form_routes(FormsContext(context)),
                ],
                # Read per request: a reload's windows show at once.
                maintenance=lambda: [m.window() for m in self.config.maintenance],
                now=lambda: datetime.fromtimestamp(self.clock.wall(), UTC),
                html_index=overview_page(pages),
            ),
            lambda: (self.web, self.auth),
        )
        if self.tls is None:
            server = _Server(server_config(app, self.limits))
        else:
            server = _Server(server_config(app, self.limits, self.tls.listener, self.tls.admits))
        task = asyncio.create_task(server.serve(sockets=self.sockets), name="http")
        task.add_done_callback(self._server_done)
        log.debug(
            "listening",
            listen=bound_address(self.sockets),
            max_connections=self.limits.max_connections,
            backlog=self.limits.backlog,
        )
        return server

    def _api_context(self) -> ApiContext:
        wall = self.clock.wall
        return ApiContext(
            silences=self.silences,
            alerts=lambda: self.telemetry.snapshot.alerts,
            notifiers=lambda: self.config.notifiers,
            now=lambda: datetime.fromtimestamp(wall(), UTC),
            last_cycle=lambda: self.telemetry.snapshot.last_cycle_timestamp,
            poll_interval=lambda: self.config.daemon.poll_interval,
            external_url=lambda: self.config.alerting.external_url,
            # An authenticated user (daemon.web_config_file), or a loopback client when no
            # users are configured: never an anonymous write from the network.
            may_write=may_write,
            muters=lambda: [self.maintenance],
            version=__version__,
        )

    async def _end_acks(self, now: datetime) -> None:
        """Expire the acks whose alert resolved or changed severity in this cycle (or while
        the daemon was down); a sick disk tries again next cycle."""
        silences = self.silences.all(now)
        if self.state.shared:  # every shard's acks are in the store: end only our own
            silences = owned_acks(silences, self.replica.owner)
        for silence_id in acks_to_end(silences, self.engine.alerts.values(), now):
            try:
                await asyncio.to_thread(self.silences.expire, silence_id, now)
            except Exception as exc:  # the store, or a silence already collected
                log.warning("ack_expire_failed", silence_id=silence_id, error=f"{exc!r}")
                continue
            log.info("ack_expired", silence_id=silence_id)

    def _record_ended_silences(self, now: datetime) -> None:
        since, self._silences_checked = self._silences_checked, now
        if self.state.shared and self.shard.index != 0:
            return  # shared silences: shard 0's active records their ends, once
        ended = ended_between(self.silences.all(now), since, now)
        self.history.record([silence_entry("expired", s, s.ends_at) for s in ended])

    async def _collect_silences(self, now: datetime) -> None:
        """Delete silences past their retention, off the loop; a sick disk tries next cycle."""
        try:
            if await asyncio.to_thread(self.silences.collect, now):
                log.info("silences_collected", retention=self.config.alerting.silence_retention)
        except self.silences.errors as exc:
            log.warning("silences_collect_failed", error=self.silences.error_text(exc))

    def _server_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self.stop.is_set():
            return
        # Without HTTP nobody sees metrics or health: stop, so systemd restarts us.
        exc = task.exception()
        log.error("http_server_failed", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
        self.stop.set()

    async def _watchdog(self) -> None:
        usec = os.environ.get("WATCHDOG_USEC", "")
        if not usec.isdigit():
            return
        interval = int(usec) / 2e6
        while True:
            # Ping only while the loop is alive, so systemd restarts a wedged daemon.
            if self.liveness.healthy:
                sd_notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    def reload(self) -> None:
        """SIGHUP: re-read config and secrets; an invalid config keeps the old one."""
        sd_notify("RELOADING=1")
        try:
            config = load_config(self.config_path)
            poller = self._poller(config)
            web = load_web_config(config.daemon.web_config_file)
            if self.tls is not None and web.tls is not None:
                self.tls.update(web.tls)
        except TlsError as exc:
            log.error("reload_failed", problems=[str(exc)], kept="previous config")
            sd_notify("READY=1")
            return
        except ConfigError as exc:
            log.error("reload_failed", problems=exc.problems, kept="previous config")
            sd_notify("READY=1")
            return
        if config.daemon.listen != self.config.daemon.listen:
            log.warning("reload_listen_ignored", hint="changing daemon.listen needs a restart")
        if (web.tls is None) != (self.tls is None):
            log.warning("reload_tls_ignored", hint="turning TLS on or off needs a restart")
        if self.state.shared and Shard(*shard_of(config.daemon)) != self.shard:
            log.warning("reload_shard_ignored", hint="a replica keeps the shard it was elected for")
        self._set_web(web)
        logs.configure(config.daemon.log_level, config.daemon.log_format, secrets_of(config))
        self.config = config
        self.maintenance = maintenance_muter(config)
        self.poller = poller
        self.engine.reconfigure(config)
        self.silences.retention = timedelta(seconds=config.alerting.silence_retention)
        self.history.retention = config.alerting.history_retention
        self.history.max_rows = config.alerting.history_max_rows
        self.freshness.max_gap = max_gap(config.daemon.poll_interval)
        self.history.set_secrets(secrets_of(config))
        self.dispatcher.notifiers = self._notifiers(config)
        self.liveness.poll_interval = config.daemon.poll_interval
        self.telemetry.per_sync_series = config.metrics.per_sync_series
        log.info("reloaded", notifiers=sorted(self.dispatcher.notifiers))
        sd_notify("READY=1")


def _state_problem(store: StateStore, exc: BaseException) -> dict[str, str]:
    """A database error names the database and what to do (disk full: free space…)."""
    if not isinstance(exc, store.errors):
        return {}
    return {**store.names, "state_problem": str(store.describe(exc))}


async def _report_suppressed_logs() -> None:
    while True:
        await asyncio.sleep(LOG_SUPPRESSED_EVERY)
        for logger, message, count in logs.take_suppressed():
            log.warning("log_suppressed", logger=logger, message=message, suppressed=count)


def run_daemon(
    config: Config,
    config_path: Path | None,
    *,
    clock: Clock = SYSTEM,
    sockets: list[socket.socket] | None = None,
    duration: float | None = None,
    after: Callable[[Daemon], None] | None = None,
) -> int:
    """`syncwatch run` and `syncwatch demo`: raise the fd limit, bind, open the state, run."""
    catch_early_stop()
    logs.configure(config.daemon.log_level, config.daemon.log_format, secrets_of(config))
    limits = ListenerLimits.for_fd_limit(raise_fd_limit(), config.daemon.concurrency)
    # Bind first: a taken port is reported before any file is created.
    sockets = sockets or bind_listener(config.daemon.listen, limits.backlog)

    async def main() -> int:
        daemon = Daemon(
            config,
            config_path,
            clock=clock,
            sockets=sockets,
            limits=limits,
        )
        code = await daemon.run(duration)
        if after is not None:
            after(daemon)  # e.g. the demo's closing summary
        return code

    try:
        return asyncio.run(main())
    finally:
        for sock in sockets:
            sock.close()
