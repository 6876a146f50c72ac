"""Specs for what a silence (or maintenance window) does to notifications: the engine with
a real Store and a fake clock, one cycle at a time."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from syncwatch.check import (
    NagiosStatus,
    muted_conditions,
    nagios_status,
    render_json,
    render_table,
)
from syncwatch.config import AlertingConfig, NotifierConfig, TimbalConfig, TimbalOrg
from syncwatch.daemon import Daemon
from syncwatch.engine import Engine
from syncwatch.evaluate import Report, evaluate_listings
from syncwatch.lifecycle import Alert
from syncwatch.metrics import Telemetry
from syncwatch.models import AlertName, Listing, Reason, Severity, Source, SourceError, TimbalSync
from syncwatch.notifiers.alertmanager import AlertmanagerConfig
from syncwatch.notifiers.console import ConsoleConfig
from syncwatch.outbox import AlertStatus, Batch, EventKind, NotificationReason
from syncwatch.settings import Config, load_config
from syncwatch.silences import Matcher, Muter, Silence, any_of, muted_by
from syncwatch.simulator import SimConfig, SimulatorThread
from syncwatch.sources.timbal.rules import TimbalRules
from syncwatch.state import _MIGRATIONS, SCHEMA_VERSION, StateStore
from syncwatch.store import Store
from tests.clock import FakeClock

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HOUR = 3600.0
INTERVAL = 600
# seconds since the last success: within the interval, 2x (warning), 4x (critical)
LAG = {"ok": 60, "warning": 2 * INTERVAL, "critical": 4 * INTERVAL}


def console(name: str = "console", **kw: object) -> ConsoleConfig:
    return ConsoleConfig(name=name, type="console", **kw)


def alertmanager(name: str = "am") -> AlertmanagerConfig:
    return AlertmanagerConfig(name=name, type="alertmanager", urls=["http://127.0.0.1:9"])


def silence(
    *matchers: tuple[str, str], start: float = 0, end: float = 10 * HOUR, id: str = "sil-1"
) -> Silence:
    return Silence(
        id=id,
        matchers=tuple(Matcher(name, value) for name, value in matchers),
        starts_at=T0 + timedelta(seconds=start),
        ends_at=T0 + timedelta(seconds=end),
        created_by="oncall",
        comment="customer migration",
        updated_at=T0,
    )


def sync(org: str, sync_id: str, lag: int, now: datetime) -> TimbalSync:
    return TimbalSync(
        org_id=org,
        id=sync_id,
        connector_id="c1",
        name=f"billing-{sync_id}",
        source_kind="postgres",
        source_table="public.invoices",
        dest_table="raw.invoices",
        interval_secs=INTERVAL,
        enabled=True,
        seconds_since_success=lag,
        last_success_at=now - timedelta(seconds=lag),
        last_run_at=now - timedelta(seconds=30),
        last_state="running",
        created_at=datetime(2024, 1, 1, tzinfo=UTC),
        updated_at=None,
    )


class Fleet:
    """The engine over a real state database; each `cycle` is one poll at the clock's time."""

    def __init__(self, path: Path, notifiers: Sequence[NotifierConfig], **alerting: object):
        self.path = path
        self.config = Config(
            timbal=TimbalConfig(
                api_key="test-key", orgs=[TimbalOrg(id="org_1"), TimbalOrg(id="org_2")]
            ),
            alerting=AlertingConfig(**{"source_failure_threshold": 1, **alerting}),
            notifiers=list(notifiers),
        )
        self.clock = FakeClock(T0)
        self.silences: list[Silence] = []
        self.ids = iter(range(1_000_000))
        self.store = Store(StateStore(path))
        self.engine = self._engine()

    def _engine(self) -> Engine:
        return Engine(self.config, self.store, new_id=lambda: f"d{next(self.ids)}")

    @property
    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.wall(), UTC)

    def report(self, syncs: dict[str, str], down: Sequence[str]) -> Report:
        listings = []
        for org in ("org_1", "org_2"):
            if org in down:
                error = SourceError(Source.TIMBAL, org, Reason.HTTP_5XX, "HTTP 503")
                listings.append(Listing(source=Source.TIMBAL, tenant=org, error=error))
                continue
            mine = [
                sync(org, sync_id, LAG[level], self.now)
                for key, level in syncs.items()
                for o, _, sync_id in [key.partition("/")]
                if o == org
            ]
            listings.append(Listing(source=Source.TIMBAL, tenant=org, syncs=mine))
        assert self.config.timbal is not None
        rules = {Source.TIMBAL: TimbalRules.from_config(self.config.timbal)}
        return evaluate_listings(listings, rules, self.now)

    def cycle(
        self, at: float, syncs: dict[str, str] | None = None, down: Sequence[str] = ()
    ) -> dict[str, Batch]:
        """One cycle at T0 + `at` s; `syncs`: "org/sync" → ok|warning|critical."""
        self.clock.set(T0 + timedelta(seconds=at))
        report = self.report({"org_1/s1": "warning"} if syncs is None else syncs, down)
        result = self.engine.apply(report, self.now, muter=muted_by(self.silences))
        by_notifier = {b.notifier: b for b in result.batches}
        assert len(by_notifier) == len(result.batches)
        return by_notifier

    def restart(self) -> None:
        self.store.close()
        self.store = Store(StateStore(self.path))
        self.engine = self._engine()

    def alert(self, sync_id: str = "s1", tenant: str = "org_1") -> Alert:
        (found,) = (
            a for a in self.engine.alerts.values() if (a.sync_id, a.tenant) == (sync_id, tenant)
        )
        return found

    def close(self) -> None:
        self.store.close()


