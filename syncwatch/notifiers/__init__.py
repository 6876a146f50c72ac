"""Notifiers: small classes with `async send(batch)` that raise DeliveryError on failure."""

from __future__ import annotations

import httpx

from syncwatch.config import (
    AlertmanagerNotifier as AlertmanagerConfig,
)
from syncwatch.config import (
    ConsoleNotifier as ConsoleConfig,
)
from syncwatch.config import (
    Notifier as NotifierConfig,
)
from syncwatch.config import (
    SlackNotifier as SlackConfig,
)
from syncwatch.config import (
    WebhookNotifier as WebhookConfig,
)
from syncwatch.notifiers.alertmanager import AlertmanagerNotifier
from syncwatch.notifiers.console import ConsoleNotifier
from syncwatch.notifiers.slack import SlackNotifier
from syncwatch.notifiers.webhook import WebhookNotifier
from syncwatch.outbox import Notifier

__all__ = ["Notifier", "make_notifier"]


def make_notifier(
    config: NotifierConfig, client: httpx.AsyncClient, *, poll_interval: float
) -> Notifier:
    """The notifier a config entry describes, sharing the one HTTP client."""
    if isinstance(config, SlackConfig):
        return SlackNotifier(config, client)
    if isinstance(config, WebhookConfig):
        return WebhookNotifier(config, client)
    if isinstance(config, AlertmanagerConfig):
        return AlertmanagerNotifier(config, client, poll_interval)
    assert isinstance(config, ConsoleConfig)
    return ConsoleNotifier(config)
