"""`GET /api/v1/freshness`: each tenant's freshness over 24 h, 7 d and 30 d, for scripts."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from syncwatch.freshness import WINDOWS, Figures
from syncwatch.freshness_store import Freshness

_PARAMS = ("source", "tenant")


def _time(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def figures_json(f: Figures) -> dict[str, float | None]:
    return {
        "freshShare": f.fresh_share,
        "unknownShare": f.unknown_share,
        "excludedShare": f.excluded_share,
        "freshSeconds": round(f.fresh, 3),
        "staleSeconds": round(f.stale, 3),
        "unknownSeconds": round(f.unknown, 3),
        "excludedSeconds": round(f.excluded, 3),
    }


def freshness_json(data: Freshness, source: str = "", tenant: str = "") -> dict[str, object]:
    """The body: the windows, the runs syncwatch observed in them, and each tenant's figures
    (`source` and `tenant` filter, exactly)."""
    as_of = data.as_of
    tenants: list[dict[str, object]] = []
    for (s, t), by_window in data.tenants.items():
        if (source and s != source) or (tenant and t != tenant):
            continue
        windows: Mapping[str, Figures] = by_window
        tenants.append(
            {
                "source": s,
                "tenant": t,
                "windows": {name: figures_json(f) for name, f in windows.items()},
            }
        )
    return {
        "asOf": None if as_of is None else _time(as_of),
        "windows": {
            name: {"start": None if as_of is None else _time(as_of - length), "seconds": length}
            for name, length in WINDOWS
        },
        "observed": [{"start": _time(s), "end": _time(e)} for s, e in data.runs],
        "tenants": tenants,
    }


def freshness_routes(figures: Callable[[], Freshness]) -> list[Route]:
    async def freshness(request: Request) -> Response:
        unknown = sorted(set(request.query_params) - set(_PARAMS))
        if unknown:
            error = f"{unknown[0]}: unknown parameter; use one of {', '.join(_PARAMS)}"
            return JSONResponse({"error": error}, status_code=400)
        # Computed at most once per cycle, off the event loop (a page view may be first).
        data = await run_in_threadpool(figures)
        body = freshness_json(
            data, request.query_params.get("source", ""), request.query_params.get("tenant", "")
        )
        return Response(orjson.dumps(body), media_type="application/json")

    return [Route("/api/v1/freshness", freshness, methods=["GET"])]
