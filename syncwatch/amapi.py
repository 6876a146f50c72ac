"""The Alertmanager v2 API subset that amtool, Grafana and karma use, over our silences.

Shapes follow prometheus/alertmanager `api/v2/openapi.yaml` (a copy of the parts used is in
tests/fixtures/alertmanager/openapi.yaml). Alerts are syncwatch's firing alerts; their
`status` comes from a Muter over the stored silences at request time. Writes are accepted
only from a client `may_write` admits (by default a loopback one).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from syncwatch.config import NotifierConfig
from syncwatch.lifecycle import Alert
from syncwatch.routing import routes as admits
from syncwatch.silence_store import SilenceNotFoundError, SilenceStore
from syncwatch.silences import Matcher, Muter, Silence, SilenceState, problems

log = structlog.get_logger("syncwatch.amapi")

# A firing alert's endsAt is this many poll intervals after its last cycle, as we push it.
ENDS_AT_CYCLES = 3
UNROUTED = "none"  # the group receiver of alerts no notifier routes (Alertmanager has a default)
MAX_BODY = 256 * 1024  # bytes of one POSTed silence: far beyond any real one, bounds memory
_GO_ZERO_YEAR = 1  # Go's zero time (0001-01-01): amtool's way of saying "not set"


def loopback_only(request: Request) -> bool:
    """Until authentication is configured, only this host may write (never the network)."""
    host = request.client.host if request.client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


@dataclass
class ApiContext:
    """What the API reads from the daemon; callables, so a SIGHUP's new config is seen."""

    silences: SilenceStore
    alerts: Callable[[], Sequence[Alert]]
    notifiers: Callable[[], Sequence[NotifierConfig]] = tuple
    now: Callable[[], datetime] = lambda: datetime.now(UTC)
    last_cycle: Callable[[], float | None] = lambda: None
    poll_interval: Callable[[], float] = lambda: 60.0
    external_url: Callable[[], str] = str
    # What else mutes alerts (maintenance windows), read per request so a SIGHUP is seen;
    # shown in `status.mutedBy`, as Alertmanager shows its mute time intervals.
    muters: Callable[[], Sequence[Muter]] = tuple
    may_write: Callable[[Request], bool] = loopback_only
    version: str = "0"
    started: datetime = field(default_factory=lambda: datetime.now(UTC))


class BadRequestError(ValueError):
    """The request is malformed; the message is the 400 body."""


# --- wire formats ---------------------------------------------------------------------


def rfc3339(value: datetime) -> str:
    """strfmt.DateTime's format: RFC 3339 with milliseconds, UTC."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: object, key: str) -> datetime | None:
    """An RFC 3339 time; None for Go's zero time or a missing value."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadRequestError(f"{key} must be an RFC 3339 date-time string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequestError(f"{key}: {value!r} is not an RFC 3339 date-time") from None
    if parsed.tzinfo is None:
        raise BadRequestError(f"{key}: {value!r} has no time zone offset")
    return None if parsed.year == _GO_ZERO_YEAR else parsed.astimezone(UTC)


def silence_json(s: Silence, now: datetime) -> dict[str, object]:
    """A gettableSilence."""
    return {
        "id": s.id,
        "status": {"state": str(s.state(now))},
        "updatedAt": rfc3339(s.updated_at),
        "matchers": [
            {"name": m.name, "value": m.value, "isRegex": m.is_regex, "isEqual": m.is_equal}
            for m in s.matchers
        ],
        "startsAt": rfc3339(s.starts_at),
        "endsAt": rfc3339(s.ends_at),
        "createdBy": s.created_by,
        "comment": s.comment,
        "annotations": {},
    }


def postable_silence(body: object, now: datetime) -> Silence:
    """A postableSilence as a Silence (id "" when new); BadRequestError when malformed."""
    if not isinstance(body, dict):
        raise BadRequestError("the body must be a JSON object (a postableSilence)")
    raw = body.get("matchers")
    if not isinstance(raw, list):
        raise BadRequestError("matchers must be a list of matcher objects")
    matchers = tuple(_matcher(m, i) for i, m in enumerate(raw))
    silence_id = body.get("id") or ""
    created_by, comment = body.get("createdBy", ""), body.get("comment", "")
    for key, value in (("id", silence_id), ("createdBy", created_by), ("comment", comment)):
        if not isinstance(value, str):
            raise BadRequestError(f"{key} must be a string")
    starts = parse_time(body.get("startsAt"), "startsAt") or now
    ends = parse_time(body.get("endsAt"), "endsAt")
    if ends is None:
        raise BadRequestError("endsAt is required")
    return Silence(str(silence_id), matchers, starts, ends, str(created_by), str(comment), now)


