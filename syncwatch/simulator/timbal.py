"""The simulated Timbal API: an org's connector syncs, behind one static API key."""

from __future__ import annotations

import hmac
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from syncwatch.simulator.faults import Fault
from syncwatch.simulator.state import SimState
from syncwatch.simulator.upstream import UpstreamAPI
from syncwatch.simulator.wire import TIMBAL, dumps, error_response


class TimbalAPI(UpstreamAPI):
    """`GET /orgs/{org_id}/connectors/syncs`, optionally filtered by `connector_id`."""

    source = TIMBAL
    envelope = "syncs"

    def __init__(self, state: SimState) -> None:
        super().__init__(state)
        self._key = state.config.timbal_api_key.encode()

    def routes(self) -> list[Route]:
        path = "/orgs/{org_id}/connectors/syncs"
        return [Route(path, self.endpoint(self.list_syncs), methods=["GET"])]

    def authenticate(self, request: Request) -> tuple[str, Response | None]:
        org: str = request.path_params["org_id"]
        auth = request.headers.get("authorization")
        if auth is None:
            return org, error_response(401, "unauthorized")
        scheme, _, presented = auth.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode(), self._key
        ):
            return org, error_response(403, "forbidden")
        return org, None

    def views(self, tenant: str, wanted: str | None, now: int) -> list[dict[str, Any]]:
        return self.state.timbal_views(tenant, wanted, now)

    async def list_syncs(self, request: Request, org: str, fault: Fault | None) -> Response:
        if org not in self.state.fleet.timbal_by_org:
            body = dumps({"detail": "org not found"})
            return await self.state.faults.respond(request, fault, 404, body)
        return await self.listing(request, org, request.query_params.get("connector_id"), fault)
