"""Serving the simulator: uvicorn in the foreground (`serve`) or in a thread (`SimulatorThread`)."""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
from collections.abc import Callable
from datetime import datetime
from types import FrameType
from typing import Any, Final

import uvicorn
from starlette.applications import Starlette

from syncwatch.simulator.app import SimApp, build
from syncwatch.simulator.config import SimConfig
from syncwatch.simulator.state import SimState

_START_TIMEOUT: Final = 10.0
_STOP_TIMEOUT: Final = 5.0
# uvicorn cancels whatever still runs this long after a shutdown began.
_GRACEFUL_SHUTDOWN: Final = 2


class _Server(uvicorn.Server):
    """uvicorn, returning on SIGTERM/SIGINT and waking sleeping faults when it shuts down."""

    def __init__(
        self, config: uvicorn.Config, state: SimState, on_started: Callable[[], None] | None = None
    ) -> None:
        super().__init__(config)
        self._state = state
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self._on_started is not None:
            self._on_started()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._state.begin_shutdown()
        await super().shutdown(sockets=sockets)

    def handle_exit(self, sig: int, _frame: FrameType | None) -> None:
        # uvicorn records the signal and re-raises it after shutdown; `serve` returns instead.
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


def _uvicorn_config(app: SimApp, host: str, port: int, *, own_logging: bool) -> uvicorn.Config:
    extra: dict[str, Any] = {} if own_logging else {"log_config": None}
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        server_header=False,
        date_header=False,  # the app sends its own, from the simulated clock
        timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN,
        **extra,
    )


def serve(
    config: SimConfig, host: str, port: int, on_started: Callable[[int], None] | None = None
) -> None:
    """Serve the simulator until SIGTERM or SIGINT, then return; `on_started(port)` once up."""
    app = build(config, None)
    server: _Server

    def started() -> None:
        if on_started is not None:
            on_started(_bound_port(server, port))

    server = _Server(_uvicorn_config(app, host, port, own_logging=True), app.sim, started)
    server.run()


def _bound_port(server: uvicorn.Server, asked: int) -> int:
    """The port really bound: the asked one, or the kernel's choice for port 0."""
    for listener in server.servers:
        for sock in listener.sockets:
            return int(sock.getsockname()[1])
    return asked


class SimulatorThread:
    """The simulator on its own event loop in a background thread (in-process demo, tests)."""

    def __init__(
        self,
        config: SimConfig,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.config = config
        self._host = host
        self._port = port
        self._app = build(config, clock)
        self._started = threading.Event()
        # The host process owns logging; uvicorn only gets its level.
        uv_config = _uvicorn_config(self._app, host, port, own_logging=False)
        self._server = _Server(uv_config, self._app.sim, self._started.set)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def __enter__(self) -> SimulatorThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start serving; returns once the server accepts connections."""
        if self._thread is not None:
            raise RuntimeError("a SimulatorThread starts once")
        self._thread = threading.Thread(target=self._run, name="syncwatch-simulator", daemon=True)
        self._thread.start()
        if not self._started.wait(_START_TIMEOUT) or not self._server.started:
            self.stop()
            raise RuntimeError(
                f"the simulator did not start on {self._host}:{self._port}: {self._error!r}"
            )
        self._port = self._server.servers[0].sockets[0].getsockname()[1]

    def _run(self) -> None:
        try:
            with asyncio.Runner(loop_factory=self._server.config.get_loop_factory()) as runner:
                runner.run(self._server.serve())
        except BaseException as exc:
            # uvicorn exits (SystemExit) when it cannot bind; start() reports it.
            self._error = exc
        finally:
            self._started.set()

    @property
    def port(self) -> int:
        """The bound port (the real one once started, even when asked for port 0)."""
        return self._port

    @property
    def base_url(self) -> str:
        """The root URL of both simulated APIs."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    @property
    def app(self) -> Starlette:
        """The served app."""
        return self._app

    def stop(self) -> None:
        """Shut down and join the thread, forcing the exit if a graceful one overruns."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        self._server.should_exit = True
        thread.join(_STOP_TIMEOUT)
        if thread.is_alive():
            self._server.force_exit = True
            thread.join(_STOP_TIMEOUT)
