"""Every notifier kind, one line each; the config union, type names and factory follow.

A kind is one module: its config model (a NotifierConfig with the kind's Capabilities), its
notifier class, and `KIND = Kind(config model, factory)`. Adding one is that module and
its line below.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Union

import httpx
from pydantic import Field

from syncwatch.config import NotifierConfig
from syncwatch.notifiers import alertmanager, console, email, msteams, pagerduty, slack, webhook
from syncwatch.notifiers.base import Context, Kind
from syncwatch.outbox import Notifier

_KINDS: tuple[Kind, ...] = (
    slack.KIND,
    webhook.KIND,
    alertmanager.KIND,
    console.KIND,
    email.KIND,
    msteams.KIND,
    pagerduty.KIND,
)

KINDS: Mapping[str, Kind] = {kind.type: kind for kind in _KINDS}
TYPES: tuple[str, ...] = tuple(KINDS)  # as error messages list them

# What a [[notifiers]] entry validates as: the kind its `type` names.
if TYPE_CHECKING:
    AnyNotifierConfig = NotifierConfig
else:
    AnyNotifierConfig = Annotated[
        Union[tuple(kind.config for kind in _KINDS)],  # noqa: UP007 - built at run time
        Field(discriminator="type"),
    ]


def make_notifier(
    config: NotifierConfig,
    client: httpx.AsyncClient,
    *,
    poll_interval: float,
    ca_bundle: Path | None = None,
) -> Notifier:
    """The notifier a config entry describes, sharing the one HTTP client."""
    context = Context(poll_interval, ca_bundle=ca_bundle)
    return KINDS[config.type].build(config, client, context)
