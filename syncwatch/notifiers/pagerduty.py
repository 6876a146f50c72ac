"""PagerDuty Events API v2: one trigger or resolve event per alert, de-duplicated by fingerprint.

PagerDuty has no batch endpoint, so a batch of N alerts is N POSTs, sent in order. A batch
whose event k fails is retried by the dispatcher as a whole; events already accepted are
not sent again by this process (see PagerDutyNotifier._progress), and a restart that does
re-send them is harmless: a trigger for an open `dedup_key` only adds a log entry to that
alert, a resolve for a resolved one is dropped by PagerDuty.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Self

import httpx
import orjson
from pydantic import model_validator

from syncwatch.config import KeyProblemError, NotifierConfig, secret_value
from syncwatch.config.types import (
    HttpUrl,
    OptionalSecret,
    SecretFilePath,
    mask_url_password,
    url_password,
)
from syncwatch.models import Severity
from syncwatch.notifiers.base import (
    DELIVERY_ID_HEADER,
    Answer,
    AnswerPolicy,
    HttpNotifier,
    Kind,
    body_text,
    post,
    rfc3339,
)
from syncwatch.outbox import AlertPayload, AlertStatus, Batch, Capabilities, DeliveryError

ENQUEUE_URL = "https://events.pagerduty.com/v2/enqueue"
ROUTING_KEY_LENGTH = 32  # "the 32 character Integration Key" (Events API v2 docs)

MAX_SUMMARY = 1024  # payload.summary, PagerDuty's documented maximum
MAX_DEDUP_KEY = 255
# An event is at most 512 KB; labels and annotations are a fixed, small set of keys, so
# capping each value keeps any alert far below it (a 400 would drop the whole alert).
MAX_DETAIL = 8192

_SEVERITY = {Severity.CRITICAL: "critical", Severity.WARNING: "warning"}
# PD-CEF's optional grouping fields, from labels every alert carries.
_GROUPING = (("class", "alertname"), ("group", "tenant"), ("component", "sync_id"))


class PagerDutyConfig(NotifierConfig):
    # A trigger opens an incident that stays open, and keeps escalating, until a resolve
    # with its dedup_key arrives. send_resolved = false keeps "resolved" messages out of
    # human channels; a resolve here pages nobody, it closes the page, so it always goes.
    capabilities = Capabilities(always_resolves=True)
    _secrets = ("routing_key",)
    type: Literal["pagerduty"]
    routing_key: OptionalSecret = None
    routing_key_file: SecretFilePath = None
    url: HttpUrl = ENQUEUE_URL

    @model_validator(mode="after")
    def _needs_routing_key(self) -> Self:
        if self.routing_key is None:
            raise KeyProblemError(
                "routing_key",
                "required: a pagerduty notifier needs routing_key_file (or routing_key), the "
                "Integration Key of an Events API v2 integration",
            )
        key = secret_value(self.routing_key) or ""
        if len(key) != ROUTING_KEY_LENGTH or not key.isascii() or not key.isalnum():
            # PagerDuty would answer 400 to every event, dropping each alert at run time.
            where = "routing_key_file" if self.routing_key_file is not None else "routing_key"
            raise KeyProblemError(
                where,
                f"expected a {ROUTING_KEY_LENGTH}-character Integration Key (letters and "
                f"digits), got {len(key)} characters (value not shown)",
            )
        return self

    # The url may carry a proxy's basic-auth credentials (http://user:pass@host).
    def redact(self, dumped: dict[str, Any]) -> None:
        dumped["url"] = mask_url_password(self.url)

    def plain_secrets(self) -> list[str]:
        password = url_password(self.url)
        return [password] if password else []


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def dedup_key(alert: AlertPayload, batch: Batch) -> str:
    """The alert's fingerprint; a test batch's own key, so it never touches a real alert."""
    key = f"syncwatch-{batch.delivery_id}" if batch.test else alert.fingerprint
    return key[:MAX_DEDUP_KEY]


def _source(labels: dict[str, str]) -> str:
    """Where the problem is: `timbal/org_1/sync-9`, or syncwatch itself when unlabelled."""
    parts = [labels.get(k, "") for k in ("source", "tenant", "sync_id")]
    return "/".join(p for p in parts if p) or "syncwatch"


def _details(values: dict[str, str]) -> dict[str, str]:
    return {k: _truncate(v, MAX_DETAIL) for k, v in values.items()}


def trigger_event(alert: AlertPayload, batch: Batch, routing_key: str) -> dict[str, Any]:
    """A PD-CEF trigger: summary, severity, source, timestamp, labels and annotations."""
    summary = alert.annotations.get("summary") or alert.alertname or "syncwatch alert"
    if batch.test and not summary.startswith("[TEST]"):
        summary = f"[TEST] {summary}"
    labels = alert.labels
    payload: dict[str, Any] = {
        "summary": _truncate(summary, MAX_SUMMARY),
        "severity": _SEVERITY[alert.severity],
        "source": _source(labels),
        "timestamp": rfc3339(alert.starts_at),
        "custom_details": {
            "labels": _details(labels),
            "annotations": _details(alert.annotations),
        },
    }
    for field_name, label in _GROUPING:
        if labels.get(label):
            payload[field_name] = labels[label]
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key(alert, batch),
        "payload": payload,
        "client": "syncwatch",
    }
    if batch.external_url:
        event["client_url"] = batch.external_url
    if alert.generator_url:
        event["links"] = [{"href": alert.generator_url, "text": "syncwatch"}]
    return event


def resolve_event(alert: AlertPayload, batch: Batch, routing_key: str) -> dict[str, Any]:
    """A resolve needs only the key: PagerDuty ignores anything else on it."""
    return {
        "routing_key": routing_key,
        "event_action": "resolve",
        "dedup_key": dedup_key(alert, batch),
    }


def pagerduty_events(batch: Batch, routing_key: str) -> list[dict[str, Any]]:
    """The events one batch becomes, in batch order; a test batch triggers, then resolves."""
    events = []
    for alert in batch.alerts:
        if alert.status is AlertStatus.RESOLVED:
            events.append(resolve_event(alert, batch, routing_key))
        else:
            events.append(trigger_event(alert, batch, routing_key))
    if batch.test:
        # `test-notify` proves the page arrives, then closes it: no incident left open.
        events.extend(resolve_event(a, batch, routing_key) for a in batch.firing)
    return events


def _retryable(status: int) -> bool:
    """PagerDuty's table: 429 and 5xx retry, 400 (invalid event) never will be accepted.

    Other 4xx (a proxy's 404, 413) answer the same again; 408 is a proxy's timeout.
    """
    return status in (408, 429) or status >= 500


def explain(answer: Answer) -> str:
    """PagerDuty's error body `{"status", "message", "errors": [...]}` as one line."""
    try:
        data = orjson.loads(answer.text)
    except orjson.JSONDecodeError:
        return body_text(answer)
    if not isinstance(data, dict):
        return body_text(answer)
    message = data.get("message") or data.get("status") or ""
    errors = data.get("errors")
    details = [str(e) for e in errors] if isinstance(errors, list) else []
    words = ": ".join(p for p in (str(message), "; ".join(details)) if p)
    return words or body_text(answer)


@dataclass(slots=True)
class _Progress:
    """How far one batch got: events before `next` were answered (202 or a permanent 4xx)."""

    total: int
    next: int = 0
    rejected: list[str] = field(default_factory=list)
    status_code: int | None = None  # the first rejection's


# Only the head of a notifier's queue is ever retried, so one entry is live at a time;
# the bound covers rows the dispatcher dropped midway, which never come back.
MAX_PROGRESS = 64
MAX_SHOWN = 3  # rejected events named in one error


class PagerDutyNotifier(HttpNotifier[PagerDutyConfig]):
    answers: ClassVar[AnswerPolicy] = AnswerPolicy(retryable=_retryable, explain=explain)

    def __init__(
        self,
        config: PagerDutyConfig,
        client: httpx.AsyncClient,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(config, client, clock)
        key = secret_value(config.routing_key)
        assert key is not None, "config validation requires routing_key"
        self.routing_key = key
        # The key travels in the body, and an error page (a proxy's, a hostile one) may
        # echo the body: masked before post() cuts the explanation short.
        self._answers = AnswerPolicy(
            retryable=self.answers.retryable,
            explain=lambda answer: self.answers.explain(answer).replace(key, "[redacted]"),
        )
        # Progress across retries of one delivery id, in memory. Without it a batch larger
        # than PagerDuty's ~120 events/minute per key would restart at event 1 on every
        # retry and never get past the rate limit. Lost on restart: then dedup_key makes
        # the re-sent events harmless.
        self._progress: OrderedDict[str, _Progress] = OrderedDict()

    async def send(self, batch: Batch) -> None:
        events = pagerduty_events(batch, self.routing_key)
        progress = self._progress.get(batch.delivery_id)
        if progress is None or progress.total != len(events):
            progress = self._progress[batch.delivery_id] = _Progress(len(events))
            while len(self._progress) > MAX_PROGRESS:
                self._progress.popitem(last=False)
        headers = {DELIVERY_ID_HEADER: batch.delivery_id}
        for i in range(progress.next, len(events)):
            where = f"event {i + 1} of {len(events)} ({events[i]['event_action']})"
            try:
                await post(
                    self.client,
                    self.config.url,
                    orjson.dumps(events[i]),
                    headers,
                    what=f"pagerduty {self.name}",
                    clock=self.clock,
                    answers=self._answers,
                )
            except DeliveryError as exc:
                if exc.retryable:
                    kept = f"; the {i} before it are not sent again" if i else ""
                    if batch.test and events[i]["event_action"] == "resolve":
                        kept += "; the [TEST] alert stays open in PagerDuty: resolve it there"
                    raise DeliveryError(
                        f"{exc} at {where}{kept}",
                        retryable=True,
                        retry_after=exc.retry_after,
                        status_code=exc.status_code,
                    ) from None
                # This event will never be accepted; the others still must be.
                progress.rejected.append(f"{exc} at {where}")
                progress.status_code = progress.status_code or exc.status_code
            progress.next = i + 1
        self._progress.pop(batch.delivery_id, None)
        if progress.rejected:
            rejected = progress.rejected
            accepted = len(events) - len(rejected)
            # A wrong key gets every event of a storm rejected: the log line stays a line.
            shown = rejected[:MAX_SHOWN] + [f"{len(rejected) - MAX_SHOWN} more rejected"] * (
                len(rejected) > MAX_SHOWN
            )
            raise DeliveryError(
                "; ".join(shown) + f" ({accepted} of {len(events)} accepted)",
                retryable=False,
                status_code=progress.status_code,
            )


KIND = Kind(PagerDutyConfig, PagerDutyNotifier.build)
