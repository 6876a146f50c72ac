"""Upstream sources: async clients that turn listings into models, no alert logic."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import httpx
import structlog

from syncwatch.config import Config
from syncwatch.sources.base import Listing, Reason, SourceError, Upstream
from syncwatch.sources.paragon import ParagonClient
from syncwatch.sources.timbal import TimbalClient

__all__ = ["Listing", "Poller", "Reason", "SourceError"]

log = structlog.get_logger("syncwatch.sources")


class Poller:
    """Polls every tenant of every configured source, all sharing one concurrency bound."""

    def __init__(
        self,
        config: Config,
        transport: httpx.AsyncBaseTransport,
        owns: Callable[[str, str], bool] = lambda _source, _tenant: True,
    ) -> None:
        upstream = Upstream(
            transport=transport,
            retries=config.daemon.retries,
            timeout=config.daemon.request_timeout,
            semaphore=asyncio.Semaphore(config.daemon.concurrency),
            max_body_size=config.daemon.max_body_size,
        )
        self.timbal = TimbalClient(config.timbal, upstream) if config.timbal else None
        self.paragon = ParagonClient(config.paragon, upstream) if config.paragon else None
        self.owns = owns

    async def poll(self) -> list[Listing]:
        """One listing per tenant; failures are listings with `error` set, never raised."""
        polls = [c.poll(self.owns) for c in (self.timbal, self.paragon) if c is not None]
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
        return listings
