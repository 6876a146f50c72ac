"""Upstream sources: one package per source (client and rules), and the Poller over them."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
import structlog

from syncwatch.models import Listing
from syncwatch.settings import Config
from syncwatch.sources.base import SourceClient, Upstream
from syncwatch.sources.registry import configured

__all__ = ["Poller"]

log = structlog.get_logger("syncwatch.sources")

# Our clock and an upstream's further apart than this is worth a line in the log.
CLOCK_SKEW_WARN = 300.0


class Poller:
    """Polls every tenant of every configured source, all sharing one concurrency bound."""

    def __init__(
        self,
        config: Config,
        transport: httpx.AsyncBaseTransport,
        owns: Callable[[str, str], bool] = lambda _source, _tenant: True,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        upstream = Upstream(
            transport=transport,
            retries=config.daemon.retries,
            timeout=config.daemon.request_timeout,
            semaphore=asyncio.Semaphore(config.daemon.concurrency),
            max_body_size=config.daemon.max_body_size,
        )
        self.upstream = upstream
        self.clients: list[SourceClient] = [
            kind.client(table, upstream, clock) for kind, table in configured(config)
        ]
        self.owns = owns
        # What was last logged per (what, source, tenant): a lasting anomaly logs once.
        self._logged: dict[tuple[str, str, str], float | bool] = {}

    async def poll(self) -> list[Listing]:
        """One listing per tenant; failures are listings with `error` set, never raised."""
        polls = [client.poll(self.owns) for client in self.clients]
        listings = list(itertools.chain.from_iterable(await asyncio.gather(*polls)))
        for listing in listings:
            if listing.error is not None:
                err = listing.error
                log.warning(
                    "poll_failed",
                    source=str(err.source),
                    tenant=err.tenant,
                    reason=str(err.reason),
                    status_code=err.status_code,
                    error=str(err),
                )
            else:
                self._log_anomalies(listing)
        return listings

    def _log_anomalies(self, listing: Listing) -> None:
        """One line per tenant when an upstream anomaly starts or changes, not per cycle."""
        source, tenant = str(listing.source), listing.tenant
        if self._changed(("duplicates", source, tenant), listing.duplicates) and listing.duplicates:
            log.warning(
                "duplicate_records",
                source=source,
                tenant=tenant,
                duplicates=listing.duplicates,
                sync_ids=list(listing.duplicate_ids[:10]),
                hint="the upstream listed these sync ids more than once; the worst record "
                "of each is evaluated",
            )
        if self._changed(("unrequested", source, tenant), listing.unrequested) and (
            listing.unrequested
        ):
            log.warning(
                "unrequested_records",
                source=source,
                tenant=tenant,
                dropped=listing.unrequested,
                hint="the upstream answered with records outside the connector or credential "
                "filter asked for; they are dropped",
            )
        skewed = listing.clock_skew is not None and abs(listing.clock_skew) > CLOCK_SKEW_WARN
        if self._changed(("clock_skew", source, tenant), skewed):
            if skewed:
                log.warning(
                    "clock_skew",
                    source=source,
                    tenant=tenant,
                    skew_seconds=round(listing.clock_skew or 0.0, 1),
                    hint="our clock and the upstream's (its Date header) disagree; upstream "
                    "ages are judged by the upstream's clock. Check NTP on this host",
                )
            else:
                log.info("clock_skew_cleared", source=source, tenant=tenant)

    def _changed(self, key: tuple[str, str, str], value: float | bool) -> bool:
        """Whether `value` differs from last cycle's (nothing logged counts as 0)."""
        before = self._logged.pop(key, 0)
        if value:  # only lasting anomalies take memory, not every healthy tenant
            self._logged[key] = value
        return value != before
