"""The email notifier against real SMTP servers on 127.0.0.1 (aiosmtpd, and raw sockets).

Plain SMTP, STARTTLS and implicit TLS with a throwaway trustme CA (the client verifies it,
and refuses a certificate of another CA), AUTH, the server's 4xx/5xx answers, the message
as a mail client parses it, `syncwatch test-notify`, and the durable outbox: an outage
drained in order, a server slower than send_timeout.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import random
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from syncwatch.config import AlertingConfig, ConfigError, TimbalConfig, TimbalOrg
from syncwatch.dispatch import BACKOFF_MAX, Dispatcher, make_test_batch
from syncwatch.engine import Engine
from syncwatch.notifiers.base import DELIVERY_ID_HEADER
from syncwatch.notifiers.email import EmailConfig, EmailNotifier, email_message
from syncwatch.notifiers.registry import make_notifier
from syncwatch.outbox import (
    AlertPayload,
    AlertStatus,
    Batch,
    DeliveryError,
    EventKind,
    NotificationReason,
)
from syncwatch.settings import Config, load_config
from syncwatch.state import StateStore
from syncwatch.store import Store
from tests.clock import FakeClock
from tests.conftest import refused_port, toml_value, wait_until
from tests.test_notifiers import notify_config, run_test_notify
from tests.test_sink_faults import HOUR, MINUTE, POLL, T0, Sim, t

PASSWORD = "hunter2-SMTP-pa55word"
USER = "alerts@example.com"


# --- a real SMTP server ---------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """One message as the server accepted it."""

    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    tls: bool  # the session was encrypted (STARTTLS or implicit)
    login: str | None

    @property
    def message(self) -> EmailMessage:
        parsed = BytesParser(policy=policy.default).parsebytes(self.raw)
        assert isinstance(parsed, EmailMessage)
        return parsed

    def header(self, name: str) -> str | None:
        value = self.message[name]
        return None if value is None else str(value)


@dataclass
class Handler:
    """aiosmtpd handler: records accepted messages; answers DATA and RCPT from scripts."""

    received: list[Received] = field(default_factory=list)  # accepted
    attempts: list[Received] = field(default_factory=list)  # every DATA, accepted or not
    data_replies: deque[str] = field(default_factory=deque)
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    cond: threading.Condition = field(default_factory=threading.Condition)

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, _: Any
    ) -> str:
        reply = self.rcpt_replies.get(address, "250 OK")
        if reply.startswith("250"):
            envelope.rcpt_tos.append(address)
        return reply

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        with self.cond:
            reply = self.data_replies.popleft() if self.data_replies else "250 Message accepted"
            assert isinstance(envelope.content, bytes)
            got = Received(
                mail_from=str(envelope.mail_from),
                rcpt_tos=list(envelope.rcpt_tos),
                raw=envelope.content,
                tls=server.transport is not None
                and server.transport.get_extra_info("ssl_object") is not None,
                login=session.auth_data.login.decode() if session.auth_data else None,
            )
            self.attempts.append(got)
            if reply.startswith("250"):
                self.received.append(got)
            self.cond.notify_all()
        return reply


class SmtpServer:
    """aiosmtpd on 127.0.0.1 in its own thread; stop() refuses connections, start() is back."""

    def __init__(
        self,
        *,
        tls: str = "none",
        cert: ssl.SSLContext | None = None,
        users: dict[str, str] | None = None,
        echo_password: bool = False,
    ) -> None:
        self.tls = tls
        self.cert = cert
        self.users = users
        self.echo_password = echo_password
        self.handler = Handler()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._held: socket.socket | None = None  # the port, bound but not listening, while down

    def _protocol(self) -> SMTP:
        assert self._loop is not None
        with warnings.catch_warnings():
            # "AUTH without requiring TLS": aiosmtpd does not count implicit TLS as TLS.
            warnings.simplefilter("ignore", UserWarning)
            return self._make_protocol(self._loop)

    def _make_protocol(self, loop: asyncio.AbstractEventLoop) -> SMTP:
        return SMTP(
            self.handler,
            loop=loop,
            hostname="mx.test",
            tls_context=self.cert if self.tls == "starttls" else None,
            require_starttls=self.tls == "starttls",
            authenticator=self._authenticate if self.users is not None else None,
            auth_required=self.users is not None,
            # Implicit TLS is TLS too; aiosmtpd only counts STARTTLS.
            auth_require_tls=self.tls == "starttls",
        )

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert self.users is not None
        assert isinstance(data, LoginPassword)
        login, password = data.login.decode(), data.password.decode()
        if self.users.get(login) == password:
            return AuthResult(success=True, auth_data=data)
        # A hostile server may echo what it got; the notifier must not pass it on.
        echo = f" you sent {password} / {base64.b64encode(password.encode()).decode()}"
        message = "535 5.7.8 Authentication credentials invalid"
        return AuthResult(success=False, handled=False, message=message + echo * self.echo_password)

    def start(self) -> SmtpServer:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="smtp-server", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread

        async def serve() -> asyncio.AbstractServer:
            ssl_arg = self.cert if self.tls == "implicit" else None
            return await loop.create_server(self._protocol, "127.0.0.1", self.port, ssl=ssl_arg)

        self._server = asyncio.run_coroutine_threadsafe(serve(), loop).result(timeout=10)
        assert isinstance(self._server, asyncio.Server)
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._release()
        return self

    def stop(self) -> None:
        """Down: connections are refused until start() listens on the same port again.

        As tests.capture.CaptureServer: the port stays bound (not listening) meanwhile, so
        no other process takes it; close() releases it.
        """
        loop, thread, server = self._loop, self._thread, self._server
        if loop is None or thread is None or server is None:
            return

        async def close() -> None:
            server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._loop = self._thread = self._server = None
        held = socket.socket()
        # As asyncio sets it, so that start() can bind beside the holder.
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.bind(("127.0.0.1", self.port))
        self._held = held

    def _release(self) -> None:
        if self._held is not None:
            self._held.close()
            self._held = None

    def close(self) -> None:
        self.stop()
        self._release()

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def received(self) -> list[Received]:
        with self.handler.cond:
            return list(self.handler.received)

    @property
    def requests(self) -> list[Received]:
        """As tests.test_sink_faults.Sim reads a sink."""
        return self.received

    def reply_data(self, *replies: str) -> None:
        with self.handler.cond:
            self.handler.data_replies.extend(replies)

    def wait_for(self, n: int, timeout: float = 10.0) -> list[Received]:
        return list(
            wait_until(lambda: self.received[:n] if len(self.received) >= n else None, timeout)
        )


# --- certificates -----------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca_pem: Path
    server: ssl.SSLContext  # the server's certificate, issued by the trusted CA
    rogue: ssl.SSLContext  # a certificate for the same names from a CA nobody trusts

    def client(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_pem))


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca = trustme.CA()
    path = tmp_path_factory.mktemp("smtp-pki") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return Pki(path, server_context(ca), server_context(trustme.CA()))


# --- helpers ----------------------------------------------------------------------------

NOW = datetime(2025, 1, 6, 9, 30, tzinfo=UTC)


def entry(port: int, **overrides: Any) -> EmailConfig:
    data: dict[str, Any] = {
        "name": "mail",
        "type": "email",
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "tls": "none",
        "from": "syncwatch <syncwatch@example.com>",
        "to": ["oncall@example.com", "Data Team <data@example.org>"],
        **overrides,
    }
    return EmailConfig.model_validate(data)


def notifier(config: EmailConfig, tls: ssl.SSLContext | None = None) -> EmailNotifier:
    return EmailNotifier(config, timeout=5.0, tls_context=tls)


def alert(
    sync_id: str,
    status: AlertStatus = AlertStatus.FIRING,
    severity: str = "warning",
    summary: str | None = None,
    **annotations: str,
) -> AlertPayload:
    return AlertPayload(
        status=status,
        event=EventKind.FIRING if status is AlertStatus.FIRING else EventKind.RESOLVED,
        labels={
            "alertname": "SyncStale",
            "severity": severity,
            "source": "timbal",
            "tenant": "org_1",
            "sync_id": sync_id,
        },
        annotations={"summary": summary or f"sync {sync_id} is overdue", **annotations},
        starts_at=NOW - timedelta(minutes=20),
        ends_at=NOW if status is AlertStatus.RESOLVED else None,
        fingerprint=f"fp-{sync_id}",
        generator_url="https://syncwatch.example.com/",
    )


def batch(*alerts: AlertPayload, delivery_id: str = "d0e1f2a3b4c5", test: bool = False) -> Batch:
    return Batch(
        delivery_id=delivery_id,
        notifier="mail",
        created_at=NOW,
        reason=NotificationReason.FIRST,
        alerts=alerts or (alert("s1"),),
        external_url="https://syncwatch.example.com",
        test=test,
    )


def parts(message: EmailMessage) -> dict[str, str]:
    """content type → decoded text of each leaf part (line ends as Python writes them)."""
    found = {}
    for part in message.walk():
        if not part.is_multipart():
            assert isinstance(part, EmailMessage)
            found[part.get_content_type()] = part.get_content().replace("\r\n", "\n")
    return found


class Tags(HTMLParser):
    """Every start tag with its attributes, as a browser would see them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def tags(text: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = Tags()
    parser.feed(text)
    return parser.tags


# --- the message ------------------------------------------------------------------------


async def test_plain_smtp_delivers_one_multipart_message_per_batch() -> None:
    with SmtpServer() as server:
        two = batch(
            alert("s1", severity="critical"), alert("s2"), alert("s3", AlertStatus.RESOLVED)
        )
        await notifier(entry(server.port)).send(two)
        (got,) = server.wait_for(1)
    assert got.mail_from == "syncwatch@example.com"
    assert got.rcpt_tos == ["oncall@example.com", "data@example.org"]
    message = got.message
    assert message["Subject"] == "[syncwatch] 2 firing, 1 resolved"
    assert message["From"] == "syncwatch <syncwatch@example.com>"
    assert message["To"] == "oncall@example.com, Data Team <data@example.org>"
    assert parsedate_to_datetime(str(message["Date"])) == NOW
    assert message["Message-ID"] == "<syncwatch.d0e1f2a3b4c5@example.com>"
    assert message[DELIVERY_ID_HEADER] == "d0e1f2a3b4c5"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message.get_content_type() == "multipart/alternative"
    texts = parts(message)
    assert list(texts) == ["text/plain", "text/html"]
    plain, page = texts["text/plain"], texts["text/html"]
    # Worst first, in both parts: the critical one leads, the resolved one comes last.
    assert plain.index("org_1/s1") < plain.index("org_1/s2") < plain.index("org_1/s3")
    assert page.index("org_1/s1") < page.index("org_1/s2") < page.index("org_1/s3")
    assert "[critical] SyncStale org_1/s1: sync s1 is overdue" in plain
    assert "RESOLVED (1)" in plain
    assert "Open syncwatch: https://syncwatch.example.com" in plain
    assert ("a", {"href": "https://syncwatch.example.com"}) in tags(page)


async def test_a_test_batch_says_test_in_its_subject_and_body() -> None:
    with SmtpServer() as server:
        await notifier(entry(server.port)).send(make_test_batch("mail", NOW))
        (got,) = server.wait_for(1)
    assert got.message["Subject"] == "[TEST] [syncwatch] 1 firing"
    assert "no action needed" in parts(got.message)["text/plain"]
    assert str(got.message[DELIVERY_ID_HEADER]).startswith("test-")


def test_html_part_escapes_hostile_upstream_text() -> None:
    """Upstream names and summaries are hostile: no tag, attribute or script link gets in."""
    hostile = alert(
        "s1",
        summary='<script>alert(1)</script><img src=x onerror="steal()">',
        description="</td></tr></table><a href='javascript:evil()'>click</a>\x1b[31m",
    )
    hostile = AlertPayload(
        **{
            **{f: getattr(hostile, f) for f in hostile.__dataclass_fields__},
            "labels": {**hostile.labels, "sync_id": '"><b>x</b>'},
            "generator_url": "javascript:alert(document.cookie)",
        }
    )
    message = email_message(batch(hostile), entry(25))
    texts = parts(message)
    found = tags(texts["text/html"])
    names = {tag for tag, _ in found}
    assert names <= {
        "html",
        "head",
        "meta",
        "body",
        "h2",
        "h3",
        "table",
        "tr",
        "td",
        "strong",
        "br",
        "code",
        "small",
        "p",
        "a",
    }
    assert "script" not in names
    assert "img" not in names
    assert "b" not in names
    hrefs = [attrs.get("href") for tag, attrs in found if tag == "a"]
    assert hrefs == ["https://syncwatch.example.com"], "only the http(s) link became a link"
    assert all(set(attrs) <= {"href", "charset", "style", "cellpadding"} for _, attrs in found)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in texts["text/html"]
    # The text part keeps the words (a mail client shows them as text) but no escape codes.
    assert "<script>alert(1)</script>" in texts["text/plain"]
    assert "\x1b" not in texts["text/plain"]
    assert "\x1b" not in texts["text/html"]


async def test_a_retried_delivery_is_the_same_message_with_the_same_message_id() -> None:
    """Mail systems de-duplicate by Message-ID: a retry must be byte for byte the same mail."""
    with SmtpServer() as server:
        server.reply_data("451 4.3.0 try again later")
        mail = notifier(entry(server.port))
        one = batch(alert("s1"), delivery_id="retry-me")
        with pytest.raises(DeliveryError):
            await mail.send(one)
        await mail.send(one)
        await mail.send(batch(alert("s1"), delivery_id="another"))
        server.wait_for(2)
        refused, accepted, other = server.handler.attempts
    assert refused.raw == accepted.raw
    assert accepted.message["Message-ID"] == "<syncwatch.retry-me@example.com>"
    assert other.message["Message-ID"] == "<syncwatch.another@example.com>"


# --- TLS --------------------------------------------------------------------------------


async def test_starttls_verifies_the_server_against_the_ca(pki: Pki) -> None:
    with SmtpServer(tls="starttls", cert=pki.server) as server:
        await notifier(entry(server.port, tls="starttls"), pki.client()).send(batch())
        (got,) = server.wait_for(1)
    assert got.tls


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
async def test_tls_refuses_a_certificate_from_an_untrusted_ca(pki: Pki, tls: str) -> None:
    """The same host names, a CA the client does not trust: nothing is sent."""
    with SmtpServer(tls=tls, cert=pki.rogue) as server:
        with pytest.raises(DeliveryError) as caught:
            await notifier(entry(server.port, tls=tls), pki.client()).send(batch())
        assert server.handler.attempts == []
    assert caught.value.retryable  # fixable by the operator (daemon CA), as for HTTPS
    assert str(caught.value) == "email mail: TLS failed (unable to get local issuer certificate)"


async def test_system_trust_store_alone_refuses_a_private_ca(pki: Pki) -> None:
    """Without a CA handed in, verification is still on (the system's trust store)."""
    with SmtpServer(tls="starttls", cert=pki.server) as server:
        with pytest.raises(DeliveryError) as caught:
            await notifier(entry(server.port, tls="starttls")).send(batch())
        assert server.handler.attempts == []
    assert "TLS failed (unable to get local issuer certificate)" in str(caught.value)


async def test_starttls_never_falls_back_to_clear_text() -> None:
    """A server (or a man in the middle) that offers no STARTTLS gets nothing."""
    with SmtpServer(tls="none") as server:
        with pytest.raises(DeliveryError) as caught:
            await notifier(entry(server.port, tls="starttls")).send(batch())
        assert server.handler.attempts == []
    assert not caught.value.retryable
    assert "does not offer STARTTLS" in str(caught.value)


async def test_implicit_tls_delivers_with_the_ca(pki: Pki) -> None:
    with SmtpServer(tls="implicit", cert=pki.server) as server:
        await notifier(entry(server.port, tls="implicit"), pki.client()).send(batch())
        (got,) = server.wait_for(1)
    assert got.tls
    assert got.message["Subject"] == "[syncwatch] 1 firing"


# --- AUTH -------------------------------------------------------------------------------


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
async def test_auth_logs_in_over_tls(pki: Pki, tls: str) -> None:
    with SmtpServer(tls=tls, cert=pki.server, users={USER: PASSWORD}) as server:
        config = entry(server.port, tls=tls, username=USER, password=PASSWORD)
        await notifier(config, pki.client()).send(batch())
        (got,) = server.wait_for(1)
    assert (got.login, got.tls) == (USER, True)


async def test_auth_failure_is_permanent_and_never_shows_the_password(pki: Pki) -> None:
    """535 is final; the server even echoes the password back, and it goes no further."""
    users = {USER: "the-right-one"}
    with SmtpServer(tls="starttls", cert=pki.server, users=users, echo_password=True) as server:
        config = entry(server.port, tls="starttls", username=USER, password=PASSWORD)
        with pytest.raises(DeliveryError) as caught:
            await notifier(config, pki.client()).send(batch())
        assert server.handler.attempts == []
    error = caught.value
    assert (error.retryable, error.status_code) == (False, 535)
    assert str(error) == (
        "email mail: authentication failed (SMTP 535): check username and password"
    )
    assert error.__cause__ is None
    assert error.__context__ is None


async def test_a_server_echoing_the_password_in_a_refusal_is_scrubbed(pki: Pki) -> None:
    b64 = base64.b64encode(PASSWORD.encode()).decode()
    with SmtpServer(tls="starttls", cert=pki.server, users={USER: PASSWORD}) as server:
        server.reply_data(f"550 5.7.1 no thanks {PASSWORD} ({b64})")
        config = entry(server.port, tls="starttls", username=USER, password=PASSWORD)
        with pytest.raises(DeliveryError) as caught:
            await notifier(config, pki.client()).send(batch())
    text = str(caught.value)
    assert "no thanks [redacted] ([redacted])" in text
    assert PASSWORD not in text
    assert b64 not in text


# --- the server's answers ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "retryable"),
    [
        ("421 4.3.2 service shutting down", True),
        ("450 4.2.1 mailbox busy", True),
        ("451 4.3.0 local error, try later", True),
        ("452 4.3.1 insufficient storage", True),
        ("550 5.7.1 message rejected as spam", False),
        ("552 5.3.4 message too big", False),
        ("554 5.0.0 transaction failed", False),
    ],
)
async def test_data_answers_4xx_retry_and_5xx_are_permanent(reply: str, retryable: bool) -> None:
    with SmtpServer() as server:
        server.reply_data(reply)
        with pytest.raises(DeliveryError) as caught:
            await notifier(entry(server.port)).send(batch())
    error = caught.value
    code = int(reply[:3])
    assert (error.retryable, error.status_code) == (retryable, code)
    assert str(error).startswith(f"email mail: message refused: SMTP {code} ")
    assert reply[4:] in str(error)
    assert server.received == []


