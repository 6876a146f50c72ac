"""Email over SMTP: one multipart/alternative message (plain text + HTML) per batch.

The client is the stdlib's smtplib in a worker thread: a message per batch is rare and
small, and a send the dispatcher gives up on shuts the socket down, so no thread outlives
it by more than the socket timeout.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import html
import re
import smtplib
import socket
import ssl
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from email.headerregistry import Address, HeaderRegistry
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

import httpx
from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from syncwatch.config import KeyProblemError, NotifierConfig, secret_value
from syncwatch.config.types import OptionalSecret, SecretFilePath
from syncwatch.failures import classify
from syncwatch.http import ssl_context
from syncwatch.notifiers.base import DELIVERY_ID_HEADER, Context, Kind
from syncwatch.outbox import AlertPayload, AlertStatus, Batch, DeliveryError, EventKind, worst_first

# --- config -----------------------------------------------------------------------------

DEFAULT_PORTS = {"starttls": 587, "implicit": 465, "none": 25}
_HEADERS = HeaderRegistry()


def parse_address(value: str) -> Address:
    """One mailbox, `ops@example.com` or `Ops <ops@example.com>`; ValueError names the fix."""
    fix = "expected name@example.com or 'Name <name@example.com>'"
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"invalid address {value!r}: contains a line break; {fix}")
    try:
        header = _HEADERS("to", value)
    except Exception:  # the header parser raises IndexError and friends on some junk
        raise ValueError(f"invalid address {value!r}: {fix}") from None
    addresses: tuple[Address, ...] = tuple(getattr(header, "addresses", ()))
    if header.defects or len(addresses) != 1:
        more = "; one address per list item" if len(addresses) > 1 else ""
        raise ValueError(f"invalid address {value!r}: {fix}{more}")
    (address,) = addresses
    if not address.username or not address.domain or "." in (address.domain[0], address.domain[-1]):
        raise ValueError(f"invalid address {value!r}: {fix}")
    if not address.addr_spec.isascii():
        # smtplib needs the server's SMTPUTF8 for those; a display name may be anything.
        raise ValueError(f"invalid address {value!r}: only ASCII addresses are supported")
    return address


def _check_address(value: str) -> str:
    parse_address(value)
    return value


def _empty_to_none(value: object) -> object:
    return None if value == "" else value


def _check_host(value: str) -> str:
    if "://" in value or "/" in value:
        raise ValueError(f"invalid smtp_host {value!r}: a host name or IP, not a URL")
    if value.count(":") == 1:
        raise ValueError(f"invalid smtp_host {value!r}: set the port in smtp_port")
    if not re.fullmatch(r"[A-Za-z0-9.-]+|\[?[0-9A-Fa-f:.]+\]?", value):
        raise ValueError(f"invalid smtp_host {value!r}: expected a host name or IP address")
    return value.strip("[]")


def _at_least_one(value: list[str]) -> list[str]:
    if not value:
        raise ValueError("at least one address is required")
    return value


EmailAddress = Annotated[str, AfterValidator(_check_address)]
SmtpHost = Annotated[str, Field(min_length=1), AfterValidator(_check_host)]


class EmailConfig(NotifierConfig):
    _secrets = ("password",)
    type: Literal["email"]
    smtp_host: SmtpHost
    smtp_port: int | None = Field(default=None, ge=1, le=65535)
    tls: Literal["starttls", "implicit", "none"] = "starttls"
    username: Annotated[str | None, BeforeValidator(_empty_to_none)] = None
    password: OptionalSecret = None
    password_file: SecretFilePath = None
    from_: EmailAddress = Field(alias="from")
    to: Annotated[list[EmailAddress], AfterValidator(_at_least_one)]

    @model_validator(mode="after")
    def _check_login(self) -> Self:
        if self.smtp_port is None:
            # Frozen model: filled once, during validation, so `validate` shows the port used.
            object.__setattr__(self, "smtp_port", DEFAULT_PORTS[self.tls])
        if self.password is not None and self.username is None:
            raise KeyProblemError("username", "required with password (the SMTP login name)")
        if self.username is not None and self.password is None:
            raise KeyProblemError(
                "password", "required with username: set password_file (or password)"
            )
        if self.password is not None and self.tls == "none":
            raise KeyProblemError(
                "tls",
                "'none' would send the password in clear: use 'starttls' or 'implicit'",
            )
        return self

    @property
    def port(self) -> int:
        return self.smtp_port or DEFAULT_PORTS[self.tls]


# --- the message (pure) -----------------------------------------------------------------

# Email has no hard limits; these keep a message of a huge batch readable and bounded.
MAX_ALERTS = 200
MAX_FIELD = 2000

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def _clean(text: str, limit: int = MAX_FIELD) -> str:
    """Upstream text without control characters (terminal escapes, bare CRs), cut to `limit`."""
    text = _CONTROL.sub("\ufffd", text.replace("\r\n", "\n"))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _link(url: str) -> str:
    """`url` if it is http(s), else "": a `javascript:` link must never become an href."""
    try:
        scheme = urlsplit(url).scheme
    except ValueError:
        return ""
    return url if scheme in ("http", "https") and not _CONTROL.search(url) else ""


def subject(batch: Batch) -> str:
    firing, resolved = len(batch.firing), len(batch.resolved)
    parts = [f"{firing} firing"] if firing else []
    if resolved:
        parts.append(f"{resolved} resolved")
    test = "[TEST] " if batch.test else ""
    return f"{test}[syncwatch] {', '.join(parts) or 'no alerts'}"


def message_id(delivery_id: str, sender: Address) -> str:
    """The same Message-ID for every attempt of one delivery, so mail systems de-duplicate."""
    left = (
        delivery_id
        if _SAFE_ID.fullmatch(delivery_id)
        else hashlib.sha256(delivery_id.encode()).hexdigest()
    )
    return f"<syncwatch.{left}@{sender.domain}>"


def _where(a: AlertPayload) -> str:
    return "/".join(x for x in (a.labels.get("tenant"), a.labels.get("sync_id")) if x)


def _word(a: AlertPayload) -> str:
    if a.status is AlertStatus.RESOLVED:
        return "resolved"
    return "severity changed" if a.event is EventKind.CHANGED else str(a.severity)


def _summary(a: AlertPayload) -> str:
    if a.status is AlertStatus.RESOLVED and a.annotations.get("resolution"):
        return a.annotations["resolution"]
    return a.annotations.get("summary") or a.alertname


def _when(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _labels(a: AlertPayload) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(a.labels.items()))


def plain_text(batch: Batch) -> str:
    alerts = sorted(batch.alerts, key=worst_first)
    lines = [subject(batch), ""]
    if batch.test:
        lines += ["This is a test sent by `syncwatch test-notify`: no action needed.", ""]
    for status, title in ((AlertStatus.FIRING, "FIRING"), (AlertStatus.RESOLVED, "RESOLVED")):
        group = [a for a in alerts[:MAX_ALERTS] if a.status is status]
        if not group:
            continue
        lines += [f"{title} ({sum(1 for a in alerts if a.status is status)})", ""]
        for a in group:
            lines.append(_clean(f"[{_word(a)}] {a.alertname} {_where(a)}: {_summary(a)}"))
            if a.status is AlertStatus.FIRING and a.annotations.get("description"):
                lines.append("  " + _clean(a.annotations["description"]).replace("\n", "\n  "))
            since = f"since {_when(a.starts_at)}"
            if a.ends_at is not None:
                since += f", resolved {_when(a.ends_at)}"
            lines += ["  " + since, "  " + _clean(_labels(a)), ""]
    if len(alerts) > MAX_ALERTS:
        lines += [f"…and {len(alerts) - MAX_ALERTS} more", ""]
    if _link(batch.external_url):
        lines.append(f"Open syncwatch: {batch.external_url}")
    lines.append(f"Delivery id: {_clean(batch.delivery_id, 200)}")
    return "\n".join(lines) + "\n"


def _e(text: str, limit: int = MAX_FIELD) -> str:
    return html.escape(_clean(text, limit), quote=True)


def html_text(batch: Batch) -> str:
    """The HTML part: every upstream string escaped, only http(s) links."""
    alerts = sorted(batch.alerts, key=worst_first)
    out = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8"></head><body style="font-family:sans-serif">',
        f"<h2>{_e(subject(batch))}</h2>",
    ]
    if batch.test:
        out.append(
            "<p><strong>This is a test sent by <code>syncwatch test-notify</code>: "
            "no action needed.</strong></p>"
        )
    for status, title in ((AlertStatus.FIRING, "Firing"), (AlertStatus.RESOLVED, "Resolved")):
        group = [a for a in alerts[:MAX_ALERTS] if a.status is status]
        if not group:
            continue
        out.append(f"<h3>{title}</h3>")
        out.append('<table cellpadding="4" style="border-collapse:collapse">')
        for a in group:
            name = _e(a.alertname)
            link = _link(a.generator_url)
            if link:
                name = f'<a href="{html.escape(link, quote=True)}">{name}</a>'
            detail = _e(_summary(a))
            if a.status is AlertStatus.FIRING and a.annotations.get("description"):
                detail += f"<br><small>{_e(a.annotations['description'])}</small>"
            out.append(
                "<tr>"
                f"<td><strong>{_e(_word(a))}</strong></td>"
                f"<td>{name}<br><code>{_e(_where(a))}</code></td>"
                f"<td>{detail}<br><small>since {_e(_when(a.starts_at))}; "
                f"{_e(_labels(a))}</small></td>"
                "</tr>"
            )
        out.append("</table>")
    if len(alerts) > MAX_ALERTS:
        out.append(f"<p>…and {len(alerts) - MAX_ALERTS} more</p>")
    if link := _link(batch.external_url):
        out.append(f'<p><a href="{html.escape(link, quote=True)}">Open syncwatch</a></p>')
    out.append(f"<p><small>Delivery id: {_e(batch.delivery_id, 200)}</small></p>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def email_message(batch: Batch, config: EmailConfig) -> EmailMessage:
    """The message for a batch: the same bytes-to-be on every attempt (Date is its creation)."""
    sender = parse_address(config.from_)
    message = EmailMessage()
    message["Subject"] = subject(batch)
    message["From"] = sender
    message["To"] = [parse_address(a) for a in config.to]
    message["Date"] = format_datetime(batch.created_at.astimezone(UTC))
    message["Message-ID"] = message_id(batch.delivery_id, sender)
    message[DELIVERY_ID_HEADER] = batch.delivery_id
    # RFC 3834: out-of-office robots must not answer an alert.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(plain_text(batch))
    message.add_alternative(html_text(batch), subtype="html")
    # Not the random default: a retry must be the very same bytes.
    digest = hashlib.sha256(f"boundary:{batch.delivery_id}".encode()).hexdigest()[:32]
    message.set_boundary(f"==syncwatch-{digest}==")
    return message


# --- delivery ---------------------------------------------------------------------------

# The socket timeout when the shared client sets none: no SMTP step waits longer.
DEFAULT_TIMEOUT = 10.0


class _AbortedError(Exception):
    """The send was given up on (send_timeout): the worker stops at its next step."""


class _Session:
    """One SMTP conversation in a worker thread; `abort` ends it from the event loop."""

    def __init__(self, config: EmailConfig, timeout: float, tls: ssl.SSLContext) -> None:
        self.config = config
        self.timeout = timeout
        self.tls = tls
        self._lock = threading.Lock()
        self._smtp: smtplib.SMTP | None = None
        self._aborted = False

    def abort(self) -> None:
        """Shut the socket down: the worker's blocked read returns at once and it ends."""
        with self._lock:
            self._aborted = True
            smtp = self._smtp
        sock = None if smtp is None else smtp.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                # socket.socket's own shutdown: it touches only the fd, not the TLS state
                # the worker thread is using.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def _check(self) -> None:
        with self._lock:
            if self._aborted:
                raise _AbortedError

    def deliver(self, message: EmailMessage) -> dict[str, tuple[int, bytes]]:
        """Send; the recipients the server refused (empty: all accepted)."""
        config = self.config
        self._check()
        # Connecting in the constructor is the public way to name the host that TLS
        # verifies; connect, handshake and greeting are each bounded by the socket timeout.
        smtp: smtplib.SMTP
        if config.tls == "implicit":
            smtp = smtplib.SMTP_SSL(
                config.smtp_host, config.port, timeout=self.timeout, context=self.tls
            )
        else:
            smtp = smtplib.SMTP(config.smtp_host, config.port, timeout=self.timeout)
        with self._lock:
            self._smtp = smtp
        try:
            self._check()
            smtp.ehlo()
            if config.tls == "starttls":
                if not smtp.has_extn("starttls"):
                    # Never fall back to clear text: that is what a downgrade attack wants.
                    raise smtplib.SMTPNotSupportedError(
                        "the server does not offer STARTTLS (tls = 'starttls')"
                    )
                smtp.starttls(context=self.tls)
                self._check()
            password = secret_value(config.password)
            if config.username is not None and password is not None:
                smtp.login(config.username, password)
                self._check()
            refused = smtp.send_message(
                message,
                from_addr=parse_address(config.from_).addr_spec,
                to_addrs=[parse_address(a).addr_spec for a in config.to],
            )
            with contextlib.suppress(Exception):  # accepted: a failed goodbye changes nothing
                smtp.quit()
            return refused
        finally:
            smtp.close()


