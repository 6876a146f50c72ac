"""`GET /api/v1/history`: the history store's entries, filtered, newest first, in pages."""

from __future__ import annotations

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from syncwatch.history import BadQueryError, encode_cursor, entry_json, parse_query
from syncwatch.history_store import HistoryStore


def history_routes(store: HistoryStore) -> list[Route]:
    async def history(request: Request) -> Response:
        try:
            query = parse_query(dict(request.query_params))
        except BadQueryError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        try:
            # The database off the event loop: a long scan must not stall the cycle or /metrics.
            page, after = await run_in_threadpool(store.query, query)
        except store.errors as exc:
            error = f"state database: {store.error_text(exc)}; try again"
            return JSONResponse({"error": error}, status_code=503)
        body = {
            "entries": [entry_json(e) for _, e in page],
            "nextCursor": None if after is None else encode_cursor(after),
        }
        return Response(orjson.dumps(body), media_type="application/json")

    return [Route("/api/v1/history", history, methods=["GET"])]
