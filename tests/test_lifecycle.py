"""Specs for the pure alert lifecycle, driven cycle by cycle with an injected clock."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from syncwatch.lifecycle import (
    Alert,
    Identity,
    Rules,
    TenantKey,
    TenantOutcome,
    Transition,
    fingerprint,
    transition,
)
from syncwatch.models import AlertName, Condition, Severity, Source
from syncwatch.outbox import AlertStatus, EventKind

T0 = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
ORG = "org_1"
POLL = 60.0
HOUR = 3600.0

FIRING, CHANGED, REPEAT, RESOLVED = (
    EventKind.FIRING,
    EventKind.CHANGED,
    EventKind.REPEAT,
    EventKind.RESOLVED,
)
WARN, CRIT = Severity.WARNING, Severity.CRITICAL


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def stale(
    sync_id: str = "s1", severity: Severity = WARN, tenant: str = ORG, *, lag: int = 5400
) -> Condition:
    return Condition(
        alertname=AlertName.SYNC_STALE,
        severity=severity,
        source=Source.TIMBAL,
        tenant=tenant,
        sync_id=sync_id,
        labels={"connector_id": "c1", "name": f"sync {sync_id}"},
        annotations={
            "summary": f"sync {sync_id} last succeeded {lag}s ago",
            "seconds_since_success": str(lag),
        },
    )


def listed(*sync_ids: str, tenant: str = ORG) -> TenantOutcome:
    return TenantOutcome(Source.TIMBAL, tenant, ok=True, sync_ids=frozenset(sync_ids))


def unreadable(*invalid: str, listed_ok: tuple[str, ...] = (), tenant: str = ORG) -> TenantOutcome:
    """A healthy listing in which the records of `invalid` failed validation."""
    return TenantOutcome(
        Source.TIMBAL,
        tenant,
        ok=True,
        sync_ids=frozenset(listed_ok),
        invalid_ids=frozenset(invalid),
    )


def down(tenant: str = ORG) -> TenantOutcome:
    return TenantOutcome(
        Source.TIMBAL, tenant, ok=False, reason="timeout", message=f"timbal {tenant}: timed out"
    )


@dataclass(frozen=True)
class Cycle:
    """One cycle's inputs: when (seconds after T0), what holds, how each tenant's poll went."""

    t: float
    conditions: tuple[Condition, ...] = ()
    outcomes: tuple[TenantOutcome, ...] = (listed("s1"),)


def firing_cycle(t: float, severity: Severity = WARN) -> Cycle:
    return Cycle(t, (stale(severity=severity),))


def clear_cycle(t: float) -> Cycle:
    return Cycle(t)


def down_cycle(t: float) -> Cycle:
    return Cycle(t, outcomes=(down(),))


@dataclass
class Run:
    """Everything the cycles produced, in order."""

    steps: list[Transition] = field(default_factory=list)
    alerts: dict[Identity, Alert] = field(default_factory=dict)
    failures: dict[TenantKey, int] = field(default_factory=dict)

    @property
    def events(self) -> list[tuple[float, EventKind, str, Severity]]:
        """(seconds after T0, kind, alertname, severity) of every event."""
        return [
            ((e.at - T0).total_seconds(), e.kind, str(e.alert.alertname), e.alert.severity)
            for step in self.steps
            for e in step.events
        ]

    @property
    def kinds(self) -> list[EventKind]:
        return [kind for _, kind, _, _ in self.events]

    @property
    def last(self) -> Transition:
        return self.steps[-1]


def run(
    cycles: Sequence[Cycle],
    rules: Rules | None = None,
    *,
    alerts: Mapping[Identity, Alert] | None = None,
    failures: Mapping[TenantKey, int] | None = None,
) -> Run:
    """Feed each cycle's output into the next, exactly as the engine does."""
    rules = rules or Rules()
    result = Run(alerts=dict(alerts or {}), failures=dict(failures or {}))
    for cycle in cycles:
        step = transition(
            result.alerts,
            result.failures,
            conditions=cycle.conditions,
            outcomes=cycle.outcomes,
            rules=rules,
            now=at(cycle.t),
        )
        result.steps.append(step)
        result.alerts, result.failures = step.alerts, step.failures
    return result


