"""One simulator's state: the fleet, its mutations, faults, request counters and listing cache."""

from __future__ import annotations

import email.utils
import math
from collections.abc import Callable
from datetime import UTC
from typing import Any, Final, TypeVar

from syncwatch.simulator.clock import Clock
from syncwatch.simulator.config import SimConfig
from syncwatch.simulator.faults import FaultQueue
from syncwatch.simulator.fleet import generate_fleet
from syncwatch.simulator.specs import ParagonSpec, TimbalSpec
from syncwatch.simulator.views import (
    apply_paragon_override,
    apply_timbal_override,
    paragon_at,
    timbal_at,
)
from syncwatch.simulator.wire import PARAGON, TIMBAL

_CACHE_MAX: Final = 4096

# (source, tenant, the connector or credential filtered on)
ListingKey = tuple[str, str, str | None]
Spec = TypeVar("Spec", TimbalSpec, ParagonSpec)


class SimState:
    """The fleet, faults, mutations and request counters behind one app (one event loop)."""

    def __init__(self, config: SimConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.fleet = generate_fleet(config)
        self.overrides: dict[tuple[str, str], dict[str, Any]] = {}
        self.deleted: set[tuple[str, str]] = set()
        self.faults = FaultQueue()
        self.requests: dict[str, dict[str, int]] = {}
        self.clear_requests()
        # Listing bodies per simulated second: all time fields have one-second resolution.
        self._cache: dict[ListingKey, tuple[int, bytes]] = {}
        self._date: tuple[int, bytes] = (-1, b"")

    def begin_shutdown(self) -> None:
        """Wake every fault that is sleeping, so a server shutdown stays bounded."""
        self.faults.begin_shutdown()

    def now(self) -> int:
        """The simulated clock, floored to the epoch second."""
        moment = self.clock()
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return math.floor(moment.timestamp())

    def http_date(self) -> bytes:
        """The `Date` header every answer carries: this API's own (simulated) clock."""
        now = self.now()
        if self._date[0] != now:
            self._date = (now, email.utils.formatdate(now, usegmt=True).encode())
        return self._date[1]

    def count(self, source: str, tenant: str) -> None:
        counts = self.requests[source]
        counts[tenant] = counts.get(tenant, 0) + 1

    def clear_requests(self) -> None:
        self.requests = {TIMBAL: {}, PARAGON: {}}

    def listing(self, key: ListingKey, now: int, render: Callable[[], bytes]) -> bytes:
        """The listing body for `key` at simulated second `now`, rendered once that second."""
        hit = self._cache.get(key)
        if hit is not None and hit[0] == now:
            return hit[1]
        body = render()
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[key] = (now, body)
        return body

    def forget_listings(self) -> None:
        """Drop the cached listings (the upstream data just changed)."""
        self._cache.clear()

    def live(self, source: str, specs: list[Spec]) -> list[Spec]:
        """The specs not deleted through /_sim/mutate."""
        return [spec for spec in specs if (source, spec.sync_id) not in self.deleted]

    # -- views with mutations applied ---------------------------------------------------------

    def timbal_view(self, spec: TimbalSpec, now: int) -> dict[str, Any]:
        view = timbal_at(spec, now)
        override = self.overrides.get((TIMBAL, spec.sync_id))
        if override:
            apply_timbal_override(view, override, now)
        return view

    def timbal_views(self, org: str, connector: str | None, now: int) -> list[dict[str, Any]]:
        specs = self.live(TIMBAL, self.fleet.timbal_by_org.get(org, []))
        views = [self.timbal_view(spec, now) for spec in specs]
        return [v for v in views if connector is None or v.get("connector_id") == connector]

    def paragon_view(self, spec: ParagonSpec, now: int, detail: bool) -> dict[str, Any]:
        view = paragon_at(spec, now, detail)
        override = self.overrides.get((PARAGON, spec.sync_id))
        if override:
            apply_paragon_override(view, override, detail)
        return view

    def paragon_views(self, user: str, credential: str | None, now: int) -> list[dict[str, Any]]:
        specs = self.live(PARAGON, self.fleet.paragon_by_user.get(user, []))
        views = [self.paragon_view(spec, now, detail=False) for spec in specs]
        return [v for v in views if credential is None or v.get("credentialId") == credential]
