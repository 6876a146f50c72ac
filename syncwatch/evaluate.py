"""Pure evaluation: (syncs, each source's rules, now) → per-sync state and alert conditions.

What a source's record means (thresholds, statuses, its metric families, its `check`
columns) is that source's SourceRules, in its own package under `sources/`; this module
holds what every source shares.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from syncwatch.exposition import Family
from syncwatch.models import (
    AlertName,
    Condition,
    Listing,
    ParagonSync,
    Severity,
    Source,
    TimbalSync,
)


class SyncState(enum.StrEnum):
    """What `check` shows per sync; `warning`/`critical` mean an alert condition holds."""

    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"
    DISABLED = "disabled"  # disabled and not alerted on
    IGNORED = "ignored"  # an override says `ignore = true`
    UNKNOWN = "unknown"  # an upstream status we do not know: exported, not alerted on


@dataclass(frozen=True, slots=True)
class Limits:
    """The warn and critical lines a sync's ratio is judged against, and who set them."""

    warn: float
    critical: float
    origin: str  # "default", or the override that set them: "overrides[2]"


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The verdict on one sync: its state and, when one holds, the alert condition."""

    sync: TimbalSync | ParagonSync
    state: SyncState
    condition: Condition | None = None
    ratio: float | None = None
    limits: Limits | None = None  # for a ratio: the lines it is judged against


@dataclass(frozen=True, slots=True)
class SyncFacts:
    """What a person reads of one sync on the status page."""

    name: str
    last_success: datetime | None
    lag: float | None  # seconds since the last success; None if it never succeeded


class SourceRules(Protocol):
    """What one source's records mean, built from its config table by its package."""

    def evaluate(self, sync: Any, now: datetime) -> Evaluation:
        """The verdict on one of this source's records."""
        ...

    def describe(self, e: Evaluation) -> str:
        """What the sync looks like now, for a resolved alert: `now 0.3x its 5m interval`."""
        ...

    def families(self, evaluations: Sequence[Evaluation]) -> list[Family]:
        """This source's per-sync metric families (every family, even with no samples)."""
        ...

    def check_row(self, e: Evaluation) -> dict[str, Any]:
        """This source's own columns of `check --format json`."""
        ...

    def facts(self, e: Evaluation, now: datetime) -> SyncFacts:
        """The sync's name, last success and lag, as the status page shows them."""
        ...

    def check_detail(self, e: Evaluation) -> tuple[str, str]:
        """`check`'s (LAG/INTERVAL|STATUS, REASON) columns."""
        ...


def age_text(seconds: float) -> str:
    """An age for people: its two largest units, `14d3h`, `1h12m`, `9m47s`, `45s`."""
    rest = max(0, int(seconds))
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count or parts:
            parts.append(f"{count}{unit}")
    kept = [p for p in parts[:2] if not p.startswith("0")]
    return "".join(kept) or "0s"


def ratio_text(ratio: float) -> str:
    """`4.9x`, and `4078x` once a decimal would only add noise."""
    return f"{ratio:.1f}x" if ratio < 100 else f"{ratio:.0f}x"


def state_for(severity: Severity) -> SyncState:
    """The state a condition of `severity` puts its sync in."""
    return SyncState.CRITICAL if severity is Severity.CRITICAL else SyncState.WARNING


def seconds_between(now: datetime, then: datetime) -> float:
    """Seconds from `then` to `now`."""
    return (now - then).total_seconds()


def source_unreachable(source: Source, tenant: str, reason: str, message: str) -> Condition:
    """The condition raised when a tenant's listing keeps failing."""
    return Condition(
        alertname=AlertName.SOURCE_UNREACHABLE,
        severity=Severity.CRITICAL,
        source=source,
        tenant=tenant,
        sync_id="",
        labels={"reason": reason},
        annotations={
            "summary": f"{source.capitalize()} listing for {tenant} is failing: {reason}",
            "description": message,
            "reason": reason,
        },
    )


@dataclass(frozen=True, slots=True)
class Report:
    """One poll, evaluated: every sync's verdict, every failed tenant, every condition."""

    evaluations: list[Evaluation]
    failures: list[Listing]
    listings: list[Listing]
    # The rules each source was judged by: metrics, `check` and resolutions ask them too.
    rules: Mapping[Source, SourceRules] = field(default_factory=dict)
    # How many of `evaluations` each of `listings` holds, in order (empty when not known).
    sizes: Sequence[int] = ()

    def by_listing(self) -> Iterator[tuple[Listing, Sequence[Evaluation]]]:
        """Each listing with its evaluations (none for a failed listing)."""
        if len(self.sizes) == len(self.listings):
            at = 0
            for listing, size in zip(self.listings, self.sizes, strict=True):
                yield listing, self.evaluations[at : at + size]
                at += size
            return
        groups: dict[tuple[str, str], list[Evaluation]] = {}
        for e in self.evaluations:
            groups.setdefault((e.sync.source, e.sync.tenant), []).append(e)
        for listing in self.listings:
            yield listing, groups.get((listing.source, listing.tenant), [])

    def describe(self, e: Evaluation) -> str:
        """What `e`'s sync looks like now, in its source's words."""
        return self.rules[e.sync.source].describe(e)

    @property
    def conditions(self) -> list[Condition]:
        """Sync conditions, then a SourceUnreachable per failed tenant (no threshold here)."""
        found = [e.condition for e in self.evaluations if e.condition is not None]
        for listing in self.failures:
            assert listing.error is not None
            found.append(
                source_unreachable(
                    listing.source, listing.tenant, listing.error.reason, str(listing.error)
                )
            )
        return found


def evaluate_listings(
    listings: Iterable[Listing], rules: Mapping[Source, SourceRules], now: datetime
) -> Report:
    """Evaluate every sync of every healthy listing by its source's rules; failed listings
    are reported as such.

    Ages from upstream timestamps are judged by the upstream's clock (the listing's `Date`
    header) when it sent one, so a step of our own clock raises no alert; `now` otherwise.
    """
    evaluations: list[Evaluation] = []
    failures: list[Listing] = []
    sizes: list[int] = []
    listings = list(listings)
    for listing in listings:
        if listing.error is not None:
            failures.append(listing)
            sizes.append(0)
            continue
        judge = rules[listing.source].evaluate
        moment = listing.upstream_now or now
        found = [judge(sync, moment) for sync in listing.syncs]
        found = _worst_per_sync(found) if listing.duplicates else found
        evaluations.extend(found)
        sizes.append(len(found))
    return Report(evaluations, failures, listings, rules, sizes)


def _badness(evaluation: Evaluation) -> tuple[int, float]:
    severity = 0 if evaluation.condition is None else evaluation.condition.severity.rank
    return (severity, -1.0 if evaluation.ratio is None else evaluation.ratio)


def _worst_per_sync(evaluations: list[Evaluation]) -> list[Evaluation]:
    """One verdict per sync id of a listing with duplicates: the worst, in first-seen order."""
    worst: dict[str, Evaluation] = {}
    for evaluation in evaluations:
        kept = worst.get(evaluation.sync.id)
        if kept is None or _badness(evaluation) > _badness(kept):
            worst[evaluation.sync.id] = evaluation
    return list(worst.values())
