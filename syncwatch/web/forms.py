"""The alerts and silences pages, and their write forms (no JavaScript needed).

Writes go through the same code as the APIs (`SilenceStore.set` / `expire`, `acks`), are
admitted by `ApiContext.may_write` (a 403 page otherwise) and carry a CSRF token.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from syncwatch.amapi import ApiContext
from syncwatch.silences import any_of
from syncwatch.web import lists
from syncwatch.web.pages import render

PAGE_SIZE = 100  # alerts per page; the rest behind ?page=


@dataclass
class FormsContext:
    api: ApiContext


def _page_param(request: Request) -> int | None:
    raw = request.query_params.get("page", "")
    if not raw:
        return 1
    return int(raw) if raw.isdigit() and int(raw) >= 1 else None


class Forms:
    def __init__(self, ctx: FormsContext) -> None:
        self.ctx = ctx

    def _rows(self) -> list[lists.AlertRow]:
        api = self.ctx.api
        muter = any_of([api.silences.muter(), *api.muters()])
        return lists.alert_rows(api.alerts(), muter, api.now())

    async def alerts(self, request: Request) -> Response:
        q = request.query_params
        wanted = lists.AlertFilter(
            q.get("source", ""), q.get("tenant", ""), q.get("severity", ""), q.get("state", "")
        )
        page = _page_param(request)
        if (
            page is None
            or (wanted.severity and wanted.severity not in lists.SEVERITIES)
            or (wanted.state and wanted.state not in lists.ALERT_STATES)
        ):
            return render("error.html", 400, message="severity, state or page: not a known value")
        every = self._rows()
        rows = [r for r in every if wanted.admits(r)]
        pages = max(1, -(-len(rows) // PAGE_SIZE))
        kept = {k: v for k, v in vars_of(wanted).items() if v}
        return render(
            "alerts.html",
            rows=rows[(page - 1) * PAGE_SIZE : page * PAGE_SIZE],
            total=len(rows),
            f=wanted,
            sources=sorted({r.alert.source for r in every}),
            severities=lists.SEVERITIES,
            states=lists.ALERT_STATES,
            page=page,
            pages=pages,
            link=lambda n: "?" + urlencode({**kept, "page": n}),
        )

    async def silences(self, _: Request) -> Response:
        now = self.ctx.api.now()
        groups = lists.silences_by_state(self.ctx.api.silences.all(now), now)
        return render("silences.html", groups=groups)


def vars_of(f: lists.AlertFilter) -> dict[str, str]:
    return {"source": f.source, "tenant": f.tenant, "severity": f.severity, "state": f.state}


def form_routes(ctx: FormsContext) -> list[BaseRoute]:
    """The /alerts and /silences pages, for `server.build_app`."""
    forms = Forms(ctx)
    return [
        Route("/alerts", forms.alerts, methods=["GET"]),
        Route("/silences", forms.silences, methods=["GET"]),
    ]
