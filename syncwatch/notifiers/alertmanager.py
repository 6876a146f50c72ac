"""Prometheus Alertmanager: `POST /api/v2/alerts` to every replica, as Prometheus does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
import orjson
from pydantic import Field

from syncwatch.config import NotifierConfig
from syncwatch.config.types import HttpUrl, mask_url_password, url_password
from syncwatch.failures import origin
from syncwatch.notifiers.base import DELIVERY_ID_HEADER, Context, Kind, post, rfc3339
from syncwatch.outbox import AlertStatus, Batch, Capabilities, DeliveryError

# Firing alerts are re-sent every cycle; a few missed cycles must not resolve them.
ENDS_AT_CYCLES = 4


class AlertmanagerConfig(NotifierConfig):
    # Fed the way Prometheus feeds it: every resolve, and firing alerts every cycle.
    capabilities = Capabilities(always_resolves=True, resends_active=True)
    type: Literal["alertmanager"]
    urls: list[HttpUrl] = Field(min_length=1)

    # A URL may carry basic-auth credentials (http://user:pass@host).
    def redact(self, dumped: dict[str, Any]) -> None:
        dumped["urls"] = [mask_url_password(u) for u in self.urls]

    def plain_secrets(self) -> list[str]:
        return [p for p in map(url_password, self.urls) if p]


class AlertmanagerNotifier:
    def __init__(
        self,
        config: AlertmanagerConfig,
        client: httpx.AsyncClient,
        poll_interval: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = config.name
        self.capabilities = config.capabilities
        self.urls = config.urls
        self.client = client
        self.poll_interval = poll_interval
        self.clock = clock

    @classmethod
    def build(
        cls, config: AlertmanagerConfig, client: httpx.AsyncClient, context: Context
    ) -> AlertmanagerNotifier:
        """The registry's uniform factory."""
        return cls(config, client, context.poll_interval, context.clock)

    def body(self, batch: Batch) -> bytes:
        now = datetime.fromtimestamp(self.clock(), UTC)
        ends_firing = now + timedelta(seconds=ENDS_AT_CYCLES * self.poll_interval)
        alerts = []
        for a in batch.alerts:
            labels = {**a.labels, "test": "true"} if batch.test else a.labels
            resolved = a.status is AlertStatus.RESOLVED
            alerts.append(
                {
                    "labels": labels,
                    "annotations": a.annotations,
                    "startsAt": rfc3339(a.starts_at),
                    "endsAt": rfc3339((a.ends_at or now) if resolved else ends_firing),
                    "generatorURL": a.generator_url,
                }
            )
        return orjson.dumps(alerts)

    async def send(self, batch: Batch) -> None:
        """Success when any replica accepts: the cluster gossips and de-duplicates."""
        body = self.body(batch)
        headers = {DELIVERY_ID_HEADER: batch.delivery_id}
        results = await asyncio.gather(
            *(
                post(
                    self.client,
                    f"{url}/api/v2/alerts",
                    body,
                    headers,
                    # host:port names the replica; a path may be a proxy's token.
                    what=f"alertmanager {origin(url)}",
                    clock=self.clock,
                )
                for url in self.urls
            ),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if len(errors) < len(results):
            return
        delivery = [e for e in errors if isinstance(e, DeliveryError)]
        if len(delivery) != len(errors):
            raise errors[0]
        # The longest wait any replica asked for (0 included); None when none asked.
        asked = [e.retry_after for e in delivery if e.retry_after is not None]
        raise DeliveryError(
            "; ".join(str(e) for e in delivery),
            retryable=any(e.retryable for e in delivery),
            retry_after=max(asked, default=None),
        )


KIND = Kind(AlertmanagerConfig, AlertmanagerNotifier.build)
