"""Timbal: `GET /orgs/{org_id}/connectors/syncs`, one call per connector filter or one for all."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Annotated

import msgspec

from syncwatch.config import TimbalConfig, TimbalOrg, secret_value
from syncwatch.models import Listing, Source, SourceError, TimbalSync
from syncwatch.sources.base import (
    Collected,
    ParsedRecords,
    Upstream,
    guarded,
    parse_http_date,
    parse_listing,
)
from syncwatch.sources.records import NONE_ON_ERROR, NOT_ON_THE_WIRE, Timestamp

# The spec's int32/int64 formats, enforced: a bigger int cannot become a float in evaluation.
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


@dataclass(frozen=True, slots=True, kw_only=True)
class TimbalRecord(TimbalSync):
    """A TimbalSync as the upstream's SyncView has it, decoded straight from the body.

    The same fields (the SyncView's others are ignored), with what the OpenAPI document says
    of each, and one documented rule of our own: `interval_secs` must be positive (a ratio to
    a zero interval means nothing). See sources/records.py for how they are checked.
    """

    org_id: Annotated[str, NOT_ON_THE_WIRE] = ""  # the org it was listed for: see `adopt`
    interval_secs: Annotated[int, msgspec.Meta(ge=1, le=INT32_MAX)]
    created_at: Timestamp
    name: str | None = None
    # int64 without a minimum: a negative lag is upstream clock skew, evaluated as lag 0.
    seconds_since_success: Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)] | None = None
    last_success_at: Timestamp | None = None
    last_state: str | None = None
    # Carried, never used: a bad value must not cost the record.
    updated_at: Annotated[Timestamp | None, NONE_ON_ERROR] = None
    last_run_at: Annotated[Timestamp | None, NONE_ON_ERROR] = None

    def to_sync(self, org_id: str) -> TimbalSync:
        """The sync of `org_id`: the record itself once `adopt` gave it that org."""
        return self if self.org_id == org_id else replace(self, org_id=org_id)


class TimbalListing(msgspec.Struct, gc=False):
    syncs: list[TimbalRecord]


# The slots' own setters: a record is frozen to everyone but `adopt`, which writes them at
# half the cost of object.__setattr__ (it runs for every record of every cycle).
_SLOT = {name: TimbalSync.__dict__[name].__set__ for name in TimbalSync.__slots__}


def adopt(records: list[TimbalRecord], org_id: str) -> None:
    """Complete records just decoded, before anything else sees them: the org they were listed
    for (not in the body), and one shared copy of each label string. Most repeat across an
    org's syncs (connector, kind, state, tables, names) and all across cycles, so the next
    snapshot shares them with the one being served; an interned string goes with its last
    user."""
    intern = sys.intern
    set_org_id, set_id = _SLOT["org_id"], _SLOT["id"]
    set_connector_id, set_source_kind = _SLOT["connector_id"], _SLOT["source_kind"]
    set_source_table, set_dest_table = _SLOT["source_table"], _SLOT["dest_table"]
    set_name, set_last_state = _SLOT["name"], _SLOT["last_state"]
    for record in records:
        set_org_id(record, org_id)
        set_id(record, intern(record.id))
        set_connector_id(record, intern(record.connector_id))
        set_source_kind(record, intern(record.source_kind))
        set_source_table(record, intern(record.source_table))
        set_dest_table(record, intern(record.dest_table))
        if (name := record.name) is not None:
            set_name(record, intern(name))
        if (state := record.last_state) is not None:
            set_last_state(record, intern(state))


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
            collected.records,  # adopted by this org: each record is its sync
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
        adopt(parsed.records, org.id)
        return parsed, parse_http_date(reply.date), received

    async def poll(self, owns: Callable[[str, str], bool]) -> list[Listing]:
        """Every org this replica owns (see daemon.shard)."""
        orgs = [org for org in self.config.orgs if owns(Source.TIMBAL, org.id)]
        listings = (guarded(Source.TIMBAL, org.id, self.list_org(org)) for org in orgs)
        return list(await asyncio.gather(*listings))
