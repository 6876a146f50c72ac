"""structlog set-up: JSON lines when not a TTY, readable console on one; secrets scrubbed.

Records of the standard `logging` module (asyncio, uvicorn, httpx) go through the same
renderer, rate-limited per logger and message: a flood (asyncio logs every failed
`accept()`) becomes a trickle with a count of what was suppressed.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class _Scrub:
    """Last line of defence: any configured secret value that slips into an event is masked."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # Short values would mask ordinary words; real secrets are long.
        self.secrets = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self.secrets:
                if secret in value:
                    value = value.replace(secret, "**********")
            return value
        if isinstance(value, dict):
            return {k: self._clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean(v) for v in value]
        return value

    def __call__(self, _: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        if not self.secrets:
            return event_dict
        return {k: self._clean(v) for k, v in event_dict.items()}


@dataclass
class _Bucket:
    tokens: float
    updated: float
    suppressed: int = 0


class RateLimit(logging.Filter):
    """A token bucket per (logger, level, first line of the message); counts what it drops."""

    def __init__(
        self,
        burst: int = 10,
        per_second: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 1000,
    ) -> None:
        super().__init__()
        self.burst, self.per_second, self.clock, self.max_keys = burst, per_second, clock, max_keys
        self._buckets: dict[tuple[str, int, str], _Bucket] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg).partition("\n")[0][:200])
        if key not in self._buckets and len(self._buckets) >= self.max_keys:
            key = ("*", record.levelno, "*")  # messages that vary without end share one bucket
        now = self.clock()
        bucket = self._buckets.setdefault(key, _Bucket(self.burst, now))
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.per_second)
        bucket.updated = now
        if bucket.tokens < 1:
            bucket.suppressed += 1
            return False
        bucket.tokens -= 1
        if bucket.suppressed:
            record.suppressed = bucket.suppressed
            bucket.suppressed = 0
        return True

    def take_suppressed(self) -> list[tuple[str, str, int]]:
        """(logger, message, count) of everything dropped since the last call; resets them."""
        out = []
        for (name, _, message), bucket in self._buckets.items():
            if bucket.suppressed:
                out.append((name, message, bucket.suppressed))
                bucket.suppressed = 0
        return out


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the given stream, or to whatever `sys.stderr` is at the time."""

    def __init__(self, stream: TextIO | None) -> None:
        super().__init__()
        self._fixed = stream

    @property
    def stream(self) -> TextIO:
        return self._fixed or sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None:
        pass  # StreamHandler.__init__ assigns it; the property decides


_rate_limit = RateLimit()
_handler: _Handler | None = None


def take_suppressed() -> list[tuple[str, str, int]]:
    """What the standard-logging rate limit dropped since the last call (for a periodic line)."""
    return _rate_limit.take_suppressed()


def _bridge_stdlib(renderer: Processor, scrub: _Scrub, level: int, stream: TextIO | None) -> None:
    """Render standard `logging` records like structlog's own, one line each, rate-limited."""
    global _handler  # noqa: PLW0603 - one handler per process, replaced on reconfigure
    handler = _Handler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.processors.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.stdlib.ExtraAdder(allow=["suppressed"]),
                structlog.processors.format_exc_info,
                scrub,
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    handler.addFilter(_rate_limit)
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    # Libraries' info chatter (httpx logs every request) is not the daemon's log.
    root.setLevel(max(level, logging.WARNING))
    _handler = handler


_for_humans = False


def for_humans() -> bool:
    """Whether logs are rendered for a person at a terminal (the console renderer)."""
    return _for_humans


def configure(
    level: str = "info",
    fmt: str = "auto",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Configure structlog once per process (again on SIGHUP)."""
    given = stream
    stream = stream or sys.stderr
    console = fmt == "console" or (fmt == "auto" and stream.isatty())
    global _for_humans  # noqa: PLW0603 - one logging set-up per process
    _for_humans = console
    renderer: Processor = (
        structlog.dev.ConsoleRenderer(colors=stream.isatty())
        if console
        else structlog.processors.JSONRenderer()
    )
    scrub = _Scrub(secrets)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            scrub,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    _bridge_stdlib(renderer, scrub, _LEVELS[level], given)
