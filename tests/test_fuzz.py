"""Property-based fuzzing of listing parsing and evaluation.

The JSON Schemas come from the upstream OpenAPI documents (copies in tests/fixtures/api,
read by tests/openapi.py: Timbal `SyncView`, Paragon `SyncsResponse`). Listings drawn from
them exactly must be kept and evaluated record for record, except where a documented rule
skips a record (`interval_secs <= 0`). The mutation tests start from records that pass that
rule. Valid bodies and bodies with mutated records go through `parse_listing`: it may only
raise `SourceError`, and only for a body that is not a listing; every item is either kept
or counted invalid. Parsed records then go through `to_sync` and evaluation.

Small example counts by default; `SYNCWATCH_FUZZ_EXAMPLES=10000` for a full run.
"""

from __future__ import annotations

import functools
import json
import os
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncwatch.config import ParagonConfig, Thresholds
from syncwatch.evaluate import Evaluation
from syncwatch.models import Source, SourceError
from syncwatch.sources.base import ParsedRecords, parse_listing
from syncwatch.sources.paragon import ParagonListing, ParagonRecord
from syncwatch.sources.paragon.rules import ParagonRules, evaluate_paragon
from syncwatch.sources.timbal import TimbalListing, TimbalRecord
from syncwatch.sources.timbal.rules import evaluate_timbal
from tests import openapi

try:
    from hypothesis_jsonschema import from_schema
    from jsonschema import Draft7Validator  # a dependency of hypothesis-jsonschema
except ImportError:  # pragma: no cover - depends on the environment
    if os.environ.get("CI"):
        raise
    HAVE_JSONSCHEMA = False
else:
    HAVE_JSONSCHEMA = True

needs_jsonschema = pytest.mark.skipif(
    not HAVE_JSONSCHEMA,
    reason="SKIPPED LOUDLY: hypothesis-jsonschema is not installed, the schema-driven fuzz "
    "tests did not run (pip install hypothesis-jsonschema; with CI set this is an error)",
)

EXAMPLES = int(os.environ.get("SYNCWATCH_FUZZ_EXAMPLES", "0") or 0)


def fuzz_settings(default: int) -> settings:
    return settings(
        max_examples=EXAMPLES or default,
        deadline=None,
        # Nothing to replay between runs: a failure prints its example and `@reproduce_failure`.
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )


INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
DATE_TIME = {"type": "string", "format": "date-time"}


def listing_schema(key: str, record: dict[str, Any]) -> dict[str, Any]:
    # The spec's listings, with at most 5 records: more would only slow the search down.
    return {
        "type": "object",
        "required": [key],
        "properties": {key: {"type": "array", "items": record, "maxItems": 5}},
    }


# Exactly what the OpenAPI documents allow (tests/openapi.py reads the fixtures).
SPEC_TIMBAL_RECORD: dict[str, Any] = openapi.timbal_record()
SPEC_PARAGON_RECORD: dict[str, Any] = openapi.paragon_record()
SPEC_TIMBAL_LISTING = listing_schema("syncs", SPEC_TIMBAL_RECORD)
SPEC_PARAGON_LISTING = listing_schema("data", SPEC_PARAGON_RECORD)

# syncwatch's one documented rule beyond the spec (PRODUCT §3, docs/reliability.md): a
# record with `interval_secs <= 0` is skipped as invalid. The mutation tests start from
# records that pass it, so that a record they expect kept is kept.
TIMBAL_RECORD_SCHEMA: dict[str, Any] = openapi.timbal_record()
TIMBAL_RECORD_SCHEMA["properties"]["interval_secs"]["minimum"] = 1
TIMBAL_LISTING_SCHEMA = listing_schema("syncs", TIMBAL_RECORD_SCHEMA)
PARAGON_RECORD_SCHEMA: dict[str, Any] = openapi.paragon_record()
PARAGON_LISTING_SCHEMA = listing_schema("data", PARAGON_RECORD_SCHEMA)


def skipped_by_a_documented_rule(source: str, record: dict[str, Any]) -> bool:
    """The documented reasons a spec-valid record is skipped: only `interval_secs <= 0`."""
    return source == "timbal" and record["interval_secs"] <= 0


