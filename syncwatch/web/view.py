"""What the pages show, built from the snapshot: pure (data, now) -> rows, no HTTP."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from syncwatch.evaluate import Evaluation, Limits, SyncFacts, SyncState
from syncwatch.lifecycle import Alert
from syncwatch.metrics import Snapshot

# The page's states, worst first; disabled / ignored / unknown syncs count as "other".
STATES = ("unreachable", "critical", "warning", "suppressed", "ok", "other")
_RANK = {state: rank for rank, state in enumerate(STATES)}


@dataclass(frozen=True, slots=True)
class SyncRow:
    source: str
    tenant: str
    sync_id: str
    name: str
    state: str  # one of STATES
    detail: str  # the upstream state as evaluated (ok, disabled, ERRORED…)
    lag: float | None  # seconds since the last success
    ratio: float | None  # lag / interval, judged against `limits`
    last_success: datetime | None
    alerts: tuple[str, ...] = ()
    limits: Limits | None = None  # the warn and critical ratios, and default or which override

    @property
    def scale(self) -> float:
        """The ratio bar's full length: a quarter past the critical line."""
        return 1.25 * self.limits.critical if self.limits else 1.0


@dataclass(frozen=True, slots=True)
class TenantRow:
    source: str
    tenant: str
    reachable: bool
    counts: Mapping[str, int]

    @property
    def worst(self) -> str:
        if not self.reachable:
            return "unreachable"
        return next((s for s in STATES if self.counts.get(s)), "ok")


@dataclass(frozen=True, slots=True)
class SourceHealth:
    source: str
    tenants: int
    unreachable: tuple[str, ...]
    last_success: datetime | None  # the latest successful listing of any of its tenants


@dataclass(frozen=True, slots=True)
class Overview:
    tenants: Sequence[TenantRow]
    alerts: Sequence[Alert]  # firing, suppressed and pending; firing critical first
    sources: Sequence[SourceHealth]
    last_cycle: datetime | None
    age: float | None  # seconds since the last cycle
    totals: Mapping[str, int] = field(default_factory=dict)


def _alerts_by_sync(alerts: Iterable[Alert]) -> dict[tuple[str, str, str], list[Alert]]:
    out: dict[tuple[str, str, str], list[Alert]] = {}
    for a in alerts:
        out.setdefault((a.source, a.tenant, a.sync_id), []).append(a)
    return out


def sync_rows(snapshot: Snapshot, now: datetime) -> list[SyncRow]:
    """Every evaluated sync with its page state: unreachable, suppressed, or evaluated."""
    by_sync = _alerts_by_sync(snapshot.alerts)
    rules = snapshot.rules
    rows = []
    for e in snapshot.evaluations:
        key = (str(e.sync.source), e.sync.tenant, e.sync.id)
        facts = rules[e.sync.source].facts(e, now)
        rows.append(_row(e, key, facts, by_sync.get(key, []), snapshot.source_up))
    return rows


def _row(
    e: Evaluation,
    key: tuple[str, str, str],
    facts: SyncFacts,
    alerts: Sequence[Alert],
    up: Mapping[tuple[str, str], bool],
) -> SyncRow:
    firing = [a for a in alerts if a.firing]
    if not up.get((key[0], key[1]), True):
        state = "unreachable"
    elif firing and all(a.state == "suppressed" for a in firing):
        state = "suppressed"  # every firing alert of it is muted
    elif e.state in (SyncState.OK, SyncState.WARNING, SyncState.CRITICAL):
        state = str(e.state)
    else:
        state = "other"
    return SyncRow(
        source=key[0],
        tenant=key[1],
        sync_id=key[2],
        name=facts.name,
        state=state,
        detail=str(e.state),
        lag=facts.lag,
        ratio=e.ratio,
        last_success=facts.last_success,
        alerts=tuple(f"{a.alertname} ({a.state}, {a.severity})" for a in alerts),
        limits=e.limits,
    )


def overview(snapshot: Snapshot, now: datetime) -> Overview:
    counts: dict[tuple[str, str], dict[str, int]] = {k: {} for k in snapshot.source_up}
    for row in sync_rows(snapshot, now):
        tenant = counts.setdefault((row.source, row.tenant), {})
        tenant[row.state] = tenant.get(row.state, 0) + 1
    tenants = [
        TenantRow(source, tenant, snapshot.source_up.get((source, tenant), True), c)
        for (source, tenant), c in counts.items()
    ]
    # Worst first: the worst state, then how many syncs are in it, then by name.
    tenants.sort(key=lambda t: (_RANK[t.worst], -t.counts.get(t.worst, 0), t.source, t.tenant))
    totals: dict[str, int] = {}
    for t in tenants:
        for state, n in t.counts.items():
            totals[state] = totals.get(state, 0) + n
    last = snapshot.last_cycle_timestamp
    last_cycle = None if last is None else datetime.fromtimestamp(last, UTC)
    return Overview(
        tenants=tenants,
        alerts=sorted(snapshot.alerts, key=_alert_order),
        sources=_sources(snapshot),
        last_cycle=last_cycle,
        age=None if last_cycle is None else max(0.0, (now - last_cycle).total_seconds()),
        totals=totals,
    )


def _alert_order(a: Alert) -> tuple[int, int, str, str, str]:
    state_rank = {"firing": 0, "suppressed": 1}.get(a.state, 2)
    return (state_rank, -a.severity.rank, a.source, a.tenant, a.sync_id)


def _sources(snapshot: Snapshot) -> list[SourceHealth]:
    names = sorted({s for s, _ in snapshot.source_up} | {str(s) for s in snapshot.rules})
    out = []
    for name in names:
        tenants = sorted(t for s, t in snapshot.source_up if s == name)
        down = tuple(t for t in tenants if not snapshot.source_up[(name, t)])
        times = [v for (s, _), v in snapshot.last_success.items() if s == name]
        last = datetime.fromtimestamp(max(times), UTC) if times else None
        out.append(SourceHealth(name, len(tenants), down, last))
    return out


def tenant_rows(
    snapshot: Snapshot, source: str, tenant: str, now: datetime, state: str = ""
) -> list[SyncRow]:
    """One tenant's syncs, worst first (then the highest ratio), `state` filtering."""
    rows = [
        r
        for r in sync_rows(snapshot, now)
        if r.source == source and r.tenant == tenant and (not state or r.state == state)
    ]
    rows.sort(key=lambda r: (_RANK[r.state], -(r.ratio or 0.0), r.sync_id))
    return rows


def duration(seconds: float | None, most: int = 2) -> str:
    """`3d 4h`, `5m 12s`, `40s`: two units at most, for a person to read (`most=4`: to the
    second, as the silence form shows a duration that `parse_duration` reads back)."""
    if seconds is None:
        return "never"
    s = int(seconds)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size or (unit == "s" and not parts):
            parts.append(f"{s // size}{unit}")
            s %= size
        if len(parts) == most:
            break
    return " ".join(parts)
