"""Silences' pure core: Alertmanager's matcher semantics, states, expiry, validation."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncwatch.silences import (
    DEFAULT_RETENTION,
    Matcher,
    Silence,
    SilenceState,
    collectable,
    muted_by,
    problems,
)

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
LABELS = {"alertname": "SyncStale", "tenant": "org_1", "sync_id": "s-42", "severity": "warning"}


def silence(
    *matchers: Matcher, starts: datetime = NOW - HOUR, ends: datetime = NOW + HOUR
) -> Silence:
    return Silence(
        id="sil-1",
        matchers=matchers,
        starts_at=starts,
        ends_at=ends,
        created_by="ops@example.com",
        comment="customer migration",
        updated_at=starts,
    )


@pytest.mark.parametrize(
    ("matcher", "hit"),
    [
        (Matcher("tenant", "org_1"), True),
        (Matcher("tenant", "org_2"), False),
        (Matcher("tenant", "org_1", is_equal=False), False),
        (Matcher("tenant", "org_.*", is_regex=True), True),
        # Anchored at both ends, as Alertmanager compiles `^(?:value)$`.
        (Matcher("tenant", "org", is_regex=True), False),
        (Matcher("tenant", "rg_1", is_regex=True), False),
        (Matcher("sync_id", "s-4", is_regex=True, is_equal=False), True),
        # A label the alert lacks is the empty string.
        (Matcher("pipeline", ""), True),
        (Matcher("pipeline", ".+", is_regex=True), False),
        (Matcher("pipeline", "x", is_equal=False), True),
    ],
    ids=str,
)
def test_matchers_follow_alertmanager(matcher: Matcher, hit: bool) -> None:
    assert matcher.matches(LABELS) is hit


def test_a_silence_needs_every_matcher_to_match() -> None:
    both = silence(Matcher("tenant", "org_1"), Matcher("alertname", "SyncStale"))
    one_off = silence(Matcher("tenant", "org_1"), Matcher("alertname", "SyncErrored"))
    assert both.mutes(LABELS, NOW)
    assert not one_off.mutes(LABELS, NOW)


def test_state_is_pending_active_expired_at_the_boundaries() -> None:
    s = silence(Matcher("tenant", "org_1"), starts=NOW, ends=NOW + HOUR)
    assert s.state(NOW - timedelta(microseconds=1)) is SilenceState.PENDING
    assert s.state(NOW) is SilenceState.ACTIVE
    assert s.state(NOW + HOUR) is SilenceState.EXPIRED
    assert not s.mutes(LABELS, NOW - timedelta(seconds=1))
    assert not s.mutes(LABELS, NOW + HOUR)


def test_expiring_ends_it_now_and_a_pending_one_never_starts() -> None:
    active = silence(Matcher("tenant", "org_1")).expired(NOW)
    assert (active.ends_at, active.updated_at) == (NOW, NOW)
    assert active.state(NOW) is SilenceState.EXPIRED
    pending = silence(Matcher("tenant", "org_1"), starts=NOW + HOUR, ends=NOW + 2 * HOUR)
    gone = pending.expired(NOW)
    assert gone.starts_at == gone.ends_at == NOW
    assert not gone.mutes(LABELS, NOW + HOUR)
    already = silence(Matcher("tenant", "org_1"), ends=NOW - HOUR)
    assert already.expired(NOW) is already


def test_problems_are_alertmanagers_refusals() -> None:
    ok = silence(Matcher("tenant", "org_1"))
    assert problems(ok) == []
    assert problems(silence()) == ["at least one matcher is required"]
    assert problems(silence(Matcher("tenant", ".*", is_regex=True))) == [
        "at least one matcher must not match the empty string"
    ]
    [bad_regex] = problems(silence(Matcher("tenant", "(", is_regex=True)))
    assert "invalid regular expression" in bad_regex
    assert problems(silence(Matcher("tenant", "org_1"), starts=NOW, ends=NOW)) == [
        "endsAt must be after startsAt"
    ]


def test_muted_by_names_each_active_matching_silence() -> None:
    a = silence(Matcher("tenant", "org_1"))
    b = replace(a, id="sil-2", matchers=(Matcher("tenant", "org_2"),))
    c = replace(a, id="sil-3", ends_at=NOW)
    mute = muted_by([a, b, c])
    assert mute(LABELS, NOW) == ("sil-1",)
    assert mute({"tenant": "org_3"}, NOW) == ()


def test_expired_silences_are_collected_after_the_retention() -> None:
    s = silence(Matcher("tenant", "org_1"), ends=NOW)
    assert not collectable(s, NOW + DEFAULT_RETENTION - timedelta(seconds=1), DEFAULT_RETENTION)
    assert collectable(s, NOW + DEFAULT_RETENTION, DEFAULT_RETENTION)
    assert not collectable(silence(Matcher("tenant", "org_1")), NOW, DEFAULT_RETENTION)


def test_muted_by_finds_regex_negative_and_empty_matchers_in_the_order_given() -> None:
    exact = replace(silence(Matcher("tenant", "org_1")), id="exact")
    regex = replace(silence(Matcher("tenant", "org_.*", is_regex=True)), id="regex")
    later = replace(exact, id="later", starts_at=NOW + HOUR, ends_at=NOW + 2 * HOUR)
    empty = replace(silence(Matcher("pipeline", ""), Matcher("tenant", "org_1")), id="empty")
    negative = replace(silence(Matcher("tenant", "org_2", is_equal=False)), id="negative")
    mute = muted_by([exact, regex, later, empty, negative])
    assert mute(LABELS, NOW) == ("exact", "regex", "empty", "negative")
    assert mute({**LABELS, "tenant": "org_2"}, NOW) == ("regex",)
    assert mute({**LABELS, "pipeline": "p"}, NOW) == ("exact", "regex", "negative")
    assert mute(LABELS, NOW + HOUR) == ("later",)  # another time: other silences active


NAMES = st.sampled_from(["tenant", "pipeline"])
VALUES = st.sampled_from(["", "org_1", "org_2", "org_.*", ".+"])
MATCHERS = st.builds(Matcher, NAMES, VALUES, st.booleans(), st.booleans())
SILENCES = st.lists(
    st.builds(
        lambda n, matchers, starts, hours: replace(
            silence(*matchers, starts=NOW + starts * HOUR, ends=NOW + (starts + hours) * HOUR),
            id=f"sil-{n}",
        ),
        st.integers(0, 99),
        st.lists(MATCHERS, min_size=1, max_size=3),
        st.integers(-3, 1),
        st.integers(1, 3),
    ),
    max_size=8,
)
ALERT_LABELS = st.dictionaries(NAMES, VALUES.filter(lambda v: v not in ("org_.*", ".+")))


@given(SILENCES, st.lists(ALERT_LABELS, max_size=5))
def test_muted_by_names_what_asking_each_silence_names_in_its_order(
    silences: list[Silence], alerts: list[dict[str, str]]
) -> None:
    # The muter indexes the active silences by one exact matcher; the answer is the same.
    mute = muted_by(silences)
    for labels in alerts:
        assert mute(labels, NOW) == tuple(s.id for s in silences if s.mutes(labels, NOW))