def only_alert(r: Run) -> Alert:
    assert len(r.alerts) == 1, r.alerts
    return next(iter(r.alerts.values()))


# --- firing, escalation, recovery ------------------------------------------------------


@pytest.mark.parametrize(
    "cycles",
    [
        pytest.param(
            [
                firing_cycle(0, WARN),
                firing_cycle(60, CRIT),
                clear_cycle(120),
            ],
            id="one-cycle-each",
        ),
        pytest.param(
            [
                clear_cycle(0),
                firing_cycle(60, WARN),
                firing_cycle(120, WARN),
                firing_cycle(180, WARN),
                firing_cycle(240, CRIT),
                firing_cycle(300, CRIT),
                clear_cycle(360),
                clear_cycle(420),
            ],
            id="steady-cycles-between",
        ),
    ],
)
def test_stall_escalate_recover_emits_exactly_firing_changed_resolved(
    cycles: list[Cycle],
) -> None:
    r = run(cycles)
    assert [(kind, sev) for _, kind, _, sev in r.events] == [
        (FIRING, WARN),
        (CHANGED, CRIT),
        (RESOLVED, CRIT),
    ]
    assert r.alerts == {}


def test_deescalation_is_a_changed_event_too() -> None:
    r = run([firing_cycle(0, CRIT), firing_cycle(60, WARN)])
    assert [(kind, sev) for _, kind, _, sev in r.events] == [(FIRING, CRIT), (CHANGED, WARN)]


# --- `for` -------------------------------------------------------------------------------


def test_for_suppresses_a_one_cycle_blip() -> None:
    r = run([firing_cycle(0), clear_cycle(60), clear_cycle(120)], Rules(for_=300))
    assert r.events == []
    assert only_state(r.steps[0]) == "pending"
    assert r.steps[1].removed == [stale().identity]
    assert r.alerts == {}


def only_state(step: Transition) -> str:
    (alert,) = step.alerts.values()
    return alert.state


@pytest.mark.parametrize(
    ("for_", "fires_at"),
    [
        pytest.param(0, 0, id="for-0-fires-at-once"),
        pytest.param(60, 60, id="for-one-poll"),
        pytest.param(300, 300, id="for-5m-exactly-at-elapsed"),
        pytest.param(301, 360, id="for-just-over-5m-next-poll"),
    ],
)
def test_for_fires_once_elapsed_with_starts_at_the_fired_time(for_: float, fires_at: float) -> None:
    r = run([firing_cycle(t) for t in range(0, 600, 60)], Rules(for_=for_))
    assert r.events == [(fires_at, FIRING, AlertName.SYNC_STALE, WARN)]
    alert = only_alert(r)
    assert alert.fired_at == at(fires_at)
    assert alert.active_since == at(0)


def test_pending_keeps_active_since_across_cycles() -> None:
    r = run([firing_cycle(t) for t in (0, 60, 120, 180)], Rules(for_=HOUR))
    assert [only_alert_of(step).active_since for step in r.steps] == [at(0)] * 4
    assert [only_alert_of(step).state for step in r.steps] == ["pending"] * 4


def only_alert_of(step: Transition) -> Alert:
    (alert,) = step.alerts.values()
    return alert


# --- keep_firing_for --------------------------------------------------------------------


def test_keep_firing_for_suppresses_a_one_cycle_recovery_blip() -> None:
    r = run(
        [firing_cycle(0), clear_cycle(60), firing_cycle(120), firing_cycle(180)],
        Rules(keep_firing_for=300),
    )
    assert r.kinds == [FIRING]
    alert = only_alert(r)
    assert alert.firing
    assert alert.cleared_since is None


@pytest.mark.parametrize(
    ("keep_firing_for", "resolves_at"),
    [
        pytest.param(0, 60, id="no-keep-resolves-at-first-clear-poll"),
        pytest.param(120, 180, id="keep-2m-resolves-exactly-when-elapsed"),
        pytest.param(150, 240, id="keep-2m30s-resolves-at-next-poll"),
    ],
)
def test_resolves_once_keep_firing_for_has_elapsed(
    keep_firing_for: float, resolves_at: float
) -> None:
    cycles = [firing_cycle(0)] + [clear_cycle(t) for t in range(60, 600, 60)]
    r = run(cycles, Rules(keep_firing_for=keep_firing_for))
    assert [(t, kind) for t, kind, _, _ in r.events] == [(0, FIRING), (resolves_at, RESOLVED)]


