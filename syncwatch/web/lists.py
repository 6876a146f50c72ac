"""The alerts and silences pages' rows: pure (alerts, silences, muter, now) -> rows, no HTTP."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

import orjson

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
    within each state of `alert_rows` (it changes only with the snapshot)."""
    return sorted(
        alerts, key=lambda a: (-a.severity.rank, a.source, a.tenant, a.sync_id, a.alertname)
    )


def alert_rows(ordered: Iterable[Alert], muter: Muter, now: datetime) -> list[AlertRow]:
    """Every alert with its state now: a silence made a moment ago shows at once. Firing
    first, then suppressed, then pending; within each, in `ordered`'s order (`by_urgency`)."""
    states: dict[str, list[AlertRow]] = {s: [] for s in ALERT_STATES}
    for a in ordered:
        if not a.firing:
            states["pending"].append(AlertRow(a, "pending", ()))
        elif muted := muter(a.labels, now):
            states["suppressed"].append(AlertRow(a, "suppressed", muted))
        else:
            states["firing"].append(AlertRow(a, "firing", ()))
    return [row for s in ALERT_STATES for row in states[s]]


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
_PLAIN_NAME = re.compile(r'[^=!~"\s]+')


def alert_matchers(labels: Mapping[str, str]) -> tuple[Matcher, ...]:
    """The matchers the *Silence…* form starts with: the alert's identity labels that it has
    (a tenant's SourceUnreachable has no sync_id)."""
    return tuple(Matcher(k, labels[k]) for k in SILENCE_LABELS if labels.get(k))


def matcher_lines(matchers: Iterable[Matcher]) -> str:
    """Matchers as the silence form shows them, one `name="value"` (or `!=`, `=~`, `!~`) a
    line, the value JSON-quoted, so `amapi.parse_filter` reads each back exactly."""
    return "\n".join(_line(m) for m in matchers)


def _line(m: Matcher) -> str:
    name = m.name if _PLAIN_NAME.fullmatch(m.name) else orjson.dumps(m.name).decode()
    return f"{name}{m.operator}{orjson.dumps(m.value).decode()}"
