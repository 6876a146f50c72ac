"""Timbal: `GET /orgs/{org_id}/connectors/syncs`, one call per connector filter or one for all."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from syncwatch.config import TimbalConfig, TimbalOrg, secret_value
from syncwatch.models import Listing, Source, SourceError, TimbalSync
from syncwatch.sources.base import (
    Collected,
    JsonInt,
    NoneOnError,
    ParsedRecords,
    Upstream,
    aware,
    guarded,
    parse_http_date,
    parse_listing,
)

_Date = Annotated[datetime, Field(strict=False)]
# The spec's int32/int64 formats, enforced: a bigger int cannot become a float in evaluation.
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


class TimbalRecord(BaseModel):
    """The fields of the upstream SyncView that syncwatch uses; others are ignored.

    Types follow the OpenAPI document exactly, with one documented rule of our own:
    `interval_secs` must be positive (a ratio to a zero interval means nothing).
    """

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    id: str
    connector_id: str
    source_kind: str
    source_table: str
    dest_table: str
    interval_secs: Annotated[int, JsonInt(ge=1, le=INT32_MAX)]
    enabled: bool
    created_at: _Date
    name: str | None = None
    # int64 without a minimum: a negative lag is upstream clock skew, evaluated as lag 0.
    seconds_since_success: Annotated[int, JsonInt(ge=INT64_MIN, le=INT64_MAX)] | None = None
    last_success_at: _Date | None = None
    last_state: str | None = None
    # Carried, never used: a bad value must not cost the record.
    updated_at: Annotated[_Date | None, NoneOnError()] = None
    last_run_at: Annotated[_Date | None, NoneOnError()] = None

    def to_sync(self, org_id: str) -> TimbalSync:
        return TimbalSync(
            org_id=org_id,
            id=self.id,
            connector_id=self.connector_id,
            name=self.name,
            source_kind=self.source_kind,
            source_table=self.source_table,
            dest_table=self.dest_table,
            interval_secs=self.interval_secs,
            enabled=self.enabled,
            seconds_since_success=self.seconds_since_success,
            last_success_at=aware(self.last_success_at),
            last_run_at=aware(self.last_run_at),
            last_state=self.last_state,
            created_at=aware(self.created_at) or self.created_at,
            updated_at=aware(self.updated_at),
        )


class TimbalListing(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    syncs: list[TimbalRecord]


def _of_connector(connector_id: str) -> Callable[[TimbalRecord], bool]:
    return lambda record: record.connector_id == connector_id


class TimbalClient:
    """Lists every configured org's connector syncs."""

    def __init__(
        self,
        config: TimbalConfig,
        upstream: Upstream,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        self.upstream = upstream
        self.now = now  # our clock, to compare with the upstream's `Date`

    async def list_org(self, org: TimbalOrg) -> Listing:
        """One org's listing: every connector filter fetched, merged, de-duplicated."""
        started = time.perf_counter()
        filters: list[str | None] = list(org.connector_ids) or [None]
        try:
            parts = await asyncio.gather(*(self._fetch(org, f) for f in filters))
        except SourceError as exc:
            return Listing(Source.TIMBAL, org.id, error=exc, duration=time.perf_counter() - started)
        collected: Collected[TimbalRecord] = Collected()
        for connector_id, (parsed, _, _) in zip(filters, parts, strict=True):
            # An upstream ignoring the filter must not make us watch what we did not ask for.
            collected.add(parsed, None if connector_id is None else _of_connector(connector_id))
        # The latest answer's clock: the parts were fetched together, seconds apart at most.
        dated = [(theirs, ours) for _, theirs, ours in parts if theirs is not None]
        upstream_now, received = max(dated) if dated else (None, None)
        if (failed := collected.failed_listing(Source.TIMBAL, org.id, started)) is not None:
            return failed
        return collected.listing(
            Source.TIMBAL,
            org.id,
            [record.to_sync(org.id) for record in collected.records],
            started=started,
            upstream_now=upstream_now,
            received=received,
        )

    async def _fetch(
        self, org: TimbalOrg, connector_id: str | None
    ) -> tuple[ParsedRecords[TimbalRecord], datetime | None, datetime]:
        key = secret_value(org.api_key or self.config.api_key)
        reply = await self.upstream.get(
            Source.TIMBAL,
            org.id,
            f"{self.config.base_url}/orgs/{org.id}/connectors/syncs",
            headers={"Authorization": f"Bearer {key}"},
            params={"connector_id": connector_id} if connector_id else None,
            auth_hint="check timbal.api_key_file or the org's api_key, and that the key "
            "belongs to this org",
        )
        received = self.now()
        parsed = parse_listing(
            reply.body,
            source=Source.TIMBAL,
            tenant=org.id,
            listing_model=TimbalListing,
            key="syncs",
            record_model=TimbalRecord,
        )
        return parsed, parse_http_date(reply.date), received

    async def poll(self, owns: Callable[[str, str], bool]) -> list[Listing]:
        """Every org this replica owns (see daemon.shard)."""
        orgs = [org for org in self.config.orgs if owns(Source.TIMBAL, org.id)]
        listings = (guarded(Source.TIMBAL, org.id, self.list_org(org)) for org in orgs)
        return list(await asyncio.gather(*listings))