# What the models need, by kind: the oracle for "this mutation surely breaks/keeps a record".
TIMBAL_FIELDS = {
    "id": "str",
    "connector_id": "str",
    "source_kind": "str",
    "source_table": "str",
    "dest_table": "str",
    "interval_secs": "posint",
    "enabled": "bool",
    "created_at": "date",
    "name": "str?",
    "seconds_since_success": "int?",
    "last_success_at": "date?",
    "last_state": "str?",
    # Carried but not relied on: a bad value reads as null, the record is kept.
    "updated_at": "any",
    "last_run_at": "any",
    # In the spec, ignored by syncwatch.
    "connection_ref": "any",
    "source_schema": "any",
    "cursor_column": "any",
    "kb_uid": "any",
    "has_cursor": "any",
}
PARAGON_FIELDS = {
    "id": "str",
    "integration": "str",
    "pipeline": "str",
    "status": "str",
    "reason": "str?",
    "configurationName": "str?",
    "dateCreated": "date?",
    "dateUpdated": "any",
    "credentialId": "str?",
}


@functools.cache
def json_values(max_leaves: int = 10) -> st.SearchStrategy[Any]:
    """Arbitrary JSON; built once per size (strategies are reused, never rebuilt per draw)."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(min_value=-(10**400), max_value=10**400),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(),
    )
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=max_leaves,
    )


HUGE_INTS = st.integers(min_value=2**63, max_value=10**400) | st.integers(
    min_value=-(10**400), max_value=-(2**63)
)
SURELY_BAD_DATES = st.sampled_from(
    [
        "",
        "yesterday",
        "2024-13-01T00:00:00Z",
        "2024-02-30T12:00:00Z",
        "2024-01-01T25:00:00Z",
        "2024-01-01T00:61:00Z",
        "2024-01-01T00:00:00+25:00",
        "01/02/2024 10:00",
        "2024-01-01T00:00:00ZZ",
        "\u0662\u0660\u0662\u0664-01-01T00:00:00Z",
    ]
)
NON_STRINGS: st.SearchStrategy[object] = st.one_of(
    st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.booleans(), st.just([])
) | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)

BREAKS, KEEPS, MAYBE = "breaks", "keeps", "maybe"

_STRATEGIES: dict[tuple[str, int], st.SearchStrategy[Any]] = {}


def _once(
    kind: str, schema: dict[str, Any], build: Callable[[dict[str, Any]], st.SearchStrategy[Any]]
) -> st.SearchStrategy[Any]:
    """Strategies are built once per (module-level) schema and reused by every draw."""
    key = (kind, id(schema))
    if key not in _STRATEGIES:
        _STRATEGIES[key] = build(schema)
    return _STRATEGIES[key]


def schema_strategy(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """from_schema compiles the schema each call, which is slow: once per schema."""
    return _once("from_schema", schema, from_schema)


def extra_keys(taken: set[str], max_leaves: int) -> st.SearchStrategy[dict[str, Any]]:
    """Keys the schema does not name (it allows them), with arbitrary JSON values."""
    return st.dictionaries(
        st.text().filter(lambda k: k not in taken), json_values(max_leaves), max_size=3
    )


def _build_object(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    properties, required = schema["properties"], schema["required"]
    known = st.fixed_dictionaries(
        {k: schema_strategy(properties[k]) for k in required},
        optional={k: schema_strategy(v) for k, v in properties.items() if k not in required},
    )
    # `summary` is not in the schema but syncwatch reads it: mutated_record owns that key.
    extra = extra_keys({*properties, "summary"}, 4)
    return st.builds(lambda extra, known: {**extra, **known}, extra, known)


def object_strategy(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """What `from_schema` makes of a flat object schema, but compiled once, not per draw.

    hypothesis-jsonschema's object strategy compiles each property's subschema again on every
    draw, most of the run time. Here each property is one cached `from_schema` strategy:
    the required keys always, each optional key or not, and a few keys the schema does not
    name. `test_object_strategies_follow_the_schemas` checks the output against the schemas.
    """
    return _once("object", schema, _build_object)


def _build_listing(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    (key,) = schema["required"]
    array = schema["properties"][key]
    return st.builds(
        lambda extra, items: {**extra, key: items},
        extra_keys({key}, 10),
        st.lists(object_strategy(array["items"]), max_size=array["maxItems"]),
    )


def listing_strategy(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    return _once("listing", schema, _build_listing)


# Built once: strategies made inside a draw are rebuilt (and re-validated) on every call.
ACTIONS = st.sampled_from(["delete", "null", "wrong_type", "huge_int", "unicode", "bad_value"])
UNICODE = st.text(max_size=30)
NON_BOOLS = NON_STRINGS.filter(lambda v: not isinstance(v, bool)) | st.text()
NON_INTS: st.SearchStrategy[object] = (
    st.text()
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False).filter(
        lambda f: f != int(f) if abs(f) < 1e300 else True
    )
    | st.just({})
)
NON_DATES: st.SearchStrategy[object] = (
    st.booleans() | st.just([]) | st.just({}) | st.integers() | st.floats()
)
NOT_POSITIVE = st.integers(max_value=0)
FRACTIONS = st.floats(allow_nan=False, allow_infinity=False).filter(
    lambda f: abs(f) < 1e300 and f != int(f)
)
SHORT_TEXT = st.text(max_size=12)


def mutate_field(draw: st.DrawFn, record: dict[str, Any], field: str, kind: str) -> str:
    """Mutate `record[field]` in place; return whether the record surely breaks or keeps."""
    optional = kind.endswith("?")
    base = kind.rstrip("?")
    action = draw(ACTIONS)
    if action == "delete":
        record.pop(field, None)
        return KEEPS if optional or base == "any" else BREAKS
    if action == "null":
        record[field] = None
        return KEEPS if optional or base == "any" else BREAKS
    if action == "huge_int":
        value = draw(HUGE_INTS)
        record[field] = value
        if base == "any":
            return KEEPS
        if base == "int":
            return KEEPS if -(2**63) <= value <= INT64_MAX else BREAKS
        if base in ("str", "bool") or (base == "posint" and value < 0):
            return BREAKS
        return MAYBE  # a huge positive int or a timestamp: the models decide
    if action == "unicode":
        record[field] = draw(UNICODE)
        if base in ("str", "any"):
            return KEEPS
        if base == "date":
            return MAYBE  # "1700000000" is a valid timestamp
        return BREAKS
    if action == "wrong_type":
        if base == "str":
            record[field] = draw(NON_STRINGS)
            return BREAKS
        if base == "bool":
            record[field] = draw(NON_BOOLS)
            return BREAKS
        if base in ("posint", "int"):
            record[field] = draw(NON_INTS)
            return BREAKS
        if base == "date":
            non_date = draw(NON_DATES)
            record[field] = non_date if non_date == non_date else 0.5  # JSON has no NaN
            return (
                MAYBE
                if isinstance(non_date, int | float) and not isinstance(non_date, bool)
                else BREAKS
            )
        record[field] = draw(json_values(4))
        return KEEPS
    # bad_value: out-of-range numbers, bad dates, unknown statuses
    if base == "posint":
        record[field] = draw(NOT_POSITIVE)
        return BREAKS
    if base == "int":
        record[field] = draw(FRACTIONS)
        return BREAKS
    if base == "date":
        record[field] = draw(SURELY_BAD_DATES)
        return BREAKS
    if field == "status":
        record[field] = draw(SHORT_TEXT)
        return KEEPS
    record[field] = draw(json_values(4))
    return KEEPS if base == "any" else MAYBE


@st.composite
def _mutated_record(
    draw: st.DrawFn,
    record_strategy: st.SearchStrategy[dict[str, Any]],
    fields: dict[str, str],
    targets_strategy: st.SearchStrategy[list[str]],
    extra_strategy: st.SearchStrategy[dict[str, Any]],
    summary_strategy: st.SearchStrategy[Any] | None,
) -> tuple[dict[str, Any], str]:
    record = dict(draw(record_strategy))
    targets = draw(targets_strategy)
    verdicts = [mutate_field(draw, record, f, fields[f]) for f in targets]
    record.update(draw(extra_strategy))
    if summary_strategy is not None and draw(st.booleans()):
        # Not in the spec, read by syncwatch: Get Sync's summary, sometimes in the listing.
        # Whatever it holds, it cannot cost a record the spec says is valid.
        record["summary"] = draw(summary_strategy)
        verdicts.append(KEEPS)
    if BREAKS in verdicts:
        return record, BREAKS
    return record, KEEPS if all(v == KEEPS for v in verdicts) else MAYBE


def _build_mutated(record_schema: dict[str, Any]) -> st.SearchStrategy[tuple[dict[str, Any], str]]:
    fields = TIMBAL_FIELDS if record_schema is TIMBAL_RECORD_SCHEMA else PARAGON_FIELDS
    summary = (
        st.none()
        | st.fixed_dictionaries({"lastSyncedAt": st.none() | schema_strategy(DATE_TIME)})
        | json_values(4)
    )
    return _mutated_record(
        object_strategy(record_schema),
        fields,
        st.lists(st.sampled_from(sorted(fields)), unique=True, max_size=3),
        st.dictionaries(
            st.text(max_size=10).filter(lambda k: k not in fields and k != "summary"),
            json_values(4),
            max_size=3,
        ),
        summary if record_schema is PARAGON_RECORD_SCHEMA else None,
    )


def mutated_record(record_schema: dict[str, Any]) -> st.SearchStrategy[tuple[dict[str, Any], str]]:
    """A schema-valid record, then 0..3 field mutations and some extra keys."""
    return _once("mutated", record_schema, _build_mutated)


SOURCES: dict[str, tuple[Source, type[Any], str, type[Any]]] = {
    "timbal": (Source.TIMBAL, TimbalListing, "syncs", TimbalRecord),
    "paragon": (Source.PARAGON, ParagonListing, "data", ParagonRecord),
}


def parse(source: str, body: bytes) -> ParsedRecords[Any]:
    src, listing_model, key, record_model = SOURCES[source]
    return parse_listing(
        body,
        source=src,
        tenant="tenant-1",
        listing_model=listing_model,
        key=key,
        record_model=record_model,
    )


def dumps(data: Any, ascii_only: bool) -> bytes:
    return json.dumps(data, ensure_ascii=ascii_only).encode()


def check_listing(source: str, data: Any, body: bytes) -> ParsedRecords[Any] | None:
    """parse_listing's contract on one body whose decoded value is `data`."""
    key = SOURCES[source][2]
    is_listing = isinstance(data, dict) and isinstance(data.get(key), list)
    try:
        parsed = parse(source, body)
    except SourceError:
        assert not is_listing, "a listing (object with the array) failed as a whole"
        return None
    assert is_listing, "a non-listing was accepted"
    assert len(parsed.records) + parsed.invalid == len(data[key])
    assert all(isinstance(r, SOURCES[source][3]) for r in parsed.records)
    return parsed


