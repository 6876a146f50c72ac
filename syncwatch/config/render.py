"""`validate` output: the resolved config, secrets redacted, as TOML; the secret values."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import tomli_w
from pydantic import BaseModel, SecretStr

from syncwatch.config.load import Config
from syncwatch.config.sections import AlertmanagerNotifier

# --- `validate` output ------------------------------------------------------------------


def redacted_dump(config: Config) -> dict[str, Any]:
    """The resolved config as plain data, every secret replaced by asterisks."""
    data: dict[str, Any] = config.model_dump(mode="json", by_alias=True, exclude_none=True)
    # An Alertmanager URL may carry basic-auth credentials (http://user:pass@host).
    for notifier in data.get("notifiers", []):
        if notifier.get("type") == "alertmanager":
            notifier["urls"] = [_mask_url_password(u) for u in notifier.get("urls", [])]
    return data


def _url_password(url: str) -> str | None:
    return urlsplit(url).password or None


def _mask_url_password(url: str) -> str:
    parts = urlsplit(url)
    if not parts.password:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return parts._replace(netloc=f"{user}:**********@{hostport}").geturl()


def to_toml(data: Mapping[str, Any]) -> str:
    """`data` as TOML, written by tomli-w (it escapes every control character)."""
    # One-line strings: tomli-w's multi-line strings turn "\r\n" into "\n", losing the "\r".
    return tomli_w.dumps(data, multiline_strings=False)


def secrets_of(model: BaseModel) -> list[str]:
    """Every secret value in a config, so the log scrubber can mask any that slip out."""
    found: list[str] = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, SecretStr):
                found.append(item.get_secret_value())
            elif isinstance(item, BaseModel):
                found.extend(secrets_of(item))
    if isinstance(model, AlertmanagerNotifier):
        found.extend(p for p in map(_url_password, model.urls) if p)
    return found
