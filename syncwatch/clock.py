"""Time: the wall clock for timestamps, the monotonic clock for durations, injectable.

Timestamps that leave the process (startsAt, endsAt, created_at, signatures) come from the
wall clock. Everything that measures a duration (spacing, backoff, the outbox's 24 h window,
`for`, `keep_firing_for`, `repeat_interval`) must survive the wall clock being stepped,
so it is measured on the monotonic clock, or re-based when a step is detected.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Protocol


class Clock(Protocol):
    def wall(self) -> float:
        """Unix seconds: for timestamps."""
        ...

    def monotonic(self) -> float:
        """Seconds that only move forward: for durations."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of this clock's monotonic time."""
        ...


class SystemClock:
    def wall(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM = SystemClock()


async def wait_for_event(clock: Clock, event: asyncio.Event, seconds: float | None) -> None:
    """Until `event` is set or `seconds` of `clock` have passed (None: no limit)."""
    if event.is_set():
        return
    waits: list[asyncio.Future[object]] = [asyncio.ensure_future(event.wait())]
    if seconds is not None:
        waits.append(asyncio.ensure_future(clock.sleep(max(0.0, seconds))))
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


@dataclass
class StepDetector:
    """Tells a step of the wall clock from the wall and monotonic readings of each cycle.

    Between two readings both clocks should advance alike; NTP slewing stays far below the
    tolerance (at most 0.05 %), a step (date -s, a VM resumed, a bad NTP source) beyond it.
    """

    tolerance: float = 1.0  # seconds, plus 0.1 % of the time between readings
    _last: tuple[float, float] | None = None

    def observe(self, wall: float, monotonic: float) -> float:
        """The wall clock's step since the last reading, in seconds (0.0: none)."""
        last, self._last = self._last, (wall, monotonic)
        if last is None:
            return 0.0
        elapsed = monotonic - last[1]
        offset = (wall - last[0]) - elapsed
        return offset if abs(offset) > self.tolerance + 0.001 * abs(elapsed) else 0.0
