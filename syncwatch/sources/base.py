"""What every source shares: typed failures, the listing result, and the retrying GET."""

from __future__ import annotations

import asyncio
import email.utils
import functools
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

import httpx
import msgspec
import pydantic_core
import structlog

from syncwatch.config import DEFAULT_MAX_BODY_SIZE, format_size
from syncwatch.evaluate import SourceRules
from syncwatch.failures import Kind, classify, origin, parse_retry_after
from syncwatch.http import DEFAULT_HEADERS, BodyTooLargeError, UndecodableBodyError, read_body
from syncwatch.models import Listing, ParagonSync, Reason, Source, SourceError, TimbalSync
from syncwatch.sources.records import RecordError, listing_decoder, record_of

log = structlog.get_logger("syncwatch.sources")

# Retry-After beyond this would stall the whole cycle; fail now and try next cycle instead.
MAX_RETRY_AFTER = 30.0
# Of a non-200 answer only this much is read (and thrown away), to keep the connection.
ERROR_BODY_LIMIT = 64 * 1024


_PROTOCOL_HINT = "the answer is not valid HTTP; check that base_url points at the API itself"
_REASON_OF = {
    Kind.TIMEOUT: Reason.TIMEOUT,
    Kind.CONNECT: Reason.CONNECT,
    Kind.TLS: Reason.TLS,
    Kind.PROTOCOL: Reason.INVALID_RESPONSE,
    Kind.UNEXPECTED: Reason.INTERNAL,
}


async def guarded(source: Source, tenant: str, listing: Awaitable[Listing]) -> Listing:
    """The tenant's listing; an exception no code path expected (a bug) is logged whole and
    becomes this tenant's failed listing, so it cannot fail every other tenant's poll."""
    started = time.perf_counter()
    try:
        return await listing
    except Exception as exc:
        name = type(exc).__name__
        log.error("poll_crashed", source=str(source), tenant=tenant, error_type=name, exc_info=exc)
        error = SourceError(source, tenant, Reason.INTERNAL, f"unexpected {name}")
        return Listing(source, tenant, error=error, duration=time.perf_counter() - started)


@dataclass(frozen=True, slots=True)
class Reply:
    """A 200 answer: its body, and its `Date` header (the upstream's clock, RFC 9110 6.6.1)."""

    body: bytes
    date: str | None = None


