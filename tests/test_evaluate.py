"""Specs for the pure evaluation: (sync, thresholds or rules, now) → state and condition."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from syncwatch.config import ParagonConfig, Thresholds, TimbalConfig, TimbalMatch, TimbalOverride
from syncwatch.evaluate import Evaluation, Limits, SourceRules, SyncState, evaluate_listings
from syncwatch.models import (
    AlertName,
    Condition,
    Listing,
    ParagonSync,
    Reason,
    Severity,
    Source,
    SourceError,
    TimbalSync,
)
from syncwatch.sources.paragon.rules import ParagonRules, evaluate_paragon
from syncwatch.sources.timbal.rules import (
    LimitsResolver,
    TimbalRules,
    evaluate_timbal,
    resolve_limits,
)

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
HOUR = 3600.0

# --- factories ----------------------------------------------------------------------------

_TIMBAL = TimbalSync(
    org_id="org_1",
    id="sync_1",
    connector_id="conn_1",
    name="orders",
    source_kind="postgres",
    source_table="public.orders",
    dest_table="raw.orders",
    interval_secs=600,
    enabled=True,
    seconds_since_success=60,
    last_success_at=NOW - timedelta(seconds=60),
    last_run_at=NOW - timedelta(seconds=60),
    last_state="succeeded",
    created_at=NOW - timedelta(days=30),
    updated_at=NOW - timedelta(seconds=60),
)

_PARAGON = ParagonSync(
    user_id="user-1",
    id="psync-1",
    integration="salesforce",
    pipeline="contacts",
    status="ACTIVE",
    date_created=NOW - timedelta(days=2),
)


def timbal(**changes: Any) -> TimbalSync:
    """A healthy, enabled Timbal sync (interval 10m, succeeded 1m ago) with `changes`."""
    return replace(_TIMBAL, **changes)


def never_succeeded(age: float, **changes: Any) -> TimbalSync:
    """A Timbal sync created `age` seconds before NOW that has never succeeded."""
    return timbal(
        seconds_since_success=None,
        last_success_at=None,
        created_at=NOW - timedelta(seconds=age),
        **changes,
    )


def paragon(**changes: Any) -> ParagonSync:
    """An ACTIVE Paragon sync created two days before NOW, with `changes`."""
    return replace(_PARAGON, **changes)


def thresholds(
    warn: float = 1.5, critical: float = 3.0, min_stale: float = 300.0, **more: Any
) -> Thresholds:
    return Thresholds(warn_ratio=warn, critical_ratio=critical, min_stale_seconds=min_stale, **more)


def rules(
    disabled: Severity | None = Severity.WARNING,
    grace: float = HOUR,
    idle_stale_after: float | None = None,
) -> ParagonRules:
    return ParagonRules(disabled, grace, idle_stale_after)


def verdict(evaluation: Evaluation) -> tuple[SyncState, AlertName | None, Severity | None]:
    """State, alertname and severity: the part of an evaluation a table row pins down."""
    condition = evaluation.condition
    if condition is None:
        return (evaluation.state, None, None)
    return (evaluation.state, condition.alertname, condition.severity)


def condition_of(evaluation: Evaluation) -> Condition:
    assert evaluation.condition is not None, evaluation
    return evaluation.condition


OK = (SyncState.OK, None, None)
STALE_WARNING = (SyncState.WARNING, AlertName.SYNC_STALE, Severity.WARNING)
STALE_CRITICAL = (SyncState.CRITICAL, AlertName.SYNC_STALE, Severity.CRITICAL)
NEVER_WARNING = (SyncState.WARNING, AlertName.SYNC_NEVER_SUCCEEDED, Severity.WARNING)
NEVER_CRITICAL = (SyncState.CRITICAL, AlertName.SYNC_NEVER_SUCCEEDED, Severity.CRITICAL)


# --- Timbal: SyncStale --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lag", "expected"),
    [
        pytest.param(60, OK, id="fresh"),
        pytest.param(899, OK, id="just-below-warn-ratio"),
        pytest.param(900, STALE_WARNING, id="ratio-equals-warn-ratio"),
        pytest.param(1200, STALE_WARNING, id="between-warn-and-critical"),
        pytest.param(1799, STALE_WARNING, id="just-below-critical-ratio"),
        pytest.param(1800, STALE_CRITICAL, id="ratio-equals-critical-ratio"),
        pytest.param(86_400, STALE_CRITICAL, id="far-beyond-critical-ratio"),
    ],
)
def test_stale_severity_follows_the_ratio_thresholds(lag: int, expected: object) -> None:
    """Interval 600s, warn 1.5 (900s), critical 3.0 (1800s); each threshold is inclusive."""
    evaluation = evaluate_timbal(timbal(seconds_since_success=lag), thresholds(), NOW)
    assert verdict(evaluation) == expected


@pytest.mark.parametrize(
    ("lag", "interval", "min_stale", "expected"),
    [
        pytest.param(200, 60, 300, OK, id="ratio-3.3-but-lag-below-min"),
        pytest.param(299, 60, 300, OK, id="lag-one-second-below-min"),
        pytest.param(300, 60, 300, STALE_CRITICAL, id="lag-equals-min"),
        pytest.param(90, 60, 0, STALE_WARNING, id="min-zero-lets-ratio-decide"),
        pytest.param(3600, 60, 7200, OK, id="ratio-60-but-lag-below-min"),
    ],
)
def test_min_stale_seconds_blocks_alerts_below_the_absolute_lag(
    lag: int, interval: int, min_stale: float, expected: object
) -> None:
    sync = timbal(seconds_since_success=lag, interval_secs=interval)
    evaluation = evaluate_timbal(sync, thresholds(min_stale=min_stale), NOW)
    assert verdict(evaluation) == expected


@pytest.mark.parametrize(
    ("lag", "interval"),
    [
        pytest.param(60, 600, id="ok"),
        pytest.param(200, 60, id="ok-held-by-min-stale"),
        pytest.param(1200, 600, id="warning"),
        pytest.param(7200, 600, id="critical"),
    ],
)
def test_ratio_is_reported_whatever_the_state(lag: int, interval: int) -> None:
    sync = timbal(seconds_since_success=lag, interval_secs=interval)
    assert evaluate_timbal(sync, thresholds(), NOW).ratio == pytest.approx(lag / interval)


def test_stale_ratio_boundary_holds_for_decimal_thresholds() -> None:
    """lag / interval == 1.1 exactly in decimal fires a 1.1 warn_ratio despite binary floats."""
    sync = timbal(seconds_since_success=1100, interval_secs=1000)
    evaluation = evaluate_timbal(sync, thresholds(warn=1.1, critical=2.2, min_stale=0), NOW)
    assert verdict(evaluation) == STALE_WARNING


# --- Timbal: SyncNeverSucceeded -----------------------------------------------------------


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        pytest.param(60, OK, id="young"),
        pytest.param(899, OK, id="age-just-below-warn-ratio"),
        pytest.param(900, NEVER_WARNING, id="age-equals-warn-ratio"),
        pytest.param(1799, NEVER_WARNING, id="age-just-below-critical-ratio"),
        pytest.param(1800, NEVER_CRITICAL, id="age-equals-critical-ratio"),
        pytest.param(30 * 86_400, NEVER_CRITICAL, id="a-month-old"),
    ],
)
def test_never_succeeded_severity_follows_age_since_creation(age: int, expected: object) -> None:
    """Same ratios as SyncStale, with the age since `created_at` as the lag."""
    evaluation = evaluate_timbal(never_succeeded(age), thresholds(), NOW)
    assert verdict(evaluation) == expected


def test_never_succeeded_respects_min_stale_seconds() -> None:
    sync = never_succeeded(200, interval_secs=60)
    assert verdict(evaluate_timbal(sync, thresholds(min_stale=300), NOW)) == OK


def test_never_succeeded_created_in_the_future_is_ok() -> None:
    """Clock skew between us and Timbal must not produce a negative ratio or an alert."""
    evaluation = evaluate_timbal(never_succeeded(-120), thresholds(), NOW)
    assert verdict(evaluation) == OK
    assert evaluation.ratio == 0.0


def test_never_succeeded_summary_shows_whole_seconds() -> None:
    """A created_at with microseconds does not leak a fractional duration into the summary."""
    sync = never_succeeded(7200.25)
    summary = condition_of(evaluate_timbal(sync, thresholds(), NOW)).annotations["summary"]
    assert "has never succeeded, created 2h ago" in summary


# --- Timbal: disabled ---------------------------------------------------------------------


def test_disabled_sync_is_skipped_without_alert_on_disabled() -> None:
    """Even a very stale disabled sync is `disabled`, not stale."""
    sync = timbal(enabled=False, seconds_since_success=86_400)
    evaluation = evaluate_timbal(sync, thresholds(), NOW)
    assert verdict(evaluation) == (SyncState.DISABLED, None, None)


def test_disabled_sync_alerts_sync_disabled_with_alert_on_disabled() -> None:
    sync = timbal(enabled=False)
    evaluation = evaluate_timbal(sync, thresholds(alert_on_disabled=True), NOW)
    assert verdict(evaluation) == (SyncState.WARNING, AlertName.SYNC_DISABLED, Severity.WARNING)


def test_alert_on_disabled_does_not_affect_enabled_syncs() -> None:
    evaluation = evaluate_timbal(timbal(), thresholds(alert_on_disabled=True), NOW)
    assert verdict(evaluation) == OK


# --- Timbal: overrides --------------------------------------------------------------------


def _both(resolve: LimitsResolver, paragon_rules: ParagonRules) -> dict[Source, SourceRules]:
    """Timbal's rules with these thresholds, Paragon's with these."""
    return {Source.TIMBAL: TimbalRules(resolve), Source.PARAGON: paragon_rules}


def _resolver(*overrides: TimbalOverride) -> LimitsResolver:
    return resolve_limits(TimbalConfig(thresholds=thresholds(), overrides=list(overrides)))


def _evaluate_one(sync: TimbalSync, *overrides: TimbalOverride) -> Evaluation:
    listing = Listing(Source.TIMBAL, sync.org_id, [sync])
    report = evaluate_listings([listing], {Source.TIMBAL: TimbalRules(_resolver(*overrides))}, NOW)
    [evaluation] = report.evaluations
    return evaluation


BILLING_CRITICAL_AT_2 = TimbalOverride(match=TimbalMatch(name="billing-*"), critical_ratio=2.0)


def test_an_evaluation_carries_the_lines_it_was_judged_against_and_who_set_them() -> None:
    billing = _evaluate_one(replace(_TIMBAL, name="billing-eu"), BILLING_CRITICAL_AT_2)
    other = _evaluate_one(replace(_TIMBAL, name="orders"), BILLING_CRITICAL_AT_2)
    assert billing.limits == Limits(1.5, 2.0, "overrides[0]")
    assert other.limits == Limits(1.5, 3.0, "default")
    ignored = TimbalOverride(match=TimbalMatch(name="orders"), ignore=True)
    assert _evaluate_one(replace(_TIMBAL, name="orders"), ignored).limits is None


BILLING_EU_IGNORED = TimbalOverride(match=TimbalMatch(name="billing-eu"), ignore=True)
ORG_2_IGNORED = TimbalOverride(match=TimbalMatch(org_id="org_2"), ignore=True)


@pytest.mark.parametrize(
    ("sync", "overrides", "expected"),
    [
        pytest.param(
            timbal(name="orders", seconds_since_success=1500),
            [],
            STALE_WARNING,
            id="no-override-ratio-2.5-is-warning",
        ),
        pytest.param(
            timbal(name="billing-us", seconds_since_success=1500),
            [BILLING_CRITICAL_AT_2],
            STALE_CRITICAL,
            id="critical-ratio-2-makes-ratio-2.5-critical",
        ),
        pytest.param(
            timbal(name="orders", seconds_since_success=1500),
            [BILLING_CRITICAL_AT_2],
            STALE_WARNING,
            id="non-matching-override-leaves-defaults",
        ),
    ],
)
def test_override_thresholds_change_the_severity(
    sync: TimbalSync, overrides: list[TimbalOverride], expected: object
) -> None:
    assert verdict(_evaluate_one(sync, *overrides)) == expected


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        pytest.param(
            [BILLING_CRITICAL_AT_2, BILLING_EU_IGNORED], STALE_CRITICAL, id="refining-first"
        ),
        pytest.param(
            [BILLING_EU_IGNORED, BILLING_CRITICAL_AT_2],
            (SyncState.IGNORED, None, None),
            id="ignore-first",
        ),
    ],
)
def test_first_matching_override_wins(overrides: list[TimbalOverride], expected: object) -> None:
    sync = timbal(name="billing-eu", seconds_since_success=1500)
    assert verdict(_evaluate_one(sync, *overrides)) == expected


@pytest.mark.parametrize(
    "sync",
    [
        pytest.param(timbal(org_id="org_2"), id="healthy"),
        pytest.param(timbal(org_id="org_2", seconds_since_success=86_400), id="critical"),
        pytest.param(never_succeeded(86_400, org_id="org_2"), id="never-succeeded"),
        pytest.param(timbal(org_id="org_2", enabled=False), id="disabled"),
    ],
)
def test_ignore_override_marks_the_sync_ignored(sync: TimbalSync) -> None:
    assert verdict(_evaluate_one(sync, ORG_2_IGNORED)) == (SyncState.IGNORED, None, None)


def test_override_can_turn_on_alert_on_disabled() -> None:
    override = TimbalOverride(match=TimbalMatch(connector_id="conn_9"), alert_on_disabled=True)
    evaluation = _evaluate_one(timbal(connector_id="conn_9", enabled=False), override)
    assert verdict(evaluation) == (SyncState.WARNING, AlertName.SYNC_DISABLED, Severity.WARNING)


def test_override_name_glob_sees_a_missing_name_as_empty() -> None:
    """A sync without a name is matched as name "": `*` matches it, `billing-*` does not."""
    sync = timbal(name=None, seconds_since_success=1500)
    assert verdict(_evaluate_one(sync, BILLING_CRITICAL_AT_2)) == STALE_WARNING
    catch_all = TimbalOverride(match=TimbalMatch(name="*"), ignore=True)
    assert verdict(_evaluate_one(sync, catch_all)) == (SyncState.IGNORED, None, None)


# --- Paragon ------------------------------------------------------------------------------

DAY = timedelta(days=1)


@pytest.mark.parametrize(
    ("sync", "paragon_rules", "expected"),
    [
        pytest.param(
            paragon(status="ERRORED", reason="Credential ID c1 is no longer valid"),
            rules(),
            (SyncState.CRITICAL, AlertName.SYNC_ERRORED, Severity.CRITICAL),
            id="errored",
        ),
        pytest.param(
            paragon(status="errored"),
            rules(),
            (SyncState.CRITICAL, AlertName.SYNC_ERRORED, Severity.CRITICAL),
            id="status-matched-case-insensitively",
        ),
        pytest.param(
            paragon(status="DISABLED"),
            rules(disabled=Severity.WARNING),
            (SyncState.WARNING, AlertName.SYNC_DISABLED, Severity.WARNING),
            id="disabled-severity-warning",
        ),
        pytest.param(
            paragon(status="DISABLED"),
            rules(disabled=Severity.CRITICAL),
            (SyncState.CRITICAL, AlertName.SYNC_DISABLED, Severity.CRITICAL),
            id="disabled-severity-critical",
        ),
        pytest.param(
            paragon(status="DISABLED"),
            rules(disabled=None),
            (SyncState.DISABLED, None, None),
            id="disabled-severity-none",
        ),
        pytest.param(
            paragon(status="INITIALIZING", date_created=NOW - timedelta(seconds=HOUR + 1)),
            rules(grace=HOUR),
            (SyncState.WARNING, AlertName.SYNC_STUCK_INITIALIZING, Severity.WARNING),
            id="initializing-beyond-grace",
        ),
        pytest.param(
            paragon(status="INITIALIZING", date_created=NOW - timedelta(seconds=HOUR)),
            rules(grace=HOUR),
            OK,
            id="initializing-exactly-grace",
        ),
        pytest.param(
            paragon(status="INITIALIZING", date_created=NOW - timedelta(minutes=5)),
            rules(grace=HOUR),
            OK,
            id="initializing-within-grace",
        ),
        pytest.param(
            paragon(status="INITIALIZING", date_created=None),
            rules(grace=HOUR),
            OK,
            id="initializing-without-date-created",
        ),
        pytest.param(
            paragon(status="IDLE", last_synced_at=NOW - 2 * DAY),
            rules(idle_stale_after=DAY.total_seconds()),
            (SyncState.WARNING, AlertName.SYNC_IDLE_STALE, Severity.WARNING),
            id="idle-last-synced-older-than-idle-stale-after",
        ),
        pytest.param(
            paragon(status="IDLE", last_synced_at=NOW - timedelta(hours=1)),
            rules(idle_stale_after=DAY.total_seconds()),
            OK,
            id="idle-last-synced-recently",
        ),
        pytest.param(
            paragon(status="IDLE", last_synced_at=NOW - 30 * DAY),
            rules(idle_stale_after=None),
            OK,
            id="idle-stale-after-unset",
        ),
        pytest.param(
            paragon(status="IDLE", last_synced_at=None, date_created=NOW - 2 * DAY),
            rules(idle_stale_after=DAY.total_seconds()),
            (SyncState.WARNING, AlertName.SYNC_IDLE_STALE, Severity.WARNING),
            id="idle-never-synced-counts-from-date-created",
        ),
        pytest.param(
            paragon(status="IDLE", last_synced_at=None, date_created=None),
            rules(idle_stale_after=DAY.total_seconds()),
            OK,
            id="idle-without-any-date",
        ),
        pytest.param(
            paragon(status="PAUSED"),
            rules(),
            (SyncState.UNKNOWN, None, None),
            id="unknown-status",
        ),
        pytest.param(paragon(status="ACTIVE"), rules(), OK, id="active"),
    ],
)
def test_paragon_status_verdict(
    sync: ParagonSync, paragon_rules: ParagonRules, expected: object
) -> None:
    assert verdict(evaluate_paragon(sync, paragon_rules, NOW)) == expected


def test_errored_carries_the_upstream_reason_in_annotations() -> None:
    reason = "Credential ID c1 is no longer valid or has been deleted."
    condition = condition_of(
        evaluate_paragon(paragon(status="ERRORED", reason=reason), rules(), NOW)
    )
    assert condition.annotations["reason"] == reason
    assert reason in condition.annotations["summary"]


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        pytest.param("warning", Severity.WARNING, id="warning"),
        pytest.param("critical", Severity.CRITICAL, id="critical"),
        pytest.param("none", None, id="none"),
    ],
)
def test_paragon_rules_read_disabled_severity_from_config(
    setting: str, expected: Severity | None
) -> None:
    config = ParagonConfig.model_validate({"disabled_severity": setting})
    assert ParagonRules.from_config(config).disabled_severity is expected


# --- labels, annotations and identity -----------------------------------------------------

_TIMBAL_CONDITIONS = [
    pytest.param(
        evaluate_timbal(timbal(seconds_since_success=1200), thresholds(), NOW), id="stale"
    ),
    pytest.param(evaluate_timbal(never_succeeded(86_400), thresholds(), NOW), id="never-succeeded"),
    pytest.param(
        evaluate_timbal(timbal(enabled=False), thresholds(alert_on_disabled=True), NOW),
        id="disabled",
    ),
]
_PARAGON_CONDITIONS = [
    pytest.param(
        evaluate_paragon(paragon(status="ERRORED", reason="bad credential"), rules(), NOW),
        id="errored",
    ),
    pytest.param(evaluate_paragon(paragon(status="DISABLED"), rules(), NOW), id="disabled"),
    pytest.param(
        evaluate_paragon(paragon(status="INITIALIZING", date_created=NOW - DAY), rules(), NOW),
        id="stuck-initializing",
    ),
    pytest.param(
        evaluate_paragon(
            paragon(status="IDLE", last_synced_at=NOW - 2 * DAY),
            rules(idle_stale_after=DAY.total_seconds()),
            NOW,
        ),
        id="idle-stale",
    ),
]


@pytest.mark.parametrize("evaluation", _TIMBAL_CONDITIONS)
def test_timbal_condition_labels(evaluation: Evaluation) -> None:
    condition = condition_of(evaluation)
    assert condition.all_labels == {
        "alertname": condition.alertname,
        "severity": condition.severity,
        "source": "timbal",
        "tenant": "org_1",
        "sync_id": "sync_1",
        "connector_id": "conn_1",
        "name": "orders",
    }


@pytest.mark.parametrize("evaluation", _PARAGON_CONDITIONS)
def test_paragon_condition_labels(evaluation: Evaluation) -> None:
    condition = condition_of(evaluation)
    assert condition.all_labels == {
        "alertname": condition.alertname,
        "severity": condition.severity,
        "source": "paragon",
        "tenant": "user-1",
        "sync_id": "psync-1",
        "integration": "salesforce",
        "pipeline": "contacts",
    }


@pytest.mark.parametrize("evaluation", _TIMBAL_CONDITIONS + _PARAGON_CONDITIONS)
def test_every_condition_has_a_summary_and_a_description(evaluation: Evaluation) -> None:
    annotations = condition_of(evaluation).annotations
    assert annotations["summary"].strip()
    assert "\n" not in annotations["summary"]
    assert annotations["description"].strip()


@pytest.mark.parametrize("evaluation", _TIMBAL_CONDITIONS + _PARAGON_CONDITIONS)
def test_label_values_are_strings_of_the_contract_vocabulary(evaluation: Evaluation) -> None:
    labels = condition_of(evaluation).all_labels
    assert all(isinstance(v, str) for v in labels.values())
    assert labels["severity"] in {"warning", "critical"}
    assert labels["source"] in {"timbal", "paragon"}


def test_stale_annotations_carry_the_numbers() -> None:
    sync = timbal(seconds_since_success=1500, interval_secs=600)
    annotations = condition_of(evaluate_timbal(sync, thresholds(), NOW)).annotations
    assert annotations["seconds_since_success"] == "1500"
    assert annotations["interval_secs"] == "600"
    assert float(annotations["ratio"]) == pytest.approx(2.5)


def test_never_succeeded_annotations_carry_the_numbers() -> None:
    annotations = condition_of(
        evaluate_timbal(never_succeeded(3000), thresholds(), NOW)
    ).annotations
    assert annotations["seconds_since_success"] == ""
    assert annotations["interval_secs"] == "600"
    assert float(annotations["ratio"]) == pytest.approx(5.0)


@pytest.mark.parametrize(
    ("sync", "paragon_rules"),
    [
        pytest.param(paragon(status="ERRORED", reason="token revoked"), rules(), id="errored"),
        pytest.param(paragon(status="DISABLED", reason="token revoked"), rules(), id="disabled"),
    ],
)
def test_paragon_annotations_carry_status_and_reason(
    sync: ParagonSync, paragon_rules: ParagonRules
) -> None:
    annotations = condition_of(evaluate_paragon(sync, paragon_rules, NOW)).annotations
    assert annotations["status"] == sync.status
    assert annotations["reason"] == "token revoked"


@pytest.mark.parametrize(
    ("evaluation", "identity"),
    [
        pytest.param(
            evaluate_timbal(timbal(seconds_since_success=1200), thresholds(), NOW),
            ("SyncStale", "timbal", "org_1", "sync_1"),
            id="timbal",
        ),
        pytest.param(
            evaluate_paragon(paragon(status="ERRORED"), rules(), NOW),
            ("SyncErrored", "paragon", "user-1", "psync-1"),
            id="paragon",
        ),
    ],
)
def test_identity_is_alertname_source_tenant_sync_id(
    evaluation: Evaluation, identity: tuple[str, str, str, str]
) -> None:
    assert condition_of(evaluation).identity == identity


def test_severity_change_keeps_the_identity() -> None:
    warning = condition_of(evaluate_timbal(timbal(seconds_since_success=1200), thresholds(), NOW))
    critical = condition_of(evaluate_timbal(timbal(seconds_since_success=7200), thresholds(), NOW))
    assert (warning.severity, critical.severity) == (Severity.WARNING, Severity.CRITICAL)
    assert warning.identity == critical.identity


def test_timbal_sync_without_a_name_gets_an_empty_name_label() -> None:
    evaluation = _evaluate_one(timbal(name=None, seconds_since_success=1200))
    assert condition_of(evaluation).all_labels["name"] == ""


# --- evaluate_listings --------------------------------------------------------------------


def _failed(source: Source, tenant: str, reason: Reason) -> Listing:
    error = SourceError(source, tenant, reason, "HTTP 503 from /api/syncs")
    return Listing(source, tenant, error=error)


def _mixed_report() -> Any:
    listings = [
        Listing(Source.TIMBAL, "org_1", [timbal(seconds_since_success=7200), timbal(id="sync_2")]),
        _failed(Source.TIMBAL, "org_2", Reason.TIMEOUT),
        Listing(Source.PARAGON, "user-1", [paragon(status="ERRORED")]),
        _failed(Source.PARAGON, "user-2", Reason.HTTP_5XX),
    ]
    return evaluate_listings(listings, _both(_resolver(), rules()), NOW)


def test_failed_listings_become_source_unreachable_with_the_reason_label() -> None:
    unreachable = [
        c for c in _mixed_report().conditions if c.alertname is AlertName.SOURCE_UNREACHABLE
    ]
    assert [c.all_labels for c in unreachable] == [
        {
            "alertname": "SourceUnreachable",
            "severity": "critical",
            "source": "timbal",
            "tenant": "org_2",
            "sync_id": "",
            "reason": "timeout",
        },
        {
            "alertname": "SourceUnreachable",
            "severity": "critical",
            "source": "paragon",
            "tenant": "user-2",
            "sync_id": "",
            "reason": "http_5xx",
        },
    ]
    assert unreachable[1].annotations["reason"] == "http_5xx"
    assert "HTTP 503" in unreachable[1].annotations["description"]


def test_healthy_listings_are_evaluated_next_to_failed_ones() -> None:
    report = _mixed_report()
    assert [(e.sync.id, e.state) for e in report.evaluations] == [
        ("sync_1", SyncState.CRITICAL),
        ("sync_2", SyncState.OK),
        ("psync-1", SyncState.CRITICAL),
    ]
    assert [listing.tenant for listing in report.failures] == ["org_2", "user-2"]
    assert len(report.listings) == 4


def test_sync_conditions_come_before_source_unreachable() -> None:
    assert [c.alertname for c in _mixed_report().conditions] == [
        AlertName.SYNC_STALE,
        AlertName.SYNC_ERRORED,
        AlertName.SOURCE_UNREACHABLE,
        AlertName.SOURCE_UNREACHABLE,
    ]


def test_failed_listing_yields_no_sync_evaluations() -> None:
    report = evaluate_listings([_failed(Source.TIMBAL, "org_2", Reason.HTTP_401)], {}, NOW)
    assert report.evaluations == []
    assert [c.labels["reason"] for c in report.conditions] == ["http_401"]


# --- issue 13: upstream data -----------------------------------------------------------------


@pytest.mark.parametrize("lag", [-5, -1, -(2**63)])
def test_a_negative_lag_is_upstream_clock_skew_and_fresh(lag: int) -> None:
    """int64 without a minimum: a negative seconds_since_success is lag 0, not invalid."""
    evaluation = evaluate_timbal(
        timbal(seconds_since_success=lag), thresholds(min_stale=0, warn=0.01), NOW
    )
    assert (evaluation.state, evaluation.ratio) == (SyncState.OK, 0.0)


def _dupes(*syncs: TimbalSync | ParagonSync) -> Listing:
    source = Source.TIMBAL if isinstance(syncs[0], TimbalSync) else Source.PARAGON
    return Listing(source, "t", list(syncs), duplicates=len(syncs) - len({s.id for s in syncs}))


@pytest.mark.parametrize(
    ("listing", "expected"),
    [
        # A fresh record first, a stale duplicate after: the stale one is evaluated.
        (
            _dupes(timbal(), timbal(seconds_since_success=7200), timbal(id="sync_2")),
            [("sync_1", SyncState.CRITICAL), ("sync_2", SyncState.OK)],
        ),
        (
            _dupes(timbal(seconds_since_success=1000), timbal(seconds_since_success=7200)),
            [("sync_1", SyncState.CRITICAL)],
        ),
        (
            _dupes(paragon(), paragon(status="ERRORED"), paragon(status="DISABLED")),
            [("psync-1", SyncState.CRITICAL)],
        ),
    ],
)
def test_duplicate_sync_ids_are_evaluated_once_by_their_worst_record(
    listing: Listing, expected: list[tuple[str, SyncState]]
) -> None:
    report = evaluate_listings([listing], _both(_resolver(), rules()), NOW)
    assert [(e.sync.id, e.state) for e in report.evaluations] == expected


def test_of_duplicates_that_are_all_ok_the_laggiest_is_exported() -> None:
    listing = _dupes(timbal(seconds_since_success=30), timbal(), timbal(seconds_since_success=5))
    [only] = evaluate_listings([listing], _both(_resolver(), rules()), NOW).evaluations
    assert isinstance(only.sync, TimbalSync)
    assert (only.state, only.sync.seconds_since_success) == (SyncState.OK, 60)


DAY_S = DAY.total_seconds()


@pytest.mark.parametrize("step", [DAY_S, -DAY_S, 3600.0, -3600.0])
def test_upstream_ages_are_judged_by_the_upstreams_clock_not_ours(step: float) -> None:
    """The listing's Date header is the upstream's now: our clock's step changes nothing."""
    listings = [
        Listing(Source.TIMBAL, "org_1", [never_succeeded(120, interval_secs=60)], upstream_now=NOW),
        Listing(
            Source.PARAGON,
            "user-1",
            [
                paragon(id="fresh", status="INITIALIZING", date_created=NOW - timedelta(minutes=5)),
                paragon(id="stuck", status="INITIALIZING", date_created=NOW - timedelta(hours=30)),
                paragon(id="idle", status="IDLE", last_synced_at=NOW - timedelta(minutes=30)),
            ],
            upstream_now=NOW,
        ),
    ]
    ours = NOW + timedelta(seconds=step)
    rules_ = replace(rules(), idle_stale_after=HOUR)
    stepped = evaluate_listings(listings, _both(_resolver(), rules_), ours)
    right = evaluate_listings(listings, _both(_resolver(), rules_), NOW)
    verdicts = [(e.sync.id, e.state) for e in stepped.evaluations]
    assert verdicts == [(e.sync.id, e.state) for e in right.evaluations]
    assert verdicts == [
        ("sync_1", SyncState.OK),  # 120 s old, under min_stale_seconds
        ("fresh", SyncState.OK),
        ("stuck", SyncState.WARNING),
        ("idle", SyncState.OK),
    ]


