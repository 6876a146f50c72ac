"""Slack incoming webhook: one Block Kit message per batch, always inside Slack's limits."""

from __future__ import annotations

from typing import Any

import orjson
from slack_sdk.models.blocks import (
    Block,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    MarkdownTextObject,
    SectionBlock,
)

from syncwatch.config import SlackNotifier as SlackConfig
from syncwatch.config import secret_value
from syncwatch.models import Severity
from syncwatch.notifiers.base import (
    DELIVERY_ID_HEADER,
    AlertPayload,
    AlertStatus,
    Batch,
    EventKind,
    HttpNotifier,
    post,
)

MAX_BLOCKS = 50
MAX_SECTION = 3000
MAX_HEADER = 150
MAX_TEXT = 40_000
# Slack answers msg_blocks_too_long near 13k characters of block text, below its
# per-block limits; stay well under it.
MAX_BLOCKS_TEXT = 12_000
MAX_LINE = 280
_MORE_ROOM = 40  # "…and N more"

_ICON = {Severity.CRITICAL: ":red_circle:", Severity.WARNING: ":large_orange_circle:"}
_RESOLVED_ICON = ":white_check_mark:"


def _worst_first(a: AlertPayload) -> tuple[int, int, str, str, str]:
    return (
        0 if a.status is AlertStatus.FIRING else 1,
        -a.severity.rank,
        a.alertname,
        a.labels.get("tenant", ""),
        a.labels.get("sync_id", ""),
    )


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
    """Header, firing then resolved (worst first), '…and N more' when it would not fit."""
    alerts = sorted(batch.alerts, key=_worst_first)
    firing = sum(1 for a in alerts if a.status is AlertStatus.FIRING)
    resolved = len(alerts) - firing
    parts = [f"{firing} firing"] if firing else []
    if resolved:
        parts.append(f"{resolved} resolved")
    test = "[TEST] " if batch.test else ""
    title = _truncate(f"{test}syncwatch: {', '.join(parts) or 'no alerts'}", MAX_HEADER)

    blocks: list[Block] = [HeaderBlock(text=title)]
    used = len(title)
    link = f"<{batch.external_url}|Open syncwatch> · {batch.reason}" if batch.external_url else ""
    # Room for the trailing "…and N more" context and the link context: a long external_url
    # must not push the message over the limit.
    budget = MAX_BLOCKS_TEXT - _MORE_ROOM - len(link)
    shown = 0
    full = False  # once one alert is left out, none after it (less bad) may be shown
    for group, label in ((AlertStatus.FIRING, "Firing"), (AlertStatus.RESOLVED, "Resolved")):
        members = [a for a in alerts if a.status is group]
        if not members:
            continue
        chunk = f"*{label}*"
        for a in members:
            line = _line(a)
            if used + len(chunk) + len(line) + 1 > budget:
                full = True
                break
            if len(chunk) + len(line) + 1 > MAX_SECTION:
                if len(blocks) >= MAX_BLOCKS - 4:
                    full = True
                    break
                blocks.append(SectionBlock(text=MarkdownTextObject(text=chunk)))
                used += len(chunk)
                chunk = ""
            chunk = f"{chunk}\n{line}" if chunk else line
            shown += 1
        if chunk and len(blocks) < MAX_BLOCKS - 3:
            blocks.append(SectionBlock(text=MarkdownTextObject(text=chunk)))
            used += len(chunk)
        if full or used >= budget or len(blocks) >= MAX_BLOCKS - 3:
            break
    if shown < len(alerts):
        blocks.append(
            ContextBlock(elements=[MarkdownTextObject(text=f"…and {len(alerts) - shown} more")])
        )
    if link:
        blocks.append(DividerBlock())
        blocks.append(ContextBlock(elements=[MarkdownTextObject(text=link)]))
    for block in blocks:
        block.validate_json()
    # The fallback is mrkdwn too: upstream text must not become a mention or a link here either.
    fallback = (
        title
        + "\n"
        + "\n".join(_escape(a.annotations.get("summary", a.alertname)) for a in alerts[:50])
    )
    return {"text": _truncate(fallback, 3000), "blocks": [b.to_dict() for b in blocks]}


class SlackNotifier(HttpNotifier[SlackConfig]):
    # Slack allows about one message per second per incoming webhook.
    min_interval = 1.0

    async def send(self, batch: Batch) -> None:
        url = secret_value(self.config.webhook_url)
        assert url is not None, "config validation requires webhook_url"
        await post(
            self.client,
            url,
            orjson.dumps(slack_message(batch)),
            {DELIVERY_ID_HEADER: batch.delivery_id},
            what=f"slack {self.name}",
            clock=self.clock,
        )
