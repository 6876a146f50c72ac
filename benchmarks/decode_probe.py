"""What decoding one listing body costs: `python -m benchmarks.decode_probe`.

Bodies come from the simulator's own generator (seed 7, churn 0): Timbal listings of 100
syncs per org and Paragon listings of 3 syncs per Connected User, rendered as the simulated
APIs send them. In one run, per body:

- **floor**: `json.loads` into dicts, nothing validated: what the benchmark's bare client pays;
- **pydantic**: the strict pydantic models syncwatch decoded with before msgspec (their
  whole-listing fast path, as every valid body took it), then `to_sync`: the baseline;
- **parse_listing**: syncwatch's `parse_listing` today, to validated records;
- **poll**: `parse_listing`, then the `TimbalSync`/`ParagonSync` a poll keeps (a Timbal
  record is its sync once `adopt` gave it its org).

It prints CPU µs per body (best of the repeats, the decoders' passes interleaved, garbage
collector on as in the daemon), the ratio to the floor, the bytes each record keeps alive
(tracemalloc, on what that step hands on: the dicts, the records, the syncs; a second
generation decoded while the first is held, over 30,000 Timbal and 18,000 Paragon records)
and how many of those objects the garbage collector tracks per record.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
import tracemalloc
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from syncwatch.models import ParagonSync, Source, TimbalSync
from syncwatch.simulator.config import SimConfig
from syncwatch.simulator.state import SimState
from syncwatch.simulator.wire import dumps
from syncwatch.sources.base import parse_listing
from syncwatch.sources.paragon import ParagonListing, ParagonRecord
from syncwatch.sources.timbal import TimbalListing, TimbalRecord
from syncwatch.sources.timbal.client import adopt

# --- the pydantic models syncwatch used before msgspec: the baseline of the issue -----------

_Date = Annotated[datetime, Field(strict=False)]


def aware(value: datetime | None) -> datetime | None:
    return value if value is None or value.tzinfo is not None else value.replace(tzinfo=UTC)


class _PydanticTimbal(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)
    id: str
    connector_id: str
    source_kind: str
    source_table: str
    dest_table: str
    interval_secs: Annotated[int, Field(ge=1, le=2**31 - 1)]
    enabled: bool
    created_at: _Date
    name: str | None = None
    seconds_since_success: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | None = None
    last_success_at: _Date | None = None
    last_state: str | None = None
    updated_at: _Date | None = None
    last_run_at: _Date | None = None


class _PydanticTimbalListing(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    syncs: list[_PydanticTimbal]


class _PydanticParagon(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)
    id: str
    integration: str
    pipeline: str
    status: str
    reason: str | None = None
    configurationName: str | None = None  # noqa: N815
    dateCreated: _Date | None = None  # noqa: N815
    credentialId: str | None = None  # noqa: N815
    dateUpdated: _Date | None = None  # noqa: N815

    @field_validator("status")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.strip().upper()


class _PydanticParagonListing(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    data: list[_PydanticParagon]


def _pydantic_timbal(body: bytes, org: str) -> list[TimbalSync]:
    return [
        TimbalSync(
            org_id=org,
            id=r.id,
            connector_id=r.connector_id,
            name=r.name,
            source_kind=r.source_kind,
            source_table=r.source_table,
            dest_table=r.dest_table,
            interval_secs=r.interval_secs,
            enabled=r.enabled,
            seconds_since_success=r.seconds_since_success,
            last_success_at=aware(r.last_success_at),
            last_run_at=aware(r.last_run_at),
            last_state=r.last_state,
            created_at=aware(r.created_at) or r.created_at,
            updated_at=aware(r.updated_at),
        )
        for r in _PydanticTimbalListing.model_validate_json(body).syncs
    ]


def _pydantic_paragon(body: bytes, user: str) -> list[ParagonSync]:
    return [
        ParagonSync(
            user_id=user,
            id=r.id,
            integration=r.integration,
            pipeline=r.pipeline,
            status=r.status,
            reason=r.reason,
            configuration_name=r.configurationName,
            credential_id=r.credentialId,
            date_created=aware(r.dateCreated),
            date_updated=aware(r.dateUpdated),
        )
        for r in _PydanticParagonListing.model_validate_json(body).data
    ]


# --- syncwatch's decoder --------------------------------------------------------------------


def _timbal_records(body: bytes, org: str) -> list[Any]:
    parsed = parse_listing(
        body,
        source=Source.TIMBAL,
        tenant=org,
        listing_model=TimbalListing,
        key="syncs",
        record_model=TimbalRecord,
    )
    return list(parsed.records)


def _paragon_records(body: bytes, user: str) -> list[Any]:
    parsed = parse_listing(
        body,
        source=Source.PARAGON,
        tenant=user,
        listing_model=ParagonListing,
        key="data",
        record_model=ParagonRecord,
    )
    return list(parsed.records)


def _timbal_poll(body: bytes, org: str) -> list[Any]:
    records = _timbal_records(body, org)
    adopt(records, org)  # as TimbalClient does: each record is then its org's sync
    return records


def _paragon_poll(body: bytes, user: str) -> list[Any]:
    return [record.to_sync(user) for record in _paragon_records(body, user)]


def _floor(body: bytes, tenant: str) -> Any:  # noqa: ARG001 - a Decoder's signature
    return json.loads(body)


Decoder = Callable[[bytes, str], Any]


def _count(result: Any) -> int:
    if isinstance(result, dict):
        return sum(len(v) for v in result.values() if isinstance(v, list))
    return len(result)


def _time(
    decoders: dict[str, Decoder], bodies: Sequence[tuple[str, bytes]], repeats: int
) -> dict[str, float]:
    """Best seconds per body of each decoder; passes interleaved, so noise hits them alike."""
    best = dict.fromkeys(decoders, float("inf"))
    for _ in range(repeats):
        for name, decode in decoders.items():
            gc.collect()
            started = time.process_time()
            for tenant, body in bodies:
                decode(body, tenant)
            best[name] = min(best[name], (time.process_time() - started) / len(bodies))
    return best


def _kept(decode: Decoder, bodies: Sequence[tuple[str, bytes]]) -> tuple[float, float]:
    """Bytes kept alive per record by a second generation of what `decode` returns while the
    first is still held (as a daemon holds the snapshot it serves while it builds the next),
    and how many GC-tracked objects each record adds."""
    first = [decode(body, tenant) for tenant, body in bodies]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = [decode(body, tenant) for tenant, body in bodies]
    gc.collect()
    size = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del first
    records = sum(_count(result) for result in kept)
    tracked = sum(_tracked(result) for result in kept)
    return size / records, tracked / records


def _tracked(value: Any) -> int:
    """GC-tracked objects reachable from `value` (the container lists excluded)."""
    if isinstance(value, dict):
        return int(gc.is_tracked(value)) + sum(_tracked(v) for v in value.values())
    if isinstance(value, list):
        return sum(_tracked(v) for v in value)
    return int(gc.is_tracked(value))


def _bodies(config: SimConfig) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    state = SimState(config, lambda: datetime.now(UTC))
    now = state.now()
    timbal = [
        (org, dumps({"syncs": state.timbal_views(org, None, now)}))
        for org in state.fleet.timbal_by_org
    ]
    paragon = [
        (user, dumps({"data": state.paragon_views(user, None, now)}))
        for user in state.fleet.paragon_by_user
    ]
    return timbal, paragon


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orgs", type=int, default=20, help="Timbal bodies timed (100 syncs)")
    parser.add_argument("--users", type=int, default=600, help="Paragon bodies timed (3 syncs)")
    parser.add_argument("--repeats", type=int, default=25)
    # Memory is measured on more records than jiter's (pydantic's) 16,384-string cache holds:
    # on fewer, that cache shares nearly every string and flatters pydantic.
    parser.add_argument("--memory-orgs", type=int, default=300)
    parser.add_argument("--memory-users", type=int, default=6000)
    args = parser.parse_args()
    config = SimConfig(
        orgs=max(args.orgs, args.memory_orgs),
        syncs_per_org=100,
        users=max(args.users, args.memory_users),
        syncs_per_user=3,
        seed=7,
        churn=0.0,
    )
    all_timbal, all_paragon = _bodies(config)
    samples = {
        "timbal": (all_timbal[: args.orgs], all_timbal[: args.memory_orgs]),
        "paragon": (all_paragon[: args.users], all_paragon[: args.memory_users]),
    }
    cases: list[tuple[str, dict[str, Decoder]]] = [
        (
            "timbal",
            {
                "floor": _floor,
                "pydantic": _pydantic_timbal,
                "parse_listing": _timbal_records,
                "poll": _timbal_poll,
            },
        ),
        (
            "paragon",
            {
                "floor": _floor,
                "pydantic": _pydantic_paragon,
                "parse_listing": _paragon_records,
                "poll": _paragon_poll,
            },
        ),
    ]
    for source, decoders in cases:
        bodies, memory = samples[source]
        records = sum(_count(_floor(body, tenant)) for tenant, body in bodies)
        size = sum(len(body) for _, body in bodies) / len(bodies)
        memory_records = sum(_count(_floor(body, tenant)) for tenant, body in memory)
        print(
            f"{source}: {len(bodies)} bodies timed, {records / len(bodies):.0f} records and "
            f"{size:,.0f} bytes each; memory over {memory_records:,} records"
        )
        times = _time(decoders, bodies, args.repeats)
        for name, decode in decoders.items():
            per_body, floor = times[name], times["floor"]
            per_record, tracked = _kept(decode, memory)
            print(
                f"  {name:<14} {per_body * 1e6:8.1f} µs/body  {per_body / floor:5.2f}x floor  "
                f"{per_record:6.0f} B/record kept  {tracked:4.1f} GC-tracked/record"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