# (1) schema-valid listings, and listings of mutated records --------------------------------

RECORD_SCHEMAS = {"timbal": TIMBAL_RECORD_SCHEMA, "paragon": PARAGON_RECORD_SCHEMA}


@functools.cache
def mutated_records(source: str, max_size: int) -> st.SearchStrategy[Any]:
    return st.lists(mutated_record(RECORD_SCHEMAS[source]), max_size=max_size)


@functools.cache
def top_level_extras(source: str) -> st.SearchStrategy[dict[str, Any]]:
    key = SOURCES[source][2]
    return st.dictionaries(
        st.text(max_size=6).filter(lambda k: k != key), json_values(3), max_size=2
    )


LISTING_SCHEMAS = {
    "timbal": TIMBAL_LISTING_SCHEMA,
    "paragon": PARAGON_LISTING_SCHEMA,
    "timbal-spec": SPEC_TIMBAL_LISTING,
    "paragon-spec": SPEC_PARAGON_LISTING,
}


@needs_jsonschema
@pytest.mark.parametrize("name", sorted(LISTING_SCHEMAS))
# Checks the test's own strategy, not syncwatch: a fixed count, even for the full run.
@settings(fuzz_settings(50), max_examples=min(EXAMPLES or 50, 1000))
@given(data=st.data())
def test_object_strategies_follow_the_schemas(name: str, data: st.DataObject) -> None:
    """The hand-built listing strategy makes only what the schemas allow."""
    schema = LISTING_SCHEMAS[name]
    listing = data.draw(listing_strategy(schema))
    errors = [e.message for e in Draft7Validator(schema).iter_errors(listing)]
    assert errors == []