async def test_every_recipient_refused_with_550_is_permanent_and_names_them() -> None:
    with SmtpServer() as server:
        server.handler.rcpt_replies = {
            "oncall@example.com": "550 5.1.1 no such user",
            "data@example.org": "550 5.1.1 no such user",
        }
        with pytest.raises(DeliveryError) as caught:
            await notifier(entry(server.port)).send(batch())
    assert not caught.value.retryable
    assert "every recipient refused" in str(caught.value)
    assert "oncall@example.com: SMTP 550" in str(caught.value)
    assert "data@example.org: SMTP 550" in str(caught.value)


async def test_one_recipient_deferred_with_450_is_retried() -> None:
    with SmtpServer() as server:
        server.handler.rcpt_replies = {"data@example.org": "450 4.2.1 greylisted, come back"}
        with pytest.raises(DeliveryError) as caught:
            await notifier(entry(server.port)).send(batch())
        (got,) = server.wait_for(1)  # the other recipient has it
    assert caught.value.retryable
    assert "delivered to 1 of 2 recipients" in str(caught.value)
    assert got.rcpt_tos == ["oncall@example.com"]


async def test_refused_connection_is_retryable() -> None:
    with pytest.raises(DeliveryError) as caught:
        await notifier(entry(refused_port())).send(batch())
    assert caught.value.retryable
    assert str(caught.value) == "email mail: connection failed (connection refused)"


