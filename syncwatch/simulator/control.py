"""The simulator's own API under /_sim: health, the fleet's intended states, counters, faults
and mutations of the upstream data."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from syncwatch.simulator.faults import parse_fault
from syncwatch.simulator.state import SimState
from syncwatch.simulator.views import paragon_intended, timbal_intended
from syncwatch.simulator.wire import PARAGON, TIMBAL, error_response, json_response, utc


class _NotFoundError(Exception):
    pass


class Control:
    """The /_sim endpoints over one simulator's state."""

    def __init__(self, state: SimState) -> None:
        self.state = state

    def routes(self) -> list[Route]:
        return [
            Route("/_sim/health", self.health, methods=["GET"]),
            Route("/_sim/fleet", self.fleet, methods=["GET"]),
            Route("/_sim/requests", self.request_counts, methods=["GET", "DELETE"]),
            Route("/_sim/faults", self.fault_control, methods=["GET", "POST", "DELETE"]),
            Route("/_sim/mutate", self.mutate, methods=["POST", "DELETE"]),
        ]

    async def health(self, _request: Request) -> Response:
        return json_response(200, {"ok": True})

    async def fleet(self, _request: Request) -> Response:
        now = self.state.now()
        moment = utc(now)
        timbal = []
        for t in self.state.live(TIMBAL, self.state.fleet.timbal):
            view = self.state.timbal_view(t, now)
            intended, alertname = timbal_intended(view, moment)
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
        for p in self.state.live(PARAGON, self.state.fleet.paragon):
            view = self.state.paragon_view(p, now, detail=False)
            intended, alertname = paragon_intended(view, moment)
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
        return json_response(
            200,
            {
                "now": moment,
                "orgs": self.state.fleet.orgs,
                "users": self.state.fleet.users,
                "timbal": timbal,
                "paragon": paragon,
            },
        )

    async def request_counts(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.state.clear_requests()
        return json_response(200, self.state.requests)

    async def fault_control(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.state.faults.clear()
        elif request.method == "POST":
            try:
                fault = parse_fault(orjson.loads(await request.body()))
            except ValueError as exc:  # orjson.JSONDecodeError is a ValueError too
                return error_response(400, str(exc))
            self.state.faults.add(fault)
        return json_response(200, {"faults": self.state.faults.describe()})

    async def mutate(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.state.overrides.clear()
            self.state.deleted.clear()
        else:
            try:
                self._mutate(orjson.loads(await request.body()))
            except ValueError as exc:
                return error_response(400, str(exc))
            except _NotFoundError as exc:
                return error_response(404, str(exc))
        self.state.forget_listings()
        return json_response(200, {"ok": True})

    def _mutate(self, payload: Any) -> None:
        if not isinstance(payload, dict):
            raise ValueError("the body must be a JSON object")
        source = payload.get("source")
        sync_id = payload.get("sync_id")
        fleet = self.state.fleet
        owner: str | None
        if source == TIMBAL:
            timbal = fleet.timbal_by_id.get(sync_id) if isinstance(sync_id, str) else None
            owner = None if timbal is None else timbal.org_id
        elif source == PARAGON:
            paragon = fleet.paragon_by_id.get(sync_id) if isinstance(sync_id, str) else None
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
                self.state.deleted.add(key)
            else:
                self.state.deleted.discard(key)
        elif isinstance(changes, dict) and changes:
            self.state.overrides.setdefault(key, {}).update(changes)
        else:
            raise ValueError("give 'set' (an object of upstream fields) or 'delete': true")
