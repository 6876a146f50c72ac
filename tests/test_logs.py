"""Logging: standard-library records (asyncio, uvicorn) are JSON lines too, rate-limited."""

from __future__ import annotations

import errno
import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from syncwatch import logs
from syncwatch.logs import RateLimit


@pytest.fixture
def stream(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """logs.configure onto a buffer; structlog and the root handler are put back after."""
    # Full buckets for each test, and a stopped clock: no token refills mid-test.
    monkeypatch.setattr(logs, "_rate_limit", RateLimit(clock=lambda: 0.0))
    saved = structlog.get_config()
    saved["processors"] = list(saved["processors"])
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    buffer = io.StringIO()
    logs.configure("info", "json", ["s3cr3t-value-123"], stream=buffer)
    yield buffer
    structlog.configure(**saved)
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def record(msg: str = "boom", name: str = "asyncio") -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, None, None)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rate_limit_passes_a_burst_then_one_per_refill() -> None:
    clock = Clock()
    limit = RateLimit(burst=3, per_second=0.5, clock=clock)
    assert [limit.filter(record()) for _ in range(5)] == [True, True, True, False, False]
    clock.now = 1.0  # half a token
    assert not limit.filter(record())
    clock.now = 2.0
    assert limit.filter(record())


def test_rate_limit_tells_the_next_passing_record_how_many_it_dropped() -> None:
    clock = Clock()
    limit = RateLimit(burst=1, per_second=1.0, clock=clock)
    assert limit.filter(record())
    assert not limit.filter(record())
    assert not limit.filter(record())
    clock.now = 1.0
    passed = record()
    assert limit.filter(passed)
    assert passed.suppressed == 2  # type: ignore[attr-defined]


def test_rate_limit_keys_on_logger_and_first_line_only() -> None:
    limit = RateLimit(burst=1, per_second=0.0, clock=Clock())
    assert limit.filter(record("socket.accept() out of system resource\nsocket: <fd=6>"))
    assert not limit.filter(record("socket.accept() out of system resource\nsocket: <fd=7>"))
    assert limit.filter(record("another message"))
    assert limit.filter(record("socket.accept() out of system resource", name="uvicorn"))


def test_rate_limit_reports_and_resets_what_it_suppressed() -> None:
    limit = RateLimit(burst=1, per_second=0.0, clock=Clock())
    for _ in range(4):
        limit.filter(record("flood"))
    assert limit.take_suppressed() == [("asyncio", "flood", 3)]
    assert limit.take_suppressed() == []


def test_rate_limit_shares_one_bucket_beyond_max_keys() -> None:
    """Messages that differ every time (ids in the text) cannot grow the table without end."""
    limit = RateLimit(burst=1, per_second=0.0, clock=Clock(), max_keys=2)
    assert [limit.filter(record(f"message {i}")) for i in range(5)] == [
        True,
        True,
        True,  # the shared bucket's one token
        False,
        False,
    ]


def test_an_asyncio_accept_error_is_one_json_line_with_its_exception(
    stream: io.StringIO,
) -> None:
    try:
        raise OSError(errno.EMFILE, "Too many open files")
    except OSError as exc:
        logging.getLogger("asyncio").error(
            "socket.accept() out of system resource\nsocket: <socket fd=6>", exc_info=exc
        )
    (line,) = lines(stream)
    assert line["logger"] == "asyncio"
    assert line["level"] == "error"
    assert str(line["event"]).startswith("socket.accept() out of system resource")
    assert "Too many open files" in str(line["exception"])
    assert "timestamp" in line


def test_a_flood_of_library_errors_is_a_few_lines(stream: io.StringIO) -> None:
    logger = logging.getLogger("asyncio")
    for _ in range(10_000):
        logger.error("socket.accept() out of system resource\nsocket: <socket fd=6>")
    assert len(lines(stream)) == 10  # the burst; the rest waits for tokens
    assert logs.take_suppressed() == [
        ("asyncio", "socket.accept() out of system resource", 10_000 - 10)
    ]


def test_library_info_chatter_is_not_logged(stream: io.StringIO) -> None:
    logging.getLogger("httpx").info("HTTP Request: GET https://api.example.com/ 200 OK")
    assert stream.getvalue() == ""


def test_secrets_are_scrubbed_from_library_records(stream: io.StringIO) -> None:
    logging.getLogger("uvicorn.error").warning("bad header s3cr3t-value-123 seen")
    (line,) = lines(stream)
    assert "s3cr3t-value-123" not in json.dumps(line)