class MakeFleet(Protocol):
    def __call__(self, notifiers: Sequence[NotifierConfig], **alerting: object) -> Fleet: ...


@pytest.fixture
def fleet_of(tmp_path: Path) -> Iterator[MakeFleet]:
    made: list[Fleet] = []

    def make(notifiers: Sequence[NotifierConfig], **alerting: object) -> Fleet:
        made.append(Fleet(tmp_path / "state.db", notifiers, **alerting))
        return made[-1]

    yield make
    for f in made:
        f.close()


def events(b: Batch) -> list[tuple[EventKind, str]]:
    return [(a.event, a.labels["sync_id"]) for a in b.alerts]


S1 = ("sync_id", "s1")


# --- muted: no firing, changed or repeat notification, to anyone --------------------------


def test_an_alert_firing_under_a_silence_is_notified_to_no_one_but_fires(
    fleet_of: MakeFleet,
) -> None:
    fleet = fleet_of([console(), console("crit", min_severity="critical"), alertmanager()])
    fleet.silences = [silence(S1)]
    assert fleet.cycle(0) == {}
    assert fleet.cycle(60, {"org_1/s1": "critical"}) == {}
    alert = fleet.alert()
    assert alert.firing
    assert alert.severity is Severity.CRITICAL
    assert alert.muted_by == ("sil-1",)
    assert alert.last_notified_at is None  # nothing was ever sent for it


def test_a_muted_alert_does_not_repeat(fleet_of: MakeFleet) -> None:
    fleet = fleet_of([console()], repeat_interval=HOUR)
    assert events(fleet.cycle(0)["console"]) == [(EventKind.FIRING, "s1")]
    fleet.silences = [silence(S1)]
    assert fleet.cycle(HOUR) == {}
    assert fleet.cycle(3 * HOUR) == {}


def test_a_muted_alert_escalating_sends_no_changed(fleet_of: MakeFleet) -> None:
    fleet = fleet_of([console()])
    fleet.cycle(0)
    fleet.silences = [silence(S1)]
    assert fleet.cycle(60, {"org_1/s1": "critical"}) == {}


def test_a_silence_mutes_only_the_alerts_it_matches(fleet_of: MakeFleet) -> None:
    fleet = fleet_of([console()])
    fleet.silences = [silence(S1)]
    got = fleet.cycle(0, {"org_1/s1": "warning", "org_1/s2": "warning"})
    assert events(got["console"]) == [(EventKind.FIRING, "s2")]


def test_alertmanager_resend_skips_a_muted_alert(fleet_of: MakeFleet) -> None:
    fleet = fleet_of([alertmanager()])
    both = {"org_1/s1": "warning", "org_1/s2": "warning"}
    assert sorted(events(fleet.cycle(0, both)["am"])) == [
        (EventKind.FIRING, "s1"),
        (EventKind.FIRING, "s2"),
    ]
    fleet.silences = [silence(S1)]
    assert events(fleet.cycle(60, both)["am"]) == [(EventKind.ACTIVE, "s2")]
    assert events(fleet.cycle(120, both)["am"]) == [(EventKind.ACTIVE, "s2")]