def _matcher(raw: object, index: int) -> Matcher:
    where = f"matchers[{index}]"
    if not isinstance(raw, dict):
        raise BadRequestError(f"{where} must be an object with name, value, isRegex")
    name, value = raw.get("name"), raw.get("value")
    is_regex, is_equal = raw.get("isRegex"), raw.get("isEqual", True)
    if not isinstance(name, str) or not isinstance(value, str):
        raise BadRequestError(f"{where}: name and value are required strings")
    if not isinstance(is_regex, bool) or not isinstance(is_equal, bool):
        raise BadRequestError(f"{where}: isRegex is a required boolean, isEqual a boolean")
    return Matcher(name, value, is_regex=is_regex, is_equal=is_equal)


# A filter expression, as amtool sends it: name, operator, value (quoted or not).
_FILTER = re.compile(r'^\s*("(?:[^"\\]|\\.)*"|[^=!~"\s]+)\s*(=~|!~|!=|=)\s*(.*?)\s*$')
_OPS = {"=": (False, True), "!=": (False, False), "=~": (True, True), "!~": (True, False)}


def parse_filter(expression: str) -> Matcher:
    """`name="value"` (or `=~`, `!=`, `!~`; the value may be unquoted) as a Matcher."""
    found = _FILTER.match(expression)
    if found is None:
        raise BadRequestError(f"bad matcher format: {expression}")
    name, op, value = found[1], found[2], found[3]
    try:
        if name.startswith('"'):
            name = orjson.loads(name)
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            value = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise BadRequestError(f"bad matcher format: {expression}") from None
    is_regex, is_equal = _OPS[op]
    matcher = Matcher(str(name), str(value), is_regex=is_regex, is_equal=is_equal)
    if is_regex:
        try:
            re.compile(matcher.value)
        except re.error as exc:
            raise BadRequestError(f"bad matcher format: {expression}: {exc}") from None
    return matcher


def _filters(request: Request) -> list[Matcher]:
    return [parse_filter(f) for f in request.query_params.getlist("filter")]


_TRUE = {"1", "t", "true", "y", "yes", "on"}
_FALSE = {"0", "f", "false", "n", "no", "off"}


def _flag(request: Request, name: str, default: bool = True) -> bool:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise BadRequestError(f"{name}: {raw!r} is not a boolean")


# --- silences -------------------------------------------------------------------------

_STATE_ORDER = {SilenceState.ACTIVE: 0, SilenceState.PENDING: 1, SilenceState.EXPIRED: 2}


def silence_listed(silence: Silence, filters: Sequence[Matcher]) -> bool:
    """Alertmanager's silence filter: each filter matcher is one of the silence's, exactly."""
    return all(f in silence.matchers for f in filters)


def sort_silences(silences: Sequence[Silence], now: datetime) -> list[Silence]:
    """Active (soonest end first), pending (soonest start), expired (latest end first)."""

    def key(s: Silence) -> tuple[int, float]:
        state = s.state(now)
        if state is SilenceState.ACTIVE:
            return (0, s.ends_at.timestamp())
        if state is SilenceState.PENDING:
            return (1, s.starts_at.timestamp())
        return (2, -s.ends_at.timestamp())

    return sorted(silences, key=key)


# --- alerts ---------------------------------------------------------------------------


def alert_listed(labels: Mapping[str, str], filters: Sequence[Matcher]) -> bool:
    """Alertmanager's matchFilterLabels: an empty-valued matcher ignores a missing label."""
    for m in filters:
        present = m.name in labels
        if m.value == "" and present is not m.is_equal:
            continue
        if not m.matches(labels):
            return False
    return True


