"""One pass of the dispatcher's delivery loops, for tests that step a fake clock."""

from __future__ import annotations

import asyncio

from syncwatch.dispatch import Dispatcher


async def deliver_due(dispatcher: Dispatcher) -> float | None:
    """What `Dispatcher.run`'s loops do, once: drop removed notifiers' rows, drain each
    notifier's queue (`Dispatcher.drain`, as each loop does), flush the store; returns the
    seconds until the next retry is due (None: idle)."""
    dispatcher.drop_unconfigured()
    notifiers = dispatcher.store.notifiers()
    results = await asyncio.gather(*(dispatcher.drain(n) for n in notifiers))
    await dispatcher.store.flush()
    waits = [r for r in results if r is not None]
    return min(waits) if waits else None
