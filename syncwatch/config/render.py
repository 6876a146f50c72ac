"""`validate` output as TOML, and every secret value of a config (for the log scrubber)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tomli_w
from pydantic import BaseModel, SecretStr

from syncwatch.config.sections import _WithSecrets

# --- `validate` output ------------------------------------------------------------------


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
    if isinstance(model, _WithSecrets):
        found.extend(model.plain_secrets())
    return found
