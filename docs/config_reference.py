"""Generates docs/configuration.md from the config models: `python docs/config_reference.py`."""

from __future__ import annotations

import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from syncwatch.config import SecretFile, format_duration, format_size
from syncwatch.settings import Config

OUT = Path(__file__).with_name("configuration.md")
DURATION_HINT = "duration"
SIZE_HINT = "size"

HEADER = """# Configuration reference

Generated from the config models (`syncwatch/config/` and each notifier kind's module)
by `python docs/config_reference.py`; a test fails when it is out of date. Every key can
also be set from the environment: the `env` column gives the variable (arrays of tables
take JSON, e.g. `SYNCWATCH_TIMBAL__ORGS='[{"id": "org_1"}]'`). Durations accept `"90s"`,
`"5m"`, `"1h30m"`, `"2d"` or a number of seconds; sizes `"64MiB"`, `"512KiB"`, `"1GiB"`
or a number of bytes. `secret` keys are never printed or logged; each has a `*_file`
twin (relative names are read from `$CREDENTIALS_DIRECTORY`). `[[notifiers]]` entries
take the common keys plus those of their `type`.
"""


def _type_name(annotation: Any, metadata: list[Any]) -> str:
    names = {type(m).__name__ for m in metadata}
    if "PlainSerializer" in names and annotation is float:
        return DURATION_HINT
    if "PlainSerializer" in names and annotation is int:
        return SIZE_HINT
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        inner = " | ".join(_type_name(a, []) for a in args)
        return f"{inner} (optional)" if len(args) < len(typing.get_args(annotation)) else inner
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(annotation))
    if origin is typing.Annotated:
        base, *meta = typing.get_args(annotation)
        return _type_name(base, meta)
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a, []) for a in args)}]"
    if annotation is SecretFile:
        return "secret file"
    name = getattr(annotation, "__name__", str(annotation))
    return {
        "SecretStr": "secret",
        "float": "number",
        "int": "integer",
        "str": "string",
        "bool": "boolean",
        "Path": "path",
        "Severity": "`warning` \\| `critical`",
    }.get(name, name)


def _default(info: Any) -> str:
    value = info.default
    if value is PydanticUndefined:
        return "**required**"
    if isinstance(value, BaseModel) or value is None:
        return ""
    if isinstance(value, float) and any(
        type(m).__name__ == "PlainSerializer" for m in info.metadata
    ):
        return f"`{format_duration(value)}`"
    if isinstance(value, int) and any(type(m).__name__ == "PlainSerializer" for m in info.metadata):
        return f"`{format_size(value)}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value in ([], {}):
        return "`[]`" if value == [] else "`{}`"
    return f"`{value!s}`".replace("``", '`""`')


def _models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in typing.get_args(annotation) for m in _models(a)]


def _is_list(annotation: Any) -> bool:
    if typing.get_origin(annotation) is typing.Annotated:
        return _is_list(typing.get_args(annotation)[0])
    return typing.get_origin(annotation) is list


def _rows(model: type[BaseModel], path: str, env: str | None, array: str = "") -> list[str]:
    rows = []
    for name, info in model.model_fields.items():
        key = info.alias or name
        full = f"{path}.{key}" if path else key
        variable = f"{env}__{name.upper()}" if env else f"SYNCWATCH_{name.upper()}"
        nested = _models(info.annotation)
        if nested and name != "notifiers":
            if _is_list(info.annotation):
                # Items of an array of tables are set through the whole array, as JSON.
                rows.extend(_rows(nested[0], f"{full}[]", None, variable))
            else:
                rows.extend(_rows(nested[0], full, None if array else variable, array))
            continue
        where = f"in `{array}` (JSON)" if array else f"`{variable}`"
        kind = _type_name(info.annotation, info.metadata).replace(" | ", " \\| ")
        rows.append(f"| `{full}` | {kind} | {_default(info)} | {where} |")
    return rows


def render() -> str:
    lines = [HEADER, "| key | type | default | env |", "|---|---|---|---|"]
    lines += _rows(Config, "", "")
    notifier_types = _models(Config.model_fields["notifiers"].annotation)
    for model in notifier_types:
        kind = model.model_fields["type"].annotation.__args__[0]
        lines += [
            "",
            f'## `[[notifiers]]` with `type = "{kind}"`',
            "",
            "| key | type | default |",
            "|---|---|---|",
        ]
        for name, info in model.model_fields.items():
            lines.append(
                f"| `{info.alias or name}` | {_type_name(info.annotation, info.metadata)} | "
                f"{_default(info)} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    sys.stdout.write(f"wrote {OUT}\n")
