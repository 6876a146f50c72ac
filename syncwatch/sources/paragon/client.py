"""Paragon: `GET /api/syncs` per Connected User, with static or minted RS256 user tokens."""

from __future__ import annotations

import asyncio
import sys
import time
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import jwt
import msgspec
import orjson
import structlog
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from syncwatch.config import ParagonConfig, ParagonUser, secret_value
from syncwatch.models import Listing, ParagonStatus, ParagonSync, Reason, Source, SourceError
from syncwatch.sources.base import (
    Collected,
    Reply,
    Upstream,
    guarded,
    parse_http_date,
    parse_listing,
    skew_of,
)
from syncwatch.sources.records import NONE_ON_ERROR, RecordError, Timestamp, record_of

log = structlog.get_logger("syncwatch.sources")

_intern = sys.intern


class SyncSummary(msgspec.Struct, frozen=True, gc=False):
    lastSyncedAt: Timestamp | None = None  # noqa: N815 - upstream spelling


class ParagonRecord(msgspec.Struct, frozen=True, gc=False):
    """One item of `SyncsResponse.data`; unknown fields are ignored."""

    id: str
    integration: str
    pipeline: str
    status: str
    reason: str | None = None
    configurationName: str | None = None  # noqa: N815
    dateCreated: Timestamp | None = None  # noqa: N815
    credentialId: str | None = None  # noqa: N815
    # Carried, never relied on (and `summary` is not in the listing's spec): a bad value
    # must not cost the record.
    dateUpdated: Annotated[Timestamp | None, NONE_ON_ERROR] = None  # noqa: N815
    summary: Annotated[SyncSummary | None, NONE_ON_ERROR] = None

    def __post_init__(self) -> None:
        # Older Paragon docs spelled statuses in lower case; both mean the same.
        msgspec.structs.force_setattr(self, "status", self.status.strip().upper())

    def to_sync(self, user_id: str, last_synced_at: datetime | None = None) -> ParagonSync:
        if last_synced_at is None and self.summary is not None:
            last_synced_at = self.summary.lastSyncedAt
        # One shared copy of each label string: they repeat across syncs (integration,
        # pipeline, status) and all across cycles, so the next snapshot shares them.
        name, credential = self.configurationName, self.credentialId
        return ParagonSync(
            user_id=user_id,
            id=_intern(self.id),
            integration=_intern(self.integration),
            pipeline=_intern(self.pipeline),
            status=_intern(self.status),
            reason=self.reason,
            configuration_name=None if name is None else _intern(name),
            credential_id=None if credential is None else _intern(credential),
            date_created=self.dateCreated,
            date_updated=self.dateUpdated,
            last_synced_at=last_synced_at,
        )


class ParagonListing(msgspec.Struct, gc=False):
    data: list[ParagonRecord]