@needs_jsonschema
@pytest.mark.parametrize("source", ["timbal", "paragon"])
@fuzz_settings(25)
@given(data=st.data(), ascii_only=st.booleans())
def test_mutated_records_are_kept_or_counted(
    source: str, data: st.DataObject, ascii_only: bool
) -> None:
    items = data.draw(mutated_records(source, 6), label="items")
    key = SOURCES[source][2]
    extra = data.draw(top_level_extras(source))
    body_data = {**extra, key: [record for record, _ in items]}
    parsed = check_listing(source, body_data, dumps(body_data, ascii_only))
    assert parsed is not None
    verdicts = Counter(verdict for _, verdict in items)
    assert parsed.invalid >= verdicts[BREAKS]
    assert len(parsed.records) >= verdicts[KEEPS]
    kept_ids = Counter(r.id for r in parsed.records)
    must_keep = Counter(record["id"] for record, verdict in items if verdict == KEEPS)
    assert not must_keep - kept_ids, "a valid record was dropped"


# (2) arbitrary bytes and arbitrary JSON ------------------------------------------------------

JSONISH = st.lists(
    st.sampled_from(
        [
            '{"syncs":',
            '{"data":',
            "[",
            "]",
            "{",
            "}",
            ",",
            ":",
            '"id"',
            '"x"',
            "1",
            "-0",
            "1e999",
            "99999999999999999999999",
            "NaN",
            "null",
            "true",
            '"\\ud800"',
            '"\\u00e9"',
            "\xff",
            " ",
        ]
    ),
    max_size=30,
).map(lambda parts: "".join(parts).encode("utf-8", "surrogatepass"))


