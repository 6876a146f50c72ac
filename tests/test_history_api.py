"""`GET /api/v1/history`: in process against a real store, and end to end (`syncwatch run`)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from syncwatch.history import Entry, Kind
from syncwatch.history_api import history_routes
from syncwatch.history_store import HistoryStore
from tests.capture import CaptureServer
from tests.conftest import Keys, SimProcess, launch, wait_until

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Client:
    """The app over httpx's ASGI transport, as a loopback client."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    def get(self, url: str, params: Mapping[str, str] | None = None) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, client=("127.0.0.1", 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://sw") as c:
                return await c.get(url, params=params)

        return asyncio.run(call())


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    store = HistoryStore(tmp_path / "state.db", wall=T0.timestamp)
    t = T0.timestamp()
    store.record(
        [
            Entry(t + i, Kind.TRANSITION, "firing", "SyncStale", "timbal", f"org_{i % 2}", f"s{i}")
            for i in range(5)
        ]
    )
    store.flush()
    yield Client(Starlette(routes=history_routes(store)))
    store.close()


def test_pages_follow_the_cursor_newest_first_to_the_end(client: Client) -> None:
    seen, params = [], {"limit": "2"}
    for _ in range(5):
        body = client.get("/api/v1/history", params=params).raise_for_status().json()
        seen += [e["labels"]["sync_id"] for e in body["entries"]]
        if body["nextCursor"] is None:
            break
        params = {"limit": "2", "cursor": body["nextCursor"]}
    assert seen == ["s4", "s3", "s2", "s1", "s0"]


def test_the_filters_combine(client: Client) -> None:
    since = (T0 + timedelta(seconds=1)).isoformat()
    body = client.get("/api/v1/history", params={"tenant": "org_0", "since": since}).json()
    assert [e["labels"]["sync_id"] for e in body["entries"]] == ["s4", "s2"]
    assert body["entries"][0] == {
        "at": (T0 + timedelta(seconds=4)).isoformat(),
        "type": "transition",
        "event": "firing",
        "labels": {
            "alertname": "SyncStale",
            "source": "timbal",
            "tenant": "org_0",
            "sync_id": "s4",
        },
    }


@pytest.mark.parametrize(
    "params", [{"cursor": "garbage"}, {"limit": "0"}, {"since": "soon"}, {"tenant_id": "x"}]
)
def test_a_bad_parameter_is_a_400_naming_it(client: Client, params: dict[str, str]) -> None:
    answer = client.get("/api/v1/history", params=params)
    assert answer.status_code == 400
    assert answer.json()["error"].startswith(next(iter(params)))


# --- end to end -----------------------------------------------------------------------------


def history(url: str, **params: str) -> list[dict[str, Any]]:
    """Every entry, oldest first, following the cursor."""
    out: list[dict[str, Any]] = []
    query = dict(params, limit="1000")
    while True:
        body = httpx.get(f"{url}/api/v1/history", params=query, timeout=20).raise_for_status()
        page = body.json()
        out += page["entries"]
        if page["nextCursor"] is None:
            return out[::-1]
        query["cursor"] = page["nextCursor"]


def test_the_daemon_records_a_fire_a_failed_then_sent_delivery_and_a_silence_ending(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys
) -> None:
    with CaptureServer() as sink:
        # The first delivery is refused (retried 1 s later), every later one accepted.
        sink.reply(503, headers={"Retry-After": "1"})
        notifier = f'[[notifiers]]\nname = "hook"\ntype = "webhook"\nurl = "{sink.url}/hook"\n'
        daemon = launch(tmp_path, sim, rsa_keys, extra=notifier)
        try:
            sink.wait_for(2, timeout=30)
            fired = wait_until(lambda: [e for e in history(daemon.url) if e["event"] == "firing"])
            labels = fired[0]["labels"]

            def deliveries() -> list[dict[str, Any]] | None:
                mine = history(daemon.url, tenant=labels["tenant"], sync_id=labels["sync_id"])
                found = [e for e in mine if e["type"] == "delivery"]
                return found[:2] if len(found) >= 2 else None

            first, second = wait_until(deliveries)
            assert (first["event"], first["statusCode"], first["attempt"]) == ("failed", 503, 1)
            assert (second["event"], second["attempt"]) == ("sent", 2)
            assert first["deliveryId"] == second["deliveryId"]
            assert first["notifier"] == "hook"

            now = datetime.now(UTC)
            silence = {
                "matchers": [
                    {"name": k, "value": labels[k], "isRegex": False} for k in ("tenant", "sync_id")
                ],
                "startsAt": now.isoformat(),
                "endsAt": (now + timedelta(seconds=2)).isoformat(),
                "createdBy": "ops",
                "comment": "migration",
            }
            posted = httpx.post(f"{daemon.url}/api/v2/silences", json=silence, timeout=20)
            silence_id = posted.raise_for_status().json()["silenceID"]

            def silence_events() -> list[str] | None:
                mine = history(daemon.url, tenant=labels["tenant"], sync_id=labels["sync_id"])
                events = [e["event"] for e in mine if e.get("silenceId") == silence_id]
                return events if events == ["created", "expired"] else None

            wait_until(silence_events, timeout=20)
            mine = history(daemon.url, tenant=labels["tenant"], sync_id=labels["sync_id"])
            assert {e["labels"]["sync_id"] for e in mine} == {labels["sync_id"]}
            assert mine[0]["event"] in ("pending", "firing")
        finally:
            daemon.proc.stop()