# --- the durable outbox -----------------------------------------------------------------


class EmailSim(Sim):
    """tests.test_sink_faults.Sim with the email notifier and an SMTP server as the sink."""

    def __init__(
        self, store: Store, server: SmtpServer, *, send_timeout: float = 30.0, timeout: float = 5.0
    ) -> None:
        self.kind = "email"
        self.name = "mail"
        self.store = store
        self.sink = server  # type: ignore[assignment]  # Sim reads only `.requests`
        self.clock = FakeClock(T0, autojump=True)
        self.entry = entry(server.port)
        self.config = Config(
            timbal=TimbalConfig(api_key="test-key", orgs=[TimbalOrg(id="org_1")]),
            alerting=AlertingConfig(repeat_interval=100 * HOUR),
            notifiers=[self.entry],
        )
        ids = itertools.count(1)
        self.engine = Engine(self.config, store, new_id=lambda: f"email-{next(ids):05d}")
        self.dispatcher = Dispatcher(
            store,
            {self.name: EmailNotifier(self.entry, timeout=timeout)},
            send_timeout=send_timeout,
            clock=self.clock,
            rng=random.Random(7),
        )
        self.cycle_every = POLL
        self.next_cycle = self.clock.now
        self.next_retry = None
        self.stale_before = frozenset()
        self.enqueued = []
        self.expected = {}
        self.sent = []
        self.failures = []
        self.drops = []
        self.pending_after_cycle = []


