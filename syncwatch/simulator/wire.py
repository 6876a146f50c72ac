"""What both simulated APIs share: the source names, time units and JSON as upstream writes it."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, TypeGuard

import orjson
from starlette.responses import Response

TIMBAL: Final = "timbal"
PARAGON: Final = "paragon"

MINUTE: Final = 60
HOUR: Final = 3600
DAY: Final = 86400

JSON_TYPE: Final = "application/json"


def utc(ts: int) -> datetime:
    """An epoch second as an aware UTC datetime (orjson renders it RFC 3339 with Z)."""
    return datetime.fromtimestamp(ts, UTC)


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_UTC_Z)


def json_response(status: int, obj: Any, headers: Mapping[str, str] | None = None) -> Response:
    return Response(dumps(obj), status, headers, media_type=JSON_TYPE)


def error_response(status: int, detail: str) -> Response:
    return json_response(status, {"detail": detail})


def is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_datetime(value: object) -> datetime | None:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
