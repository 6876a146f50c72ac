"""Slack incoming webhook: one Block Kit message per batch, always inside Slack's limits."""

from __future__ import annotations

from typing import Any, Literal, Self

import orjson
from pydantic import model_validator
from slack_sdk.models.blocks import (
    Block,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    MarkdownTextObject,
    SectionBlock,
)

from syncwatch.config import NotifierConfig, secret_value
from syncwatch.config.types import SecretFilePath, SecretUrl
from syncwatch.models import Severity
from syncwatch.notifiers.base import DELIVERY_ID_HEADER, HttpNotifier, Kind
from syncwatch.outbox import AlertPayload, AlertStatus, Batch, Capabilities, EventKind, worst_first


class SlackConfig(NotifierConfig):
    # Slack allows about one message per second per incoming webhook.
    capabilities = Capabilities(min_interval=1.0)
    _secrets = ("webhook_url",)
    type: Literal["slack"]
    webhook_url: SecretUrl = None
    webhook_url_file: SecretFilePath = None

    @model_validator(mode="after")
    def _needs_url(self) -> Self:
        self._require_url("webhook_url", "a slack notifier needs webhook_url_file (or webhook_url)")
        return self


MAX_BLOCKS = 50
MAX_SECTION = 3000
MAX_HEADER = 150
# The plain-text fallback is the notification preview; Slack allows 40,000 characters.
MAX_FALLBACK = 3000
# Slack answers msg_blocks_too_long near 13k characters of block text, below its
# per-block limits; stay well under it.
MAX_BLOCKS_TEXT = 12_000
MAX_LINE = 280
_MORE_ROOM = 40  # room kept for the closing "…and N more"

_ICON = {Severity.CRITICAL: ":red_circle:", Severity.WARNING: ":large_orange_circle:"}
_RESOLVED_ICON = ":white_check_mark:"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _line(a: AlertPayload) -> str:
    icon = _RESOLVED_ICON if a.status is AlertStatus.RESOLVED else _ICON[a.severity]
    change = " (severity changed)" if a.event is EventKind.CHANGED else ""
    summary = a.annotations.get("summary") or a.alertname
    line = f"{icon} *{a.severity}* `{a.alertname}`{change} {_escape(summary)}"
    return line if len(line) <= MAX_LINE else line[: MAX_LINE - 1] + "…"


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_message(batch: Batch) -> dict[str, Any]:
    """Header, link, firing then resolved (worst first), ending '…and N more' if cut short."""
    alerts = sorted(batch.alerts, key=worst_first)
    firing = sum(1 for a in alerts if a.status is AlertStatus.FIRING)
    resolved = len(alerts) - firing
    parts = [f"{firing} firing"] if firing else []
    if resolved:
        parts.append(f"{resolved} resolved")
    test = "[TEST] " if batch.test else ""
    title = _truncate(f"{test}syncwatch: {', '.join(parts) or 'no alerts'}", MAX_HEADER)

    head: list[Block] = [HeaderBlock(text=title)]
    used = len(title)
    link = f"<{batch.external_url}|Open syncwatch> · {batch.reason}" if batch.external_url else ""
    # A link cannot be shortened without breaking it; an absurdly long one is left out.
    if link and len(link) <= MAX_SECTION:
        head.append(ContextBlock(elements=[MarkdownTextObject(text=link)]))
        used += len(link)

    # Greedy, worst first: each line goes into the open section of its group, a new section,
    # or (first of its group) a new titled section after a divider; the first line that
    # would break a limit ends the list, so no less bad alert is shown while a worse one is not.
    text_room = MAX_BLOCKS_TEXT - _MORE_ROOM - used
    block_room = MAX_BLOCKS - len(head) - 1  # the closing "…and N more" context
    sections: list[tuple[AlertStatus, str]] = []
    blocks_used = 0
    shown = 0
    for a in alerts:
        line = _line(a)
        last = sections[-1] if sections else None
        if last is not None and last[0] is a.status:
            if len(last[1]) + 1 + len(line) <= MAX_SECTION:
                grown, cost, new_blocks = f"{last[1]}\n{line}", 1 + len(line), 0
            else:
                grown, cost, new_blocks = line, len(line), 1
        else:
            label = "Firing" if a.status is AlertStatus.FIRING else "Resolved"
            grown = f"*{label}*\n{line}"
            cost, new_blocks = len(grown), 1 if last is None else 2  # + divider
        if cost > text_room or blocks_used + new_blocks > block_room:
            break
        if new_blocks:
            sections.append((a.status, grown))
        else:
            sections[-1] = (a.status, grown)
        text_room -= cost
        blocks_used += new_blocks
        shown += 1

    blocks = list(head)
    for i, (status, text) in enumerate(sections):
        if i and status is not sections[i - 1][0]:
            blocks.append(DividerBlock())
        blocks.append(SectionBlock(text=MarkdownTextObject(text=text)))
    if shown < len(alerts):
        blocks.append(
            ContextBlock(elements=[MarkdownTextObject(text=f"…and {len(alerts) - shown} more")])
        )
    for block in blocks:
        block.validate_json()
    # The fallback is mrkdwn too: upstream text must not become a mention or a link here either.
    fallback = (
        title
        + "\n"
        + "\n".join(_escape(a.annotations.get("summary", a.alertname)) for a in alerts[:50])
    )
    return {"text": _truncate(fallback, MAX_FALLBACK), "blocks": [b.to_dict() for b in blocks]}


class SlackNotifier(HttpNotifier[SlackConfig]):
    async def send(self, batch: Batch) -> None:
        url = secret_value(self.config.webhook_url)
        assert url is not None, "config validation requires webhook_url"
        body = orjson.dumps(slack_message(batch))
        await self.post(url, body, {DELIVERY_ID_HEADER: batch.delivery_id})


KIND = Kind(SlackConfig, SlackNotifier.build)