@pytest.mark.parametrize("source", ["timbal", "paragon"])
@fuzz_settings(40)
@given(body=st.binary(max_size=300) | JSONISH)
def test_arbitrary_bytes_raise_only_source_error(source: str, body: bytes) -> None:
    try:
        parsed = parse(source, body)
    except SourceError:
        return
    assert all(isinstance(r, SOURCES[source][3]) for r in parsed.records)


@functools.cache
def arbitrary_json(key: str) -> st.SearchStrategy[Any]:
    return (
        json_values(20)
        | st.dictionaries(st.just(key) | st.text(max_size=6), json_values(20), max_size=3)
        | st.builds(
            lambda items, extra: {**extra, key: items},
            st.lists(json_values(10), max_size=5),
            st.dictionaries(st.text(max_size=6), json_values(3), max_size=2),
        )
    )


@pytest.mark.parametrize("source", ["timbal", "paragon"])
@fuzz_settings(40)
@given(data=st.data(), ascii_only=st.booleans())
def test_arbitrary_json_raise_only_source_error(
    source: str, data: st.DataObject, ascii_only: bool
) -> None:
    key = SOURCES[source][2]
    value = data.draw(arbitrary_json(key), label="value")
    check_listing(source, value, dumps(value, ascii_only))


# (3) parsed records through to_sync and evaluation -------------------------------------------

NOW = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
) | st.just(datetime(2025, 6, 1, 12, tzinfo=UTC))
THRESHOLDS = [Thresholds(), Thresholds(alert_on_disabled=True, min_stale_seconds=0)]
RULES = [
    ParagonRules.from_config(ParagonConfig()),
    ParagonRules.from_config(ParagonConfig(disabled_severity="critical", idle_stale_after=60)),
    ParagonRules.from_config(ParagonConfig(disabled_severity="none", initializing_grace=0)),
]


def evaluate_all(source: str, records: list[Any], now: datetime) -> list[Evaluation]:
    out = []
    for record in records:
        if source == "timbal":
            assert isinstance(record, TimbalRecord)
            sync = record.to_sync("org-1")
            out += [evaluate_timbal(sync, t, now) for t in THRESHOLDS]
        else:
            assert isinstance(record, ParagonRecord)
            out += [evaluate_paragon(record.to_sync("user-1"), r, now) for r in RULES]
    return out


