"""The floor: a bare aiohttp client making the same GETs, parsing bodies with json.loads.

Nothing syncwatch does can be cheaper than this, so cycle times are reported against it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp


@dataclass(frozen=True)
class Get:
    url: str
    headers: dict[str, str]


@dataclass(frozen=True)
class FloorRun:
    wall: float
    cpu: float
    requests: int
    records: int


async def _run(gets: Sequence[Get], concurrency: int, passes: int) -> list[FloorRun]:
    semaphore = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    runs = []
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(get: Get) -> int:
            async with semaphore, session.get(get.url, headers=get.headers) as response:
                response.raise_for_status()
                body = json.loads(await response.read())
            return len(body.get("syncs") or body.get("data") or ())

        for _ in range(passes):
            started, cpu = time.perf_counter(), time.process_time()
            counts = await asyncio.gather(*(one(g) for g in gets))
            runs.append(
                FloorRun(
                    wall=time.perf_counter() - started,
                    cpu=time.process_time() - cpu,
                    requests=len(gets),
                    records=sum(counts),
                )
            )
    return runs


def run_floor(gets: Sequence[Get], concurrency: int, passes: int = 3) -> list[FloorRun]:
    """`passes` passes over every GET on one kept-alive pool, like a daemon's cycles."""
    return asyncio.run(_run(gets, concurrency, passes))
