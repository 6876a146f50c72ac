"""The alerts and silences pages' rows: pure (alerts, silences, muter, now) -> rows, no HTTP."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from syncwatch.lifecycle import Alert
from syncwatch.silences import Matcher, Muter, Silence, SilenceState

ALERT_STATES = ("firing", "suppressed", "pending")
SEVERITIES = ("critical", "warning")
SILENCE_STATES = (SilenceState.ACTIVE, SilenceState.PENDING, SilenceState.EXPIRED)


@dataclass(frozen=True, slots=True)
class AlertRow:
    alert: Alert
    state: str  # one of ALERT_STATES, as of this request's silences (not the last cycle's)
    muted_by: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AlertFilter:
    source: str = ""
    tenant: str = ""
    severity: str = ""
    state: str = ""

    def admits_alert(self, a: Alert) -> bool:
        """Whether the filters but the state (known once the silences are asked) admit `a`."""
        return (
            (not self.source or a.source == self.source)
            and (not self.tenant or a.tenant == self.tenant)
            and (not self.severity or str(a.severity) == self.severity)
        )


def by_urgency(alerts: Iterable[Alert]) -> list[Alert]:
    """Critical before warning, then by source, tenant, sync and alert name: the order
    within each state of `alert_states` (it changes only with the snapshot)."""
    return sorted(
        alerts, key=lambda a: (-a.severity.rank, a.source, a.tenant, a.sync_id, a.alertname)
    )


@dataclass(frozen=True, slots=True)
class AlertStates:
    """Alerts by their state now, each state's in `by_urgency` order. A page makes rows only
    for those it shows: at 20,000 alerts, no object per alert per request."""

    firing: Sequence[Alert]
    suppressed: Sequence[Alert]
    muted_by: Sequence[tuple[str, ...]]  # what mutes each of `suppressed`
    pending: Sequence[Alert]

    def _groups(self, state: str) -> list[tuple[str, Sequence[Alert]]]:
        groups = {"firing": self.firing, "suppressed": self.suppressed, "pending": self.pending}
        return [(s, groups[s]) for s in ALERT_STATES if not state or s == state]

    def count(self, state: str = "") -> int:
        return sum(len(alerts) for _, alerts in self._groups(state))

    def rows(self, state: str, start: int, stop: int) -> list[AlertRow]:
        """Rows `start` to `stop` of `state`'s alerts; of every state, firing first, for ""."""
        out: list[AlertRow] = []
        offset = 0
        for s, alerts in self._groups(state):
            lo, hi = max(start - offset, 0), min(stop - offset, len(alerts))
            muted = s == "suppressed"
            out += (
                AlertRow(alerts[i], s, self.muted_by[i] if muted else ()) for i in range(lo, hi)
            )
            offset += len(alerts)
        return out


def alert_states(ordered: Iterable[Alert], muter: Muter, now: datetime) -> AlertStates:
    """Every alert with its state now: a silence made a moment ago shows at once. Firing
    first, then suppressed, then pending; within each, in `ordered`'s order (`by_urgency`)."""
    firing: list[Alert] = []
    suppressed: list[Alert] = []
    muted_by: list[tuple[str, ...]] = []
    pending: list[Alert] = []
    for a in ordered:
        if not a.firing:
            pending.append(a)
        elif muted := muter(a.labels, now):
            suppressed.append(a)
            muted_by.append(muted)
        else:
            firing.append(a)
    return AlertStates(firing, suppressed, muted_by, pending)


def silences_by_state(
    silences: Iterable[Silence], now: datetime
) -> Mapping[SilenceState, list[Silence]]:
    """Active (ending soonest first), pending (starting soonest first), expired (latest first)."""
    out: dict[SilenceState, list[Silence]] = {s: [] for s in SILENCE_STATES}
    for s in silences:
        out[s.state(now)].append(s)
    out[SilenceState.ACTIVE].sort(key=lambda s: (s.ends_at, s.id))
    out[SilenceState.PENDING].sort(key=lambda s: (s.starts_at, s.id))
    out[SilenceState.EXPIRED].sort(key=lambda s: (s.ends_at, s.id), reverse=True)
    return out


# What a silence made from an alert matches: the alert's identity, not its severity or its
# descriptive labels, so the silence holds through an escalation or a renamed sync (an
# acknowledgement, which adds the severity, is the way to let an escalation page).
SILENCE_LABELS = ("alertname", "source", "tenant", "sync_id")


def alert_matchers(labels: Mapping[str, str]) -> tuple[Matcher, ...]:
    """The matchers the *Silence…* form starts with: the alert's identity labels that it has
    (a tenant's SourceUnreachable has no sync_id)."""
    return tuple(Matcher(k, labels[k]) for k in SILENCE_LABELS if labels.get(k))


def matcher_lines(matchers: Iterable[Matcher]) -> str:
    """Matchers as the silence form shows them, one `name="value"` (or `!=`, `=~`, `!~`) a
    line, the value JSON-quoted, so `amapi.parse_filter` reads each back exactly."""
    return "\n".join(str(m) for m in matchers)