def _reply(raw: bytes | str, secrets: Iterable[str]) -> str:
    """A server's reply text, fit for an error line: one line, short, no secret in it."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "[redacted]")
    return _CONTROL.sub(" ", text.replace("\n", " "))[:200].strip()


def _is_retryable(code: int) -> bool:
    """4xx is transient by SMTP's own definition; 5xx will answer the same; else retry."""
    return not 500 <= code < 600


def delivery_error(exc: BaseException, what: str, secrets: Iterable[str]) -> DeliveryError:
    """An SMTP failure as DeliveryError: 5xx permanent, 4xx and network trouble retryable."""
    secrets = [s for s in secrets if s]
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        # The server's words are left out: a hostile one could echo the credentials.
        code = exc.smtp_code
        return DeliveryError(
            f"{what}: authentication failed (SMTP {code}): check username and password",
            retryable=_is_retryable(code),
            status_code=code,
        )
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return _refused(exc.recipients, 0, what, secrets)
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return DeliveryError(f"{what}: {_reply(str(exc), secrets)}", retryable=False)
    if isinstance(exc, smtplib.SMTPResponseException):
        code = exc.smtp_code
        stage = {
            smtplib.SMTPSenderRefused: "sender refused",
            smtplib.SMTPDataError: "message refused",
            smtplib.SMTPConnectError: "greeting refused",
            smtplib.SMTPHeloError: "EHLO refused",
        }.get(type(exc), "refused")
        reply = _reply(exc.smtp_error, secrets)
        return DeliveryError(
            f"{what}: {stage}: SMTP {code}" + (f" {reply!r}" if reply else ""),
            retryable=_is_retryable(code),
            status_code=code,
        )
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        failure = classify(exc)
        words = "timed out" if "timed out" in str(failure) else "server disconnected"
        return DeliveryError(f"{what}: {words}", retryable=True)
    return DeliveryError(f"{what}: {classify(exc)}", retryable=True)


