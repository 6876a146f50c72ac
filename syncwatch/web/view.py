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
    tenant_count: int = 0  # of the whole fleet: `tenants` holds the worst of them
    alert_count: int = 0  # likewise for `alerts`


def _alerts_by_sync(alerts: Iterable[Alert]) -> dict[tuple[str, str, str], list[Alert]]:
    out: dict[tuple[str, str, str], list[Alert]] = {}
    for a in alerts:
        out.setdefault((a.source, a.tenant, a.sync_id), []).append(a)
    return out


_EVALUATED = {s: str(s) for s in (SyncState.OK, SyncState.WARNING, SyncState.CRITICAL)}


def _muted(alerts: Sequence[Alert]) -> bool:
    """Every firing alert of a sync is muted (and it has one)."""
    firing = [a for a in alerts if a.firing]
    return bool(firing) and all(a.muted_by for a in firing)


def _state(e: Evaluation, muted: bool, reachable: bool) -> str:
    """The page state of one sync: unreachable, suppressed, or as evaluated."""
    if not reachable:
        return "unreachable"
    if muted:
        return "suppressed"
    return _EVALUATED.get(e.state, "other")


def _row(e: Evaluation, facts: SyncFacts, alerts: Sequence[Alert], reachable: bool) -> SyncRow:
    return SyncRow(
        source=str(e.sync.source),
        tenant=e.sync.tenant,
        sync_id=e.sync.id,
        name=facts.name,
        state=_state(e, _muted(alerts), reachable),
        detail=str(e.state),
        lag=facts.lag,
        ratio=e.ratio,
        last_success=facts.last_success,
        alerts=tuple(f"{a.alertname} ({a.state}, {a.severity})" for a in alerts),
        limits=e.limits,
    )


@dataclass(frozen=True, slots=True)
class Fleet:
    """One snapshot indexed for the pages: built once per snapshot (`index`), then every
    page reads it in O(what it shows), never O(the fleet) per request."""

    snapshot: Snapshot
    tenants: Sequence[TenantRow]  # every tenant, worst first
    totals: Mapping[str, int]  # syncs per state, over the fleet
    alerts: Sequence[Alert]  # firing, suppressed and pending; firing critical first
    sources: Sequence[SourceHealth]
    by_tenant: Mapping[tuple[str, str], Sequence[Evaluation]]
    alerts_by_sync: Mapping[tuple[str, str, str], Sequence[Alert]]

    def known(self, source: str, tenant: str) -> bool:
        key = (source, tenant)
        return key in self.by_tenant or key in self.snapshot.source_up

    def rows(self, source: str, tenant: str, now: datetime) -> list[SyncRow]:
        """One tenant's syncs, in listing order."""
        reachable = self.snapshot.source_up.get((source, tenant), True)
        rules = self.snapshot.rules
        return [
            _row(
                e,
                rules[e.sync.source].facts(e, now),
                self.alerts_by_sync.get((source, tenant, e.sync.id), ()),
                reachable,
            )
            for e in self.by_tenant.get((source, tenant), ())
        ]


def index(snapshot: Snapshot) -> Fleet:
    """The snapshot grouped by tenant, each tenant counted by state, in one pass."""
    by_sync = _alerts_by_sync(snapshot.alerts)
    muted: dict[tuple[str, str], set[str]] = {}  # tenant -> its syncs shown as suppressed
    for (source, tenant, sync_id), alerts in by_sync.items():
        if _muted(alerts):
            muted.setdefault((source, tenant), set()).add(sync_id)
    up = snapshot.source_up
    by_tenant: dict[tuple[str, str], list[Evaluation]] = {}
    counts: dict[tuple[str, str], dict[str, int]] = {k: {} for k in up}
    # 130,000 syncs at the benchmark fleet: a listing's syncs come together, so the
    # tenant's entries are looked up once per run of them, not once per sync.
    key: tuple[str, str] | None = None
    group: list[Evaluation] = []
    tally: dict[str, int] = {}
    quiet: set[str] = set()
    reachable = True
    for e in snapshot.evaluations:
        sync = e.sync
        if key is None or sync.tenant != key[1] or sync.source != key[0]:
            key = (sync.source, sync.tenant)  # a StrEnum: equal to, and hashed as, its str
            group = by_tenant.setdefault(key, [])
            tally = counts.setdefault(key, {})
            quiet = muted.get(key, set())
            reachable = up.get(key, True)
        group.append(e)
        state = _state(e, sync.id in quiet, reachable)
        tally[state] = tally.get(state, 0) + 1
    tenants = [TenantRow(str(s), t, up.get((s, t), True), c) for (s, t), c in counts.items()]
    # Worst first: the worst state, then how many syncs are in it, then by name.
    tenants.sort(key=lambda t: (_RANK[t.worst], -t.counts.get(t.worst, 0), t.source, t.tenant))
    totals: dict[str, int] = {}
    for t in tenants:
        for state, n in t.counts.items():
            totals[state] = totals.get(state, 0) + n
    return Fleet(
        snapshot=snapshot,
        tenants=tenants,
        totals=totals,
        alerts=sorted(snapshot.alerts, key=_alert_order),
        sources=_sources(snapshot),
        by_tenant=by_tenant,
        alerts_by_sync=by_sync,
    )


def overview(fleet: Fleet, now: datetime, tenants: int, alerts: int) -> Overview:
    """The worst `tenants` tenants and the most urgent `alerts` alerts, with the totals."""
    last = fleet.snapshot.last_cycle_timestamp
    last_cycle = None if last is None else datetime.fromtimestamp(last, UTC)
    return Overview(
        tenants=fleet.tenants[:tenants],
        alerts=fleet.alerts[:alerts],
        sources=fleet.sources,
        last_cycle=last_cycle,
        age=None if last_cycle is None else max(0.0, (now - last_cycle).total_seconds()),
        totals=fleet.totals,
        tenant_count=len(fleet.tenants),
        alert_count=len(fleet.alerts),
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


@dataclass(frozen=True, slots=True)
class TenantFilter:
    """The tenant list's filters, from its URL: source, worst state, a part of the name."""

    source: str = ""
    state: str = ""
    q: str = ""

    def admits(self, t: TenantRow) -> bool:
        return (
            (not self.source or t.source == self.source)
            and (not self.state or t.worst == self.state)
            and (not self.q or self.q.casefold() in t.tenant.casefold())
        )


def tenant_list(fleet: Fleet, wanted: TenantFilter) -> list[TenantRow]:
    """The tenants `wanted` admits, worst first."""
    return [t for t in fleet.tenants if wanted.admits(t)]


def tenant_rows(
    fleet: Fleet, source: str, tenant: str, now: datetime, state: str = ""
) -> list[SyncRow]:
    """One tenant's syncs, worst first (then the highest ratio), `state` filtering."""
    rows = [r for r in fleet.rows(source, tenant, now) if not state or r.state == state]
    rows.sort(key=lambda r: (_RANK[r.state], -(r.ratio or 0.0), r.sync_id))
    return rows


def sync_row(fleet: Fleet, source: str, tenant: str, sync_id: str, now: datetime) -> SyncRow | None:
    """One sync as the last cycle saw it; None when it was not listed."""
    return next((r for r in fleet.rows(source, tenant, now) if r.sync_id == sync_id), None)


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