@pytest.mark.parametrize(
    ("keep_firing_for", "expected"),
    [
        pytest.param(0, [FIRING, RESOLVED] * 5, id="without-keep-firing-for-flaps"),
        pytest.param(300, [FIRING], id="with-keep-firing-for-steady"),
    ],
)
def test_sync_hovering_at_the_threshold(keep_firing_for: float, expected: list[EventKind]) -> None:
    cycles = [firing_cycle(t) if (t // 60) % 2 == 0 else clear_cycle(t) for t in range(0, 600, 60)]
    r = run(cycles, Rules(keep_firing_for=keep_firing_for))
    assert r.kinds == expected


# --- repeat_interval --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("poll", "expected"),
    [
        pytest.param(60, [(0, FIRING), (HOUR, REPEAT), (2 * HOUR, REPEAT)], id="poll-divides"),
        pytest.param(
            25 * 60, [(0, FIRING), (75 * 60, REPEAT), (150 * 60, REPEAT)], id="poll-25m-next-after"
        ),
    ],
)
def test_repeat_exactly_at_repeat_interval_not_before(
    poll: float, expected: list[tuple[float, EventKind]]
) -> None:
    cycles = [firing_cycle(t * poll) for t in range(int(2.5 * HOUR // poll) + 1)]
    r = run(cycles, Rules(repeat_interval=HOUR))
    assert [(t, kind) for t, kind, _, _ in r.events] == expected


def test_no_repeat_one_second_before_the_interval() -> None:
    r = run([firing_cycle(0), firing_cycle(HOUR - 1)], Rules(repeat_interval=HOUR))
    assert r.kinds == [FIRING]
    r = run([firing_cycle(0), firing_cycle(HOUR)], Rules(repeat_interval=HOUR))
    assert r.kinds == [FIRING, REPEAT]


def test_changed_restarts_the_repeat_clock() -> None:
    r = run(
        [firing_cycle(0), firing_cycle(1800, CRIT), firing_cycle(HOUR, CRIT)],
        Rules(repeat_interval=HOUR),
    )
    assert r.kinds == [FIRING, CHANGED]


# --- SourceUnreachable ------------------------------------------------------------------


@pytest.mark.parametrize("threshold", [1, 2, 3, 5], ids=lambda n: f"threshold-{n}")
def test_source_unreachable_fires_after_threshold_consecutive_failures(threshold: int) -> None:
    r = run(
        [down_cycle(t * POLL) for t in range(threshold + 2)],
        Rules(source_failure_threshold=threshold),
    )
    assert [(t, kind, name) for t, kind, name, _ in r.events] == [
        ((threshold - 1) * POLL, FIRING, AlertName.SOURCE_UNREACHABLE)
    ]
    alert = only_alert(r)
    assert alert.severity is CRIT
    assert alert.labels["reason"] == "timeout"
    assert r.failures == {(Source.TIMBAL, ORG): threshold + 2}


def test_source_unreachable_resolves_on_the_first_good_poll() -> None:
    r = run([down_cycle(0), down_cycle(60), down_cycle(120), clear_cycle(180)])
    assert [(t, kind, name) for t, kind, name, _ in r.events] == [
        (120, FIRING, AlertName.SOURCE_UNREACHABLE),
        (180, RESOLVED, AlertName.SOURCE_UNREACHABLE),
    ]
    assert r.failures == {}


@pytest.mark.parametrize(
    ("pattern", "failures_after"),
    [
        pytest.param("xx.xx", 2, id="two-then-ok-then-two"),
        pytest.param("xx.x.x", 1, id="never-three-in-a-row"),
        pytest.param("xx.", 0, id="ok-clears-the-count"),
    ],
)
def test_failure_count_resets_on_success(pattern: str, failures_after: int) -> None:
    cycles = [
        down_cycle(i * POLL) if c == "x" else clear_cycle(i * POLL) for i, c in enumerate(pattern)
    ]
    r = run(cycles, Rules(source_failure_threshold=3))
    assert r.events == []
    assert r.failures.get((Source.TIMBAL, ORG), 0) == failures_after


# --- held while the source is down ------------------------------------------------------


@pytest.mark.parametrize(
    "down_for",
    [
        pytest.param(3 * POLL, id="three-polls"),
        pytest.param(5 * HOUR, id="past-repeat-interval"),
    ],
)
def test_source_down_holds_the_tenants_sync_alerts(down_for: float) -> None:
    r = run([firing_cycle(0)], Rules(repeat_interval=4 * HOUR, source_failure_threshold=3))
    before = only_alert(r)
    held = run(
        [down_cycle(t) for t in range(60, int(down_for) + 61, 60)],
        Rules(repeat_interval=4 * HOUR, source_failure_threshold=3),
        alerts=r.alerts,
    )
    # Only SourceUnreachable speaks (fires, and repeats if down long enough).
    assert {name for _, _, name, _ in held.events} == {AlertName.SOURCE_UNREACHABLE}
    assert held.alerts[before.identity] == before
    assert all(before.identity not in [a.identity for a in s.changed] for s in held.steps)
    assert all(before.identity not in s.removed for s in held.steps)


def test_source_down_holds_a_pending_alert_too() -> None:
    r = run([firing_cycle(0), down_cycle(60), down_cycle(120)], Rules(for_=HOUR))
    assert r.events == []
    assert only_alert(r).state == "pending"


@pytest.mark.parametrize(
    ("back_at", "condition_holds", "expected"),
    [
        pytest.param(2 * HOUR, False, [(2 * HOUR, RESOLVED)], id="condition-gone-resolves"),
        pytest.param(2 * HOUR, True, [(4 * HOUR, REPEAT)], id="back-early-repeats-on-schedule"),
        pytest.param(5 * HOUR, True, [(5 * HOUR, REPEAT)], id="back-late-repeat-is-due-at-once"),
    ],
)
def test_source_back_re_evaluates(
    back_at: float, condition_holds: bool, expected: list[tuple[float, EventKind]]
) -> None:
    rules = Rules(repeat_interval=4 * HOUR, source_failure_threshold=1000)
    cycles = [firing_cycle(0)] + [down_cycle(t) for t in range(60, int(back_at), 600)]
    after = [
        firing_cycle(t) if condition_holds else clear_cycle(t)
        for t in range(int(back_at), int(back_at + 2 * HOUR) + 1, 600)
    ]
    r = run(cycles + after, rules)
    assert [(t, kind) for t, kind, _, _ in r.events] == [(0, FIRING), *expected]


# --- listed but unreadable (issue 13, item 15) ------------------------------------------


def bad_record_cycle(t: float) -> Cycle:
    return Cycle(t, outcomes=(unreadable("s1", listed_ok=("s2",)),))


@pytest.mark.parametrize(
    ("cycles", "expected"),
    [
        pytest.param(
            [firing_cycle(0), *(bad_record_cycle(t) for t in range(60, 601, 60))],
            [(0, FIRING)],
            id="held-while-unreadable",
        ),
        pytest.param(
            [firing_cycle(0), bad_record_cycle(60), bad_record_cycle(120), firing_cycle(180)],
            [(0, FIRING)],
            id="readable-again-and-still-stale-is-not-a-new-alert",
        ),
        pytest.param(
            [firing_cycle(0), bad_record_cycle(60), clear_cycle(120)],
            [(0, FIRING), (120, RESOLVED)],
            id="readable-again-and-fine-resolves",
        ),
        pytest.param(
            [firing_cycle(0), bad_record_cycle(60), Cycle(120, outcomes=(listed("s2"),))],
            [(0, FIRING), (120, RESOLVED)],
            id="then-absent-from-a-healthy-listing-resolves",
        ),
        pytest.param(
            [firing_cycle(0), *(bad_record_cycle(t) for t in range(60, 5 * 3600, 600))],
            [(0, FIRING)],
            id="held-past-repeat-interval-not-re-notified",
        ),
    ],
)
def test_an_alert_of_a_listed_but_unreadable_sync_is_held(
    cycles: list[Cycle], expected: list[tuple[float, EventKind]]
) -> None:
    r = run(cycles, Rules(repeat_interval=4 * HOUR))
    assert [(t, kind) for t, kind, _, _ in r.events] == expected


def test_an_unreadable_sync_is_held_exactly_as_it_was() -> None:
    r = run([firing_cycle(0)])
    before = only_alert(r)
    held = run([bad_record_cycle(60), bad_record_cycle(120)], alerts=r.alerts)
    assert held.alerts == {before.identity: before}
    assert all(not s.changed and not s.removed for s in held.steps)


def test_an_unreadable_sync_holds_a_pending_alert_and_a_keep_firing_countdown() -> None:
    pending = run([firing_cycle(0), bad_record_cycle(60), bad_record_cycle(120)], Rules(for_=HOUR))
    assert only_alert(pending).state == "pending"
    countdown = run(
        [firing_cycle(0), clear_cycle(60), bad_record_cycle(120), bad_record_cycle(7200)],
        Rules(keep_firing_for=HOUR),
    )
    assert countdown.kinds == [FIRING]
    assert only_alert(countdown).cleared_since == at(60)


def test_only_the_unreadable_sync_is_held_its_neighbour_resolves() -> None:
    r = run(
        [
            Cycle(0, (stale("s1"), stale("s2")), (listed("s1", "s2"),)),
            Cycle(60, (), (unreadable("s1", listed_ok=("s2",)),)),
        ]
    )
    assert [(t, kind, a) for t, kind, a, _ in r.events] == [
        (0, FIRING, "SyncStale"),
        (0, FIRING, "SyncStale"),
        (60, RESOLVED, "SyncStale"),
    ]
    assert [a.sync_id for a in r.alerts.values()] == ["s1"]


# --- disappearing syncs and tenants -----------------------------------------------------


def test_sync_missing_from_a_healthy_listing_resolves_saying_so() -> None:
    r = run(
        [
            Cycle(0, (stale("s1"),), (listed("s1", "s2"),)),
            Cycle(60, (), (listed("s2"),)),
        ],
        Rules(keep_firing_for=HOUR),
    )
    assert [(t, kind) for t, kind, _, _ in r.events] == [(0, FIRING), (60, RESOLVED)]
    resolved = r.last.events[0].alert
    assert "no longer listed" in resolved.annotations["description"]
    assert r.alerts == {}


def test_tenant_no_longer_polled_resolves_its_alerts() -> None:
    r = run(
        [
            Cycle(
                0,
                (stale("s1", tenant="org_1"), stale("s9", tenant="org_2")),
                (
                    listed("s1", tenant="org_1"),
                    listed("s9", tenant="org_2"),
                ),
            ),
            Cycle(60, (stale("s9", tenant="org_2"),), (listed("s9", tenant="org_2"),)),
        ],
        Rules(keep_firing_for=HOUR),
    )
    (resolved,) = r.last.events
    assert resolved.kind is RESOLVED
    assert resolved.alert.tenant == "org_1"
    assert "no longer watched" in resolved.alert.annotations["description"]
    assert [a.tenant for a in r.alerts.values()] == ["org_2"]


def test_tenant_no_longer_polled_resolves_its_source_unreachable_and_forgets_failures() -> None:
    r = run(
        [down_cycle(0), down_cycle(60), Cycle(120, outcomes=())],
        Rules(source_failure_threshold=2, keep_firing_for=HOUR),
    )
    assert [(t, kind) for t, kind, _, _ in r.events] == [(60, FIRING), (120, RESOLVED)]
    assert "no longer watched" in r.last.events[0].alert.annotations["description"]
    assert r.failures == {}
    assert r.last.failures_changed == {(Source.TIMBAL, ORG): 0}


# --- only what must be written ----------------------------------------------------------


def test_steady_cycle_with_1000_healthy_syncs_and_3_firing_alerts_writes_nothing() -> None:
    ids = [f"s{i}" for i in range(1000)]
    outcomes = (listed(*ids),)
    firing = (stale("s1", lag=5400), stale("s2", CRIT, lag=9000), stale("s3", lag=6000))
    first = run([Cycle(0, firing, outcomes)])
    assert len(first.last.changed) == 3
    # A minute later the lags (annotations) moved on; nothing else did.
    later = tuple(
        stale(c.sync_id, c.severity, lag=int(c.annotations["seconds_since_success"]) + 60)
        for c in firing
    )
    steady = run([Cycle(60, later, outcomes)], alerts=first.alerts, failures=first.failures)
    step = steady.last
    assert step.events == []
    assert step.changed == []
    assert step.removed == []
    assert step.failures_changed == {}
    assert len(step.alerts) == 3


@pytest.mark.parametrize(
    ("cycles", "rules", "writes"),
    [
        pytest.param([firing_cycle(0)], Rules(for_=HOUR), ("changed",), id="new-pending"),
        pytest.param(
            [firing_cycle(0), firing_cycle(60)], Rules(for_=HOUR), (), id="pending-steady"
        ),
        pytest.param([firing_cycle(0)], Rules(), ("changed",), id="fires"),
        pytest.param([firing_cycle(0), firing_cycle(60)], Rules(), (), id="firing-steady"),
        pytest.param(
            [firing_cycle(0), firing_cycle(60, CRIT)], Rules(), ("changed",), id="severity-change"
        ),
        pytest.param(
            [firing_cycle(0), firing_cycle(HOUR)],
            Rules(repeat_interval=HOUR),
            ("changed",),
            id="repeat-records-last-notified",
        ),
        pytest.param(
            [firing_cycle(0), clear_cycle(60)],
            Rules(keep_firing_for=HOUR),
            ("changed",),
            id="starts-clearing",
        ),
        pytest.param(
            [firing_cycle(0), clear_cycle(60), clear_cycle(120)],
            Rules(keep_firing_for=HOUR),
            (),
            id="still-clearing",
        ),
        pytest.param([firing_cycle(0), clear_cycle(60)], Rules(), ("removed",), id="resolves"),
        pytest.param([firing_cycle(0), down_cycle(60)], Rules(), ("failures",), id="held"),
        pytest.param([clear_cycle(0), clear_cycle(60)], Rules(), (), id="nothing-happens"),
    ],
)
def test_last_cycle_writes_only_what_changed(
    cycles: list[Cycle], rules: Rules, writes: tuple[str, ...]
) -> None:
    step = run(cycles, rules).last
    assert bool(step.changed) == ("changed" in writes)
    assert bool(step.removed) == ("removed" in writes)
    assert bool(step.failures_changed) == ("failures" in writes)


# --- fingerprints -----------------------------------------------------------------------


def test_severity_change_keeps_the_fingerprint() -> None:
    r = run([firing_cycle(0, WARN), firing_cycle(60, CRIT)])
    first, changed = (e.alert for s in r.steps for e in s.events)
    assert first.fingerprint == changed.fingerprint == fingerprint(stale().identity)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        pytest.param(stale("s1"), stale("s2"), id="sync-id"),
        pytest.param(stale("s1", tenant="org_1"), stale("s1", tenant="org_2"), id="tenant"),
        pytest.param(
            stale("s1"),
            Condition(AlertName.SYNC_NEVER_SUCCEEDED, WARN, Source.TIMBAL, ORG, "s1"),
            id="alertname",
        ),
        pytest.param(
            stale("s1"),
            Condition(AlertName.SYNC_STALE, WARN, Source.PARAGON, ORG, "s1"),
            id="source",
        ),
    ],
)
def test_fingerprint_differs_per_identity(a: Condition, b: Condition) -> None:
    assert fingerprint(a.identity) != fingerprint(b.identity)


def test_fingerprint_is_stable_for_one_identity() -> None:
    identity = ("SyncStale", "timbal", "org_1", "s1")
    assert fingerprint(identity) == fingerprint(stale("s1", CRIT, lag=1).identity)
    assert fingerprint(identity) == "869aa2991c1f9928"


def test_fired_alert_is_firing_with_labels_and_annotations_of_its_condition() -> None:
    r = run([firing_cycle(0)])
    alert = only_alert(r)
    assert alert.status is AlertStatus.FIRING
    assert alert.labels == stale().all_labels
    assert alert.annotations == stale().annotations