def mail_signature(received: Received) -> tuple[tuple[str, str], ...]:
    """(status, sync_id) of each alert line of the text part, from the mail alone."""
    text = parts(received.message)["text/plain"]
    got = []
    for line in text.splitlines():
        if line.startswith("[") and " org_1/" in line:
            sync_id = line.split(" org_1/", 1)[1].split(":", 1)[0]
            got.append(("resolved" if line.startswith("[resolved]") else "firing", sync_id))
    return tuple(sorted(got))


def check_mail_drained_in_order(
    sim: EmailSim, accepted: list[Received], batches: list[Batch]
) -> None:
    """Accepted mails are exactly `batches`, in outbox order, each telling what it should."""
    assert [r.header(DELIVERY_ID_HEADER) for r in accepted] == [b.delivery_id for b in batches]
    for received, queued in zip(accepted, batches, strict=True):
        want = email_message(queued, sim.entry)
        assert received.message["Message-ID"] == want["Message-ID"]
        assert parts(received.message) == parts(want)
        assert mail_signature(received) == sim.expected[queued.delivery_id]


def outbox(db: Path) -> list[tuple[str, int, str | None]]:
    with closing(sqlite3.connect(db)) as conn:
        rows: list[tuple[str, int, str | None]] = conn.execute(
            "SELECT delivery_id, attempts, last_error FROM outbox ORDER BY seq"
        ).fetchall()
    return rows


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def store(db: Path) -> Iterator[Store]:
    s = Store(StateStore(db))
    yield s
    s.close()