def test_source_unreachable_is_silenced_per_tenant(fleet_of: MakeFleet) -> None:
    fleet = fleet_of([console()])
    fleet.silences = [silence(("alertname", "SourceUnreachable"), ("tenant", "org_1"))]
    got = fleet.cycle(0, {}, down=["org_1", "org_2"])
    assert [(a.alertname, a.labels["tenant"]) for a in got["console"].alerts] == [
        (AlertName.SOURCE_UNREACHABLE, "org_2")
    ]
    assert fleet.alert("", "org_1").muted_by == ("sil-1",)


# --- the mute ends while it still fires: notified then ----------------------------------


def test_the_end_of_a_silence_announces_a_still_firing_alert_as_a_first_notification(
    fleet_of: MakeFleet,
) -> None:
    fleet = fleet_of([console()])
    fleet.silences = [silence(S1, end=HOUR)]
    assert fleet.cycle(0) == {}
    assert fleet.cycle(HOUR - 60) == {}
    got = fleet.cycle(HOUR)["console"]
    assert events(got) == [(EventKind.FIRING, "s1")]
    assert got.reason is NotificationReason.FIRST
    assert got.alerts[0].starts_at == T0  # it has fired since then, silenced
    assert fleet.cycle(HOUR + 60) == {}


def test_the_end_of_a_silence_adds_the_alert_to_those_a_receiver_already_knows(
    fleet_of: MakeFleet,
) -> None:
    fleet = fleet_of([console()])
    both = {"org_1/s1": "warning", "org_1/s2": "warning"}
    fleet.silences = [silence(S1, end=HOUR)]
    assert events(fleet.cycle(0, both)["console"]) == [(EventKind.FIRING, "s2")]
    got = fleet.cycle(HOUR, both)["console"]
    assert events(got) == [(EventKind.FIRING, "s1")]
    assert got.reason is NotificationReason.NEW_ALERTS


def test_an_alert_announced_at_the_end_of_a_silence_repeats_from_then(
    fleet_of: MakeFleet,
) -> None:
    fleet = fleet_of([console()], repeat_interval=4 * HOUR)
    fleet.silences = [silence(S1, end=HOUR)]
    fleet.cycle(0)
    assert events(fleet.cycle(HOUR)["console"]) == [(EventKind.FIRING, "s1")]
    assert fleet.cycle(4 * HOUR) == {}
    got = fleet.cycle(5 * HOUR)["console"]
    assert (events(got), got.reason) == ([(EventKind.REPEAT, "s1")], NotificationReason.REPEAT)


def test_a_receiver_told_before_the_silence_hears_no_duplicate_at_its_end(
    fleet_of: MakeFleet,
) -> None:
    fleet = fleet_of([console()], repeat_interval=4 * HOUR)
    fleet.cycle(0)
    fleet.silences = [silence(S1, start=60, end=HOUR)]
    assert fleet.cycle(60) == {}
    assert fleet.cycle(HOUR) == {}  # told at 0; the repeat is due at 4 h, not now
    assert events(fleet.cycle(4 * HOUR)["console"]) == [(EventKind.REPEAT, "s1")]


def test_a_repeat_due_during_the_silence_goes_out_at_its_end(fleet_of: MakeFleet) -> None:
    fleet = fleet_of([console()], repeat_interval=HOUR)
    fleet.cycle(0)
    fleet.silences = [silence(S1, start=60, end=3 * HOUR)]
    assert fleet.cycle(2 * HOUR) == {}
    got = fleet.cycle(3 * HOUR)["console"]
    assert (events(got), got.reason) == ([(EventKind.REPEAT, "s1")], NotificationReason.REPEAT)


def test_an_escalation_during_the_silence_is_told_at_its_end(fleet_of: MakeFleet) -> None:
    fleet = fleet_of([console(), console("crit", min_severity="critical")])
    assert set(fleet.cycle(0)) == {"console"}
    fleet.silences = [silence(S1, start=60, end=HOUR)]
    crit = {"org_1/s1": "critical"}
    assert fleet.cycle(60, crit) == {}
    got = fleet.cycle(HOUR, crit)
    assert events(got["console"]) == [(EventKind.CHANGED, "s1")]
    assert got["console"].alerts[0].labels["severity"] == "critical"
    assert events(got["crit"]) == [(EventKind.FIRING, "s1")]
    assert got["crit"].reason is NotificationReason.FIRST
    assert fleet.cycle(HOUR + 60, crit) == {}


