"""Listing bodies to records: the OpenAPI types exactly, invalid ids kept, answers merged."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from syncwatch.models import Reason, Source
from syncwatch.sources.base import Collected, ParsedRecords, parse_http_date, parse_listing
from syncwatch.sources.paragon import ParagonListing, ParagonRecord
from syncwatch.sources.timbal import TimbalListing, TimbalRecord

TIMBAL_SYNC: dict[str, Any] = {
    "id": "sync_1",
    "connector_id": "conn_1",
    "source_kind": "postgres",
    "connection_ref": "ref_1",
    "source_schema": "public",
    "source_table": "orders",
    "cursor_column": "updated_at",
    "kb_uid": "kb_1",
    "dest_table": "raw_orders",
    "interval_secs": 3600,
    "enabled": True,
    "has_cursor": True,
    "created_at": "2025-01-01T00:00:00Z",
    "updated_at": "2025-01-02T00:00:00Z",
    "seconds_since_success": 120,
    "last_success_at": "2025-06-01T11:58:00Z",
    "last_run_at": "2025-06-01T11:58:00Z",
    "last_state": "completed",
    "name": "orders",
}
PARAGON_SYNC: dict[str, Any] = {
    "id": "psync_1",
    "integration": "salesforce",
    "pipeline": "contacts",
    "status": "ACTIVE",
    "dateCreated": "2025-01-01T00:00:00Z",
    "dateUpdated": "2025-01-02T00:00:00Z",
    "credentialId": "cred_1",
}


def timbal(records: list[object]) -> ParsedRecords[TimbalRecord]:
    return parse_listing(
        json.dumps({"syncs": records}).encode(),
        source=Source.TIMBAL,
        tenant="org_1",
        listing_model=TimbalListing,
        key="syncs",
        record_model=TimbalRecord,
    )


def paragon(records: list[dict[str, Any]]) -> ParsedRecords[ParagonRecord]:
    return parse_listing(
        json.dumps({"data": records}).encode(),
        source=Source.PARAGON,
        tenant="user-1",
        listing_model=ParagonListing,
        key="data",
        record_model=ParagonRecord,
    )


def raw_timbal(body: str) -> ParsedRecords[TimbalRecord]:
    return parse_listing(
        body.encode(),
        source=Source.TIMBAL,
        tenant="org_1",
        listing_model=TimbalListing,
        key="syncs",
        record_model=TimbalRecord,
    )


# --- item 17: the OpenAPI types exactly -----------------------------------------------------


@pytest.mark.parametrize(
    ("field", "raw", "value"),
    [
        ("interval_secs", "3600", 3600),
        ("interval_secs", "3600.0", 3600),  # JSON Schema: an integer is a number without fraction
        ("interval_secs", "3.6e3", 3600),
        ("seconds_since_success", "120.0", 120),
        ("seconds_since_success", "-5", -5),  # int64 without a minimum: upstream clock skew
        ("seconds_since_success", "0", 0),
        ("seconds_since_success", str(-(2**63)), -(2**63)),
        ("seconds_since_success", "null", None),
    ],
)
def test_timbal_integers_are_json_schema_integers(field: str, raw: str, value: int | None) -> None:
    body = json.dumps({"syncs": [{**TIMBAL_SYNC, field: "@"}]}).replace('"@"', raw)
    parsed = raw_timbal(body)
    assert parsed.invalid == 0
    [record] = parsed.records
    assert getattr(record, field) == value
    assert type(getattr(record, field)) is (int if value is not None else type(None))


@pytest.mark.parametrize(
    ("field", "raw"),
    [
        ("interval_secs", "3600.5"),  # a fraction is not an integer
        ("interval_secs", '"3600"'),  # a string is not a number
        ("interval_secs", "true"),
        ("interval_secs", "0"),  # syncwatch's one documented rule: interval_secs > 0
        ("interval_secs", "-60"),
        ("interval_secs", str(2**31)),  # int32
        ("seconds_since_success", "120.5"),
        ("seconds_since_success", '"120"'),
        ("seconds_since_success", str(2**63)),  # int64
        ("seconds_since_success", "1e300"),
    ],
)
def test_timbal_integers_that_are_not_spec_integers_invalidate_the_record(
    field: str, raw: str
) -> None:
    body = json.dumps({"syncs": [{**TIMBAL_SYNC, field: "@"}, TIMBAL_SYNC | {"id": "ok"}]})
    parsed = raw_timbal(body.replace('"@"', raw))
    assert parsed.invalid == 1
    assert [r.id for r in parsed.records] == ["ok"]


@pytest.mark.parametrize(
    "unused", ["connection_ref", "source_schema", "cursor_column", "kb_uid", "has_cursor"]
)
def test_a_required_field_syncwatch_does_not_use_may_be_missing(unused: str) -> None:
    record = {k: v for k, v in TIMBAL_SYNC.items() if k != unused}
    assert [r.id for r in timbal([record]).records] == ["sync_1"]


@pytest.mark.parametrize("field", ["updated_at", "last_run_at"])
@pytest.mark.parametrize("value", [None, "not-a-date", True, [], {}, "MISSING"])
def test_a_bad_value_in_a_timbal_field_syncwatch_does_not_rely_on_keeps_the_record(
    field: str, value: Any
) -> None:
    record = {k: v for k, v in TIMBAL_SYNC.items() if k != field}
    if value != "MISSING":
        record[field] = value
    parsed = timbal([record])
    assert parsed.invalid == 0
    assert getattr(parsed.records[0], field) is None


@pytest.mark.parametrize(
    ("field", "value"),
    [("dateUpdated", "yesterday"), ("dateUpdated", [7]), ("summary", "broken"), ("summary", 1)],
)
def test_a_bad_value_in_a_paragon_field_syncwatch_does_not_rely_on_keeps_the_record(
    field: str, value: Any
) -> None:
    parsed = paragon([{**PARAGON_SYNC, field: value}])
    assert parsed.invalid == 0
    assert getattr(parsed.records[0], field) is None


# --- item 15: the ids of invalid records are kept ------------------------------------------


def test_invalid_records_keep_their_ids_when_readable() -> None:
    parsed = timbal(
        [
            {**TIMBAL_SYNC, "id": "zero", "interval_secs": 0},
            {**TIMBAL_SYNC, "id": "bad-date", "created_at": "not-a-date"},
            {**TIMBAL_SYNC, "id": 42, "interval_secs": 0},  # no readable id: counted only
            {k: v for k, v in TIMBAL_SYNC.items() if k != "id"},
            "not even an object",
            {**TIMBAL_SYNC, "id": "good"},
        ]
    )
    assert [r.id for r in parsed.records] == ["good"]
    assert parsed.invalid == 5
    assert parsed.invalid_ids == {"zero", "bad-date"}


# --- items 5, 16 and 18: one tenant's answers merged -------------------------------------------


def records(*changes: dict[str, Any]) -> ParsedRecords[TimbalRecord]:
    return timbal([{**TIMBAL_SYNC, **c} for c in changes])


def test_a_repeated_id_in_one_answer_is_a_duplicate_and_both_records_are_kept() -> None:
    collected: Collected[TimbalRecord] = Collected()
    collected.add(records({"id": "a"}, {"id": "a"}, {"id": "b"}, {"id": "a"}), None)
    assert [r.id for r in collected.records] == ["a", "a", "b", "a"]
    assert collected.duplicates == 2
    assert list(collected.duplicate_ids) == ["a"]


def test_the_same_record_in_two_filter_answers_is_kept_once_without_a_warning() -> None:
    collected: Collected[TimbalRecord] = Collected()
    collected.add(records({"id": "a"}, {"id": "b"}), None)
    collected.add(records({"id": "a"}), None)
    assert [r.id for r in collected.records] == ["a", "b"]
    assert collected.duplicates == 0


def test_a_different_record_under_an_id_from_another_answer_is_a_duplicate() -> None:
    collected: Collected[TimbalRecord] = Collected()
    collected.add(records({"id": "a"}), None)
    collected.add(records({"id": "a", "seconds_since_success": 99_999}), None)
    assert [r.seconds_since_success for r in collected.records] == [120, 99_999]
    assert collected.duplicates == 1


def test_records_outside_the_filter_are_dropped_and_counted() -> None:
    collected: Collected[TimbalRecord] = Collected()
    answer = records({"id": "a"}, {"id": "b", "connector_id": "conn_2"})
    collected.add(answer, lambda r: r.connector_id == "conn_1")
    assert [r.id for r in collected.records] == ["a"]
    assert collected.unrequested == 1
    assert collected.failure(Source.TIMBAL, "org_1") is None


def test_a_listing_whose_every_record_is_invalid_is_a_schema_mismatch() -> None:
    collected: Collected[TimbalRecord] = Collected()
    collected.add(records({"id": "a", "interval_secs": 0}, {"id": "b", "interval_secs": 0}), None)
    failure = collected.failure(Source.TIMBAL, "org_1")
    assert failure is not None
    assert failure.reason is Reason.SCHEMA_MISMATCH
    assert "all 2 records" in str(failure)


@pytest.mark.parametrize(
    "answer",
    [
        [],  # an empty listing is a healthy tenant with no syncs
        [{"interval_secs": 0}, {}],  # one good record is enough
    ],
)
def test_an_empty_listing_or_one_good_record_is_not_a_failure(answer: list[dict[str, Any]]) -> None:
    collected: Collected[TimbalRecord] = Collected()
    collected.add(records(*answer), None)
    assert collected.failure(Source.TIMBAL, "org_1") is None


# --- item 8: the upstream's clock ------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Sun, 06 Nov 1994 08:49:37 GMT", datetime(1994, 11, 6, 8, 49, 37, tzinfo=UTC)),
        ("Sun Nov  6 08:49:37 1994", datetime(1994, 11, 6, 8, 49, 37, tzinfo=UTC)),  # asctime
        ("Tue, 01 Dec 2026 21:33:17 +0000", datetime(2026, 12, 1, 21, 33, 17, tzinfo=UTC)),
        (None, None),
        ("", None),
        ("yesterday", None),
        ("Sun, 99 Nov 1994 08:49:37 GMT", None),
    ],
)
def test_the_date_header_is_parsed_or_ignored(
    header: str | None, expected: datetime | None
) -> None:
    assert parse_http_date(header) == expected
