"""What notifier kinds share: the Kind a module declares, its build Context, HTTP delivery."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Generic, Self, TypeVar, get_args
from urllib.parse import unquote, urlsplit

import httpx

from syncwatch.config import NotifierConfig
from syncwatch.failures import classify, origin, parse_retry_after, scrub
from syncwatch.http import read_body
from syncwatch.outbox import DeliveryError, Notifier

DELIVERY_ID_HEADER = "X-Syncwatch-Delivery-Id"


C = TypeVar("C", bound=NotifierConfig)


@dataclass(frozen=True, slots=True)
class Context:
    """What a notifier may need besides its config entry and the shared HTTP client."""

    poll_interval: float
    clock: Callable[[], float] = field(default=time.time)
    # daemon.ca_bundle, for a kind that opens its own TLS connections (SMTP); HTTP kinds
    # share the client, which trusts it already.
    ca_bundle: Path | None = None


@dataclass(frozen=True, slots=True)
class Kind:
    """One notifier kind, as its module declares it: the config model and the factory."""

    config: type[NotifierConfig]
    # (that kind's config entry, the shared HTTP client, Context) -> Notifier
    build: Callable[[Any, httpx.AsyncClient, Context], Notifier]

    @property
    def type(self) -> str:
        """The `type = "…"` of its config entries, read from the model's Literal."""
        tag: str = get_args(self.config.model_fields["type"].annotation)[0]
        return tag


def rfc3339(value: datetime | None) -> str:
    """Alertmanager's time format; an unset endsAt is Go's zero time, as Alertmanager sends."""
    if value is None:
        return "0001-01-01T00:00:00Z"
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def split_userinfo(url: str) -> tuple[str, httpx.BasicAuth | None]:
    """`http://user:pass@host/` → (`http://host/`, basic auth): the aiohttp transport refuses
    credentials inside the URL, and a bare URL is safe to name in logs."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    bare = parts._replace(netloc=netloc).geturl()
    return bare, httpx.BasicAuth(unquote(parts.username), unquote(parts.password or ""))


@dataclass(frozen=True, slots=True)
class Answer:
    """A receiver's answer: status, headers and the start of its body (at most ANSWER_LIMIT)."""

    status_code: int
    headers: httpx.Headers
    text: str


# Receivers answer "ok" or a short error; nothing more of their body is ever read.
ANSWER_LIMIT = 64 * 1024


def retry_by_default(status: int) -> bool:
    """Timeouts, rate limits and server errors pass; anything else will answer the same."""
    return status in (408, 429) or status >= 500


def body_text(answer: Answer) -> str:
    """The receiver's own words: most answer an error as a line of text."""
    return answer.text


@dataclass(frozen=True, slots=True)
class AnswerPolicy:
    """How one kind reads a non-2xx answer: retry or give up, and the words that explain it.

    The per-integration hook of Alertmanager's notify.Retrier: a kind whose receiver
    documents its answers (PagerDuty: 400 is permanent, 429 and 5xx retry) declares them.
    """

    retryable: Callable[[int], bool] = retry_by_default
    explain: Callable[[Answer], str] = body_text


DEFAULT_ANSWERS = AnswerPolicy()


async def post(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    what: str,
    clock: Callable[[], float] = time.time,
    answers: AnswerPolicy = DEFAULT_ANSWERS,
) -> Answer:
    """POST and map the outcome to DeliveryError; `what` names the target (never a secret URL).

    Every exception becomes a DeliveryError whose text is built from fixed words, never from
    the exception's own text: aiohttp and httpx put the URL in theirs, and the URL of a Slack
    or webhook receiver is itself the secret.
    """
    target, auth = split_userinfo(url)
    try:
        request = client.build_request(
            "POST", target, content=body, headers={"Content-Type": "application/json", **headers}
        )
        response = await client.send(request, auth=auth or httpx.USE_CLIENT_DEFAULT, stream=True)
    except Exception as exc:
        raise DeliveryError(f"{what}: {classify(exc)}", retryable=True) from None
    try:
        # The status is in; the body only explains it. One deadline for all of it: a
        # receiver trickling its answer must not hold the delivery loop.
        async with asyncio.timeout(client.timeout.read or ANSWER_TIMEOUT):
            raw = await read_body(response, ANSWER_LIMIT, truncate=True)
    except Exception:  # an unreadable explanation is no explanation
        raw = b""
    finally:
        await _close(response)
    answer = Answer(response.status_code, response.headers, raw.decode("utf-8", "replace"))
    status = answer.status_code
    if 200 <= status < 300:
        return answer
    retry_after = parse_retry_after(answer.headers.get("Retry-After"), clock())
    # Receivers' error pages often echo the request path, and a Slack or webhook URL's path
    # is its secret.
    detail = scrub(answers.explain(answer)[: 400 + len(url)], url, tuple(headers.values()))
    detail = detail[:200].strip().replace("\n", " ")
    if 300 <= status < 400:
        # Not followed (the URL is the credential); name only where it points.
        detail = f"redirected to {origin(answer.headers.get('Location', ''))}, not followed"
    retryable = answers.retryable(status)
    raise DeliveryError(
        f"{what}: HTTP {status}" + (f" {detail!r}" if detail else ""),
        retryable=retryable,
        retry_after=retry_after if retryable else None,
        status_code=status,
    )


# Reading a receiver's answer, when the client sets no read timeout.
ANSWER_TIMEOUT = 10.0


async def _close(response: httpx.Response) -> None:
    with contextlib.suppress(Exception):
        await response.aclose()


class HttpNotifier(Generic[C]):
    """What HTTP notifiers share: their config entry, the shared client, a clock."""

    answers: ClassVar[AnswerPolicy] = DEFAULT_ANSWERS  # a kind with documented answers sets its own

    def __init__(
        self, config: C, client: httpx.AsyncClient, clock: Callable[[], float] = time.time
    ) -> None:
        self.name = config.name
        self.config = config
        self.client = client
        self.clock = clock
        self.capabilities = config.capabilities

    @classmethod
    def build(cls, config: C, client: httpx.AsyncClient, context: Context) -> Self:
        """The registry's uniform factory."""
        return cls(config, client, context.clock)

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        """POST with this kind's answer policy; errors name the kind and entry, never the URL."""
        what = f"{self.config.type} {self.name}"
        return await post(
            self.client, url, body, headers, what=what, clock=self.clock, answers=self.answers
        )
