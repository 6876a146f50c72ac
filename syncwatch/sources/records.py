"""Listing records: the OpenAPI types exactly, decoded by msgspec straight into typed records.

A record type (a msgspec Struct or a dataclass) says what is valid with its annotations:
types, `msgspec.Meta` bounds, `Timestamp` for RFC 3339 with an offset, and `NONE_ON_ERROR`
on a field syncwatch carries but does not rely on. A valid body is decoded in one C pass,
without an intermediate dict. msgspec cannot express three rules, and they are applied only
when it refuses a record (`record_of`, the cold path):

- an integer is a JSON Schema integer: `3600.0` and `3.6e3` are 3600, within the same bounds;
- a timestamp is whatever pydantic's lax datetime accepted before (RFC 3339 without seconds
  or offset, a date alone, unix seconds or milliseconds), read by that same parser; a naive
  one is UTC;
- a `NONE_ON_ERROR` field with a bad value reads as None, and the record is kept.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from datetime import UTC, datetime, timezone
from typing import Annotated, Any, TypeVar

import msgspec
from pydantic_core import SchemaValidator, ValidationError, core_schema

T = TypeVar("T")

# An aware datetime; on the wire, RFC 3339 with `Z` or an offset (the cold path takes more).
Timestamp = Annotated[datetime, msgspec.Meta(tz=True)]


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


# In a field's Annotated[...]: a bad value reads as None and the record is kept.
NONE_ON_ERROR = _Marker("NONE_ON_ERROR")
# In a field's Annotated[...]: not the listing's to give (e.g. the tenant it was listed for).
NOT_ON_THE_WIRE = _Marker("NOT_ON_THE_WIRE")


class RecordError(Exception):
    """A listing item that is not a valid record: `field: message; ...`, never the values."""


_DECODERS: dict[type[Any], msgspec.json.Decoder[Any]] = {}


def listing_decoder(model: type[T]) -> msgspec.json.Decoder[T]:
    """The one decoder of a listing type, built once (building one costs more than a body)."""
    decoder = _DECODERS.get(model)
    if decoder is None:
        decoder = _DECODERS[model] = msgspec.json.Decoder(model)
    return decoder


def record_of(item: Any, model: type[T]) -> T:
    """One decoded listing item as a `model` record, or RecordError naming every bad field."""
    try:
        return msgspec.convert(item, model)
    except msgspec.ValidationError as exc:
        if not isinstance(item, dict):
            raise RecordError(_describe("<record>", exc)) from None
    values: dict[str, Any] = {}
    errors: list[str] = []
    for field in _fields(model):
        if field.name not in item:
            if field.required:
                errors.append(f"{field.name}: Field required")
            continue
        try:
            values[field.name] = _value(item[field.name], field)
        except _FieldError as exc:
            if field.none_on_error:
                values[field.name] = None
            else:
                errors.append(str(exc))
    if errors:
        raise RecordError("; ".join(errors))
    return model(**values)


# --- the cold path's rules ------------------------------------------------------------------


class _FieldError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    type: Any  # the annotation, bounds included: what msgspec checks
    kind: Any  # what it is once Annotated and None are taken off: int, datetime, a record...
    required: bool
    none_on_error: bool


_FIELDS: dict[type[Any], tuple[_Field, ...]] = {}


def _fields(model: type[Any]) -> tuple[_Field, ...]:
    """The fields the wire gives, as `record_of` checks them; worked out once per type."""
    known = _FIELDS.get(model)
    if known is not None:
        return known
    hints = typing.get_type_hints(model, include_extras=True)
    info = msgspec.inspect.type_info(model)
    assert isinstance(info, msgspec.inspect.StructType | msgspec.inspect.DataclassType)
    out = []
    for field in info.fields:
        annotation = hints[field.name]
        markers = _markers(annotation)
        if NOT_ON_THE_WIRE in markers:
            continue
        out.append(
            _Field(
                field.name,
                annotation,
                _kind(annotation),
                field.required,
                NONE_ON_ERROR in markers,
            )
        )
    _FIELDS[model] = fields = tuple(out)
    return fields


def _markers(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) is Annotated:
        return tuple(annotation.__metadata__)
    return ()


def _kind(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _kind(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        kinds = [_kind(a) for a in typing.get_args(annotation) if a is not type(None)]
        return kinds[0] if len(kinds) == 1 else None
    return annotation


_NOTHING = object()


def _value(value: Any, field: _Field) -> Any:
    try:
        return msgspec.convert(value, field.type)
    except msgspec.ValidationError as exc:
        error = _describe(field.name, exc)
    lenient = _lenient(value, field.kind)
    if lenient is not _NOTHING:
        try:
            return msgspec.convert(lenient, field.type)
        except msgspec.ValidationError as exc:
            error = _describe(field.name, exc)
    raise _FieldError(error)


def _lenient(value: Any, kind: Any) -> Any:
    """What the value means by the rules msgspec does not know, or _NOTHING."""
    if kind is int:
        # JSON Schema: an integer is a number without a fraction, however it is written.
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif kind is datetime:
        try:
            when: datetime = _LAX_DATETIME.validate_python(value)
        except ValidationError:
            return _NOTHING
        return _utc_or_offset(when)
    elif _is_record(kind) and isinstance(value, dict):
        try:
            return record_of(value, kind)
        except RecordError:
            return _NOTHING
    return _NOTHING


# The datetime rule syncwatch had with pydantic (`strict=False`): kept exactly, for the values
# msgspec's RFC 3339 parser refuses. Only records that fail the fast path get here.
_LAX_DATETIME = SchemaValidator(core_schema.datetime_schema(strict=False))


def _utc_or_offset(when: datetime) -> datetime:
    """An aware datetime with the same tzinfo types msgspec gives; a naive one is UTC."""
    offset = when.utcoffset()
    if offset is None or not offset:
        return when.replace(tzinfo=UTC)
    return when.replace(tzinfo=timezone(offset))


def _is_record(kind: Any) -> bool:
    return isinstance(kind, type) and (
        issubclass(kind, msgspec.Struct) or dataclasses.is_dataclass(kind)
    )


def _describe(where: str, exc: msgspec.ValidationError) -> str:
    """`field.inner: message`. msgspec's messages name types and bounds, never the value, so
    upstream values stay out of the logs."""
    message, at, path = str(exc).rpartition(" - at `$")
    if not at:
        return f"{where}: {exc}"
    return f"{where}{path.rstrip('`')}: {message}"