class TokenMinter:
    """Mints Paragon User Tokens (RS256 JWT) and caches each until shortly before expiry.

    The upstream checks `iat` and `exp` against its own clock, so tokens are minted on it:
    our clock minus the last skew observed from its `Date` header (0 until one is seen).
    """

    def __init__(
        self,
        signing_key: str,
        project_id: str,
        ttl: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        key = load_pem_private_key(signing_key.encode(), password=None)
        if not isinstance(key, RSAPrivateKey):
            raise TypeError("Paragon user tokens are RS256: the signing key must be RSA")
        self._key = key
        self.audience = f"useparagon.com/{project_id}"
        self.ttl = int(ttl)
        # Renew with a margin so a token never expires in flight, and each user's token at
        # its own point of the margin before that: tokens minted together (the first cycle
        # mints every one) are renewed over many cycles, not all in one.
        self.margin = min(300, self.ttl // 10)
        self._clock = clock
        self.skew = 0.0  # our clock minus the upstream's, in seconds
        self._cache: dict[str, tuple[str, float]] = {}  # user → token, when to renew it

    def observe(self, skew: float | None) -> None:
        """The skew of the upstream's latest answer; None (no readable `Date`) keeps the last."""
        if skew is not None:
            self.skew = skew

    def token(self, user_id: str) -> str:
        now = int(self._clock() - self.skew)
        cached = self._cache.get(user_id)
        if cached is not None and cached[1] > now:
            return cached[0]
        exp = now + self.ttl
        claims = {"sub": user_id, "aud": self.audience, "iat": now, "exp": exp}
        token = jwt.encode(claims, self._key, algorithm="RS256")
        spread = zlib.crc32(user_id.encode()) / 2**32  # the user's point, the same each time
        self._cache[user_id] = (token, exp - self.margin * (1 + spread))
        return token

    def invalidate(self, user_id: str) -> None:
        self._cache.pop(user_id, None)


class ParagonClient:
    """Lists every Connected User's syncs; Get Sync for IDLE ones when idle_stale_after is set."""

    def __init__(
        self,
        config: ParagonConfig,
        upstream: Upstream,
        clock: Callable[[], float] = time.time,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        self.upstream = upstream
        self.now = now  # our clock, to compare with the upstream's `Date`
        self.minter: TokenMinter | None = None
        if config.signing_key is not None and config.project_id:
            self.minter = TokenMinter(
                config.signing_key.get_secret_value(), config.project_id, config.token_ttl, clock
            )

    def users(self) -> list[ParagonUser]:
        return self.config.all_users()

    def _token(self, user: ParagonUser) -> str:
        static = secret_value(user.token)
        if static is not None:
            return static
        assert self.minter is not None, "config validation requires signing_key without tokens"
        return self.minter.token(user.id)

    async def _get(self, user: ParagonUser, path: str, params: dict[str, str] | None) -> Reply:
        url = f"{self.config.base_url}{path}"
        for first_try in (True, False):
            try:
                reply = await self.upstream.get(
                    Source.PARAGON,
                    user.id,
                    url,
                    headers={"Authorization": f"Bearer {self._token(user)}"},
                    params=params,
                    auth_hint=(
                        "check the user's static token"
                        if user.token is not None
                        else "check paragon.signing_key_file and project_id, and that the "
                        "user exists in this project"
                    ),
                )
            except SourceError as exc:
                self._observe(exc.date)
                # A minted token may have been revoked or our clock be off: re-mint once, on
                # the clock of the upstream that refused it.
                if first_try and exc.reason is Reason.HTTP_401 and user.token is None:
                    assert self.minter is not None
                    self.minter.invalidate(user.id)
                    continue
                raise
            self._observe(reply.date)
            return reply
        raise AssertionError("unreachable")  # pragma: no cover

    def _observe(self, date: str | None) -> None:
        # Measured on the same wall clock as the listing's clock_skew.
        if self.minter is not None:
            self.minter.observe(skew_of(parse_http_date(date), self.now()))

    async def list_user(self, user: ParagonUser) -> Listing:
        started = time.perf_counter()
        try:
            reply, received, collected = await self._list(user)
            if (failed := collected.failed_listing(Source.PARAGON, user.id, started)) is not None:
                return failed
            syncs = await asyncio.gather(*(self._complete(user, r) for r in collected.records))
        except SourceError as exc:
            return Listing(
                Source.PARAGON, user.id, error=exc, duration=time.perf_counter() - started
            )
        return collected.listing(
            Source.PARAGON,
            user.id,
            syncs,
            started=started,
            upstream_now=parse_http_date(reply.date),
            received=received,
        )

    async def _list(self, user: ParagonUser) -> tuple[Reply, datetime, Collected[ParagonRecord]]:
        """List Syncs, validated; records for another credential than asked for dropped."""
        wanted = user.credential_id
        reply = await self._get(user, "/api/syncs", {"credentialId": wanted} if wanted else None)
        received = self.now()
        parsed = parse_listing(
            reply.body,
            source=Source.PARAGON,
            tenant=user.id,
            listing_model=ParagonListing,
            key="data",
            record_model=ParagonRecord,
        )
        collected: Collected[ParagonRecord] = Collected()
        # An upstream ignoring the filter must not make us watch what we did not ask for; a
        # record that names no credential cannot be told apart and is kept.
        collected.add(parsed, None if not wanted else lambda r: r.credentialId in (None, wanted))
        return reply, received, collected

    async def _complete(self, user: ParagonUser, record: ParagonRecord) -> ParagonSync:
        """The sync, with `summary.lastSyncedAt` from Get Sync when it is needed and missing."""
        needs_summary = (
            self.config.idle_stale_after is not None
            and record.status == ParagonStatus.IDLE
            and (record.summary is None or record.summary.lastSyncedAt is None)
        )
        if not needs_summary:
            return record.to_sync(user.id)
        reply = await self._get(user, f"/api/syncs/{record.id}", None)
        return record.to_sync(user.id, _last_synced_at(reply.body, user.id))

    async def poll(self, owns: Callable[[str, str], bool]) -> list[Listing]:
        """Every Connected User this replica owns; `users_file` is re-read each time."""
        try:
            users = self.users()
        except (OSError, ValueError) as exc:  # unreadable, not UTF-8, or a bad user id
            # Keep watching the users we can name rather than nobody at all.
            log.error("users_file_unreadable", path=str(self.config.users_file), error=str(exc))
            users = list(self.config.users)
        users = [u for u in users if owns(Source.PARAGON, u.id)]
        listings = (guarded(Source.PARAGON, u.id, self.list_user(u)) for u in users)
        return list(await asyncio.gather(*listings))


def _last_synced_at(body: bytes, user_id: str) -> datetime | None:
    """`summary.lastSyncedAt` from a Get Sync body (bare, or wrapped in `data`)."""
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise SourceError(
            Source.PARAGON, user_id, Reason.INVALID_RESPONSE, "Get Sync body is not JSON"
        ) from None
    if isinstance(data, dict) and isinstance(data.get("data"), dict):
        data = data["data"]
    summary = data.get("summary") if isinstance(data, dict) else None
    if summary is None:
        return None
    try:
        return record_of(summary, SyncSummary).lastSyncedAt
    except RecordError:
        raise SourceError(
            Source.PARAGON, user_id, Reason.SCHEMA_MISMATCH, "Get Sync summary is malformed"
        ) from None