def test_without_a_date_header_upstream_ages_fall_back_to_our_clock() -> None:
    listing = Listing(Source.TIMBAL, "org_1", [never_succeeded(120, interval_secs=60)])
    report = evaluate_listings([listing], _both(_resolver(), rules()), NOW + timedelta(days=1))
    assert [e.state for e in report.evaluations] == [SyncState.CRITICAL]


# --- properties ---------------------------------------------------------------------------

_RANK = {SyncState.OK: 0, SyncState.WARNING: 1, SyncState.CRITICAL: 2}


@st.composite
def _thresholds(draw: st.DrawFn) -> Thresholds:
    ratio = st.floats(min_value=0.01, max_value=1000, allow_nan=False, allow_infinity=False)
    warn, critical = draw(ratio), draw(ratio)
    assume(warn < critical)
    min_stale = draw(st.integers(min_value=0, max_value=7 * 86_400))
    return thresholds(warn=warn, critical=critical, min_stale=min_stale)


def _evaluate_lag(
    lag: int, interval: int, limits: Thresholds, *, never: bool, enabled: bool = True
) -> Evaluation:
    sync = never_succeeded(lag) if never else timbal(seconds_since_success=lag)
    return evaluate_timbal(replace(sync, interval_secs=interval, enabled=enabled), limits, NOW)