async def test_smtp_outage_queues_every_mail_and_drains_it_in_order(store: Store, db: Path) -> None:
    with SmtpServer() as server:
        sim = EmailSim(store, server)
        await sim.run(t(30 * MINUTE))
        before = len(sim.enqueued)
        assert before >= 2
        check_mail_drained_in_order(sim, server.received, sim.enqueued)

        server.stop()  # refused for three hours of polling
        await sim.run(t(30 * MINUTE + 3 * HOUR))
        queued = sim.enqueued[before:]
        assert len(queued) >= 10
        assert len(server.received) == before
        rows = outbox(db)
        assert [r[0] for r in rows] == [b.delivery_id for b in queued]
        assert rows[0][1] == sim.outcome("failed") >= 3 * HOUR / BACKOFF_MAX
        assert rows[0][2] == "email mail: connection failed (connection refused)"

        server.start()  # back on the same port
        back = sim.clock.now
        await sim.run(back + 30 * MINUTE)
        after = sim.sent[before:]
        assert after[0].at - back <= BACKOFF_MAX
        assert all(s.at == after[0].at for s in after[: len(queued)])  # one pass drains it
        check_mail_drained_in_order(sim, server.received, sim.enqueued)
        assert sim.outcome("sent") == len(sim.enqueued) == len(server.received)
        assert sim.outcome("dropped") == 0
        assert store.pending() == {}