@dataclass(frozen=True, slots=True)
class AlertView:
    """One alert as the API shows it now."""

    alert: Alert
    receivers: tuple[str, ...]
    silenced_by: tuple[str, ...]
    muted_by: tuple[str, ...] = ()

    @property
    def suppressed(self) -> bool:
        return bool(self.silenced_by or self.muted_by)

    def json(self, ctx: ApiContext) -> dict[str, object]:
        a = self.alert
        cycle = ctx.last_cycle()
        updated = datetime.fromtimestamp(cycle, UTC) if cycle is not None else ctx.now()
        ends = updated + timedelta(seconds=ENDS_AT_CYCLES * ctx.poll_interval())
        external = ctx.external_url()
        return {
            "labels": a.labels,
            "annotations": a.annotations,
            "receivers": [{"name": r} for r in self.receivers],
            "fingerprint": a.fingerprint,
            "startsAt": rfc3339(a.fired_at or a.active_since),
            "updatedAt": rfc3339(updated),
            "endsAt": rfc3339(ends),
            "generatorURL": f"{external}/api/v1/alerts" if external else "",
            "status": {
                "state": "suppressed" if self.suppressed else "active",
                "silencedBy": list(self.silenced_by),
                "inhibitedBy": [],
                "mutedBy": list(self.muted_by),
            },
        }


def alert_views(ctx: ApiContext, now: datetime) -> list[AlertView]:
    """The firing alerts (Alertmanager never hears of pending ones), with their status."""
    silenced_by = ctx.silences.muter()
    others = ctx.muters()
    notifiers = ctx.notifiers()
    views = []
    for a in ctx.alerts():
        if not a.firing:
            continue
        muted = tuple(name for muter in others for name in muter(a.labels, now))
        receivers = tuple(n.name for n in notifiers if admits(n, a))
        views.append(AlertView(a, receivers, silenced_by(a.labels, now), muted))
    return views


def _select(request: Request, views: Sequence[AlertView]) -> list[AlertView]:
    filters = _filters(request)
    active, silenced = _flag(request, "active"), _flag(request, "silenced")
    receiver = request.query_params.get("receiver") or ""
    try:
        wanted = re.compile(f"^(?:{receiver})$") if receiver else None
    except re.error as exc:
        raise BadRequestError(f"failed to parse receiver param: {exc}") from None
    picked = []
    for v in views:
        if not active and not v.suppressed:
            continue
        if not silenced and v.silenced_by:
            continue
        if wanted is not None and not any(wanted.match(r) for r in v.receivers):
            continue
        if alert_listed(v.alert.labels, filters):
            picked.append(v)
    return picked


# --- the routes -----------------------------------------------------------------------


def _json(data: object, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, media_type="application/json")


def _bad(message: str, status: int = 400) -> Response:
    return _json(message, status)


def api_routes(ctx: ApiContext) -> list[BaseRoute]:
    """The /api/v2 routes, for `server.build_app`."""
    return [*_silence_routes(ctx), *_alert_routes(ctx)]


def _silence_routes(ctx: ApiContext) -> list[BaseRoute]:

    async def get_silences(request: Request) -> Response:
        now = ctx.now()
        try:
            filters = _filters(request)
            wanted = {
                SilenceState.ACTIVE: _flag(request, "active"),
                SilenceState.PENDING: _flag(request, "pending"),
                SilenceState.EXPIRED: _flag(request, "expired"),
            }
        except BadRequestError as exc:
            return _bad(str(exc))
        listed = [
            s for s in ctx.silences.all(now) if wanted[s.state(now)] and silence_listed(s, filters)
        ]
        return _json([silence_json(s, now) for s in sort_silences(listed, now)])

    async def post_silences(request: Request) -> Response:
        if not ctx.may_write(request):
            return _forbidden(request)
        now = ctx.now()
        body = await _bounded_body(request)
        if body is None:
            return _bad(f"the body is larger than {MAX_BODY} bytes", 413)
        try:
            incoming = postable_silence(orjson.loads(body), now)
        except orjson.JSONDecodeError as exc:
            return _bad(f"the body is not JSON: {exc}")
        except BadRequestError as exc:
            return _bad(str(exc))
        if incoming.starts_at >= incoming.ends_at:
            return _bad("Failed to create silence: start time must be before end time")
        if incoming.ends_at < now:
            return _bad("Failed to create silence: end time can't be in the past")
        if found := problems(incoming):
            return _bad(f"invalid silence: {'; '.join(found)}")
        try:
            change = await run_in_threadpool(ctx.silences.set, incoming, now)
        except SilenceNotFoundError:
            return _bad("silence not found", 404)
        except Exception as exc:  # the disk: a clear 500, never a silence only in memory
            return _store_failed("post", exc)
        log.info(
            "silence_set",
            silence_id=change.stored.id,
            replaced=None if change.expired is None else change.expired.id,
            matchers=[str(m) for m in change.stored.matchers],
            created_by=change.stored.created_by,
            ends_at=rfc3339(change.stored.ends_at),
        )
        return _json({"silenceID": change.stored.id})

    async def get_silence(request: Request) -> Response:
        now = ctx.now()
        found = ctx.silences.get(request.path_params["silence_id"], now)
        if found is None:
            return Response(status_code=404)
        return _json(silence_json(found, now))

    async def delete_silence(request: Request) -> Response:
        if not ctx.may_write(request):
            return _forbidden(request)
        silence_id = request.path_params["silence_id"]
        try:
            await run_in_threadpool(ctx.silences.expire, silence_id, ctx.now())
        except SilenceNotFoundError:
            return Response(status_code=404)
        except Exception as exc:
            return _store_failed("delete", exc)
        log.info("silence_expired", silence_id=silence_id)
        return Response(status_code=200)

    return [
        Route("/api/v2/silences", get_silences, methods=["GET"]),
        Route("/api/v2/silences", post_silences, methods=["POST"]),
        Route("/api/v2/silence/{silence_id}", get_silence, methods=["GET"]),
        Route("/api/v2/silence/{silence_id}", delete_silence, methods=["DELETE"]),
    ]


