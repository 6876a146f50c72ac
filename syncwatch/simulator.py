"""Simulated Timbal and Paragon APIs: a deterministic, fast HTTP upstream for demos and tests."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.utils
import hmac
import math
import random
import signal
import socket
import struct
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any, Final, TypeGuard

import jwt
import orjson
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

__all__ = ["SimConfig", "SimulatorThread", "build_app", "serve"]

Clock = Callable[[], datetime]

TIMBAL: Final = "timbal"
PARAGON: Final = "paragon"

# The default thresholds the intended states in /_sim/fleet are computed with.
WARN_RATIO: Final = 1.5
CRITICAL_RATIO: Final = 3.0
MIN_STALE_SECONDS: Final = 300
INITIALIZING_GRACE: Final = 3600

MINUTE: Final = 60
HOUR: Final = 3600
DAY: Final = 86400

_JSON: Final = "application/json"
_RAW_SEND: Final = "syncwatch.simulator.raw_send"
_CACHE_MAX: Final = 4096
_JWT_CACHE_MAX: Final = 10_000
_START_TIMEOUT: Final = 10.0
_STOP_TIMEOUT: Final = 5.0
# uvicorn cancels whatever still runs this long after a shutdown began.
_GRACEFUL_SHUTDOWN: Final = 2

_HTTP_FAULTS: Final = {
    "http_500": (500, "internal server error"),
    "http_502": (502, "bad gateway"),
    "http_503": (503, "service unavailable"),
    "http_429": (429, "rate limit exceeded"),
    "http_401": (401, "unauthorized"),
    "http_403": (403, "forbidden"),
}
FAULT_KINDS: Final = frozenset(
    {
        *_HTTP_FAULTS,
        "timeout",
        "slow_body",
        "reset",
        "truncated",
        "html",
        "wrong_shape",
        "poison",
        # An upstream that answers with the whole listing whatever the filter asked for.
        "ignore_filter",
        # A listing that repeats its first sync id with a worse record (a paging bug).
        "duplicate",
    }
)
# The first variant of each source is the default.
POISON_VARIANTS: Final = {
    TIMBAL: ("interval_negative", "interval_zero", "bad_date", "missing_id"),
    PARAGON: ("missing_id", "bad_date", "missing_status"),
}
_DATE_FIELD: Final = {TIMBAL: "created_at", PARAGON: "dateCreated"}
_FAULT_KEYS: Final = frozenset(
    {"source", "tenant", "kind", "count", "retry_after", "delay", "status", "variant"}
)
_DEFAULT_TIMEOUT_DELAY: Final = 30.0
_DEFAULT_SLOW_BODY_DELAY: Final = 10.0
_SLOW_BODY_CHUNKS: Final = 8

_SOURCE_KINDS: Final = ("postgres", "mysql", "snowflake", "bigquery")
_SCHEMAS: Final = {
    "postgres": ("public", "sales", "billing"),
    "mysql": ("shop", "crm"),
    "snowflake": ("ANALYTICS", "RAW", "FINANCE"),
    "bigquery": ("analytics", "events_prod", "marketing"),
}
_TABLES: Final = (
    "orders",
    "customers",
    "invoices",
    "payments",
    "events",
    "subscriptions",
    "products",
    "shipments",
    "refunds",
    "accounts",
    "users",
    "tickets",
    "line_items",
    "inventory",
    "sessions",
    "leads",
)
_CURSORS: Final = ("updated_at", "modified_at", "id", "event_time")
_INTERVALS: Final = (60, 300, 900, 3600)

# Non-healthy scenarios and their share of the fleet; the rest is healthy.
_TIMBAL_MIX: Final = (
    ("failed_but_fresh", 0.05),
    ("warning_stale", 0.06),
    ("critical_stale", 0.05),
    ("never_succeeded_old", 0.03),
    ("never_succeeded_new", 0.03),
    ("disabled", 0.04),
)
_PARAGON_MIX: Final = (
    ("errored", 0.08),
    ("disabled", 0.06),
    ("initializing_stuck", 0.05),
    ("initializing_fresh", 0.06),
)
_PARAGON_PAIRS: Final = (
    ("salesforce", "contacts"),
    ("salesforce", "deals"),
    ("hubspot", "contacts"),
    ("hubspot", "deals"),
    ("googledrive", "files"),
    ("notion", "files"),
    ("jira", "tickets"),
    ("zendesk", "tickets"),
    ("dropbox", "files"),
)
_CONFIGURATION_NAMES: Final = ("Default", "EU workspace", "Sales team", "Support backfill", "Prod")
_ERROR_REASONS: Final = (
    "Credential ID {credential} is no longer valid or has been deleted.",
    "Rate limit exceeded by the integration provider.",
    "Permission denied: the connected account lost access to the object.",
    "The integration provider returned HTTP 500 on 5 consecutive attempts.",
)
_HEALTHY: Final = "healthy"
_CHURN: Final = "churn"


@dataclass(frozen=True)
class SimConfig:
    """The simulated fleet, its clock, its credentials and its added latency."""

    orgs: int = 3
    syncs_per_org: int = 10
    users: int = 3
    syncs_per_user: int = 3
    seed: int = 0
    time_scale: float = 1.0
    churn: float = 0.1
    timbal_api_key: str = "sim-timbal-key"
    paragon_static_token_prefix: str = "sim-paragon-token"  # noqa: S105 - a public demo value
    paragon_project_id: str = "sim-project"
    paragon_public_key_pem: bytes | None = None
    latency: float = 0.0

    def __post_init__(self) -> None:
        """Reject values the generator cannot honour."""
        for name in ("orgs", "syncs_per_org", "users", "syncs_per_user"):
            if getattr(self, name) < 0:
                raise ValueError(f"SimConfig.{name} must be >= 0")
        if self.time_scale < 0:
            raise ValueError("SimConfig.time_scale must be >= 0")
        if not 0.0 <= self.churn <= 1.0:
            raise ValueError("SimConfig.churn must be between 0 and 1")
        if self.latency < 0:
            raise ValueError("SimConfig.latency must be >= 0")


class ScaledClock:
    """Real UTC time at creation, then `scale` simulated seconds per real (monotonic) second."""

    def __init__(self, scale: float) -> None:
        self._start = datetime.now(UTC)
        self._t0 = time.monotonic()
        self._scale = scale

    def __call__(self) -> datetime:
        return self._start + timedelta(seconds=(time.monotonic() - self._t0) * self._scale)

    # The daemon's Clock: wall and monotonic both run `scale` times faster, so they agree.
    def wall(self) -> float:
        return self().timestamp()

    def monotonic(self) -> float:
        return time.monotonic() * self._scale

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds / self._scale)


def _dt(ts: int) -> datetime:
    """An epoch second as an aware UTC datetime (orjson renders it RFC 3339 with Z)."""
    return datetime.fromtimestamp(ts, UTC)


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_UTC_Z)


def _json(status: int, obj: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(_dumps(obj), status, headers, media_type=_JSON)


def _error(status: int, detail: str) -> Response:
    return _json(status, {"detail": detail})


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_dt(value: object) -> datetime | None:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


# ---------------------------------------------------------------------------------------------
# The fleet: generated once from the seed; every time-derived field is a pure function of now.


@dataclass(frozen=True, slots=True)
class _TimbalSpec:
    """One Timbal sync: its fixed fields, and how its run history depends on the clock."""

    org_id: str
    sync_id: str
    connector_id: str
    scenario: str
    fixed: dict[str, Any]
    interval: int
    created_age: int
    updated_age: int
    # Scheduled mode: a run starts every `interval` from `phase` and takes `run_secs`; runs
    # starting in the last `fail_window` seconds of each `period` fail (0 = always healthy).
    scheduled: bool = False
    period: int = 0
    fail_window: int = 0
    phase: int = 0
    run_secs: int = 0
    completed_state: str = "completed"
    # Frozen mode: constant ages, so the sync's state never changes (None = never happened).
    lag: int | None = None
    run_age: int | None = None
    last_state: str | None = None


@dataclass(frozen=True, slots=True)
class _ParagonSpec:
    """One Paragon sync: fixed fields, ages relative to now, and an optional error cycle."""

    user_id: str
    sync_id: str
    scenario: str
    integration: str
    pipeline: str
    credential_id: str
    configuration_name: str | None
    status: str
    reason: str | None
    created_age: int
    updated_age: int | None
    synced_age: int | None
    total_records: int
    # Churn: ACTIVE, then ERRORED for the last `error_window` seconds of every `period`.
    period: int = 0
    error_window: int = 0
    phase: int = 0
    reasons: tuple[str, ...] = ()


@dataclass(slots=True)
class _Connector:
    id: str
    kind: str
    ref: str
    schema: str
    tables: set[str]


def _deck(
    rng: random.Random, n: int, mix: tuple[tuple[str, float], ...], churn: float
) -> list[str]:
    """Scenario per sync: the mix in proportion (each at least once in a fleet big enough)."""
    counts = {name: round(share * n) for name, share in mix}
    if n >= 2 * len(mix):
        counts = {name: max(1, count) for name, count in counts.items()}
    deck = [name for name, count in counts.items() for _ in range(count)][:n]
    deck += [_HEALTHY] * (n - len(deck))
    rng.shuffle(deck)
    if churn > 0 and n > 0:
        wanted = min(n, max(1, round(churn * n)))
        # Churn takes healthy syncs first so the static mix above stays represented.
        healthy = [i for i, name in enumerate(deck) if name == _HEALTHY]
        others = [i for i, name in enumerate(deck) if name != _HEALTHY]
        chosen = rng.sample(healthy, min(wanted, len(healthy)))
        chosen += rng.sample(others, wanted - len(chosen))
        for i in chosen:
            deck[i] = _CHURN
    return deck


def _connector(rng: random.Random, org: str, k: int) -> _Connector:
    kind = rng.choice(_SOURCE_KINDS)
    return _Connector(
        id=f"conn_{org}_{k}",
        kind=kind,
        ref=f"cref_{rng.getrandbits(40):010x}",
        schema=rng.choice(_SCHEMAS[kind]),
        tables=set(),
    )


def _table(rng: random.Random, connector: _Connector) -> str:
    free = [t for t in _TABLES if t not in connector.tables]
    table = rng.choice(free) if free else f"{rng.choice(_TABLES)}_{len(connector.tables) + 1}"
    connector.tables.add(table)
    return table


def _timbal_spec(
    rng: random.Random, org: str, sync_id: str, connector: _Connector, scenario: str
) -> _TimbalSpec:
    table = _table(rng, connector)
    interval = rng.choice(_INTERVALS)
    created_age = rng.randint(3 * DAY, 400 * DAY)
    enabled = True
    mode: dict[str, Any] = {}
    lag: int | None = None
    # Every value is kept far from a threshold: a state never flips on a minute of drift.
    if scenario == _HEALTHY:
        mode = {
            "scheduled": True,
            "period": interval,
            "phase": rng.randrange(interval),
            "run_secs": rng.randint(2, max(2, interval // 10)),
            "completed_state": "completed_with_warnings" if rng.random() < 0.1 else "completed",
        }
    elif scenario == _CHURN:
        # Warning needs lag >= 300 at ratio 1.5, so the interval must be at least 200 s.
        interval = rng.choice((300, 900, 900))
        period = rng.choice((2 * HOUR, 3 * HOUR))
        mode = {
            "scheduled": True,
            "period": period,
            "fail_window": HOUR,
            "phase": rng.randrange(period),
            "run_secs": rng.randint(5, 30),
        }
    elif scenario == "failed_but_fresh":
        lag = max(1, round(interval * rng.uniform(0.2, 0.8)))
        mode = {"run_age": rng.randint(0, lag - 1), "last_state": "failed"}
    elif scenario == "warning_stale":
        interval = rng.choice((300, 900, 3600))
        lag = round(interval * rng.uniform(1.9, 2.4))
        mode = {
            "run_age": rng.randint(30, interval),
            "last_state": rng.choice(("failed", "failed", "running", "paused_by_quota")),
        }
    elif scenario == "critical_stale":
        lag = max(round(interval * rng.uniform(4.0, 30.0)), 900)
        mode = {
            "run_age": rng.randint(30, min(lag - 1, 2 * interval)),
            "last_state": rng.choice(("failed", "failed", "paused_by_quota", "source_unreachable")),
        }
    elif scenario == "never_succeeded_old":
        created_age = rng.randint(2 * DAY, 20 * DAY)
        state = rng.choice(("failed", "failed", "queued", None))
        mode = {"run_age": None if state is None else rng.randint(30, HOUR), "last_state": state}
    elif scenario == "never_succeeded_new":
        created_age = rng.randint(5, 180)
        state = rng.choice((None, "running", "queued"))
        mode = {
            "run_age": None if state is None else rng.randint(0, created_age),
            "last_state": state,
        }
    elif scenario == "disabled":
        enabled = False
        lag = rng.choice((None, rng.randint(DAY, 30 * DAY)))
        mode = {
            "run_age": rng.randint(DAY, 30 * DAY) if lag is None else lag,
            "last_state": rng.choice(("completed", "failed", "disabled")),
        }
    else:  # pragma: no cover - the deck only holds the names above
        raise AssertionError(scenario)
    if scenario != "never_succeeded_new":
        created_age = max(created_age, (lag or 0) + DAY, (mode.get("run_age") or 0) + DAY)
    updated_age = created_age if scenario == "never_succeeded_new" else rng.randint(60, created_age)
    name = f"{table.replace('_', ' ').title()} from {connector.kind}"
    fixed = {
        "id": sync_id,
        "name": name if rng.random() < 0.85 else None,
        "connector_id": connector.id,
        "source_kind": connector.kind,
        "connection_ref": connector.ref,
        "source_schema": connector.schema,
        "source_table": table,
        "cursor_column": rng.choice(_CURSORS),
        "kb_uid": f"kb_{rng.getrandbits(48):012x}",
        "dest_table": f"{connector.schema.lower()}_{table}",
        "interval_secs": interval,
        "enabled": enabled,
    }
    return _TimbalSpec(
        org_id=org,
        sync_id=sync_id,
        connector_id=connector.id,
        scenario=scenario,
        fixed=fixed,
        interval=interval,
        created_age=created_age,
        updated_age=updated_age,
        lag=lag,
        **mode,
    )


def _generate_timbal(config: SimConfig, rng: random.Random) -> list[_TimbalSpec]:
    per_org = config.syncs_per_org
    deck = _deck(rng, config.orgs * per_org, _TIMBAL_MIX, config.churn)
    specs: list[_TimbalSpec] = []
    for o in range(config.orgs):
        org = f"org_{o + 1:04d}"
        count = max(1, min(rng.randint(2, 5), per_org))
        connectors = [_connector(rng, org, k + 1) for k in range(count)]
        for s in range(per_org):
            # The first syncs go one per connector so that every connector lists something.
            connector = connectors[s] if s < count else rng.choice(connectors)
            sync_id = f"sync_{org}_{s + 1:03d}"
            specs.append(_timbal_spec(rng, org, sync_id, connector, deck[o * per_org + s]))
    return specs


def _paragon_spec(
    rng: random.Random,
    user: str,
    sync_id: str,
    pair: tuple[str, str],
    *,
    credential: str,
    scenario: str,
) -> _ParagonSpec:
    created_age = rng.randint(3 * DAY, 300 * DAY)
    status = "ACTIVE"
    reason: str | None = None
    updated_age: int | None = rng.randint(MINUTE, 5 * DAY)
    synced_age: int | None = None
    total = rng.randint(50, 250_000)
    churn: dict[str, Any] = {}
    if scenario == _HEALTHY:
        if rng.random() < 0.6:
            scenario, synced_age = "active", rng.randint(30, 15 * MINUTE)
        else:
            scenario, status, synced_age = "idle", "IDLE", rng.randint(HOUR, 20 * HOUR)
        if rng.random() < 0.1:
            updated_age = None  # optional upstream; clients must cope without it
    elif scenario == _CHURN:
        period = rng.choice((2 * HOUR, 3 * HOUR))
        reasons = [r.format(credential=credential) for r in _ERROR_REASONS]
        rng.shuffle(reasons)
        churn = {
            "period": period,
            "error_window": 40 * MINUTE,
            "phase": rng.randrange(period),
            "reasons": tuple(reasons),
        }
    elif scenario == "errored":
        status = "ERRORED"
        reason = rng.choice(_ERROR_REASONS).format(credential=credential)
        updated_age = rng.randint(10 * MINUTE, 3 * DAY)
        synced_age = updated_age + rng.randint(MINUTE, HOUR)
    elif scenario == "disabled":
        status = "DISABLED"
        updated_age = rng.randint(DAY, 30 * DAY)
        synced_age = updated_age + rng.randint(MINUTE, DAY)
    elif scenario in ("initializing_stuck", "initializing_fresh"):
        status = "INITIALIZING"
        stuck = scenario == "initializing_stuck"
        created_age = (
            rng.randint(6 * HOUR, 48 * HOUR) if stuck else rng.randint(MINUTE, 20 * MINUTE)
        )
        updated_age, total = created_age, 0
    else:  # pragma: no cover - the deck only holds the names above
        raise AssertionError(scenario)
    if synced_age is not None:
        created_age = max(created_age, synced_age + DAY)
    if updated_age is not None:
        updated_age = min(updated_age, created_age)
    # Older Paragon docs spelled statuses in lower case; a few syncs still do.
    if rng.random() < 0.1:
        status = status.lower()
    return _ParagonSpec(
        user_id=user,
        sync_id=sync_id,
        scenario=scenario,
        integration=pair[0],
        pipeline=pair[1],
        credential_id=credential,
        configuration_name=rng.choice(_CONFIGURATION_NAMES) if rng.random() < 0.7 else None,
        status=status,
        reason=reason,
        created_age=created_age,
        updated_age=updated_age,
        synced_age=synced_age,
        total_records=total,
        **churn,
    )


def _generate_paragon(config: SimConfig, rng: random.Random) -> list[_ParagonSpec]:
    per_user = config.syncs_per_user
    deck = _deck(rng, config.users * per_user, _PARAGON_MIX, config.churn)
    specs: list[_ParagonSpec] = []
    for u in range(config.users):
        user = f"user-{u + 1:04d}"
        if per_user <= len(_PARAGON_PAIRS):
            pairs = rng.sample(_PARAGON_PAIRS, per_user)
        else:
            pairs = [rng.choice(_PARAGON_PAIRS) for _ in range(per_user)]
        # One credential per connected integration account, shared by its syncs.
        credentials: dict[str, str] = {}
        for s, pair in enumerate(pairs):
            if pair[0] not in credentials:
                credentials[pair[0]] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            sync_id = f"psync_{user}_{s + 1:02d}"
            scenario = deck[u * per_user + s]
            specs.append(
                _paragon_spec(
                    rng, user, sync_id, pair, credential=credentials[pair[0]], scenario=scenario
                )
            )
    # A fleet big enough to matter always exercises the lower-case spelling once.
    static = [i for i, s in enumerate(specs) if s.scenario in ("active", "idle")]
    if len(specs) >= 6 and static and not any(s.status.islower() for s in specs):
        i = static[0]
        specs[i] = dataclasses.replace(specs[i], status=specs[i].status.lower())
    return specs


# ---------------------------------------------------------------------------------------------
# Views: the upstream JSON of one sync at one simulated second.


def _run_history(spec: _TimbalSpec, now: int) -> tuple[int, int, str]:
    """(last run start, last success end, last_state) of a scheduled sync at `now`."""
    interval = spec.interval
    started = now - (now - spec.phase) % interval
    running = now - started < spec.run_secs
    done = started - interval if running else started
    offset = (done - spec.phase) % spec.period
    ok_window = spec.period - spec.fail_window
    succeeded = offset < ok_window
    # Inside the failing window the last success is the last run before it began.
    success = done if succeeded else done - offset + ok_window - interval
    state = "running" if running else (spec.completed_state if succeeded else "failed")
    return started, success + spec.run_secs, state


def _timbal_view(spec: _TimbalSpec, now: int) -> dict[str, Any]:
    last_run: int | None
    last_success: int | None
    state: str | None
    if spec.scheduled:
        last_run, last_success, state = _run_history(spec, now)
    else:
        last_run = None if spec.run_age is None else now - spec.run_age
        last_success = None if spec.lag is None else now - spec.lag
        state = spec.last_state
    view = dict(spec.fixed)
    view["has_cursor"] = last_success is not None
    view["last_run_at"] = None if last_run is None else _dt(last_run)
    view["last_state"] = state
    view["last_success_at"] = None if last_success is None else _dt(last_success)
    view["seconds_since_success"] = None if last_success is None else now - last_success
    view["created_at"] = _dt(now - spec.created_age)
    view["updated_at"] = _dt(now - spec.updated_age)
    return view


def _paragon_view(spec: _ParagonSpec, now: int, detail: bool) -> dict[str, Any]:
    status, reason = spec.status, spec.reason
    updated_age, synced_age = spec.updated_age, spec.synced_age
    if spec.period:
        offset = (now - spec.phase) % spec.period
        ok_window = spec.period - spec.error_window
        if offset < ok_window:
            status, reason = "ACTIVE", None
            updated_age, synced_age = offset, offset % (10 * MINUTE)
        else:
            cycle = (now - spec.phase) // spec.period
            status, reason = "ERRORED", spec.reasons[cycle % len(spec.reasons)]
            updated_age = offset - ok_window
            synced_age = updated_age + 2 * MINUTE
    view: dict[str, Any] = {
        "id": spec.sync_id,
        "integration": spec.integration,
        "pipeline": spec.pipeline,
        "status": status,
    }
    if reason is not None:
        view["reason"] = reason
    if spec.configuration_name is not None:
        view["configurationName"] = spec.configuration_name
    view["dateCreated"] = _dt(now - spec.created_age)
    if updated_age is not None:
        view["dateUpdated"] = _dt(now - updated_age)
    view["credentialId"] = spec.credential_id
    if detail:
        view["summary"] = {
            "lastSyncedAt": None if synced_age is None else _dt(now - synced_age),
            "totalRecords": spec.total_records,
        }
    return view


def _apply_timbal_override(view: dict[str, Any], override: Mapping[str, Any], now: int) -> None:
    view.update(override)
    # Keep the pair consistent unless the test set both on purpose.
    if "seconds_since_success" in override and "last_success_at" not in override:
        lag = override["seconds_since_success"]
        if lag is None:
            view["last_success_at"] = None
        elif _is_int(lag):
            view["last_success_at"] = _dt(now - lag)


def _apply_paragon_override(
    view: dict[str, Any], override: Mapping[str, Any], detail: bool
) -> None:
    view.update({k: v for k, v in override.items() if k != "summary" or detail})
    status = override.get("status")
    # Upstream sends `reason` only with ERRORED; a recovered sync loses it.
    if isinstance(status, str) and status.upper() != "ERRORED" and "reason" not in override:
        view.pop("reason", None)


def _timbal_intended(view: Mapping[str, Any], now: datetime) -> tuple[str, str | None]:
    """The state and alertname the default thresholds give one Timbal SyncView."""
    enabled = view.get("enabled")
    interval = view.get("interval_secs")
    if not isinstance(enabled, bool) or not _is_int(interval) or interval <= 0:
        return "invalid", None
    if not enabled:
        return "disabled", None
    lag_value = view.get("seconds_since_success")
    if lag_value is None:
        created = _parse_dt(view.get("created_at"))
        if created is None:
            return "invalid", None
        lag = max(0.0, (now - created).total_seconds())
        alertname = "SyncNeverSucceeded"
    elif _is_int(lag_value) and lag_value >= 0:
        lag, alertname = float(lag_value), "SyncStale"
    else:
        return "invalid", None
    ratio = lag / interval
    if lag < MIN_STALE_SECONDS or ratio < WARN_RATIO:
        return "ok", None
    return ("critical" if ratio >= CRITICAL_RATIO else "warning"), alertname


def _paragon_intended(view: Mapping[str, Any], now: datetime) -> tuple[str, str | None]:
    """The state and alertname the default Paragon rules give one sync."""
    status = view.get("status")
    if not isinstance(status, str):
        return "invalid", None
    status = status.strip().upper()
    if status == "ERRORED":
        return "critical", "SyncErrored"
    if status == "DISABLED":
        return "warning", "SyncDisabled"
    if status == "INITIALIZING":
        raw = view.get("dateCreated")
        if raw is None:
            return "ok", None
        created = _parse_dt(raw)
        if created is None:
            return "invalid", None
        if (now - created).total_seconds() > INITIALIZING_GRACE:
            return "warning", "SyncStuckInitializing"
        return "ok", None
    if status in ("ACTIVE", "IDLE"):
        return "ok", None
    return "unknown", None


# ---------------------------------------------------------------------------------------------
# Faults and mutations.


@dataclass(slots=True)
class _Fault:
    source: str
    tenant: str
    kind: str
    remaining: int | None = None
    retry_after: float | None = None
    delay: float | None = None
    status: int | None = None
    variant: str | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "tenant": self.tenant,
            "kind": self.kind,
            "count": self.remaining,
            "retry_after": self.retry_after,
            "delay": self.delay,
            "status": self.status,
            "variant": self.variant,
        }


class _NotFoundError(Exception):
    pass


def _number(payload: Mapping[str, Any], key: str) -> float | None:
    value = payload.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{key} must be a number >= 0")
    return float(value)


def _parse_fault(payload: Any) -> _Fault:
    if not isinstance(payload, dict):
        raise ValueError("the body must be a JSON object")
    unknown = sorted(set(payload) - _FAULT_KEYS)
    if unknown:
        raise ValueError(f"unknown keys {unknown}; allowed: {sorted(_FAULT_KEYS)}")
    source = payload.get("source")
    if source not in (TIMBAL, PARAGON):
        raise ValueError("source must be 'timbal' or 'paragon'")
    kind = payload.get("kind")
    if kind not in FAULT_KINDS:
        raise ValueError(f"kind must be one of {sorted(FAULT_KINDS)}")
    tenant = payload.get("tenant", "*")
    if not isinstance(tenant, str) or not tenant:
        raise ValueError("tenant must be an org id, a user id or '*'")
    count = payload.get("count")
    if count is not None and (not _is_int(count) or count < 1):
        raise ValueError("count must be a positive integer (or absent: until cleared)")
    status = payload.get("status")
    if status is not None and (not _is_int(status) or not 200 <= status <= 599):
        raise ValueError("status must be an HTTP status code")
    variant = payload.get("variant")
    if variant is not None and variant not in POISON_VARIANTS[source]:
        raise ValueError(f"variant for {source} must be one of {list(POISON_VARIANTS[source])}")
    return _Fault(
        source=source,
        tenant=tenant,
        kind=kind,
        remaining=count,
        retry_after=_number(payload, "retry_after"),
        delay=_number(payload, "delay"),
        status=status,
        variant=variant,
    )


def _poison(views: list[dict[str, Any]], source: str, variant: str) -> str | None:
    """Break the first record in place; returns its sync id (None for an empty listing)."""
    if not views:
        return None
    record = views[0]
    sync_id = str(record.get("id", ""))
    if variant == "interval_negative":
        record["interval_secs"] = -5
    elif variant == "interval_zero":
        record["interval_secs"] = 0
    elif variant == "bad_date":
        record[_DATE_FIELD[source]] = "not-a-date"
    elif variant == "missing_id":
        record.pop("id", None)
    elif variant == "missing_status":
        record.pop("status", None)
    return sync_id


def _duplicate(views: list[dict[str, Any]], source: str, now: int) -> str | None:
    """Append a worse copy of the first record: Timbal 10 intervals stale, Paragon ERRORED."""
    if not views:
        return None
    copy = dict(views[0])
    if source == TIMBAL:
        interval = copy.get("interval_secs")
        lag = 10 * interval if _is_int(interval) and interval > 0 else 10 * HOUR
        copy.update(seconds_since_success=lag, last_success_at=_dt(now - lag), last_state="failed")
    else:
        copy.update(status="ERRORED", reason="duplicated by the simulator")
    views.append(copy)
    return str(copy.get("id", ""))


def _html_page(status: int) -> bytes:
    if status == 200:
        title, text = "Scheduled maintenance", "We'll be back shortly."
    else:
        title, text = f"{status} Bad Gateway", "nginx"
    return (
        f"<!DOCTYPE html>\n<html><head><title>{title}</title></head>"
        f"<body><center><h1>{title}</h1></center><hr><center>{text}</center></body></html>\n"
    ).encode()


async def _abort_connection(request: Request) -> bool:
    """Reset the client's TCP connection with no response; False when the server hides it."""
    send = request.scope.get(_RAW_SEND)
    # uvicorn's ASGI `send` is a method of the request cycle, which holds the transport.
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None or not hasattr(transport, "abort"):
        return False
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Linger 0 turns the close into a RST: the client sees "connection reset by peer".
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    # Let uvicorn see the connection lost, so it discards our response instead of logging.
    for _ in range(3):
        await asyncio.sleep(0)
    return True