async def test_451_answers_are_retried_and_a_550_is_dropped(store: Store, db: Path) -> None:
    with SmtpServer() as server:
        server.reply_data("451 4.3.0 try later", "451 4.3.0 try later", "250 ok", "550 5.7.1 no")
        sim = EmailSim(store, server)
        await sim.run(t(60 * MINUTE))
        # The head was refused twice with 451, accepted the third time, all as one mail.
        first = sim.enqueued[0].delivery_id
        ids = [str(a.message[DELIVERY_ID_HEADER]) for a in server.handler.attempts]
        assert ids[:3] == [first] * 3
        assert ids[3] != first
        assert sim.outcome("failed") == 3
        assert sim.outcome("dropped") == 1  # the 550: final, and counted
        check_mail_drained_in_order(sim, server.received, [sim.enqueued[0], *sim.enqueued[2:]])
        assert store.pending() == {}


class StallingServer:
    """A raw SMTP server that takes the whole message, then answers nothing while `stall`."""

    def __init__(self) -> None:
        self.stall = True
        self.closed_at: list[float] = []  # monotonic times the client hung up
        self.stalled_at: list[float] = []  # when each message was in and left unanswered
        self.attempts: list[Received] = []
        self.accepted: list[Received] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.port = 0

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 slow.test ESMTP\r\n")
        try:
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb == b"DATA":
                    writer.write(b"354 go on\r\n")
                    raw = await reader.readuntil(b"\r\n.\r\n")
                    got = Received("", [], raw[: -len(b".\r\n")], tls=False, login=None)
                    self.attempts.append(got)
                    if self.stall:
                        self.stalled_at.append(time.monotonic())
                        await reader.read()  # until the client hangs up
                        break
                    self.accepted.append(got)
                    writer.write(b"250 ok\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    break
                else:  # EHLO, MAIL, RCPT, RSET, NOOP
                    writer.write(b"250 ok\r\n")
                await writer.drain()
        finally:
            self.closed_at.append(time.monotonic())
            writer.close()

    @property
    def requests(self) -> list[Received]:
        return list(self.accepted)

    def __enter__(self) -> StallingServer:
        self._thread.start()

        async def serve() -> asyncio.AbstractServer:
            return await asyncio.start_server(self._client, "127.0.0.1", 0)

        server = asyncio.run_coroutine_threadsafe(serve(), self._loop).result(timeout=10)
        assert isinstance(server, asyncio.Server)
        self.port = int(server.sockets[0].getsockname()[1])
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


async def test_server_slower_than_send_timeout_is_retried_and_lets_the_thread_go(
    store: Store, db: Path
) -> None:
    """send_timeout bounds the attempt, and the worker thread hangs up then, not 30 s later."""
    with StallingServer() as slow:
        # A 30 s socket timeout: only the hang-up at send_timeout can end the thread sooner.
        sim = EmailSim(store, slow, send_timeout=0.3, timeout=30.0)  # type: ignore[arg-type]
        started = time.monotonic()
        await sim.run(t(0))
        assert 0.29 <= time.monotonic() - started < 5.0
        ((delivery_id, attempts, error),) = outbox(db)
        assert (delivery_id, attempts, error) == (
            sim.enqueued[0].delivery_id,
            1,
            "no answer within 0.3s",
        )
        wait_until(lambda: slow.closed_at, timeout=5.0)
        assert slow.closed_at[0] - slow.stalled_at[0] < 3.0, "the thread let go at send_timeout"

        slow.stall = False
        await sim.run(t(30 * MINUTE))
        ids = [str(a.message[DELIVERY_ID_HEADER]) for a in slow.attempts]
        assert ids[:2] == [delivery_id] * 2  # the retry is the same mail
        assert [str(a.message[DELIVERY_ID_HEADER]) for a in slow.accepted] == [
            b.delivery_id for b in sim.enqueued
        ]
        assert sim.outcome("failed") == 1
        assert store.pending() == {}


# --- syncwatch test-notify ----------------------------------------------------------------


def email_table(name: str, port: int, **keys: Any) -> str:
    values = {
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "tls": "none",
        "from": "syncwatch@example.com",
        "to": ["oncall@example.com"],
        **keys,
    }
    lines = [f'[[notifiers]]\nname = "{name}"\ntype = "email"']
    lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def test_test_notify_sends_a_test_mail_and_reports_a_refused_login(
    tmp_path: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The process trusts the test CA as a system CA (daemon.ca_bundle does not reach the
    # notifier yet: see the xfail below), so the login itself is what fails.
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_pem))
    users = {USER: "the-right-one"}
    with (
        SmtpServer() as plain,
        SmtpServer(tls="implicit", cert=pki.server, users=users, echo_password=True) as guarded,
    ):
        secret = tmp_path / "smtp-password"
        secret.write_text(PASSWORD + "\n")
        config = notify_config(
            tmp_path,
            email_table("mail", plain.port),
            email_table(
                "guarded", guarded.port, tls="implicit", username=USER, password_file=str(secret)
            ),
        )
        result = run_test_notify(config)
        (got,) = plain.wait_for(1)
        assert guarded.handler.attempts == []
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert sorted(result.stdout.splitlines()) == [
        "guarded: FAILED: email guarded: authentication failed (SMTP 535): check username "
        "and password",
        "mail: delivered",
    ]
    assert PASSWORD not in out
    assert base64.b64encode(PASSWORD.encode()).decode() not in out
    assert got.message["Subject"] == "[TEST] [syncwatch] 1 firing"
    assert str(got.message[DELIVERY_ID_HEADER]).startswith("test-")
    assert got.rcpt_tos == ["oncall@example.com"]


def test_test_notify_trusts_daemon_ca_bundle_for_starttls(tmp_path: Path, pki: Pki) -> None:
    with SmtpServer(tls="starttls", cert=pki.server) as server:
        table = email_table("mail", server.port, tls="starttls")
        config = notify_config(tmp_path, table)
        text = config.read_text().replace("[daemon]\n", f'[daemon]\nca_bundle = "{pki.ca_pem}"\n')
        config.write_text(text)
        result = run_test_notify(config)
        assert result.stdout.splitlines() == ["mail: delivered"], result.stdout + result.stderr


def test_the_registry_builds_the_email_notifier_with_the_clients_timeout() -> None:
    client = httpx.AsyncClient(timeout=7.5)
    built = make_notifier(entry(25), client, poll_interval=60)
    assert isinstance(built, EmailNotifier)
    assert built.timeout == 7.5
    assert built.tls_context.verify_mode is ssl.CERT_REQUIRED
    assert built.tls_context.check_hostname


# --- config -----------------------------------------------------------------------------


def config_problems(tmp_path: Path, table: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(notify_config(tmp_path, table))
    return caught.value.problems


def test_each_bad_address_is_one_line(tmp_path: Path) -> None:
    table = email_table(
        "mail",
        25,
        **{"from": "not an address", "to": ["ok@example.com", "nobody", "a@b.c, d@e.f", "x@"]},
    )
    assert config_problems(tmp_path, table) == [
        "notifiers[0].from: invalid address 'not an address': expected name@example.com or "
        "'Name <name@example.com>'",
        "notifiers[0].to[1]: invalid address 'nobody': expected name@example.com or "
        "'Name <name@example.com>'",
        "notifiers[0].to[2]: invalid address 'a@b.c, d@e.f': expected name@example.com or "
        "'Name <name@example.com>'; one address per list item",
        "notifiers[0].to[3]: invalid address 'x@': expected name@example.com or "
        "'Name <name@example.com>'",
    ]


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        ({"to": []}, "notifiers[0].to: at least one address is required"),
        (
            {"smtp_host": "smtp://mail.example.com"},
            "notifiers[0].smtp_host: invalid smtp_host "
            "'smtp://mail.example.com': a host name or IP, not a URL",
        ),
        (
            {"smtp_host": "mail.example.com:587"},
            "notifiers[0].smtp_host: invalid smtp_host "
            "'mail.example.com:587': set the port in smtp_port",
        ),
        ({"tls": "ssl"}, "notifiers[0].tls: input should be 'starttls', 'implicit' or 'none'"),
        ({"smtp_port": 0}, "notifiers[0].smtp_port: input should be greater than or equal to 1"),
        (
            {"password": PASSWORD, "tls": "starttls"},
            "notifiers[0].username: required with password (the SMTP login name)",
        ),
        (
            {"username": USER, "tls": "starttls"},
            "notifiers[0].password: required with username: set password_file (or password)",
        ),
        (
            {"username": USER, "password": PASSWORD},
            "notifiers[0].tls: 'none' would send the password in clear: use 'starttls' or "
            "'implicit'",
        ),
        (
            {"to": ["ops@exämple.com"]},
            "notifiers[0].to[0]: invalid address 'ops@exämple.com': "
            "only ASCII addresses are supported",
        ),
    ],
)
def test_config_problem_is_one_line_naming_the_key(
    tmp_path: Path, keys: dict[str, Any], problem: str
) -> None:
    problems = config_problems(tmp_path, email_table("mail", 25, **keys))
    assert problems == [problem]
    assert all(PASSWORD not in p for p in problems)


def test_missing_keys_are_named(tmp_path: Path) -> None:
    table = '[[notifiers]]\nname = "mail"\ntype = "email"\n'
    assert config_problems(tmp_path, table) == [
        "notifiers[0].smtp_host: field required",
        "notifiers[0].from: field required",
        "notifiers[0].to: field required",
    ]


def test_validate_shows_the_default_port_and_never_the_password(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD)
    table = email_table("mail", 25, tls="implicit", username=USER, password_file=str(secret))
    config = notify_config(tmp_path, table.replace("smtp_port = 25\n", ""))
    result = subprocess.run(
        [sys.executable, "-m", "syncwatch", "validate", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("SYNCWATCH_")},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    assert "smtp_port = 465\n" in result.stdout
    assert 'password = "**********"' in result.stdout
    assert 'from = "syncwatch@example.com"' in result.stdout
