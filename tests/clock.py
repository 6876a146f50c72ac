"""A fake Clock for tests: wall and monotonic time moved only by the test.

`advance` moves both clocks (time passing) and wakes the sleepers it reaches; `step` moves
only the wall clock (`date -s`, a bad NTP source). With `autojump`, a sleep moves time by
itself at once: for a test that plays the daemon pass by pass.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from datetime import datetime


class FakeClock:
    def __init__(self, start: datetime, *, monotonic: float = 1000.0, autojump: bool = False):
        self._wall = start.timestamp()
        self._mono = monotonic
        self.autojump = autojump
        self.slept: list[float] = []  # every sleep asked for, in order
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._ids = itertools.count()

    # --- the Clock protocol -----------------------------------------------------------------

    def wall(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        if self.autojump:
            self.advance(seconds)
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._mono + seconds, next(self._ids), future))
        await future

    # --- moved by the test ------------------------------------------------------------------

    def __call__(self) -> float:
        return self._wall

    @property
    def now(self) -> float:
        """Wall time (unix seconds); setting it lets that much time pass on both clocks."""
        return self._wall

    @now.setter
    def now(self, value: float) -> None:
        self.advance(value - self._wall)

    def set(self, when: datetime) -> None:
        self.now = when.timestamp()

    def advance(self, seconds: float) -> None:
        """Time passes: both clocks move, and sleepers that are due wake."""
        assert seconds >= 0, "time only moves forward; use step() for the wall clock"
        self._wall += seconds
        self._mono += seconds
        while self._sleepers and self._sleepers[0][0] <= self._mono:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    def step(self, seconds: float) -> None:
        """Only the wall clock jumps, by `seconds` (either way)."""
        self._wall += seconds

    def next_wake(self) -> float | None:
        """Monotonic seconds until the earliest sleeper wakes (None: nobody sleeps)."""
        live = [d for d, _, f in self._sleepers if not f.done()]
        return None if not live else max(0.0, min(live) - self._mono)
