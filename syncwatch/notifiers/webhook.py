"""Any webhook: Alertmanager webhook format version 4, optionally HMAC-signed."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any, Literal, Self

import orjson
from pydantic import Field, model_validator

from syncwatch.config import KeyProblemError, NotifierConfig, secret_value
from syncwatch.config.types import OptionalSecret, SecretFilePath, SecretUrl
from syncwatch.failures import scrub
from syncwatch.notifiers.base import DELIVERY_ID_HEADER, HttpNotifier, Kind, rfc3339
from syncwatch.outbox import AlertPayload, AlertStatus, Batch, DeliveryError


class WebhookConfig(NotifierConfig):
    _secrets = ("url", "secret")
    type: Literal["webhook"]
    url: SecretUrl = None
    url_file: SecretFilePath = None
    secret: OptionalSecret = None
    secret_file: SecretFilePath = None
    headers: dict[str, str] = Field(default_factory=dict)
    # "syncwatch": X-Syncwatch-Signature; "standard-webhooks": webhook-* headers, whsec_ key.
    signing: Literal["syncwatch", "standard-webhooks"] = "syncwatch"

    @model_validator(mode="after")
    def _needs_url(self) -> Self:
        self._require_url("url", "a webhook notifier needs url (or url_file)")
        return self

    @model_validator(mode="after")
    def _standard_webhooks_key(self) -> Self:
        if self.signing != "standard-webhooks":
            return self
        if self.secret is None:
            raise KeyProblemError(
                "secret",
                "required with signing = 'standard-webhooks': set secret_file (or secret) "
                "to the receiver's whsec_... signing key",
            )
        key = "secret_file" if self.secret_file is not None else "secret"
        try:
            standard_key(self.secret.get_secret_value())
        except ValueError as exc:
            raise KeyProblemError(key, str(exc)) from None
        # A second webhook-signature header would make the request fail to verify.
        for name in self.headers:
            if name.lower() in STANDARD_HEADERS:
                raise KeyProblemError(
                    f"headers.{name}",
                    "set by signing = 'standard-webhooks' on every request; remove it",
                )
        return self


WHSEC_PREFIX = "whsec_"
STANDARD_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
# The Standard Webhooks spec: a symmetric key is at least 24 random bytes.
MIN_KEY_BYTES = 24


def standard_key(secret: str) -> bytes:
    """The HMAC key inside `whsec_<base64>`; the ValueError never quotes the secret."""
    if not secret.startswith(WHSEC_PREFIX):
        raise ValueError(
            "signing = 'standard-webhooks' needs a key that starts with 'whsec_' (value not shown)"
        )
    encoded = secret.removeprefix(WHSEC_PREFIX)
    try:
        # Padding is optional in the wild (the reference libraries add it back).
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the part after 'whsec_' is not valid base64 (value not shown)") from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(
            f"the whsec_ key decodes to {len(key)} bytes; Standard Webhooks keys are at least "
            f"{MIN_KEY_BYTES} (value not shown)"
        )
    return key


def _common(maps: list[dict[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = maps[0]
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in maps[1:])}


def _alert(a: AlertPayload, test: bool) -> dict[str, Any]:
    labels = {**a.labels, "test": "true"} if test else a.labels
    annotations = a.annotations
    summary = annotations.get("summary", "")
    if test and not summary.startswith("[TEST]"):
        # make_test_batch already marks its own summary; say it once.
        annotations = {**annotations, "summary": f"[TEST] {summary}"}
    return {
        "status": str(a.status),
        "labels": labels,
        "annotations": annotations,
        "startsAt": rfc3339(a.starts_at),
        "endsAt": rfc3339(a.ends_at),
        "generatorURL": a.generator_url,
        "fingerprint": a.fingerprint,
    }


def webhook_payload(batch: Batch) -> dict[str, Any]:
    """The Alertmanager webhook v4 body, so existing Alertmanager receivers accept it."""
    alerts = [_alert(a, batch.test) for a in batch.alerts]
    firing = any(a.status is AlertStatus.FIRING for a in batch.alerts)
    return {
        "version": "4",
        "groupKey": f'{{}}/{{notifier="{batch.notifier}"}}:{{}}',
        "truncatedAlerts": 0,
        "status": "firing" if firing else "resolved",
        "receiver": batch.notifier,
        "groupLabels": batch.group_labels,
        "commonLabels": _common([a["labels"] for a in alerts]),
        "commonAnnotations": _common([a["annotations"] for a in alerts]),
        "externalURL": batch.external_url,
        "notification_reason": str(batch.reason),
        "alerts": alerts,
    }


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def standard_signature(key: bytes, msg_id: str, timestamp: str, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`, the Standard Webhooks v1."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


class WebhookNotifier(HttpNotifier[WebhookConfig]):
    async def send(self, batch: Batch) -> None:
        body = orjson.dumps(webhook_payload(batch))
        headers = {**self.config.headers, DELIVERY_ID_HEADER: batch.delivery_id}
        secret = secret_value(self.config.secret)
        if secret is not None and self.config.signing == "standard-webhooks":
            # The delivery id lives in the outbox: the same on every retry and restart, which
            # is what receivers deduplicate on; the timestamp is this attempt's.
            timestamp = str(int(self.clock()))
            headers["webhook-id"] = batch.delivery_id
            headers["webhook-timestamp"] = timestamp
            headers["webhook-signature"] = standard_signature(
                standard_key(secret), batch.delivery_id, timestamp, body
            )
        elif secret is not None:
            timestamp = str(int(self.clock()))
            headers["X-Syncwatch-Timestamp"] = timestamp
            headers["X-Syncwatch-Signature"] = signature(secret, timestamp, body)
        url = secret_value(self.config.url)
        assert url is not None, "config validation requires a url"
        try:
            await self.post(url, body, headers)
        except DeliveryError as exc:
            if secret is None:
                raise
            # A receiver may quote the shared key back ("bad signature for whsec_…"); the
            # error text is logged, printed and stored.
            keys = (secret, secret.removeprefix(WHSEC_PREFIX))
            raise DeliveryError(
                scrub(str(exc), url, keys),
                retryable=exc.retryable,
                retry_after=exc.retry_after,
                status_code=exc.status_code,
            ) from None


KIND = Kind(WebhookConfig, WebhookNotifier.build)
