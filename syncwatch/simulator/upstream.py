"""What both simulated upstream APIs share: the request preamble and fault-aware listings."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from syncwatch.simulator.faults import Fault, spoil
from syncwatch.simulator.state import SimState
from syncwatch.simulator.wire import dumps

Endpoint = Callable[[Request], Awaitable[Response]]
# A handler of an admitted request: the request, its tenant, the fault waiting for it (if any).
Handler = Callable[[Request, str, Fault | None], Awaitable[Response]]


class UpstreamAPI(ABC):
    """One simulated API over the shared state; a subclass says who asks and what they see."""

    source: ClassVar[str]
    # The key a listing's records stand under in its JSON body.
    envelope: ClassVar[str]

    def __init__(self, state: SimState) -> None:
        self.state = state

    @abstractmethod
    def routes(self) -> list[Route]:
        """This API's routes, each handler wrapped by `endpoint`."""

    @abstractmethod
    def authenticate(self, request: Request) -> tuple[str, Response | None]:
        """The tenant the request is for (a best guess when auth fails), or the auth error."""

    @abstractmethod
    def views(self, tenant: str, wanted: str | None, now: int) -> list[dict[str, Any]]:
        """The tenant's records at `now`; only the `wanted` connector's or credential's if set."""

    def endpoint(self, handler: Handler) -> Endpoint:
        """`handler`, behind what every request goes through first, in upstream's order."""

        async def admit(request: Request) -> Response:
            tenant, denied = self.authenticate(request)
            # Counted and delayed even when refused: a rejected request still reached upstream.
            self.state.count(self.source, tenant)
            if self.state.config.latency:
                await asyncio.sleep(self.state.config.latency)
            if denied is not None:
                return denied
            return await handler(request, tenant, self.state.faults.take(self.source, tenant))

        return admit

    async def listing(
        self, request: Request, tenant: str, wanted: str | None, fault: Fault | None
    ) -> Response:
        """The tenant's listing, as the fault (if any) has it; rendered once a simulated second."""
        if fault is not None and fault.kind == "ignore_filter":
            wanted = None
        now = self.state.now()
        if fault is not None and fault.kind in ("poison", "duplicate"):
            views = self.views(tenant, wanted, now)
            broken = spoil(views, fault, now)
            body = dumps({self.envelope: views})
            return await self.state.faults.respond(request, fault, 200, body, broken)
        body = self.state.listing(
            (self.source, tenant, wanted),
            now,
            lambda: dumps({self.envelope: self.views(tenant, wanted, now)}),
        )
        return await self.state.faults.respond(request, fault, 200, body)