@needs_jsonschema
@pytest.mark.parametrize("source", ["timbal", "paragon"])
@fuzz_settings(25)
@given(data=st.data(), now=NOW)
def test_parsed_records_evaluate_without_raising(
    source: str, data: st.DataObject, now: datetime
) -> None:
    items = data.draw(mutated_records(source, 4), label="items")
    key = SOURCES[source][2]
    body_data = {key: [record for record, _ in items]}
    parsed = check_listing(source, body_data, dumps(body_data, ascii_only=False))
    assert parsed is not None
    for evaluation in evaluate_all(source, parsed.records, now):
        if evaluation.condition is not None:
            # Conditions become alerts, labels and JSON: they must be plain strings.
            for text in (
                *evaluation.condition.labels.values(),
                *evaluation.condition.annotations.values(),
            ):
                assert isinstance(text, str)


# (4) every record the OpenAPI documents allow --------------------------------------------


def integer_fields(record_schema: dict[str, Any]) -> list[str]:
    return [
        name
        for name, prop in record_schema["properties"].items()
        if "integer" in (t if isinstance(t := prop.get("type"), list) else [t])
    ]


def as_whole_floats(record: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    """`3600` written as `3600.0`: the same JSON Schema integer (exact below 2**53)."""
    return {
        k: float(v) if k in fields and isinstance(v, int) and abs(v) <= 2**53 else v
        for k, v in record.items()
    }


@needs_jsonschema
@pytest.mark.parametrize("source", ["timbal", "paragon"])
@fuzz_settings(25)
@given(data=st.data(), ascii_only=st.booleans(), whole_floats=st.booleans(), now=NOW)
def test_every_spec_valid_record_is_evaluated_or_skipped_by_a_documented_rule(
    source: str, data: st.DataObject, ascii_only: bool, whole_floats: bool, now: datetime
) -> None:
    """Listings drawn from the OpenAPI schemas: every record is kept and evaluates, unless
    a documented rule skips it (`interval_secs <= 0`); never for a negative lag, a float
    integer or a required field syncwatch does not use."""
    spec = SPEC_TIMBAL_LISTING if source == "timbal" else SPEC_PARAGON_LISTING
    key = SOURCES[source][2]
    listing = data.draw(listing_strategy(spec), label="listing")
    if whole_floats:
        fields = integer_fields(spec["properties"][key]["items"])
        listing = {**listing, key: [as_whole_floats(r, fields) for r in listing[key]]}
    parsed = check_listing(source, listing, dumps(listing, ascii_only))
    assert parsed is not None
    expected = [r["id"] for r in listing[key] if not skipped_by_a_documented_rule(source, r)]
    assert [r.id for r in parsed.records] == expected
    assert parsed.invalid == len(listing[key]) - len(expected)
    assert len(evaluate_all(source, parsed.records, now)) == len(expected) * (
        len(THRESHOLDS) if source == "timbal" else len(RULES)
    )


# (5) one decoding, whichever path a listing takes ---------------------------------------------


@needs_jsonschema
@pytest.mark.parametrize("source", ["timbal", "paragon"])
@fuzz_settings(25)
@given(data=st.data(), ascii_only=st.booleans(), whole_floats=st.booleans())
def test_a_record_reads_the_same_whether_its_listing_is_clean_or_not(
    source: str, data: st.DataObject, ascii_only: bool, whole_floats: bool
) -> None:
    """A listing of valid records only is decoded in one pass (msgspec); one bad record sends
    it through the slow path, record by record. Either way each valid record is the same."""
    spec = SPEC_TIMBAL_LISTING if source == "timbal" else SPEC_PARAGON_LISTING
    key = SOURCES[source][2]
    listing = data.draw(listing_strategy(spec), label="listing")
    if whole_floats:
        fields = integer_fields(spec["properties"][key]["items"])
        listing = {**listing, key: [as_whole_floats(r, fields) for r in listing[key]]}
    clean = check_listing(source, listing, dumps(listing, ascii_only))
    spoiled = {**listing, key: [*listing[key], "not a record"]}
    mixed = check_listing(source, spoiled, dumps(spoiled, ascii_only))
    assert clean is not None
    assert mixed is not None
    assert mixed.records == clean.records
    assert (mixed.invalid, mixed.invalid_ids) == (clean.invalid + 1, clean.invalid_ids)