def test_an_alert_never_notified_escalating_as_its_silence_ends_is_announced_as_firing(
    fleet_of: MakeFleet,
) -> None:
    fleet = fleet_of([console()])
    fleet.silences = [silence(S1, end=HOUR)]
    fleet.cycle(0)
    got = fleet.cycle(HOUR, {"org_1/s1": "critical"})["console"]
    assert (events(got), got.reason) == ([(EventKind.FIRING, "s1")], NotificationReason.FIRST)


# --- a resolve reaches exactly the receivers told it fired, across restarts --------------


def test_a_resolve_while_muted_goes_only_to_receivers_told_it_was_firing(
    fleet_of: MakeFleet,
) -> None:
    fleet = fleet_of([console("all"), console("crit", min_severity="critical"), alertmanager()])
    assert set(fleet.cycle(0)) == {"all", "am"}
    fleet.silences = [silence(S1, start=60)]
    assert fleet.cycle(60, {"org_1/s1": "critical"}) == {}  # "crit" is never told
    got = fleet.cycle(120, {"org_1/s1": "ok"})
    assert set(got) == {"all", "am"}
    for name in ("all", "am"):
        assert events(got[name]) == [(EventKind.RESOLVED, "s1")]
        assert got[name].reason is NotificationReason.ALL_RESOLVED
        assert got[name].alerts[0].status is AlertStatus.RESOLVED


def test_an_alert_that_fires_and_resolves_within_a_silence_notifies_no_one(
    fleet_of: MakeFleet,
) -> None:
    fleet = fleet_of([console(), alertmanager()])
    fleet.silences = [silence(S1)]
    assert fleet.cycle(0) == {}
    assert fleet.cycle(60, {"org_1/s1": "ok"}) == {}
    assert fleet.engine.alerts == {}


def test_a_de_escalation_while_muted_resolves_it_for_the_receiver_told_it_was_critical(
    fleet_of: MakeFleet,
) -> None:
    fleet = fleet_of([console("all"), console("crit", min_severity="critical")])
    assert set(fleet.cycle(0, {"org_1/s1": "critical"})) == {"all", "crit"}
    fleet.silences = [silence(S1, start=60)]
    got = fleet.cycle(60, {"org_1/s1": "warning"})
    assert set(got) == {"crit"}  # it no longer routes there: no incident left open
    assert events(got["crit"]) == [(EventKind.RESOLVED, "s1")]


def test_who_was_told_survives_a_restart(fleet_of: MakeFleet) -> None:
    fleet = fleet_of([console()])
    both = {"org_1/s1": "warning", "org_1/s2": "warning"}
    fleet.silences = [silence(("sync_id", "s2"), id="sil-2")]
    assert events(fleet.cycle(0, both)["console"]) == [(EventKind.FIRING, "s1")]
    fleet.restart()
    assert fleet.alert("s1").told == {"console": "warning"}
    assert fleet.alert("s2").told == {}
    fleet.silences.append(silence(S1, start=60))
    got = fleet.cycle(60, {"org_1/s1": "ok", "org_1/s2": "ok"})
    assert events(got["console"]) == [(EventKind.RESOLVED, "s1")]  # never s2: never told


def test_a_database_from_before_silences_counts_every_routed_notifier_as_told(
    tmp_path: Path, fleet_of: MakeFleet
) -> None:
    with closing(sqlite3.connect(tmp_path / "state.db")) as db:
        db.executescript(f"BEGIN; {_MIGRATIONS[0]}; PRAGMA user_version=1; COMMIT;")
        t0 = T0.timestamp()
        identity = ("SyncStale", "timbal", "org_1", "s1")
        row = (*identity, "warning", "firing", b'{"sync_id":"s1"}', b"{}", t0, t0, t0, None)
        db.execute("INSERT INTO alerts VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", row)
        db.commit()
    fleet = fleet_of([console(), console("crit", min_severity="critical")])
    assert fleet.alert().told is None
    fleet.silences = [silence(S1)]
    got = fleet.cycle(60, {"org_1/s1": "ok"})
    assert set(got) == {"console"}
    assert events(got["console"]) == [(EventKind.RESOLVED, "s1")]
    with closing(sqlite3.connect(tmp_path / "state.db")) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