@given(
    lags=st.lists(st.integers(min_value=0, max_value=10**9), min_size=2, max_size=2),
    interval=st.integers(min_value=1, max_value=30 * 86_400),
    limits=_thresholds(),
    never=st.booleans(),
)
def test_severity_is_monotone_in_lag(
    lags: list[int], interval: int, limits: Thresholds, never: bool
) -> None:
    """A larger lag never lowers the severity, for stale and never-succeeded syncs alike."""
    shorter, longer = sorted(lags)
    before = _evaluate_lag(shorter, interval, limits, never=never)
    after = _evaluate_lag(longer, interval, limits, never=never)
    assert _RANK[before.state] <= _RANK[after.state]


@given(
    lag=st.integers(min_value=-(10**6), max_value=10**10),
    interval=st.integers(min_value=1, max_value=10**9),
    limits=_thresholds(),
    never=st.booleans(),
    enabled=st.booleans(),
)
def test_timbal_evaluation_never_raises_and_state_matches_condition(
    lag: int, interval: int, limits: Thresholds, never: bool, enabled: bool
) -> None:
    evaluation = _evaluate_lag(lag, interval, limits, never=never, enabled=enabled)
    condition = evaluation.condition
    if condition is None:
        assert evaluation.state in {SyncState.OK, SyncState.DISABLED}
    else:
        assert evaluation.state.value == condition.severity.value