# ---------------------------------------------------------------------------------------------
# The simulator: state and request handlers.


class _Simulator:
    """The fleet, faults, mutations and request counters behind one app (one event loop)."""

    def __init__(self, config: SimConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        # A simulation, not cryptography: reproducible pseudo-randomness is the point.
        master = random.Random(config.seed)  # noqa: S311
        # Separate streams: resizing the Paragon fleet leaves the Timbal fleet unchanged.
        timbal_rng = random.Random(master.getrandbits(64))  # noqa: S311
        paragon_rng = random.Random(master.getrandbits(64))  # noqa: S311
        self.timbal = _generate_timbal(config, timbal_rng)
        self.paragon = _generate_paragon(config, paragon_rng)
        self.orgs = [f"org_{o + 1:04d}" for o in range(config.orgs)]
        self.users = [f"user-{u + 1:04d}" for u in range(config.users)]
        self.timbal_by_org: dict[str, list[_TimbalSpec]] = {org: [] for org in self.orgs}
        for t in self.timbal:
            self.timbal_by_org[t.org_id].append(t)
        self.timbal_by_id = {t.sync_id: t for t in self.timbal}
        self.paragon_by_user: dict[str, list[_ParagonSpec]] = {user: [] for user in self.users}
        for p in self.paragon:
            self.paragon_by_user[p.user_id].append(p)
        self.paragon_by_id = {p.sync_id: p for p in self.paragon}

        self.overrides: dict[tuple[str, str], dict[str, Any]] = {}
        self.deleted: set[tuple[str, str]] = set()
        self.faults: list[_Fault] = []
        self.requests: dict[str, dict[str, int]] = {TIMBAL: {}, PARAGON: {}}
        # Listing bodies per simulated second: all time fields have one-second resolution.
        self._cache: dict[tuple[str, str, str | None], tuple[int, bytes]] = {}
        self._timbal_key = config.timbal_api_key.encode()
        prefix = config.paragon_static_token_prefix
        self._static_prefix = f"{prefix}:" if prefix else None
        self._public_key = _load_public_key(config.paragon_public_key_pem)
        self._audience = f"useparagon.com/{config.paragon_project_id}"
        self._jwt_cache: dict[str, tuple[str, float]] = {}
        # One event per event loop: an app may be served by more than one (e.g. TestClient).
        self._closing: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        self._date: tuple[int, bytes] = (-1, b"")

    def routes(self) -> list[Route]:
        return [
            Route("/orgs/{org_id}/connectors/syncs", self.timbal_list, methods=["GET"]),
            Route("/api/syncs", self.paragon_list, methods=["GET"]),
            Route("/api/syncs/{sync_id}", self.paragon_get, methods=["GET"]),
            Route("/_sim/health", self.health, methods=["GET"]),
            Route("/_sim/fleet", self.fleet, methods=["GET"]),
            Route("/_sim/requests", self.request_counts, methods=["GET", "DELETE"]),
            Route("/_sim/faults", self.fault_control, methods=["GET", "POST", "DELETE"]),
            Route("/_sim/mutate", self.mutate, methods=["POST", "DELETE"]),
        ]

    def begin_shutdown(self) -> None:
        """Wake every fault that is sleeping, so a server shutdown stays bounded."""
        self._closing_event().set()

    def _closing_event(self) -> asyncio.Event:
        loop = asyncio.get_running_loop()
        if self._closing is None or self._closing[0] is not loop:
            self._closing = (loop, asyncio.Event())
        return self._closing[1]

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

    async def _pause(self, seconds: float) -> None:
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing_event().wait(), seconds)

    def _count(self, source: str, tenant: str) -> None:
        counts = self.requests[source]
        counts[tenant] = counts.get(tenant, 0) + 1

    def _take_fault(self, source: str, tenant: str) -> _Fault | None:
        """The oldest matching fault (faults queue up); a counted one is used up here."""
        if not self.faults:
            return None
        index = next(
            (
                i
                for i, f in enumerate(self.faults)
                if f.source == source and f.tenant in ("*", tenant)
            ),
            None,
        )
        if index is None:
            return None
        fault = self.faults[index]
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                del self.faults[index]
        return fault

    def _cached(self, key: tuple[str, str, str | None], now: int) -> bytes | None:
        hit = self._cache.get(key)
        return hit[1] if hit is not None and hit[0] == now else None

    def _store(self, key: tuple[str, str, str | None], now: int, body: bytes) -> bytes:
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[key] = (now, body)
        return body

    # -- views with mutations applied ---------------------------------------------------------

    def timbal_view(self, spec: _TimbalSpec, now: int) -> dict[str, Any]:
        view = _timbal_view(spec, now)
        override = self.overrides.get((TIMBAL, spec.sync_id))
        if override:
            _apply_timbal_override(view, override, now)
        return view

    def timbal_views(self, org: str, connector: str | None, now: int) -> list[dict[str, Any]]:
        views = []
        for spec in self.timbal_by_org.get(org, ()):
            if (TIMBAL, spec.sync_id) in self.deleted:
                continue
            view = self.timbal_view(spec, now)
            if connector is None or view.get("connector_id") == connector:
                views.append(view)
        return views

    def paragon_view(self, spec: _ParagonSpec, now: int, detail: bool) -> dict[str, Any]:
        view = _paragon_view(spec, now, detail)
        override = self.overrides.get((PARAGON, spec.sync_id))
        if override:
            _apply_paragon_override(view, override, detail)
        return view

    def paragon_views(self, user: str, credential: str | None, now: int) -> list[dict[str, Any]]:
        views = []
        for spec in self.paragon_by_user.get(user, ()):
            if (PARAGON, spec.sync_id) in self.deleted:
                continue
            view = self.paragon_view(spec, now, detail=False)
            if credential is None or view.get("credentialId") == credential:
                views.append(view)
        return views

    # -- the upstream APIs ----------------------------------------------------------------------

    async def timbal_list(self, request: Request) -> Response:
        org: str = request.path_params["org_id"]
        self._count(TIMBAL, org)
        if self.config.latency:
            await asyncio.sleep(self.config.latency)
        auth = request.headers.get("authorization")
        if auth is None:
            return _error(401, "unauthorized")
        scheme, _, presented = auth.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode(), self._timbal_key
        ):
            return _error(403, "forbidden")
        fault = self._take_fault(TIMBAL, org)
        if org not in self.timbal_by_org:
            return await self._respond(request, fault, 404, _dumps({"detail": "org not found"}))
        connector = request.query_params.get("connector_id")
        if fault is not None and fault.kind == "ignore_filter":
            connector = None
        now = self.now()
        if fault is not None and fault.kind in ("poison", "duplicate"):
            views = self.timbal_views(org, connector, now)
            if fault.kind == "poison":
                broken = _poison(views, TIMBAL, fault.variant or POISON_VARIANTS[TIMBAL][0])
            else:
                broken = _duplicate(views, TIMBAL, now)
            body = _dumps({"syncs": views})
            return await self._respond(request, fault, 200, body, broken)
        key = (TIMBAL, org, connector)
        body = self._cached(key, now) or self._store(
            key, now, _dumps({"syncs": self.timbal_views(org, connector, now)})
        )
        return await self._respond(request, fault, 200, body)

    def _paragon_user(self, request: Request) -> tuple[str, Response | None]:
        """The user the request is for (a best guess when auth fails), or the auth error."""
        header = request.headers.get("authorization")
        scheme, _, token = (header or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return "-", _error(401, "missing bearer token")
        if self._static_prefix is not None and token.startswith(self._static_prefix):
            user = token[len(self._static_prefix) :]
        else:
            user, denied = self._verify_jwt(token)
            if denied is not None:
                return user, denied
        if user not in self.paragon_by_user:
            return user, _error(403, "forbidden: unknown user")
        return user, None

    def _verify_jwt(self, token: str) -> tuple[str, Response | None]:
        cached = self._jwt_cache.get(token)
        # `exp` is real time: the client mints tokens with its own clock, not the simulated one.
        if cached is not None:
            if cached[1] > time.time():
                return cached[0], None
            del self._jwt_cache[token]
            return cached[0], _error(401, "token expired")
        if self._public_key is None:
            return _unverified_sub(token), _error(401, "invalid token")
        try:
            claims = jwt.decode(
                token,
                self._public_key,
                algorithms=["RS256"],
                audience=self._audience,
                options={"require": ["exp", "iat", "sub", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            return _unverified_sub(token), _error(401, "token expired")
        except jwt.InvalidTokenError:
            return _unverified_sub(token), _error(401, "invalid token")
        sub = claims["sub"]
        if len(self._jwt_cache) >= _JWT_CACHE_MAX:
            self._jwt_cache.clear()
        self._jwt_cache[token] = (sub, float(claims["exp"]))
        return sub, None

    async def paragon_list(self, request: Request) -> Response:
        user, denied = self._paragon_user(request)
        self._count(PARAGON, user)
        if self.config.latency:
            await asyncio.sleep(self.config.latency)
        if denied is not None:
            return denied
        fault = self._take_fault(PARAGON, user)
        credential = request.query_params.get("credentialId")
        if fault is not None and fault.kind == "ignore_filter":
            credential = None
        now = self.now()
        if fault is not None and fault.kind in ("poison", "duplicate"):
            views = self.paragon_views(user, credential, now)
            if fault.kind == "poison":
                broken = _poison(views, PARAGON, fault.variant or POISON_VARIANTS[PARAGON][0])
            else:
                broken = _duplicate(views, PARAGON, now)
            return await self._respond(request, fault, 200, _dumps({"data": views}), broken)
        key = (PARAGON, user, credential)
        body = self._cached(key, now) or self._store(
            key, now, _dumps({"data": self.paragon_views(user, credential, now)})
        )
        return await self._respond(request, fault, 200, body)

    async def paragon_get(self, request: Request) -> Response:
        user, denied = self._paragon_user(request)
        self._count(PARAGON, user)
        if self.config.latency:
            await asyncio.sleep(self.config.latency)
        if denied is not None:
            return denied
        fault = self._take_fault(PARAGON, user)
        sync_id: str = request.path_params["sync_id"]
        spec = self.paragon_by_id.get(sync_id)
        # Another user's sync is as invisible as a missing one.
        if spec is None or spec.user_id != user or (PARAGON, sync_id) in self.deleted:
            return await self._respond(request, fault, 404, _dumps({"detail": "sync not found"}))
        view = self.paragon_view(spec, self.now(), detail=True)
        broken = None
        if fault is not None and fault.kind == "poison":
            broken = _poison([view], PARAGON, fault.variant or POISON_VARIANTS[PARAGON][0])
        return await self._respond(request, fault, 200, _dumps(view), broken)

    async def _respond(
        self,
        request: Request,
        fault: _Fault | None,
        status: int,
        body: bytes,
        poisoned: str | None = None,
    ) -> Response:
        """The normal answer, or what the fault turns it into."""
        if fault is None:
            return Response(body, status, media_type=_JSON)
        headers = {"X-Sim-Fault": fault.kind}
        kind = fault.kind
        if kind in _HTTP_FAULTS:
            code, detail = _HTTP_FAULTS[kind]
            if kind == "http_429" or (kind == "http_503" and fault.retry_after is not None):
                retry_after = 1.0 if fault.retry_after is None else fault.retry_after
                headers["Retry-After"] = str(math.ceil(retry_after))
            return _json(code, {"detail": detail}, headers)
        if kind == "timeout":
            delay = _DEFAULT_TIMEOUT_DELAY if fault.delay is None else fault.delay
            await self._pause(delay)
            return Response(body, status, headers, media_type=_JSON)
        if kind == "slow_body":
            delay = _DEFAULT_SLOW_BODY_DELAY if fault.delay is None else fault.delay
            return StreamingResponse(self._trickle(body, delay), status, headers, _JSON)
        if kind == "reset":
            if await _abort_connection(request):
                return Response(b"", 500)  # the connection is gone; uvicorn drops this
            # Not served by uvicorn (no transport to abort): the closest is a cut-off body.
            headers["Connection"] = "close"
            return Response(body[: len(body) // 2], status, headers, media_type=_JSON)
        if kind == "truncated":
            return Response(body[: len(body) // 2], status, headers, media_type=_JSON)
        if kind == "html":
            code = fault.status or 502
            return Response(_html_page(code), code, headers, media_type="text/html")
        if kind == "wrong_shape":
            return Response(b'{"items":[]}', 200, headers, media_type=_JSON)
        # poison / duplicate: the caller already changed one record; say which.
        if poisoned is not None:
            headers["X-Sim-Duplicated" if kind == "duplicate" else "X-Sim-Poisoned"] = poisoned
        return Response(body, status, headers, media_type=_JSON)

    async def _trickle(self, body: bytes, seconds: float) -> AsyncIterator[bytes]:
        size = max(1, math.ceil(len(body) / _SLOW_BODY_CHUNKS))
        chunks = [body[i : i + size] for i in range(0, len(body), size)]
        for chunk in chunks:
            await self._pause(seconds / len(chunks))
            yield chunk

    # -- control endpoints ----------------------------------------------------------------------

    async def health(self, _request: Request) -> Response:
        return _json(200, {"ok": True})

    async def fleet(self, _request: Request) -> Response:
        now = self.now()
        moment = _dt(now)
        timbal = []
        for t in self.timbal:
            if (TIMBAL, t.sync_id) in self.deleted:
                continue
            view = self.timbal_view(t, now)
            intended, alertname = _timbal_intended(view, moment)
            timbal.append(
                {
                    "org_id": t.org_id,
                    "sync_id": t.sync_id,
                    "connector_id": view.get("connector_id"),
                    "scenario": t.scenario,
                    "intended": intended,
                    "alertname": alertname,
                }
            )
        paragon = []
        for p in self.paragon:
            if (PARAGON, p.sync_id) in self.deleted:
                continue
            view = self.paragon_view(p, now, detail=False)
            intended, alertname = _paragon_intended(view, moment)
            paragon.append(
                {
                    "user_id": p.user_id,
                    "sync_id": p.sync_id,
                    "credential_id": view.get("credentialId"),
                    "scenario": p.scenario,
                    "status": view.get("status"),
                    "intended": intended,
                    "alertname": alertname,
                }
            )
        return _json(
            200,
            {
                "now": moment,
                "orgs": self.orgs,
                "users": self.users,
                "timbal": timbal,
                "paragon": paragon,
            },
        )

    async def request_counts(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.requests = {TIMBAL: {}, PARAGON: {}}
        return _json(200, self.requests)

    async def fault_control(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.faults.clear()
        elif request.method == "POST":
            try:
                fault = _parse_fault(orjson.loads(await request.body()))
            except ValueError as exc:  # orjson.JSONDecodeError is a ValueError too
                return _error(400, str(exc))
            self.faults.append(fault)
        return _json(200, {"faults": [f.describe() for f in self.faults]})

    async def mutate(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.overrides.clear()
            self.deleted.clear()
        else:
            try:
                self._mutate(orjson.loads(await request.body()))
            except ValueError as exc:
                return _error(400, str(exc))
            except _NotFoundError as exc:
                return _error(404, str(exc))
        self._cache.clear()
        return _json(200, {"ok": True})

    def _mutate(self, payload: Any) -> None:
        if not isinstance(payload, dict):
            raise ValueError("the body must be a JSON object")
        source = payload.get("source")
        sync_id = payload.get("sync_id")
        owner: str | None
        if source == TIMBAL:
            timbal = self.timbal_by_id.get(sync_id) if isinstance(sync_id, str) else None
            owner = None if timbal is None else timbal.org_id
        elif source == PARAGON:
            paragon = self.paragon_by_id.get(sync_id) if isinstance(sync_id, str) else None
            owner = None if paragon is None else paragon.user_id
        else:
            raise ValueError("source must be 'timbal' or 'paragon'")
        tenant = payload.get("tenant")
        if owner is None or tenant not in (None, "*", owner):
            raise _NotFoundError(f"no {source} sync {sync_id!r} for tenant {tenant!r}")
        key = (source, str(sync_id))
        changes = payload.get("set")
        if "delete" in payload:
            if not isinstance(payload["delete"], bool):
                raise ValueError("delete must be true or false")
            if payload["delete"]:
                self.deleted.add(key)
            else:
                self.deleted.discard(key)
        elif isinstance(changes, dict) and changes:
            self.overrides.setdefault(key, {}).update(changes)
        else:
            raise ValueError("give 'set' (an object of upstream fields) or 'delete': true")


def _load_public_key(pem: bytes | None) -> RSAPublicKey | None:
    if pem is None:
        return None
    key = load_pem_public_key(pem)
    if not isinstance(key, RSAPublicKey):
        raise ValueError("paragon_public_key_pem must be an RSA public key (tokens are RS256)")
    return key


def _unverified_sub(token: str) -> str:
    """The `sub` of a token that failed verification: only to attribute the request."""
    try:
        sub = jwt.decode(token, options={"verify_signature": False}).get("sub")
    except jwt.InvalidTokenError:
        return "-"
    return sub if isinstance(sub, str) else "-"


# ---------------------------------------------------------------------------------------------
# The app and its servers.


class _SimApp(Starlette):
    """The simulator's Starlette app; it keeps the server's own `send` reachable."""

    def __init__(self, sim: _Simulator) -> None:
        super().__init__(routes=sim.routes())
        self.sim = sim

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Starlette's error middleware wraps `send`; the `reset` fault needs the original to
        # reach the connection's transport.
        scope[_RAW_SEND] = send
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return

        async def dated(message: Message) -> None:
            # uvicorn's own Date (real time, `date_header=False`) would contradict the
            # simulated clock the bodies are written in.
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", ()), (b"date", self.sim.http_date())]
                message = {**message, "headers": headers}
            await send(message)

        await super().__call__(scope, receive, dated)


def _build(config: SimConfig, clock: Clock | None) -> _SimApp:
    return _SimApp(_Simulator(config, clock or ScaledClock(config.time_scale)))


def build_app(config: SimConfig, clock: Callable[[], datetime] | None = None) -> Starlette:
    """The simulator app; `clock` (aware UTC datetimes) replaces the scaled real-time clock."""
    return _build(config, clock)


class _Server(uvicorn.Server):
    """uvicorn, returning on SIGTERM/SIGINT and waking sleeping faults when it shuts down."""

    def __init__(
        self, config: uvicorn.Config, sim: _Simulator, on_started: Callable[[], None] | None = None
    ) -> None:
        super().__init__(config)
        self._sim = sim
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self._on_started is not None:
            self._on_started()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._sim.begin_shutdown()
        await super().shutdown(sockets=sockets)

    def handle_exit(self, sig: int, _frame: FrameType | None) -> None:
        # uvicorn records the signal and re-raises it after shutdown; `serve` returns instead.
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


def _uvicorn_config(app: _SimApp, host: str, port: int, *, own_logging: bool) -> uvicorn.Config:
    extra: dict[str, Any] = {} if own_logging else {"log_config": None}
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        server_header=False,
        date_header=False,  # the app sends its own, from the simulated clock
        timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN,
        **extra,
    )


def serve(
    config: SimConfig, host: str, port: int, on_started: Callable[[int], None] | None = None
) -> None:
    """Serve the simulator until SIGTERM or SIGINT, then return; `on_started(port)` once up."""
    app = _build(config, None)
    server: _Server

    def started() -> None:
        if on_started is not None:
            on_started(_bound_port(server, port))

    server = _Server(_uvicorn_config(app, host, port, own_logging=True), app.sim, started)
    server.run()


def _bound_port(server: uvicorn.Server, asked: int) -> int:
    """The port really bound: the asked one, or the kernel's choice for port 0."""
    for listener in server.servers:
        for sock in listener.sockets:
            return int(sock.getsockname()[1])
    return asked


class SimulatorThread:
    """The simulator on its own event loop in a background thread (in-process demo, tests)."""

    def __init__(
        self,
        config: SimConfig,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.config = config
        self._host = host
        self._port = port
        self._app = _build(config, clock)
        self._started = threading.Event()
        # The host process owns logging; uvicorn only gets its level.
        uv_config = _uvicorn_config(self._app, host, port, own_logging=False)
        self._server = _Server(uv_config, self._app.sim, self._started.set)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def __enter__(self) -> SimulatorThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start serving; returns once the server accepts connections."""
        if self._thread is not None:
            raise RuntimeError("a SimulatorThread starts once")
        self._thread = threading.Thread(target=self._run, name="syncwatch-simulator", daemon=True)
        self._thread.start()
        if not self._started.wait(_START_TIMEOUT) or not self._server.started:
            self.stop()
            raise RuntimeError(
                f"the simulator did not start on {self._host}:{self._port}: {self._error!r}"
            )
        self._port = self._server.servers[0].sockets[0].getsockname()[1]

    def _run(self) -> None:
        try:
            with asyncio.Runner(loop_factory=self._server.config.get_loop_factory()) as runner:
                runner.run(self._server.serve())
        except BaseException as exc:
            # uvicorn exits (SystemExit) when it cannot bind; start() reports it.
            self._error = exc
        finally:
            self._started.set()

    @property
    def port(self) -> int:
        """The bound port (the real one once started, even when asked for port 0)."""
        return self._port

    @property
    def base_url(self) -> str:
        """The root URL of both simulated APIs."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    @property
    def app(self) -> Starlette:
        """The served app."""
        return self._app

    def stop(self) -> None:
        """Shut down and join the thread, forcing the exit if a graceful one overruns."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        self._server.should_exit = True
        thread.join(_STOP_TIMEOUT)
        if thread.is_alive():
            self._server.force_exit = True
            thread.join(_STOP_TIMEOUT)


def rsa_keypair() -> tuple[bytes, bytes]:
    """A fresh RS256 key pair (private PKCS8 PEM, public SPKI PEM) for minting user tokens."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public