# --- visible: /metrics, and `syncwatch check` ---------------------------------------------


def alert_series(fleet: Fleet) -> dict[str, str]:
    telemetry = Telemetry()
    telemetry.record(fleet.report({}, ()), fleet.engine.alerts.values(), fleet.now.timestamp())
    body, _ = telemetry.render("text/plain")
    (family,) = (
        f for f in text_string_to_metric_families(body.decode()) if f.name == "syncwatch_alert"
    )
    return {s.labels["sync_id"]: s.labels["state"] for s in family.samples}


def test_a_muted_firing_alert_is_on_metrics_as_suppressed(fleet_of: MakeFleet) -> None:
    fleet = fleet_of([console()], **{"for": 120})
    fleet.silences = [silence(S1, end=HOUR)]
    three = {"org_1/s1": "warning", "org_1/s2": "warning"}
    fleet.cycle(0, three)
    assert alert_series(fleet) == {"s1": "pending", "s2": "pending"}
    fleet.cycle(120, three)
    assert alert_series(fleet) == {"s1": "suppressed", "s2": "firing"}
    fleet.cycle(HOUR, three)
    assert alert_series(fleet) == {"s1": "firing", "s2": "firing"}


def a_report(fleet: Fleet, syncs: dict[str, str], down: Sequence[str] = ()) -> Report:
    fleet.clock.set(T0)
    return fleet.report(syncs, down)


def test_check_lists_a_suppressed_alert_and_does_not_count_it(fleet_of: MakeFleet) -> None:
    fleet = fleet_of([])
    report = a_report(fleet, {"org_1/s1": "critical", "org_1/s2": "warning"})
    assert nagios_status(report) is NagiosStatus.CRITICAL
    muted = muted_conditions(report, muted_by([silence(S1)]), T0)
    assert nagios_status(report, muted) is NagiosStatus.WARNING
    doc = json.loads(render_json(report, muted))
    assert (doc["status"], doc["exit_code"]) == ("WARNING", 1)
    states = {a["labels"]["sync_id"]: (a["state"], a["silenced_by"]) for a in doc["alerts"]}
    assert states == {"s1": ("suppressed", ["sil-1"]), "s2": ("active", [])}
    table = render_table(report, muted)
    (s1_row,) = (line for line in table.splitlines() if "(s1)" in line)
    assert "CRITICAL (SUPPRESSED)" in s1_row
    assert table.splitlines()[-1].startswith(
        "WARNING: 2 syncs (1 critical, 1 warning); 2 alerts (1 suppressed);"
    )


def test_check_does_not_count_a_tenant_whose_source_unreachable_is_silenced(
    fleet_of: MakeFleet,
) -> None:
    fleet = fleet_of([])
    report = a_report(fleet, {"org_2/s1": "ok"}, down=["org_1"])
    assert nagios_status(report) is NagiosStatus.UNKNOWN
    muted = muted_conditions(report, muted_by([silence(("tenant", "org_1"))]), T0)
    assert nagios_status(report, muted) is NagiosStatus.OK
    assert "UNREACHABLE (SUPPRESSED)" in render_table(report, muted)


def test_check_without_a_muter_suppresses_nothing(fleet_of: MakeFleet) -> None:
    report = a_report(fleet_of([]), {"org_1/s1": "critical"})
    assert muted_conditions(report) == {}
    assert json.loads(render_json(report))["alerts"][0]["state"] == "active"


# --- the same rule for routing changes ------------------------------------------------------


def test_a_notifier_added_by_a_reload_is_told_of_what_fires(fleet_of: MakeFleet) -> None:
    fleet = fleet_of([console()])
    fleet.cycle(0)
    fleet.engine.reconfigure(
        fleet.config.model_copy(update={"notifiers": [console(), console("new")]})
    )
    got = fleet.cycle(60)
    assert set(got) == {"new"}
    assert (events(got["new"]), got["new"].reason) == (
        [(EventKind.FIRING, "s1")],
        NotificationReason.FIRST,
    )


