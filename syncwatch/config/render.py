"""`validate` output: the resolved config, secrets redacted, as TOML; the secret values."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import tomli_w
from pydantic import BaseModel, SecretStr

from syncwatch.config.sections import NotifierConfig

if TYPE_CHECKING:
    from syncwatch.config.load import Config

# --- `validate` output ------------------------------------------------------------------


def redacted_dump(config: Config) -> dict[str, Any]:
    """The resolved config as plain data, every secret replaced by asterisks."""
    data: dict[str, Any] = config.model_dump(mode="json", by_alias=True, exclude_none=True)
    # Each kind masks what it keeps secret outside a SecretStr (a URL's password…).
    for notifier, dumped in zip(config.notifiers, data.get("notifiers", []), strict=True):
        notifier.redact(dumped)
    return data


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
    if isinstance(model, NotifierConfig):
        found.extend(model.plain_secrets())
    return found