@dataclass(slots=True)
class Upstream:
    """GETs with a global concurrency bound, a per-attempt deadline and retries with backoff.

    Requests go straight to the transport, not through `httpx.AsyncClient`: polling needs
    none of the client's cookie jar, auth and redirect flows or URL merging, which together
    cost more CPU per request than the aiohttp transport itself (docs/benchmarks.md).
    """

    transport: httpx.AsyncBaseTransport
    retries: int
    timeout: float
    semaphore: asyncio.Semaphore
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    wait_initial: float = 0.2
    wait_max: float = 5.0
    _clock: Callable[[], float] = field(default=time.time)
    _rng: random.Random = field(default_factory=random.Random)

    async def get(
        self,
        source: Source,
        tenant: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        auth_hint: str = "",
    ) -> Reply:
        """A 200 answer, or SourceError; retried on connect/timeout/5xx/429."""
        request_url = _parsed_url(url, tuple(params.items()) if params else ())
        attempt = 0
        while True:
            try:
                return await self._attempt(
                    source=source,
                    tenant=tenant,
                    url=request_url,
                    headers=headers,
                    auth_hint=auth_hint,
                )
            except SourceError as exc:
                wait = self._retry_wait(exc, attempt)
                if wait is None:
                    raise
            attempt += 1
            await asyncio.sleep(wait)

    def _retry_wait(self, exc: SourceError, attempt: int) -> float | None:
        """Seconds before retrying after failed attempt `attempt` (0-based); None: give up."""
        if attempt >= self.retries or not exc.retryable:
            return None
        if exc.retry_after is not None:
            return exc.retry_after if exc.retry_after <= MAX_RETRY_AFTER else None
        # Exponential backoff with jitter: tenants failing together do not retry together.
        backoff = self.wait_initial * 2.0**attempt + self._rng.uniform(0, self.wait_initial)
        return min(self.wait_max, backoff)

    async def _attempt(
        self,
        *,
        source: Source,
        tenant: str,
        url: httpx.URL,
        headers: Mapping[str, str] | None,
        auth_hint: str,
    ) -> Reply:
        where = f"GET {url}"
        request = httpx.Request("GET", url, headers={**DEFAULT_HEADERS, **(headers or {})})
        async with self.semaphore:
            # Every exception of this request becomes this tenant's SourceError: nothing one
            # upstream answers may fail the other tenants' poll.
            try:
                # One deadline for headers and body: a trickling body must not hang a cycle.
                async with asyncio.timeout(self.timeout):
                    response = await self.transport.handle_async_request(request)
                    try:
                        ok = response.status_code == 200
                        limit = self.max_body_size if ok else ERROR_BODY_LIMIT
                        body = await read_body(response, limit, truncate=not ok)
                    finally:
                        await response.aclose()
            except TimeoutError:
                raise SourceError(
                    source, tenant, Reason.TIMEOUT, f"{where} took over {self.timeout:g}s"
                ) from None
            except BodyTooLargeError:
                raise SourceError(
                    source,
                    tenant,
                    Reason.BODY_TOO_LARGE,
                    f"{where}: body over {format_size(self.max_body_size)} (daemon.max_body_size)",
                ) from None
            except UndecodableBodyError as exc:
                # E.g. `Content-Encoding: gzip` on a body that is not: a broken proxy.
                raise SourceError(
                    source, tenant, Reason.INVALID_RESPONSE, f"{where}: undecodable body ({exc})"
                ) from None
            except Exception as exc:
                failure = classify(exc)
                raise SourceError(
                    source,
                    tenant,
                    _REASON_OF[failure.kind],
                    f"{where}: {failure}",
                    hint=_PROTOCOL_HINT if failure.kind is Kind.PROTOCOL else None,
                ) from None
        status = response.status_code
        date = response.headers.get("Date")
        if status == 200:
            return Reply(body, date)
        detail = f"HTTP {status} from {where}"
        if 300 <= status < 400:
            # Not followed: the bearer token must never travel to wherever this points.
            location = response.headers.get("Location", "")
            to = origin(location) if "//" in location else "elsewhere on the same host"
            raise SourceError(
                source,
                tenant,
                Reason.HTTP_3XX,
                f"{detail}, redirecting to {to or 'nowhere'}",
                status_code=status,
                date=date,
            )
        if status == 401:
            raise SourceError(
                source,
                tenant,
                Reason.HTTP_401,
                detail,
                status_code=status,
                date=date,
                hint=f"unauthorized: {auth_hint}" if auth_hint else None,
            )
        if status == 403:
            raise SourceError(
                source,
                tenant,
                Reason.HTTP_403,
                detail,
                status_code=status,
                date=date,
                hint=f"forbidden: {auth_hint}" if auth_hint else None,
            )
        if status == 404:
            raise SourceError(
                source, tenant, Reason.HTTP_404, detail, status_code=status, date=date
            )
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(response.headers.get("Retry-After"), self._clock())
            reason = Reason.HTTP_429 if status == 429 else Reason.HTTP_5XX
            raise SourceError(
                source,
                tenant,
                reason,
                detail,
                status_code=status,
                retry_after=retry_after,
                date=date,
            )
        raise SourceError(source, tenant, Reason.HTTP_4XX, detail, status_code=status, date=date)


@functools.lru_cache(maxsize=65536)
def _parsed_url(url: str, params: tuple[tuple[str, str], ...]) -> httpx.URL:
    """Parsing a URL costs more than sending it; each tenant's URL is parsed once."""
    return httpx.URL(url, params=params or None)


def parse_http_date(value: str | None) -> datetime | None:
    """An HTTP `Date` header as an aware datetime; None when absent or unparsable."""
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


# --- one listing body to records ------------------------------------------------------------


M = TypeVar("M")


@dataclass(frozen=True, slots=True)
class ParsedRecords(Generic[M]):
    records: list[M]
    invalid: int
    # Ids of the invalid records that have a readable string `id`: listed, not deleted.
    invalid_ids: frozenset[str] = frozenset()


def parse_listing(
    body: bytes,
    *,
    source: Source,
    tenant: str,
    listing_model: type[Any],
    key: str,
    record_model: type[M],
) -> ParsedRecords[M]:
    """Decode a listing body; a bad record is logged, counted and skipped, never fatal.

    `listing_model` is a msgspec Struct whose `key` field is a list of `record_model`
    (see sources/records.py for what makes a record valid).
    """
    try:
        whole = listing_decoder(listing_model).decode(body)
    except (msgspec.MsgspecError, ValueError, RecursionError):
        pass  # not a listing of valid records only: the slow path says which, or why not
    else:
        records: list[M] = getattr(whole, key)
        return ParsedRecords(records, 0)

    # Slow path, only for a body that is not a listing of valid records only. Parsed with
    # jiter, as it always was: it reads what msgspec refuses (NaN, 1e999) the way the
    # records' rules expect, and orjson would turn ints beyond 64 bits into floats, so a
    # record's verdict would depend on its neighbours.
    try:
        data: Any = pydantic_core.from_json(body)
    except ValueError as exc:
        raise SourceError(
            source, tenant, Reason.INVALID_RESPONSE, f"body is not JSON ({exc}): {_peek(body)}"
        ) from None
    items = data.get(key) if isinstance(data, dict) else None
    if not isinstance(items, list):
        shape = sorted(data)[:5] if isinstance(data, dict) else type(data).__name__
        raise SourceError(
            source,
            tenant,
            Reason.SCHEMA_MISMATCH,
            f"expected an object with a {key!r} array, got {shape}",
        )
    records = []
    invalid_ids: set[str] = set()
    invalid = 0
    for index, item in enumerate(items):
        try:
            records.append(record_of(item, record_model))
        except RecordError as exc:
            invalid += 1
            sync_id = item.get("id") if isinstance(item, dict) else None
            if isinstance(sync_id, str):
                invalid_ids.add(sync_id)
            log.warning(
                "invalid_record",
                source=str(source),
                tenant=tenant,
                index=index,
                sync_id=sync_id if isinstance(sync_id, str) else None,
                errors=str(exc),
            )
    return ParsedRecords(records, invalid, frozenset(invalid_ids))