def test_a_receiver_whose_match_no_longer_admits_a_firing_alert_gets_its_resolve(
    fleet_of: MakeFleet,
) -> None:
    fleet = fleet_of([console()])
    fleet.cycle(0)
    narrowed = console(match={"tenant": "org_2"})
    fleet.engine.reconfigure(fleet.config.model_copy(update={"notifiers": [narrowed]}))
    got = fleet.cycle(60)
    assert events(got["console"]) == [(EventKind.RESOLVED, "s1")]
    assert fleet.cycle(120) == {}


# --- the daemon asks its muters every cycle, and a broken one mutes nothing ----------------

SIM_NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
FOREVER = 20 * 365 * 86400.0


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorThread]:
    thread = SimulatorThread(
        SimConfig(orgs=2, syncs_per_org=12, users=0, seed=11, churn=0), clock=lambda: SIM_NOW
    )
    thread.start()
    yield thread
    thread.stop()


def sim_daemon(sim: SimulatorThread, tmp_path: Path) -> Daemon:
    config = load_config(
        None,
        timbal={
            "base_url": sim.base_url,
            "api_key": "sim-timbal-key",
            "orgs": [{"id": "org_0001"}, {"id": "org_0002"}],
        },
        notifiers=[{"name": "console", "type": "console"}],
        daemon={"state_path": str(tmp_path / "daemon.db")},
    )
    return Daemon(config, None)


async def queued_tenants(daemon: Daemon) -> set[str]:
    row = daemon.state.head("console")
    assert row is not None
    batch = Batch.from_json(await daemon.state.payload(row.delivery_id))
    return {a.labels["tenant"] for a in batch.alerts}


async def test_the_daemon_mutes_what_its_muters_mute(sim: SimulatorThread, tmp_path: Path) -> None:
    daemon = sim_daemon(sim, tmp_path)
    daemon.muters.append(lambda: muted_by([silence(("tenant", "org_0001"), end=FOREVER)]))
    try:
        await daemon.cycle()
        states = {(a.tenant, a.state) for a in daemon.engine.alerts.values()}
        assert states == {("org_0001", "suppressed"), ("org_0002", "firing")}
        assert await queued_tenants(daemon) == {"org_0002"}
    finally:
        await daemon.client.aclose()
        daemon.state.close()


def broken_store() -> Muter:
    raise sqlite3.OperationalError("database is locked")


def broken_silence(labels: Mapping[str, str], now: datetime) -> tuple[str, ...]:
    raise ValueError("a bug")


@pytest.mark.parametrize("muter", [broken_store, lambda: broken_silence], ids=["factory", "muter"])
async def test_a_broken_muter_mutes_nothing_and_says_so(
    sim: SimulatorThread, tmp_path: Path, muter: Callable[[], Muter]
) -> None:
    daemon = sim_daemon(sim, tmp_path)
    daemon.muters.extend([muter, lambda: muted_by([])])
    try:
        with capture_logs() as logged:
            await daemon.cycle()
        assert await queued_tenants(daemon) == {"org_0001", "org_0002"}
        failed = [e for e in logged if e["event"] in ("muter_unavailable", "muter_failed")]
        assert len(failed) == 1, failed
        assert failed[0]["log_level"] == "error"
    finally:
        await daemon.client.aclose()
        daemon.state.close()


def test_any_of_names_every_muter_that_mutes() -> None:
    both = any_of([muted_by([silence(S1, id="a")]), muted_by([silence(S1, id="b")])])
    assert both({"sync_id": "s1"}, T0) == ("a", "b")
    assert both({"sync_id": "s2"}, T0) == ()


def test_a_held_alert_stays_suppressed_and_is_announced_when_its_silence_ends(
    fleet_of: MakeFleet,
) -> None:
    fleet = fleet_of([console()], source_failure_threshold=5)
    fleet.silences = [silence(S1, end=HOUR)]
    fleet.cycle(0)
    assert fleet.cycle(60, {}, down=["org_1"]) == {}
    assert fleet.alert().state == "suppressed"  # held as it was, and still muted
    # Held means neither resolved nor re-notified; it fired, and no one was ever told.
    got = fleet.cycle(HOUR, {}, down=["org_1"])["console"]
    assert (events(got), got.reason) == ([(EventKind.FIRING, "s1")], NotificationReason.FIRST)
    assert fleet.alert().state == "firing"
    assert fleet.cycle(HOUR + 60) == {}