def _alert_routes(ctx: ApiContext) -> list[BaseRoute]:
    async def get_alerts(request: Request) -> Response:
        now = ctx.now()
        try:
            views = _select(request, alert_views(ctx, now))
        except BadRequestError as exc:
            return _bad(str(exc))
        return _json([v.json(ctx) for v in views])

    async def get_groups(request: Request) -> Response:
        now = ctx.now()
        try:
            views = _select(request, alert_views(ctx, now))
            muted = _flag(request, "muted")
        except BadRequestError as exc:
            return _bad(str(exc))
        groups: dict[str, list[AlertView]] = {n.name: [] for n in ctx.notifiers()}
        for v in views:
            for receiver in v.receivers or (UNROUTED,):
                groups.setdefault(receiver, []).append(v)
        body = [
            {
                "labels": {},
                "routeLabels": {},
                "receiver": {"name": name},
                "alerts": [v.json(ctx) for v in members],
            }
            for name, members in groups.items()
            if members and (muted or not all(v.suppressed for v in members))
        ]
        return _json(body)

    async def get_status(_: Request) -> Response:
        return _json(status_json(ctx))

    async def get_receivers(_: Request) -> Response:
        return _json([{"name": n.name} for n in ctx.notifiers()])

    return [
        Route("/api/v2/alerts", get_alerts, methods=["GET"]),
        Route("/api/v2/alerts/groups", get_groups, methods=["GET"]),
        Route("/api/v2/status", get_status, methods=["GET"]),
        Route("/api/v2/receivers", get_receivers, methods=["GET"]),
    ]


def status_json(ctx: ApiContext) -> dict[str, Any]:
    """An alertmanagerStatus: no cluster; `config.original` names the receivers."""
    names = [n.name for n in ctx.notifiers()] or [UNROUTED]
    original = f"route:\n  receiver: {names[0]}\nreceivers:\n" + "".join(
        f"- name: {n}\n" for n in names
    )
    return {
        "cluster": {"name": "", "status": "disabled", "peers": []},
        "versionInfo": {
            "version": ctx.version,
            "revision": "",
            "branch": "",
            "buildUser": "syncwatch",
            "buildDate": "",
            "goVersion": "",
        },
        "config": {"original": original},
        "uptime": rfc3339(ctx.started),
    }


async def _bounded_body(request: Request) -> bytes | None:
    """The body, or None once it passes MAX_BODY (not read further)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _forbidden(request: Request) -> Response:
    host = request.client.host if request.client else "unknown"
    log.warning("silence_write_refused", client=host, reason="not a loopback client")
    return _bad(
        "silences can be written only from this host (a loopback client) until "
        "daemon.web_config_file configures basic_auth_users",
        403,
    )


def _store_failed(action: str, exc: Exception) -> Response:
    error = f"{type(exc).__name__}: {exc}"
    log.error("silence_write_failed", action=action, error=error)
    return _bad(f"state store: the silence was not saved ({error}); try again", 500)
