"""JSON Schemas of the upstream records, read from the OpenAPI documents in tests/fixtures/api.

Those files are verbatim copies of the upstream API definitions (the only truth about the
fields). OpenAPI's `format: int32/int64` become JSON Schema bounds, local `$ref`s are
inlined and OpenAPI 3.0's `nullable` becomes a `null` type, so that hypothesis-jsonschema
generates exactly what the spec allows.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml

API = Path(__file__).parent / "fixtures" / "api"
TIMBAL_API = "timbal-list-connector-syncs.openapi.yaml"
PARAGON_API = "paragon-list-syncs.openapi.yaml"

_FORMAT_BOUNDS = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_DOCUMENTATION = ("description", "example", "title")


@functools.cache
def _document(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((API / name).read_text())
    return loaded


def _convert(node: Any, document: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_convert(item, document) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), f"only local references are expected, got {ref}"
        target: Any = document
        for part in ref[2:].split("/"):
            target = target[part]
        return _convert(target, document)
    # Documentation keywords go; a property that happens to be called `description` stays.
    out = {
        k: _convert(v, document)
        for k, v in node.items()
        if k not in _DOCUMENTATION or isinstance(v, dict)
    }
    if out.pop("nullable", False):
        types = out.get("type")
        out["type"] = [*(types if isinstance(types, list) else [types]), "null"]
    bounds = _FORMAT_BOUNDS.get(out.get("format", ""))
    if bounds is not None:
        del out["format"]
        out.setdefault("minimum", bounds[0])
        out.setdefault("maximum", bounds[1])
    return out


def schema(document: str, name: str) -> dict[str, Any]:
    """`components.schemas[name]` of one OpenAPI document, as a self-contained JSON Schema."""
    doc = _document(document)
    converted: dict[str, Any] = _convert(doc["components"]["schemas"][name], doc)
    return copy.deepcopy(converted)


def timbal_record() -> dict[str, Any]:
    """Timbal's `SyncView`."""
    return schema(TIMBAL_API, "SyncView")


def paragon_record() -> dict[str, Any]:
    """One item of Paragon's `SyncsResponse.data`."""
    items: dict[str, Any] = schema(PARAGON_API, "SyncsResponse")["properties"]["data"]["items"]
    return items