@dataclass(slots=True)
class Collected(Generic[M]):
    """One tenant's records gathered from its answers (one per filter, or a single one)."""

    records: list[M] = field(default_factory=list)
    invalid: int = 0
    invalid_ids: set[str] = field(default_factory=set)
    duplicates: int = 0
    duplicate_ids: dict[str, None] = field(default_factory=dict)  # an ordered set
    unrequested: int = 0

    def add(self, parsed: ParsedRecords[M], requested: Callable[[M], bool] | None) -> None:
        """Fold in one answer: drop what was not asked for, count duplicate ids.

        A record seen again in another filter's answer, identical, is the same record seen
        twice (filters may overlap) and is kept once; a repeat inside one answer, or a
        different record under a known id, is an upstream duplicate: kept for evaluation
        (the worst one counts) and counted.
        """
        self.invalid += parsed.invalid
        self.invalid_ids |= parsed.invalid_ids
        earlier: dict[str, list[M]] = {}
        for record in self.records:
            earlier.setdefault(_id_of(record), []).append(record)
        here: set[str] = set()
        for record in parsed.records:
            if requested is not None and not requested(record):
                self.unrequested += 1
                continue
            sync_id = _id_of(record)
            seen = earlier.get(sync_id)
            if sync_id in here or (seen is not None and record not in seen):
                self.duplicates += 1
                self.duplicate_ids[sync_id] = None
            elif seen is not None:
                continue  # the same record through another filter
            here.add(sync_id)
            self.records.append(record)

    def failed_listing(self, source: Source, tenant: str, started: float) -> Listing | None:
        """The failed Listing when every record was invalid (see `failure`), else None."""
        failure = self.failure(source, tenant)
        if failure is None:
            return None
        return Listing(
            source,
            tenant,
            invalid_records=self.invalid,
            error=failure,
            duration=time.perf_counter() - started,
        )

    def listing(
        self,
        source: Source,
        tenant: str,
        syncs: Sequence[TimbalSync | ParagonSync],
        *,
        started: float,
        upstream_now: datetime | None,
        received: datetime | None,
    ) -> Listing:
        """The healthy Listing of these records' `syncs`, with what was counted on the way."""
        return Listing(
            source,
            tenant,
            syncs,
            self.invalid,
            duration=time.perf_counter() - started,
            invalid_ids=frozenset(self.invalid_ids),
            duplicates=self.duplicates,
            duplicate_ids=tuple(self.duplicate_ids),
            unrequested=self.unrequested,
            upstream_now=upstream_now,
            clock_skew=skew_of(upstream_now, received),
        )

    def failure(self, source: Source, tenant: str) -> SourceError | None:
        """Every record invalid (and at least one): a failed poll, not a healthy empty one."""
        if self.invalid == 0 or self.records or self.unrequested:
            return None
        return SourceError(
            source,
            tenant,
            Reason.SCHEMA_MISMATCH,
            f"all {self.invalid} records of the listing failed validation",
            hint="see the invalid_record log lines for the fields; check base_url and the "
            "upstream's API version",
        )


def skew_of(upstream_now: datetime | None, received: datetime | None) -> float | None:
    """Our clock minus the upstream's, in seconds (positive: ours is ahead)."""
    if upstream_now is None or received is None:
        return None
    return (received - upstream_now).total_seconds()


def _id_of(record: object) -> str:
    sync_id: str = getattr(record, "id")  # noqa: B009 - every record type has an `id`
    return sync_id


def _peek(body: bytes) -> str:
    text = body[:80].decode("utf-8", "replace").replace("\n", " ")
    return repr(text + ("…" if len(body) > 80 else ""))


# --- what a source's package declares -------------------------------------------------------


class SourceClient(Protocol):
    async def poll(self, owns: Callable[[str, str], bool]) -> list[Listing]:
        """One listing per tenant this shard owns; a failure is a listing with `error` set."""
        ...


@dataclass(frozen=True, slots=True)
class SourceKind:
    """One upstream, as its package declares it; its config table is `[<source>]`."""

    source: Source
    # (its config table, the shared Upstream, our clock) -> its client
    client: Callable[[Any, Upstream, Callable[[], datetime]], SourceClient]
    # its config table -> the rules its records are judged by
    rules: Callable[[Any], SourceRules]
