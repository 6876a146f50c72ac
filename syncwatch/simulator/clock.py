"""The simulated clock: real time at start, running `time_scale` times faster."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

# Aware UTC datetimes; tests pass a hand-moved one, the servers a ScaledClock.
Clock = Callable[[], datetime]


class ScaledClock:
    """Real UTC time at creation, then `scale` simulated seconds per real (monotonic) second."""

    def __init__(self, scale: float) -> None:
        self._start = datetime.now(UTC)
        self._t0 = time.monotonic()
        self._scale = scale

    def __call__(self) -> datetime:
        return self._start + timedelta(seconds=(time.monotonic() - self._t0) * self._scale)

    # The daemon's Clock: wall and monotonic both run `scale` times faster, so they agree.
    def wall(self) -> float:
        return self().timestamp()

    def monotonic(self) -> float:
        return time.monotonic() * self._scale

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds / self._scale)
