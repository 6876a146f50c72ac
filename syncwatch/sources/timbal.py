"""Timbal: `GET /orgs/{org_id}/connectors/syncs`, one call per connector filter or one for all."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from syncwatch.config import TimbalConfig, TimbalOrg, secret_value
from syncwatch.models import Source, TimbalSync
from syncwatch.sources.base import (
    Listing,
    SourceError,
    Upstream,
    aware,
    guarded,
    parse_listing,
)

_Date = Annotated[datetime, Field(strict=False)]
# The spec's int32/int64 formats, enforced: a bigger int cannot become a float in evaluation.
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


class TimbalRecord(BaseModel):
    """The fields of the upstream SyncView that syncwatch uses; others are ignored."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    id: str
    connector_id: str
    source_kind: str
    source_table: str
    dest_table: str
    interval_secs: int = Field(gt=0, le=INT32_MAX)
    enabled: bool
    created_at: _Date
    updated_at: _Date
    name: str | None = None
    seconds_since_success: int | None = Field(default=None, ge=0, le=INT64_MAX)
    last_success_at: _Date | None = None
    last_run_at: _Date | None = None
    last_state: str | None = None

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
            updated_at=aware(self.updated_at) or self.updated_at,
        )


class TimbalListing(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    syncs: list[TimbalRecord]


class TimbalClient:
    """Lists every configured org's connector syncs."""

    def __init__(self, config: TimbalConfig, upstream: Upstream) -> None:
        self.config = config
        self.upstream = upstream

    @property
    def tenants(self) -> list[str]:
        return [org.id for org in self.config.orgs]

    async def list_org(self, org: TimbalOrg) -> Listing:
        """One org's listing: every connector filter fetched, merged, de-duplicated."""
        started = time.perf_counter()
        try:
            filters: list[str | None] = list(org.connector_ids) or [None]
            parts = await asyncio.gather(*(self._fetch(org, f) for f in filters))
        except SourceError as exc:
            return Listing(Source.TIMBAL, org.id, error=exc, duration=time.perf_counter() - started)
        seen: set[str] = set()
        syncs: list[TimbalSync] = []
        invalid = 0
        for records, bad in parts:
            invalid += bad
            for record in records:
                if record.id not in seen:
                    seen.add(record.id)
                    syncs.append(record.to_sync(org.id))
        return Listing(
            Source.TIMBAL, org.id, syncs, invalid, duration=time.perf_counter() - started
        )

    async def _fetch(
        self, org: TimbalOrg, connector_id: str | None
    ) -> tuple[list[TimbalRecord], int]:
        key = secret_value(org.api_key or self.config.api_key)
        body = await self.upstream.get(
            Source.TIMBAL,
            org.id,
            f"{self.config.base_url}/orgs/{org.id}/connectors/syncs",
            headers={"Authorization": f"Bearer {key}"},
            params={"connector_id": connector_id} if connector_id else None,
            auth_hint="check timbal.api_key_file or the org's api_key, and that the key "
            "belongs to this org",
        )
        parsed = parse_listing(
            body,
            source=Source.TIMBAL,
            tenant=org.id,
            listing_model=TimbalListing,
            key="syncs",
            record_model=TimbalRecord,
        )
        return parsed.records, parsed.invalid

    async def poll(self, owns: Callable[[str, str], bool]) -> list[Listing]:
        """Every org this replica owns (see daemon.shard)."""
        orgs = [org for org in self.config.orgs if owns(Source.TIMBAL, org.id)]
        listings = (guarded(Source.TIMBAL, org.id, self.list_org(org)) for org in orgs)
        return list(await asyncio.gather(*listings))
