"""The status page's routes: server-rendered Jinja2 HTML over the snapshot and history.

Read-only; no JavaScript and no external resources. Every upstream string is escaped by
autoescape. Mounted by the daemon beside the APIs, so AuthMiddleware covers it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from syncwatch import freshness
from syncwatch.freshness_store import EMPTY, Freshness
from syncwatch.history import BadQueryError, Query, decode_cursor, encode_cursor
from syncwatch.history_store import HistoryStore
from syncwatch.metrics import Snapshot
from syncwatch.web import view

PAGE_SIZE = 100  # syncs per tenant page; the rest is behind ?page=
TIMELINE_SIZE = 50  # history entries per sync page; older ones behind ?before=

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("syncwatch.web", "templates"),
    autoescape=True,  # sync names, tenants and reasons come from upstream
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["duration"] = view.duration
_env.filters["freshness"] = freshness.text
_env.filters["share_percent"] = freshness.share_percent
_env.globals["windows"] = [(name, f"{name[:-1]} {name[-1]}") for name, _ in freshness.WINDOWS]
_env.filters["when"] = lambda t: (
    "never" if t is None else t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
)


@dataclass
class PagesContext:
    """What the pages read from the daemon: callables, so each request sees the latest."""

    snapshot: Callable[[], Snapshot]
    history: HistoryStore
    now: Callable[[], datetime]
    freshness: Callable[[], Freshness] = lambda: EMPTY  # computed once per cycle


# Everything a page loads is syncwatch's own: no inline script, no other origin, no framing.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
REFRESH_DEFAULT = 30  # seconds between auto-refreshes of a read view; ?refresh=0 turns it off
_REFRESH_RANGE = range(2, 3601)
_SCRIPT = "refresh.js"


def _html(template: str, status: int = 200, **values: object) -> Response:
    values.setdefault("refresh", 0)
    headers = {"content-security-policy": CSP, "x-content-type-options": "nosniff"}
    return HTMLResponse(_env.get_template(template).render(**values), status, headers=headers)


def refresh_param(request: Request) -> int | None:
    """`?refresh=` seconds (0 = off), else the default; None for a value it does not know."""
    raw = request.query_params.get("refresh", "")
    if not raw:
        return REFRESH_DEFAULT
    if not raw.isdigit() or (int(raw) and int(raw) not in _REFRESH_RANGE):
        return None
    return int(raw)


async def script(_: Request) -> Response:
    """The one script: auto-refresh of the read views (they work without it)."""
    body = (resources.files("syncwatch.web") / "static" / _SCRIPT).read_bytes()
    return Response(
        body,
        media_type="text/javascript",
        headers={"cache-control": "max-age=3600", "x-content-type-options": "nosniff"},
    )


render = _html  # for the alerts and silences pages (forms.py)


def _int_param(request: Request, name: str, default: int) -> int | None:
    raw = request.query_params.get(name, "")
    if not raw:
        return default
    return int(raw) if raw.isdigit() and int(raw) >= 1 else None


class Pages:
    def __init__(self, ctx: PagesContext) -> None:
        self.ctx = ctx

    async def overview(self, request: Request) -> Response:
        refresh = refresh_param(request)
        if refresh is None:
            return _html("error.html", 400, message="refresh: seconds from 2 to 3600, or 0")
        data = view.overview(self.ctx.snapshot(), self.ctx.now())
        fresh = (await run_in_threadpool(self.ctx.freshness)).tenants
        return _html("overview.html", o=data, states=view.STATES, refresh=refresh, fresh=fresh)

    async def tenant(self, request: Request) -> Response:
        source, tenant = request.path_params["source"], request.path_params["tenant"]
        state = request.query_params.get("state", "")
        page = _int_param(request, "page", 1)
        refresh = refresh_param(request)
        if (state and state not in view.STATES) or page is None or refresh is None:
            return _html(
                "error.html", 400, message="state, page or refresh: not a value this page knows"
            )
        snapshot = self.ctx.snapshot()
        now = self.ctx.now()
        if not any(k == (source, tenant) for k in snapshot.source_up) and not any(
            r.source == source and r.tenant == tenant for r in view.sync_rows(snapshot, now)
        ):
            return _html("error.html", 404, message=f"no tenant {tenant} of source {source}")
        rows = view.tenant_rows(snapshot, source, tenant, now, state)
        fresh = (await run_in_threadpool(self.ctx.freshness)).tenants.get((source, tenant))
        pages = max(1, -(-len(rows) // PAGE_SIZE))
        shown = rows[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
        return _html(
            "tenant.html",
            source=source,
            tenant=tenant,
            rows=shown,
            total=len(rows),
            state=state,
            page=page,
            pages=pages,
            states=view.STATES,
            refresh=refresh,
            fresh=fresh,
        )

    async def sync(self, request: Request) -> Response:
        source = request.path_params["source"]
        tenant = request.path_params["tenant"]
        sync_id = request.path_params["sync_id"]
        cursor = request.query_params.get("before", "")
        try:
            before = decode_cursor(cursor) if cursor else None
        except BadQueryError as exc:
            return _html("error.html", 400, message=str(exc))
        query = Query(tenant=tenant, sync_id=sync_id, limit=TIMELINE_SIZE, before=before)
        found, next_id = await run_in_threadpool(self.ctx.history.query, query)
        entries = [e for _, e in found if e.source in ("", source)]
        rows = view.sync_rows(self.ctx.snapshot(), self.ctx.now())
        current = next(
            (r for r in rows if (r.source, r.tenant, r.sync_id) == (source, tenant, sync_id)),
            None,
        )
        return _html(
            "sync.html",
            source=source,
            tenant=tenant,
            sync_id=sync_id,
            current=current,
            entries=entries,
            at=lambda t: datetime.fromtimestamp(t, UTC),
            older=None if next_id is None else encode_cursor(next_id),
        )


def page_routes(ctx: PagesContext) -> list[BaseRoute]:
    """The tenant and sync views; the overview is served by the index (`wants_html`)."""
    pages = Pages(ctx)
    return [
        Route("/tenants/{source}/{tenant}", pages.tenant, methods=["GET"]),
        Route("/syncs/{source}/{tenant}/{sync_id}", pages.sync, methods=["GET"]),
        Route(f"/static/{_SCRIPT}", script, methods=["GET"]),
    ]


def overview_page(ctx: PagesContext) -> Callable[[Request], Awaitable[Response]]:
    """The overview, for build_app's `html_index`: `/` stays JSON for every other client."""
    return Pages(ctx).overview
