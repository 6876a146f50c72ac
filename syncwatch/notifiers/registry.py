"""Every notifier kind, one line each: its config `type` and the factory that builds it.

A kind is one module: its notifier class with a `build(config, client, context)` factory;
its config model (with the kind's Capabilities) is a member of `syncwatch.config.Notifier`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import httpx

from syncwatch.config import Notifier as NotifierConfig
from syncwatch.notifiers.alertmanager import AlertmanagerNotifier
from syncwatch.notifiers.base import Context
from syncwatch.notifiers.console import ConsoleNotifier
from syncwatch.notifiers.slack import SlackNotifier
from syncwatch.notifiers.webhook import WebhookNotifier
from syncwatch.outbox import Notifier

Factory = Callable[[Any, httpx.AsyncClient, Context], Notifier]

KINDS: Mapping[str, Factory] = {
    "slack": SlackNotifier.build,
    "webhook": WebhookNotifier.build,
    "alertmanager": AlertmanagerNotifier.build,
    "console": ConsoleNotifier.build,
}


def make_notifier(
    config: NotifierConfig, client: httpx.AsyncClient, *, poll_interval: float
) -> Notifier:
    """The notifier a config entry describes, sharing the one HTTP client."""
    return KINDS[config.type](config, client, Context(poll_interval))
