"""The status page's routes: server-rendered Jinja2 HTML over the snapshot and history.

Read-only; no JavaScript and no external resources. Every upstream string is escaped by
autoescape. Mounted by the daemon beside the APIs, so AuthMiddleware covers it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from urllib.parse import urlencode

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

PAGE_SIZE = 100  # syncs per tenant page, tenants per tenant list page; the rest behind ?page=
OVERVIEW_TENANTS = 50  # the worst tenants on the overview; all of them on /tenants
OVERVIEW_ALERTS = 50  # the most urgent alerts on the overview; all of them on /alerts
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


class Indexed:
    """The last snapshot's `view.Fleet`: built by the first page to read a new snapshot,
    shared by every page until the next cycle replaces it (a 130,000-sync fleet is
    grouped once per cycle, not once per request)."""

    WATCHED = 600.0  # s since a page was read: someone has the page open (it auto-refreshes)

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._last: view.Fleet | None = None
        self._lock = threading.Lock()  # pages render in worker threads
        self._clock = clock
        self._read_at: float | None = None

    def __call__(self, snapshot: Snapshot) -> view.Fleet:
        self._read_at = self._clock()
        return self._index(snapshot)

    def _index(self, snapshot: Snapshot) -> view.Fleet:
        last = self._last
        if last is not None and last.snapshot is snapshot:
            return last
        with self._lock:
            if self._last is None or self._last.snapshot is not snapshot:
                self._last = view.index(snapshot)
            return self._last

    def prepare(self, snapshot: Snapshot) -> view.Fleet | None:
        """Index a new snapshot before a page asks, while pages are being read: the first
        view after a cycle is then as quick as the others. Nobody reading: None, no work."""
        if self._read_at is None or self._clock() - self._read_at > self.WATCHED:
            return None
        return self._index(snapshot)


@dataclass
class PagesContext:
    """What the pages read from the daemon: callables, so each request sees the latest."""

    snapshot: Callable[[], Snapshot]
    history: HistoryStore
    now: Callable[[], datetime]
    freshness: Callable[[], Freshness] = lambda: EMPTY  # computed once per cycle
    fleet: Indexed = field(default_factory=Indexed)

    def current(self) -> view.Fleet:
        """The latest snapshot, indexed: one request reads one snapshot throughout."""
        return self.fleet(self.snapshot())


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
        return await run_in_threadpool(self._overview, refresh)

    def _overview(self, refresh: int) -> Response:
        data = view.overview(self.ctx.current(), self.ctx.now(), OVERVIEW_TENANTS, OVERVIEW_ALERTS)
        fresh = self.ctx.freshness().tenants
        return _html("overview.html", o=data, states=view.STATES, refresh=refresh, fresh=fresh)

    async def tenants(self, request: Request) -> Response:
        q = request.query_params
        wanted = view.TenantFilter(q.get("source", ""), q.get("state", ""), q.get("q", ""))
        page = _int_param(request, "page", 1)
        refresh = refresh_param(request)
        if (wanted.state and wanted.state not in view.STATES) or page is None or refresh is None:
            return _html(
                "error.html", 400, message="state, page or refresh: not a value this page knows"
            )
        return await run_in_threadpool(self._tenants, wanted, page, refresh)

    def _tenants(self, wanted: view.TenantFilter, page: int, refresh: int) -> Response:
        fleet = self.ctx.current()
        rows = view.tenant_list(fleet, wanted)
        kept = {
            k: v
            for k, v in (("source", wanted.source), ("state", wanted.state), ("q", wanted.q))
            if v
        }
        return _html(
            "tenants.html",
            rows=rows[(page - 1) * PAGE_SIZE : page * PAGE_SIZE],
            total=len(rows),
            f=wanted,
            sources=[s.source for s in fleet.sources],
            states=view.STATES,
            page=page,
            pages=max(1, -(-len(rows) // PAGE_SIZE)),
            link=lambda n: "?" + urlencode({**kept, "page": n}),
            refresh=refresh,
            fresh=self.ctx.freshness().tenants,
        )

    async def tenant(self, request: Request) -> Response:
        source, tenant = request.path_params["source"], request.path_params["tenant"]
        state = request.query_params.get("state", "")
        page = _int_param(request, "page", 1)
        refresh = refresh_param(request)
        if (state and state not in view.STATES) or page is None or refresh is None:
            return _html(
                "error.html", 400, message="state, page or refresh: not a value this page knows"
            )
        return await run_in_threadpool(self._tenant, source, tenant, state, page, refresh)

    def _tenant(self, source: str, tenant: str, state: str, page: int, refresh: int) -> Response:
        fleet = self.ctx.current()
        if not fleet.known(source, tenant):
            return _html("error.html", 404, message=f"no tenant {tenant} of source {source}")
        rows = view.tenant_rows(fleet, source, tenant, self.ctx.now(), state)
        fresh = self.ctx.freshness().tenants.get((source, tenant))
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
        current = await run_in_threadpool(
            lambda: view.sync_row(self.ctx.current(), source, tenant, sync_id, self.ctx.now())
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
    """The tenant list, tenant and sync views; the overview is served by the index
    (`wants_html`)."""
    pages = Pages(ctx)
    return [
        Route("/tenants", pages.tenants, methods=["GET"]),
        Route("/tenants/{source}/{tenant}", pages.tenant, methods=["GET"]),
        Route("/syncs/{source}/{tenant}/{sync_id}", pages.sync, methods=["GET"]),
        Route(f"/static/{_SCRIPT}", script, methods=["GET"]),
    ]


def overview_page(ctx: PagesContext) -> Callable[[Request], Awaitable[Response]]:
    """The overview, for build_app's `html_index`: `/` stays JSON for every other client."""
    return Pages(ctx).overview