def _refused(
    recipients: dict[str, tuple[int, bytes]], accepted: int, what: str, secrets: list[str]
) -> DeliveryError:
    codes = [code for code, _ in recipients.values()]
    detail = "; ".join(
        f"{addr}: SMTP {code} {_reply(reply, secrets)!r}"
        for addr, (code, reply) in sorted(recipients.items())
    )
    head = (
        f"delivered to {accepted} of {accepted + len(recipients)} recipients"
        if accepted
        else ("every recipient refused")
    )
    return DeliveryError(
        f"{what}: {head}: {detail}",
        # Any 4xx: worth another try, even if those accepted then get it twice (same
        # Message-ID); only 5xx everywhere is final.
        retryable=any(_is_retryable(c) for c in codes),
        status_code=codes[0] if codes else None,
    )


def _secret_forms(config: EmailConfig) -> list[str]:
    """The password as a server could echo it: plain, and inside AUTH PLAIN/LOGIN's base64."""
    password = secret_value(config.password)
    if not password:
        return []
    user = config.username or ""
    forms = [password, f"\0{user}\0{password}"]
    return [password, *(base64.b64encode(f.encode()).decode() for f in forms)]


class EmailNotifier:
    def __init__(
        self,
        config: EmailConfig,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.name = config.name
        self.config = config
        self.capabilities = config.capabilities
        self.timeout = timeout
        # Verification is never off: the system trust store unless a test hands its CA.
        self.tls_context = tls_context or ssl_context(None)

    @classmethod
    def build(cls, config: EmailConfig, client: httpx.AsyncClient, context: Context) -> Self:
        """The registry's uniform factory; the shared client's timeout bounds each SMTP step,
        and the server's certificate is checked as HTTPS ones are (daemon.ca_bundle too)."""
        timeout = client.timeout.read or DEFAULT_TIMEOUT
        return cls(config, timeout=timeout, tls_context=ssl_context(context.ca_bundle))

    async def send(self, batch: Batch) -> None:
        message = email_message(batch, self.config)
        session = _Session(self.config, self.timeout, self.tls_context)
        what = f"email {self.name}"
        error: DeliveryError | None = None
        try:
            refused = await asyncio.to_thread(session.deliver, message)
        except asyncio.CancelledError:
            # The dispatcher's send_timeout: the thread must not wait on for the server.
            session.abort()
            raise
        except Exception as exc:
            error = delivery_error(exc, what, _secret_forms(self.config))
        if error is not None:
            # Raised out here: not even __context__ keeps the server's reply (it may quote
            # the credentials).
            raise error
        if refused:
            accepted = len(self.config.to) - len(refused)
            raise _refused(refused, accepted, what, _secret_forms(self.config))


KIND = Kind(EmailConfig, EmailNotifier.build)
