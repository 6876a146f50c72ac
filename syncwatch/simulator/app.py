"""The simulator's ASGI app: both upstream APIs and /_sim over one state, dated by its clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from starlette.applications import Starlette
from starlette.types import Message, Receive, Scope, Send

from syncwatch.simulator.clock import Clock, ScaledClock
from syncwatch.simulator.config import SimConfig
from syncwatch.simulator.control import Control
from syncwatch.simulator.faults import RAW_SEND
from syncwatch.simulator.paragon import ParagonAPI
from syncwatch.simulator.state import SimState
from syncwatch.simulator.timbal import TimbalAPI
from syncwatch.simulator.upstream import UpstreamAPI

# Each simulated source's API, one line each (its fleet part is in fleet.py).
UPSTREAMS: tuple[type[UpstreamAPI], ...] = (TimbalAPI, ParagonAPI)


class SimApp(Starlette):
    """The simulator's Starlette app; it keeps the server's own `send` reachable."""

    def __init__(self, state: SimState) -> None:
        apis = [api(state) for api in UPSTREAMS]
        routes = [route for api in apis for route in api.routes()] + Control(state).routes()
        super().__init__(routes=routes)
        self.sim = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Starlette's error middleware wraps `send`; the `reset` fault needs the original to
        # reach the connection's transport.
        scope[RAW_SEND] = send
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return

        async def dated(message: Message) -> None:
            # uvicorn's own Date (real time, `date_header=False`) would contradict the
            # simulated clock the bodies are written in.
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", ()), (b"date", self.sim.http_date())]
                message = {**message, "headers": headers}
            await send(message)

        await super().__call__(scope, receive, dated)


def build(config: SimConfig, clock: Clock | None) -> SimApp:
    return SimApp(SimState(config, clock or ScaledClock(config.time_scale)))


def build_app(config: SimConfig, clock: Callable[[], datetime] | None = None) -> Starlette:
    """The simulator app; `clock` (aware UTC datetimes) replaces the scaled real-time clock."""
    return build(config, clock)
