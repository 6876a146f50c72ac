"""Acknowledgements: a silence bound to one firing alert, ended when it resolves or changes
severity.

`POST /api/v1/alerts/{fingerprint}/ack` stores an ordinary silence (so amtool and the
Alertmanager API list it) whose matchers are the alert's identity labels plus its severity,
marked `AckOf(fingerprint, severity)`. The severity matcher lets an escalation through in the
very cycle it happens; `acks_to_end`, run by the daemon once a cycle after the engine applied
the report, names the acks to expire, so a later alert of the same identity pages again.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

import orjson
import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from syncwatch.amapi import MAX_BODY, ApiContext, BadRequestError, parse_time, rfc3339
from syncwatch.lifecycle import Alert
from syncwatch.silences import AckOf, Matcher, Silence, SilenceState

log = structlog.get_logger("syncwatch.acks")

# An ack with no `endsAt` lasts this long at most: a forgotten ack of a sync that never
# recovers must not hide it for ever (it repeats again after this).
DEFAULT_ACK_DURATION = timedelta(days=7)
IDENTITY_LABELS = ("alertname", "source", "tenant", "sync_id", "severity")


def ack_silence(
    alert: Alert, created_by: str, comment: str, now: datetime, ends_at: datetime | None = None
) -> Silence:
    """The silence acknowledging `alert` as it fires now (id "" : the store gives one)."""
    labels = {
        "alertname": str(alert.alertname),
        "source": str(alert.source),
        "tenant": alert.tenant,
        "sync_id": alert.sync_id,
        "severity": str(alert.severity),
    }
    return Silence(
        id="",
        matchers=tuple(Matcher(name, labels[name]) for name in IDENTITY_LABELS),
        starts_at=now,
        ends_at=ends_at or now + DEFAULT_ACK_DURATION,
        created_by=created_by,
        comment=comment,
        updated_at=now,
        ack=AckOf(alert.fingerprint, str(alert.severity)),
    )


def acks_to_end(silences: Iterable[Silence], alerts: Iterable[Alert], now: datetime) -> list[str]:
    """The ids of the unexpired acks whose alert no longer fires at the acked severity.

    Pure. An alert absent from `alerts` has resolved (held alerts stay in the table, so a
    tenant that cannot be listed keeps its acks).
    """
    firing = {a.fingerprint: str(a.severity) for a in alerts if a.firing}
    return [
        s.id
        for s in silences
        if s.ack is not None
        and s.state(now) is not SilenceState.EXPIRED
        and firing.get(s.ack.fingerprint) != s.ack.severity
    ]


def parse_ack(body: object, now: datetime) -> tuple[str, str, datetime | None]:
    """(createdBy, comment, endsAt or None) from the POSTed JSON; BadRequestError if not."""
    if not isinstance(body, dict):
        raise BadRequestError("the body must be a JSON object with createdBy and comment")
    found = []
    for key in ("createdBy", "comment"):
        value = body.get(key)
        if not isinstance(value, str) or not value.strip():
            found.append(f"{key} is required (a non-empty string)")
    if found:
        raise BadRequestError("; ".join(found))
    ends = parse_time(body.get("endsAt"), "endsAt")
    if ends is not None and ends <= now:
        raise BadRequestError("endsAt must be in the future")
    return str(body["createdBy"]), str(body["comment"]), ends


def ack_routes(ctx: ApiContext) -> list[BaseRoute]:
    """`POST /api/v1/alerts/{fingerprint}/ack`, for `server.build_app`."""

    async def post_ack(request: Request) -> Response:
        if not ctx.may_write(request):
            host = request.client.host if request.client else "unknown"
            log.warning("ack_refused", client=host, reason="not allowed to write")
            return _json(
                "acknowledging needs an authenticated user (daemon.web_config_file), or a "
                "loopback client when no basic_auth_users are configured",
                403,
            )
        now = ctx.now()
        body = await _bounded_body(request)
        if body is None:
            return _json(f"the body is larger than {MAX_BODY} bytes", 413)
        try:
            created_by, comment, ends = parse_ack(orjson.loads(body), now)
        except orjson.JSONDecodeError as exc:
            return _json(f"the body is not JSON: {exc}", 400)
        except BadRequestError as exc:
            return _json(str(exc), 400)
        fingerprint = request.path_params["fingerprint"]
        alert = next((a for a in ctx.alerts() if a.fingerprint == fingerprint), None)
        if alert is None or not alert.firing:
            return _json(f"no firing alert has fingerprint {fingerprint!r}", 404)
        silence = ack_silence(alert, created_by, comment, now, ends)
        try:
            change = await run_in_threadpool(ctx.silences.set, silence, now)
        except Exception as exc:  # the disk: a clear 500, never an ack only in memory
            error = f"{type(exc).__name__}: {exc}"
            log.error("ack_write_failed", error=error)
            return _json(f"state store: the ack was not saved ({error}); try again", 500)
        stored = change.stored
        log.info(
            "alert_acked",
            silence_id=stored.id,
            fingerprint=fingerprint,
            severity=str(alert.severity),
            created_by=created_by,
            ends_at=rfc3339(stored.ends_at),
        )
        return _json(
            {
                "silenceID": stored.id,
                "fingerprint": fingerprint,
                "severity": str(alert.severity),
                "endsAt": rfc3339(stored.ends_at),
            }
        )

    return [Route("/api/v1/alerts/{fingerprint}/ack", post_ack, methods=["POST"])]


def _json(data: object, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, media_type="application/json")


async def _bounded_body(request: Request) -> bytes | None:
    """The body, or None once it passes MAX_BODY (not read further)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
