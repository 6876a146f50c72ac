"""The simulated fleet: every sync generated once from the seed, with how its history runs."""

from __future__ import annotations

import dataclasses
import random
import uuid
from dataclasses import dataclass
from typing import Any, Final

from syncwatch.simulator.config import SimConfig
from syncwatch.simulator.specs import ParagonSpec, TimbalSpec
from syncwatch.simulator.wire import DAY, HOUR, MINUTE

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
) -> TimbalSpec:
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
    return TimbalSpec(
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


def _generate_timbal(config: SimConfig, rng: random.Random) -> list[TimbalSpec]:
    per_org = config.syncs_per_org
    deck = _deck(rng, config.orgs * per_org, _TIMBAL_MIX, config.churn)
    specs: list[TimbalSpec] = []
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
) -> ParagonSpec:
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
    return ParagonSpec(
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


def _generate_paragon(config: SimConfig, rng: random.Random) -> list[ParagonSpec]:
    per_user = config.syncs_per_user
    deck = _deck(rng, config.users * per_user, _PARAGON_MIX, config.churn)
    specs: list[ParagonSpec] = []
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


@dataclass(frozen=True, slots=True)
class Fleet:
    """Every simulated sync, with its tenants and the indexes the handlers look them up by."""

    timbal: list[TimbalSpec]
    paragon: list[ParagonSpec]
    orgs: list[str]
    users: list[str]
    timbal_by_org: dict[str, list[TimbalSpec]]
    timbal_by_id: dict[str, TimbalSpec]
    paragon_by_user: dict[str, list[ParagonSpec]]
    paragon_by_id: dict[str, ParagonSpec]


def generate_fleet(config: SimConfig) -> Fleet:
    """The fleet `config` describes; the same seed always gives the same fleet."""
    # A simulation, not cryptography: reproducible pseudo-randomness is the point.
    master = random.Random(config.seed)  # noqa: S311
    # Separate streams: resizing the Paragon fleet leaves the Timbal fleet unchanged.
    timbal_rng = random.Random(master.getrandbits(64))  # noqa: S311
    paragon_rng = random.Random(master.getrandbits(64))  # noqa: S311
    timbal = _generate_timbal(config, timbal_rng)
    paragon = _generate_paragon(config, paragon_rng)
    if config.epoch:
        timbal = [dataclasses.replace(t, phase=t.phase + config.epoch) for t in timbal]
        paragon = [dataclasses.replace(p, phase=p.phase + config.epoch) for p in paragon]
    orgs = [f"org_{o + 1:04d}" for o in range(config.orgs)]
    users = [f"user-{u + 1:04d}" for u in range(config.users)]
    timbal_by_org: dict[str, list[TimbalSpec]] = {org: [] for org in orgs}
    for t in timbal:
        timbal_by_org[t.org_id].append(t)
    paragon_by_user: dict[str, list[ParagonSpec]] = {user: [] for user in users}
    for p in paragon:
        paragon_by_user[p.user_id].append(p)
    return Fleet(
        timbal=timbal,
        paragon=paragon,
        orgs=orgs,
        users=users,
        timbal_by_org=timbal_by_org,
        timbal_by_id={t.sync_id: t for t in timbal},
        paragon_by_user=paragon_by_user,
        paragon_by_id={p.sync_id: p for p in paragon},
    )
