"""Microsoft Teams Workflows webhook: one Adaptive Card per batch, always inside 28 KB.

The URL is a Teams Workflows (Power Automate "When a Teams webhook request is received")
trigger; its `sig` query parameter is the credential. The body is a message with one
Adaptive Card attachment, which the workflow posts to a channel or chat.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, ClassVar, Literal, Self

import orjson
from pydantic import model_validator

from syncwatch.config import NotifierConfig, secret_value
from syncwatch.config.types import SecretFilePath, SecretUrl
from syncwatch.models import Severity
from syncwatch.notifiers.base import DELIVERY_ID_HEADER, Answer, AnswerPolicy, HttpNotifier, Kind
from syncwatch.outbox import AlertPayload, AlertStatus, Batch, EventKind, worst_first

_NEEDS_URL = (
    "an msteams notifier needs webhook_url_file (or webhook_url), "
    + "the URL of a Teams Workflows webhook trigger"
)


class MSTeamsConfig(NotifierConfig):
    _secrets = ("webhook_url",)
    type: Literal["msteams"]
    webhook_url: SecretUrl = None
    webhook_url_file: SecretFilePath = None

    @model_validator(mode="after")
    def _needs_url(self) -> Self:
        self._require_url(
            "webhook_url",
            _NEEDS_URL,
        )
        return self


# Teams refuses a message over about 28 KB (413). The whole request body is kept under
# MAX_PAYLOAD bytes of UTF-8, leaving room for what the workflow wraps around the card.
TEAMS_LIMIT = 28_000
MAX_PAYLOAD = 24_000
MAX_TEXT = 300  # characters of one alert's summary
MAX_LINK = 2_000  # a longer external_url is left out rather than cut (a cut link is broken)
CARD_VERSION = "1.5"  # the highest Teams renders
CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"

_COLOR = {Severity.CRITICAL: "Attention", Severity.WARNING: "Warning"}


# Line breaks, other controls, bidi overrides and zero-width characters: upstream text
# must not break the card's layout nor disguise what it says.
_INVISIBLE = re.compile(r"[\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


def plain(text: str, limit: int = MAX_TEXT) -> str:
    """Upstream text as one plain line: no controls, no lone surrogates, at most `limit`."""
    text = text.encode("utf-8", "replace").decode("utf-8")
    text = "".join(" " if unicodedata.category(c) == "Cc" else c for c in text)
    text = " ".join(_INVISIBLE.sub("", text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _run(text: str, **style: Any) -> dict[str, Any]:
    # A TextRun's text is never parsed as markdown (unlike a TextBlock's), and a mention
    # needs msteams.entities, which is never sent: upstream text stays text.
    return {"type": "TextRun", "text": text, **style}


def _alert_element(a: AlertPayload) -> dict[str, Any]:
    """One alert: severity (coloured), alertname, what changed, summary; all plain runs."""
    color = "Good" if a.status is AlertStatus.RESOLVED else _COLOR[a.severity]
    inlines = [
        _run(str(a.severity).upper(), weight="Bolder", color=color),
        _run(" " + plain(a.alertname, 100), fontType="Monospace"),
    ]
    if a.event is EventKind.CHANGED:
        inlines.append(_run(" (severity changed)", italic=True))
    summary = a.annotations.get("summary") or a.alertname
    inlines.append(_run(" " + plain(summary)))
    return {"type": "RichTextBlock", "inlines": inlines, "spacing": "Small"}


def _text(text: str, **style: Any) -> dict[str, Any]:
    """A TextBlock: only ever syncwatch's own words (a TextBlock renders markdown)."""
    return {"type": "TextBlock", "text": text, "wrap": True, **style}


def _size(value: Any) -> int:
    return len(orjson.dumps(value))


def teams_message(batch: Batch) -> dict[str, Any]:
    """Title, firing then resolved (worst first), ending '…and N more' if cut short."""
    alerts = sorted(batch.alerts, key=worst_first)
    firing = sum(1 for a in alerts if a.status is AlertStatus.FIRING)
    resolved = len(alerts) - firing
    parts = [f"{firing} firing"] if firing else []
    if resolved:
        parts.append(f"{resolved} resolved")
    test = "[TEST] " if batch.test else ""
    head = [
        _text(f"{test}syncwatch: {', '.join(parts) or 'no alerts'}", size="Large", weight="Bolder"),
        _text(str(batch.reason), isSubtle=True, spacing="None"),
    ]
    card: dict[str, Any] = {
        "$schema": CARD_SCHEMA,
        "type": "AdaptiveCard",
        "version": CARD_VERSION,
        "body": head,
    }
    link = batch.external_url
    if link and len(link) <= MAX_LINK:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Open syncwatch", "url": link}]
    message = {
        "type": "message",
        "attachments": [{"contentType": ADAPTIVE_CARD, "content": card}],
    }

    # Greedy, worst first, in exact bytes: each element costs its JSON plus a comma. The
    # first alert that would break the budget ends the list, so no less bad alert is shown
    # while a worse one is not; room for the closing "…and N more" is kept throughout.
    more_room = _size(_text(f"…and {len(alerts)} more", isSubtle=True)) + 1
    room = MAX_PAYLOAD - _size(message) - more_room
    body: list[dict[str, Any]] = []
    shown = 0
    group: AlertStatus | None = None
    for a in alerts:
        new = [_alert_element(a)]
        if a.status is not group:
            label = "Firing" if a.status is AlertStatus.FIRING else "Resolved"
            new.insert(0, _text(label, weight="Bolder", separator=True))
        cost = sum(_size(e) + 1 for e in new)
        if cost > room:
            break
        body += new
        room -= cost
        group = a.status
        shown += 1
    if shown < len(alerts):
        body.append(_text(f"…and {len(alerts) - shown} more", isSubtle=True))
    card["body"] += body
    return message


def _workflows_error(answer: Answer) -> str:
    """Workflows (Logic Apps) explain an error as {"error": {"code", "message"}}."""
    try:
        error = orjson.loads(answer.text)["error"]
        return f"{error['code']}: {error['message']}"
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return answer.text


class MSTeamsNotifier(HttpNotifier[MSTeamsConfig]):
    # Workflows accepts with 202; 429 (with Retry-After) and 5xx are worth retrying and any
    # other answer would be the same again: the default classification fits.
    answers: ClassVar[AnswerPolicy] = AnswerPolicy(explain=_workflows_error)

    async def send(self, batch: Batch) -> None:
        url = secret_value(self.config.webhook_url)
        assert url is not None, "config validation requires webhook_url"
        body = orjson.dumps(teams_message(batch))
        headers = {
            DELIVERY_ID_HEADER: batch.delivery_id,
            # Said outright: a receiver that guesses another charset counts the 28 KB twice.
            "Content-Type": "application/json; charset=utf-8",
        }
        await self.post(url, body, headers)


KIND = Kind(MSTeamsConfig, MSTeamsNotifier.build)
