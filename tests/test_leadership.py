"""Pure parts of leadership: how often a standby tries, and which acks a shard may end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from syncwatch.leadership import owned_acks, owns, standby_interval
from syncwatch.silences import AckOf, Matcher, Silence

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("poll", "every"), [(0.05, 0.1), (0.5, 0.25), (4.0, 2.0), (60.0, 5.0), (3600.0, 5.0)]
)
def test_a_standby_tries_twice_a_poll_interval_between_0_1_and_5_seconds(
    poll: float, every: float
) -> None:
    assert standby_interval(poll) == every
    assert standby_interval(poll) <= max(poll, 0.1)  # well within 2 x poll_interval


def _silence(tenant: str, *, ack: bool) -> Silence:
    labels = {"alertname": "SyncStale", "source": "timbal", "tenant": tenant, "sync_id": "s1"}
    return Silence(
        id=f"{tenant}-{ack}",
        matchers=tuple(Matcher(k, v) for k, v in labels.items()),
        starts_at=T0,
        ends_at=T0 + timedelta(hours=1),
        created_by="ops",
        comment="on it",
        updated_at=T0,
        ack=AckOf("f" * 16, "warning") if ack else None,
    )


def test_a_shard_sees_only_the_acks_of_its_own_tenants_and_every_plain_silence() -> None:
    tenants = [f"org_{i}" for i in range(40)]
    mine = owns(0, 2)
    ours = [t for t in tenants if mine("timbal", t)]
    theirs = [t for t in tenants if not mine("timbal", t)]
    assert ours
    assert theirs
    silences = [_silence(t, ack=True) for t in tenants] + [_silence(t, ack=False) for t in theirs]
    kept = owned_acks(silences, mine)
    assert {s.id for s in kept if s.ack is not None} == {f"{t}-True" for t in ours}
    assert {s.id for s in kept if s.ack is None} == {f"{t}-False" for t in theirs}
