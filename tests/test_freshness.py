"""Freshness per tenant, the pure part: steps + observed runs + maintenance -> figures.

Every time is hand-built (unix seconds from T0); nothing reads a clock.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncwatch.evaluate import Evaluation, Report, SyncState, evaluate_listings
from syncwatch.freshness import (
    DAY,
    Counts,
    Figures,
    FiguresAt,
    Observed,
    Step,
    classify,
    figures,
    text,
    track_of,
)
from syncwatch.maintenance import OneOff, Window
from syncwatch.models import Listing, Reason, Source, SourceError, TimbalSync

T0 = 1_780_000_000.0  # 2026-05-28T20:26:40Z
NOW = datetime.fromtimestamp(T0, UTC)
HOUR = 3600.0


def whole(start: float, end: float) -> Observed:
    return Observed([(start, end)])


# --- figures from steps and observed runs ------------------------------------------------


def test_a_tenant_fresh_and_observed_all_window_is_100_percent_with_nothing_unknown() -> None:
    steps = [Step(T0 - 2 * DAY, Counts(fresh=3))]
    f = figures(steps, whole(T0 - 2 * DAY, T0), T0, DAY)
    assert f == Figures(fresh=3 * DAY)
    assert (f.fresh_share, f.unknown_share, text(f)) == (1.0, 0.0, "100 %")


def test_time_syncwatch_was_down_is_unknown_never_fresh() -> None:
    """Runs [-24h, -10h] and [-8h, now]: the 2 h between them are unknown for every sync."""
    steps = [Step(T0 - DAY, Counts(fresh=2, stale=1))]
    observed = Observed([(T0 - DAY, T0 - 10 * HOUR), (T0 - 8 * HOUR, T0)])
    f = figures(steps, observed, T0, DAY)
    assert f.fresh == pytest.approx(2 * 22 * HOUR)
    assert f.stale == pytest.approx(1 * 22 * HOUR)
    assert f.unknown == pytest.approx(3 * 2 * HOUR)
    assert f.fresh_share == pytest.approx(2 / 3)  # the gap changes no share of what is known
    assert f.unknown_share == pytest.approx(2 / 24)
    assert text(f) == "66.6 % (8.3 % unknown)"


def test_a_crash_gap_keeps_the_state_seen_last_and_counts_its_size_unknown() -> None:
    """The tenant went stale at -12h; syncwatch stopped at -6h and came back at -2h, when it
    was fresh again: -6h..-2h is unknown, not stale and not fresh."""
    steps = [
        Step(T0 - DAY, Counts(fresh=4)),
        Step(T0 - 12 * HOUR, Counts(fresh=3, stale=1)),
        Step(T0 - 2 * HOUR, Counts(fresh=4)),
    ]
    observed = Observed([(T0 - DAY, T0 - 6 * HOUR), (T0 - 2 * HOUR, T0)])
    f = figures(steps, observed, T0, DAY)
    assert f.stale == pytest.approx(1 * 6 * HOUR)
    assert f.unknown == pytest.approx(4 * 4 * HOUR)
    assert f.fresh == pytest.approx(4 * 12 * HOUR + 3 * 6 * HOUR + 4 * 2 * HOUR)


def test_maintenance_time_is_excluded_from_both_shares() -> None:
    steps = [
        Step(T0 - DAY, Counts(fresh=2)),
        Step(T0 - 4 * HOUR, Counts(excluded=2)),  # a window opened over the whole tenant
        Step(T0 - 2 * HOUR, Counts(fresh=1, stale=1)),
    ]
    f = figures(steps, whole(T0 - DAY, T0), T0, DAY)
    assert f.excluded == pytest.approx(2 * 2 * HOUR)
    assert f.fresh == pytest.approx(2 * 20 * HOUR + 2 * HOUR)
    assert f.stale == pytest.approx(2 * HOUR)
    assert f.fresh_share == pytest.approx(42 / 44)
    assert f.unknown_share == 0.0
    assert f.excluded_share == pytest.approx(4 / 48)


def test_maintenance_while_syncwatch_was_down_is_unknown() -> None:
    steps = [Step(T0 - DAY, Counts(excluded=2))]
    f = figures(steps, whole(T0 - DAY, T0 - HOUR), T0, DAY)
    assert (f.excluded, f.unknown) == pytest.approx((2 * 23 * HOUR, 2 * HOUR))


@pytest.mark.parametrize(
    ("stale_from", "stale_to", "stale_in_24h"),
    [
        (T0 - 30 * HOUR, T0 - 20 * HOUR, 4 * HOUR),  # straddles the window's start
        (T0 - 30 * HOUR, T0 - DAY, 0.0),  # ends exactly where the window starts
        (T0 - DAY, T0 - 23 * HOUR, HOUR),  # starts exactly at the window's start
        (T0 - HOUR, T0, HOUR),  # still stale now: up to now
    ],
)
def test_window_edges_cut_an_episode_at_the_window_start(
    stale_from: float, stale_to: float, stale_in_24h: float
) -> None:
    steps = [Step(T0 - 3 * DAY, Counts(fresh=1)), Step(stale_from, Counts(stale=1))]
    if stale_to < T0:
        steps.append(Step(stale_to, Counts(fresh=1)))
    observed = whole(T0 - 3 * DAY, T0)
    f = figures(steps, observed, T0, DAY)
    assert f.stale == pytest.approx(stale_in_24h)
    assert f.fresh + f.stale == pytest.approx(DAY)  # a step before the window counts from it
    three_days = figures(steps, observed, T0, 3 * DAY)
    assert three_days.stale == pytest.approx(stale_to - stale_from)


def test_a_sync_created_mid_window_counts_only_from_when_it_exists() -> None:
    steps = [Step(T0 - DAY, Counts(fresh=1)), Step(T0 - 12 * HOUR, Counts(fresh=1, stale=1))]
    f = figures(steps, whole(T0 - 2 * DAY, T0), T0, DAY)
    assert f.fresh == pytest.approx(DAY)
    assert f.stale == pytest.approx(12 * HOUR)  # the new sync, stale since it appeared
    assert f.unknown == 0.0


def test_before_a_tenant_is_first_seen_its_time_is_unknown_no_data_yet() -> None:
    """Watched for 6 h of the 24: 18 h unknown for its 5 syncs, the rest fresh."""
    steps = [Step(T0 - 6 * HOUR, Counts(fresh=5))]
    f = figures(steps, whole(T0 - 6 * HOUR, T0), T0, DAY)
    assert f.unknown == pytest.approx(5 * 18 * HOUR)
    assert f.fresh == pytest.approx(5 * 6 * HOUR)
    assert text(f) == "100 % (75 % unknown)"


def test_an_unreachable_tenant_is_unknown_and_a_tenant_gone_counts_nothing() -> None:
    steps = [
        Step(T0 - DAY, Counts(fresh=2)),
        Step(T0 - 6 * HOUR, Counts(unknown=2)),  # its listing failed: its 2 syncs unknown
        Step(T0 - 4 * HOUR, Counts()),  # no longer watched
    ]
    f = figures(steps, whole(T0 - DAY, T0), T0, DAY)
    assert (f.fresh, f.unknown, f.stale) == (2 * 18 * HOUR, 2 * 2 * HOUR, 0.0)


def test_figures_for_every_tenant_are_worked_out_when_asked_for() -> None:
    observed = whole(T0 - DAY, T0)
    a = track_of([Step(T0 - DAY, Counts(fresh=1))], observed)
    b = track_of([Step(T0 - DAY, Counts(stale=1)), Step(T0 - HOUR, Counts(fresh=1))], observed)
    at = FiguresAt({("timbal", "b"): (b, 2), ("timbal", "a"): (a, 1)}, observed, T0)
    assert list(at) == [("timbal", "a"), ("timbal", "b")]
    assert at[("timbal", "a")]["24h"] == Figures(fresh=DAY)
    assert at[("timbal", "b")]["24h"] == Figures(fresh=HOUR, stale=23 * HOUR)
    # A track taken at a length reads only its first steps: later appends are not seen.
    b_then = FiguresAt({("timbal", "b"): (b, 1)}, observed, T0)
    assert b_then[("timbal", "b")]["24h"] == Figures(stale=DAY)
    assert set(at[("timbal", "a")]) == {"24h", "7d", "30d"}


def test_dropping_old_runs_and_steps_leaves_every_window_after_them_alone() -> None:
    observed = Observed([(T0 - 40 * DAY, T0 - 35 * DAY), (T0 - 35 * DAY + 60, T0)])
    steps = [
        Step(T0 - 40 * DAY, Counts(fresh=2)),
        Step(T0 - 33 * DAY, Counts(fresh=1, stale=1)),
        Step(T0 - 5 * DAY, Counts(fresh=2)),
    ]
    track = track_of(steps, observed)
    before = track.between(T0 - 30 * DAY, T0, observed)
    observed.drop(1)
    assert track.since(1).between(T0 - 30 * DAY, T0, observed) == before


# Brute force: cut [start, now] wherever anything changes and look at each piece's middle.
def reference(
    steps: list[Step], runs: list[tuple[float, float]], now: float, length: float
) -> list[float]:
    start = now - length
    cuts = sorted({start, now, *(s.at for s in steps), *(t for r in runs for t in r)})
    cuts = [c for c in cuts if start <= c <= now]
    out = [0.0, 0.0, 0.0, 0.0]
    for a, b in pairwise(cuts):
        m = (a + b) / 2
        current = [s for s in steps if s.at <= m]
        c = current[-1].counts if current else steps[0].counts
        seen = bool(current) and any(s <= m < e for s, e in runs)
        if seen:
            for i, n in enumerate((c.fresh, c.stale, c.excluded, c.unknown)):
                out[i] += n * (b - a)
        else:
            out[3] += c.total * (b - a)
    return out


@given(
    st.lists(
        st.tuples(st.integers(0, 1000), st.integers(0, 3), st.integers(0, 3), st.integers(0, 1)),
        min_size=1,
        max_size=8,
    ),
    st.lists(st.integers(0, 1100), min_size=0, max_size=8),
    st.integers(1, 1100),
)
def test_figures_match_a_brute_force_integration(
    raw_steps: list[tuple[int, int, int, int]], edges: list[int], length: int
) -> None:
    by_at = {at: Counts(f, s, x, u) for at, f, s, u, x in ((*r, 0) for r in raw_steps)}
    steps = [Step(float(at), c) for at, c in sorted(by_at.items())]
    points = sorted(set(edges))
    runs = [(float(a), float(b)) for a, b in zip(points[::2], points[1::2], strict=False)]
    now = 1100.0
    got = figures(steps, Observed(runs), now, float(length))
    want = reference(steps, runs, now, float(length))
    assert list(got) == pytest.approx(want, abs=1e-6)


# --- one cycle's report to each tenant's counts -------------------------------------------

_SYNC = TimbalSync(
    "org_1", "s", "c", None, "postgres", "a", "b", 300, True, 10, NOW, NOW, "ok", NOW, None
)


def sync(tenant: str, sync_id: str) -> TimbalSync:
    return replace(_SYNC, org_id=tenant, id=sync_id)


def report(
    *listings: tuple[str, list[tuple[str, SyncState]]], failed: tuple[str, ...] = ()
) -> Report:
    built, evaluations = [], []
    for tenant, syncs in listings:
        objects = [sync(tenant, sid) for sid, _ in syncs]
        built.append(Listing(Source.TIMBAL, tenant, objects))
        evaluations += [Evaluation(o, state) for o, (_, state) in zip(objects, syncs, strict=True)]
    for tenant in failed:
        error = SourceError(Source.TIMBAL, tenant, Reason.TIMEOUT, "timed out")
        built.append(Listing(Source.TIMBAL, tenant, error=error))
    return Report(evaluations, [b for b in built if b.error], built)


def window(match: dict[str, str], start: float = T0 - HOUR, end: float = T0 + HOUR) -> Window:
    spans = OneOff(datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC))
    return Window("w", match, spans)


OK, WARN, CRIT = SyncState.OK, SyncState.WARNING, SyncState.CRITICAL


def test_ok_is_fresh_warning_and_critical_stale_disabled_and_ignored_not_counted() -> None:
    r = report(
        ("org_1", [("a", OK), ("b", WARN), ("c", CRIT), ("d", SyncState.DISABLED),
                   ("e", SyncState.IGNORED), ("f", SyncState.UNKNOWN)]),
    )  # fmt: skip
    assert classify(r, [], NOW, {}) == {("timbal", "org_1"): Counts(1, 2, 0, 1)}
    assert Counts(1, 2, 0, 1).total == 4


def test_an_unreadable_record_is_unknown() -> None:
    r = report(("org_1", [("a", OK)]))
    listing = replace(r.listings[0], invalid_ids=frozenset({"b", "c"}))
    r = replace(r, listings=[listing])
    assert classify(r, [], NOW, {})[("timbal", "org_1")] == Counts(fresh=1, unknown=2)


def test_an_unreachable_tenant_keeps_its_last_size_all_unknown() -> None:
    r = report(("org_1", [("a", OK)]), failed=("org_2", "org_3"))
    counts = classify(r, [], NOW, {("timbal", "org_2"): Counts(fresh=4, stale=1)})
    assert counts[("timbal", "org_2")] == Counts(unknown=5)
    assert counts[("timbal", "org_3")] == Counts()  # never seen: no size to speak of


def test_an_open_maintenance_window_excludes_the_syncs_it_selects() -> None:
    r = report(("org_1", [("etl-1", OK), ("etl-2", WARN), ("api", WARN)]), ("org_2", [("x", OK)]))
    by_sync = classify(r, [window({"tenant": "org_1", "sync_id": "etl-*"})], NOW, {})
    assert by_sync[("timbal", "org_1")] == Counts(stale=1, excluded=2)
    assert by_sync[("timbal", "org_2")] == Counts(fresh=1)
    by_tenant = classify(r, [window({"source": "timbal", "tenant": "org_1"})], NOW, {})
    assert by_tenant[("timbal", "org_1")] == Counts(excluded=3)


def test_a_window_not_open_or_matching_alert_labels_excludes_nothing() -> None:
    r = report(("org_1", [("a", WARN)]))
    closed = window({"tenant": "org_1"}, T0 - 2 * HOUR, T0 - HOUR)
    by_alertname = window({"tenant": "org_1", "alertname": "SyncStale"})
    assert classify(r, [closed, by_alertname], NOW, {})[("timbal", "org_1")] == Counts(stale=1)


def test_an_unreachable_tenant_in_a_window_over_all_of_it_is_excluded() -> None:
    r = report(failed=("org_1", "org_2"))
    previous = {("timbal", "org_1"): Counts(fresh=3), ("timbal", "org_2"): Counts(fresh=2)}
    windows = [window({"tenant": "org_1"}), window({"tenant": "org_2", "sync_id": "etl-*"})]
    counts = classify(r, windows, NOW, previous)
    assert counts[("timbal", "org_1")] == Counts(excluded=3)
    assert counts[("timbal", "org_2")] == Counts(unknown=2)  # which of its syncs? unknown


def test_a_report_without_sizes_is_grouped_by_tenant_the_same() -> None:
    rules = {Source.TIMBAL: _Rules()}
    listings = [
        Listing(Source.TIMBAL, "org_1", [sync("org_1", "a")]),
        Listing(Source.TIMBAL, "org_2", [sync("org_2", "b"), sync("org_2", "c")]),
    ]
    evaluated = evaluate_listings(listings, rules, NOW)  # type: ignore[arg-type]
    assert evaluated.sizes == [1, 2]
    unsized = replace(evaluated, sizes=())
    assert classify(evaluated, [], NOW, {}) == classify(unsized, [], NOW, {})
    assert classify(evaluated, [], NOW, {})[("timbal", "org_2")] == Counts(fresh=2)


class _Rules:
    def evaluate(self, s: TimbalSync, now: datetime) -> Evaluation:
        return Evaluation(s, SyncState.OK)


# --- text ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("f", "shown"),
    [
        (Figures(fresh=992, stale=8), "99.2 %"),
        (Figures(fresh=992, stale=8, unknown=1000 * 3 / 97), "99.2 % (3 % unknown)"),
        (Figures(fresh=99_999, stale=1), "99.9 %"),  # never rounded up to 100 %
        (Figures(fresh=1, unknown=0.0001), "100 % (<0.1 % unknown)"),
        (Figures(fresh=1, unknown=99_999), "100 % (99.9 % unknown)"),
        (Figures(unknown=5), "unknown"),
        (Figures(excluded=5), "no data"),
        (Figures(), "no data"),
    ],
)
def test_the_text_shows_the_share_with_the_unknown_beside_it(f: Figures, shown: str) -> None:
    assert text(f) == shown
