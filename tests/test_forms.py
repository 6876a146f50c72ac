"""The alerts and silences pages and their write forms, over HTTP against a real daemon."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from syncwatch.amapi import ApiContext, BadRequestError, parse_filter
from syncwatch.models import Severity
from syncwatch.silence_store import SilenceStore
from syncwatch.silences import Matcher
from syncwatch.web import lists
from syncwatch.web.csrf import MAX_AGE, Csrf
from syncwatch.web.forms import PAGE_SIZE, FormsContext, form_routes, parse_silence_form
from tests.conftest import Daemon, Keys, SimProcess, launch
from tests.test_acks import alert as an_alert
from tests.test_pages import Page, page
from tests.test_webconfig import PASSWORD, hashed, start_daemon, write_web_config


@pytest.fixture
def daemon(tmp_path: Path, sim: SimProcess, rsa_keys: Keys) -> Iterator[Daemon]:
    d = launch(tmp_path, sim, rsa_keys)
    yield d
    d.proc.stop()


def firing(daemon: Daemon) -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = daemon.get("/api/v2/alerts").raise_for_status().json()
    return alerts


def api_silence(daemon: Daemon, tenant: str) -> str:
    now = datetime.now(UTC)
    body = {
        "matchers": [{"name": "tenant", "value": tenant, "isRegex": False}],
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(hours=1)).isoformat(),
        "createdBy": "ops",
        "comment": "migration",
    }
    answer = httpx.post(f"{daemon.url}/api/v2/silences", json=body, timeout=20)
    silence_id: str = answer.raise_for_status().json()["silenceID"]
    return silence_id


# --- reading ----------------------------------------------------------------------------


def test_the_alerts_page_lists_every_firing_alert_and_filters_in_the_url(daemon: Daemon) -> None:
    alerts = firing(daemon)
    assert alerts, "the simulator's fleet has firing alerts"
    rows = page(daemon, "/alerts").body("alerts")
    shown = {(r[3], r[4], r[5], r[2]) for r in rows if r[0].endswith("firing")}
    expected = {
        (
            a["labels"]["source"],
            a["labels"]["tenant"],
            a["labels"]["sync_id"],
            a["labels"]["alertname"],
        )
        for a in alerts
    }
    assert shown == expected
    a = alerts[0]["labels"]
    query = f"/alerts?source={a['source']}&tenant={a['tenant']}&severity={a['severity']}"
    filtered = page(daemon, query).body("alerts")
    assert filtered
    assert all(
        (r[3], r[4]) == (a["source"], a["tenant"]) and r[1].endswith(a["severity"])
        for r in filtered
    )
    pending = page(daemon, "/alerts?state=pending").body("alerts")
    assert all(r[0].endswith("pending") for r in pending if len(r) > 1)


@pytest.mark.parametrize("query", ["severity=loud", "state=asleep", "page=0", "page=x"])
def test_the_alerts_page_refuses_filters_it_does_not_know(daemon: Daemon, query: str) -> None:
    page(daemon, f"/alerts?{query}", 400)


def test_the_silences_page_groups_silences_by_state(daemon: Daemon) -> None:
    tenant = firing(daemon)[0]["labels"]["tenant"]
    silence_id = api_silence(daemon, tenant)
    shown = page(daemon, "/silences")
    assert [r[0] for r in shown.body("silences-active")] == [silence_id]
    assert shown.body("silences-expired") == [["None."]]
    assert shown.body("silences-pending") == [["None."]]
    rows = page(daemon, "/alerts").body("alerts")
    assert any(r[0].endswith("suppressed") and r[7] == silence_id for r in rows)
    httpx.delete(f"{daemon.url}/api/v2/silence/{silence_id}", timeout=20).raise_for_status()
    shown = page(daemon, "/silences")
    assert [r[0] for r in shown.body("silences-expired")] == [silence_id]
    assert shown.body("silences-active") == [["None."]]


# --- the silence form -------------------------------------------------------------------


class Form(Page):
    """A page's forms: action -> {field name: value} (inputs and textareas)."""

    def __init__(self, html: str) -> None:
        self.forms: dict[str, dict[str, str]] = {}
        self._action: str | None = None
        self._textarea: str | None = None
        super().__init__(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        super().handle_starttag(tag, attrs)
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and a.get("method") == "post":
            self._action = a["action"]
            self.forms[self._action] = {}
        elif tag == "input" and self._action is not None and "name" in a:
            self.forms[self._action][a["name"]] = a.get("value", "")
        elif tag == "textarea" and self._action is not None:
            self._textarea = a["name"]
            self.forms[self._action][self._textarea] = ""

    def handle_endtag(self, tag: str) -> None:
        super().handle_endtag(tag)
        if tag == "form":
            self._action = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data: str) -> None:
        super().handle_data(data)
        if self._textarea is not None and self._action is not None:
            self.forms[self._action][self._textarea] += data


def form_page(daemon: Daemon, path: str) -> Form:
    response = daemon.get(path)
    assert response.status_code == 200, response.text
    return Form(response.text)


def submit(daemon: Daemon, action: str, fields: dict[str, str], **kw: Any) -> httpx.Response:
    return httpx.post(f"{daemon.url}{action}", data=fields, timeout=20, **kw)


def state_of(daemon: Daemon, fingerprint: str) -> str:
    (found,) = [a for a in firing(daemon) if a["fingerprint"] == fingerprint]
    state: str = found["status"]["state"]
    return state


def silence_from_the_page(daemon: Daemon, alert: dict[str, Any]) -> str:
    """Follow the alert's "Silence…" link, submit the pre-filled form; the new silence's id."""
    link = f"/silences/new?fingerprint={alert['fingerprint']}"
    assert link in form_page(daemon, "/alerts").links
    fields = form_page(daemon, link).forms["/silences"]
    fields.update(comment="deploying the fix", author="ops")
    answer = submit(daemon, "/silences", fields)
    assert answer.status_code == 303, answer.text
    location = answer.headers["location"]
    assert location.startswith("/silences#silence-")
    return location.removeprefix("/silences#silence-")


def test_a_silence_from_the_form_mutes_the_alert_in_the_page_and_the_api(daemon: Daemon) -> None:
    alert = firing(daemon)[0]
    link = f"/silences/new?fingerprint={alert['fingerprint']}"
    fields = form_page(daemon, link).forms["/silences"]
    # Pre-filled with the alert's identity: not its severity (the silence holds through an
    # escalation) nor its descriptive labels (nor through a renamed sync).
    lines = set(fields["matchers"].splitlines())
    assert lines == {f'{k}="{alert["labels"][k]}"' for k in lists.SILENCE_LABELS}
    assert {"severity", "name"} < set(alert["labels"])
    assert (fields["starts"], fields["duration"]) == ("", "2h")
    silence_id = silence_from_the_page(daemon, alert)
    assert state_of(daemon, alert["fingerprint"]) == "suppressed"
    (silence,) = daemon.get("/api/v2/silences").json()
    assert silence["id"] == silence_id
    assert silence["comment"] == "deploying the fix"
    rows = page(daemon, f"/alerts?tenant={alert['labels']['tenant']}&state=suppressed")
    assert any(
        r[5] == alert["labels"]["sync_id"] and r[7] == silence_id for r in rows.body("alerts")
    )
    assert [r[0] for r in page(daemon, "/silences").body("silences-active")] == [silence_id]


def test_a_form_with_mistakes_is_shown_again_with_what_was_entered(daemon: Daemon) -> None:
    fields = form_page(daemon, "/silences/new").forms["/silences"]
    fields.update(matchers='tenant="x"\nbroken', duration="soon", author="ops", comment="")
    answer = submit(daemon, "/silences", fields)
    assert answer.status_code == 400
    again = Form(answer.text)
    assert "bad matcher format: broken" in again.texts["error"]
    assert "duration" in again.texts["error"]
    assert "comment is required" in again.texts["error"]
    assert again.forms["/silences"]["matchers"] == 'tenant="x"\nbroken'
    assert daemon.get("/api/v2/silences").json() == []


@pytest.mark.parametrize("token", ["", "1.00", "forged", None])
def test_a_post_without_a_valid_token_is_refused(daemon: Daemon, token: str | None) -> None:
    fields = form_page(daemon, "/silences/new").forms["/silences"]
    fields.update(matchers='tenant="x"', comment="c", author="ops")
    if token is None:
        del fields["csrf"]
    else:
        fields["csrf"] = token
    answer = submit(daemon, "/silences", fields)
    assert answer.status_code == 403
    assert "token" in Page(answer.text).texts["error"]
    assert daemon.get("/api/v2/silences").json() == []


def test_a_post_from_another_origin_is_refused_even_with_a_token(daemon: Daemon) -> None:
    fields = form_page(daemon, "/silences/new").forms["/silences"]
    fields.update(matchers='tenant="x"', comment="c", author="ops")
    answer = submit(daemon, "/silences", fields, headers={"origin": "http://evil.example"})
    assert answer.status_code == 403
    assert daemon.get("/api/v2/silences").json() == []
    same = submit(daemon, "/silences", fields, headers={"origin": daemon.url})
    assert same.status_code == 303


def test_a_token_is_valid_for_its_user_and_max_age_only() -> None:
    now = [1_000_000.0]
    csrf = Csrf(b"k" * 32, clock=lambda: now[0])
    token = csrf.token("alice")
    assert csrf.valid(token, "alice")
    assert not csrf.valid(token, "bob")
    assert not Csrf(b"o" * 32, clock=lambda: now[0]).valid(token, "alice")  # another process
    now[0] += MAX_AGE + 1
    assert not csrf.valid(token, "alice")


def in_process(tmp_path: Path, host: str, method: str, url: str, **kw: Any) -> httpx.Response:
    """One request to the forms' app as if from `host` (no other host exists on 127.0.0.1)."""
    store = SilenceStore(tmp_path / "state.db")
    ctx = FormsContext(ApiContext(silences=store, alerts=tuple))
    app = Starlette(routes=form_routes(ctx))
    token = ctx.csrf.token("")

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(host, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://syncwatch") as c:
            return await c.request(method, url, data={"csrf": token, **kw})

    try:
        return asyncio.run(call())
    finally:
        assert store.all(datetime.now(UTC)) == []
        store.close()


@pytest.mark.parametrize("action", ["/silences", "/silences/some-id"])  # create, edit
@pytest.mark.parametrize("host", ["203.0.113.9", "2001:db8::1", "::ffff:203.0.113.9"])
def test_a_form_post_from_the_network_without_auth_is_403(
    tmp_path: Path, host: str, action: str
) -> None:
    fields = {"matchers": 'tenant="x"', "duration": "1h", "author": "ops", "comment": "c"}
    answer = in_process(tmp_path, host, "POST", action, **fields)
    assert answer.status_code == 403
    assert "loopback" in Page(answer.text).texts["error"]


# --- editing ----------------------------------------------------------------------------


def test_the_edit_form_shows_the_stored_silence_and_saves_it_in_place(daemon: Daemon) -> None:
    silence_id = api_silence(daemon, "org_1")
    stored = daemon.get(f"/api/v2/silence/{silence_id}").json()
    action = f"/silences/{silence_id}"
    assert f"{action}/edit" in form_page(daemon, "/silences").links
    fields = form_page(daemon, f"{action}/edit").forms[action]
    assert fields["matchers"] == 'tenant="org_1"'
    assert fields["starts"] == stored["startsAt"]
    assert (fields["duration"], fields["author"], fields["comment"]) == ("1h", "ops", "migration")
    answer = submit(daemon, action, {**fields, "duration": "1d 2h 3m 4s", "comment": "longer"})
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/silences#silence-{silence_id}"
    (updated,) = daemon.get("/api/v2/silences").json()
    assert (updated["id"], updated["comment"]) == (silence_id, "longer")
    again = form_page(daemon, f"{action}/edit").forms[action]
    assert again["duration"] == "1d 2h 3m 4s"


def test_an_edit_needs_the_token_and_this_origin_and_a_stored_silence(daemon: Daemon) -> None:
    silence_id = api_silence(daemon, "org_1")
    action = f"/silences/{silence_id}"
    fields = form_page(daemon, f"{action}/edit").forms[action] | {"comment": "changed"}
    assert submit(daemon, action, {**fields, "csrf": "1.00"}).status_code == 403
    evil = {"origin": "http://evil.example"}
    assert submit(daemon, action, fields, headers=evil).status_code == 403
    (kept,) = daemon.get("/api/v2/silences").json()
    assert kept["comment"] == "migration"
    assert daemon.get("/silences/nope/edit").status_code == 404
    assert submit(daemon, "/silences/nope", fields).status_code == 404
    wrong = submit(daemon, action, {**fields, "duration": "soon"})
    assert wrong.status_code == 400
    assert "duration" in Page(wrong.text).texts["error"]
    assert Form(wrong.text).forms[action]["comment"] == "changed"  # still this silence's form
    assert daemon.get("/api/v2/silences").json() == [kept]


NOW = datetime(2030, 1, 31, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("starts", "expected"),
    [
        ("", NOW),
        ("2030-01-31T10:00:00Z", NOW + timedelta(hours=1)),
        ("2030-01-31T10:00:00", NOW + timedelta(hours=1)),  # no offset: UTC
        ("2030-01-31T11:00:00+01:00", NOW + timedelta(hours=1)),
    ],
)
def test_a_form_silence_starts_when_it_says_for_its_duration(
    starts: str, expected: datetime
) -> None:
    form = {"matchers": 'tenant="x"', "starts": starts, "duration": "90m", "comment": "c"}
    silence = parse_silence_form(form, "ops", NOW)
    assert (silence.starts_at, silence.ends_at) == (expected, expected + timedelta(minutes=90))


@pytest.mark.parametrize(
    ("starts", "duration", "problem"),
    [
        ("tomorrow", "1h", "starts: 'tomorrow' is not a time"),
        ("2030-01-31T07:00:00Z", "1h", "it would end in the past"),
        ("2030-01-31T08:00:00Z", "1h", "it would end in the past"),
    ],
)
def test_a_form_silence_must_start_at_a_time_and_end_in_the_future(
    starts: str, duration: str, problem: str
) -> None:
    form = {"matchers": 'tenant="x"', "starts": starts, "duration": duration, "comment": "c"}
    with pytest.raises(BadRequestError, match=problem):
        parse_silence_form(form, "ops", NOW)


# --- expire and acknowledge -------------------------------------------------------------


def test_a_silence_expired_from_the_page_stops_muting(daemon: Daemon) -> None:
    alert = firing(daemon)[0]
    silence_id = silence_from_the_page(daemon, alert)
    action = f"/silences/{silence_id}/expire"
    fields = form_page(daemon, "/silences").forms[action]
    forged = submit(daemon, action, {**fields, "csrf": "1.00"})
    assert forged.status_code == 403
    assert state_of(daemon, alert["fingerprint"]) == "suppressed"
    answer = submit(daemon, action, fields)
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/silences#silence-{silence_id}"
    assert state_of(daemon, alert["fingerprint"]) == "active"
    shown = page(daemon, "/silences")
    assert [r[0] for r in shown.body("silences-expired")] == [silence_id]
    assert action not in Form(daemon.get("/silences").text).forms  # nothing left to expire
    assert submit(daemon, "/silences/nope/expire", fields).status_code == 404


def test_an_alert_acknowledged_from_the_page_is_suppressed_at_its_severity(
    daemon: Daemon,
) -> None:
    alert = firing(daemon)[0]
    action = f"/alerts/{alert['fingerprint']}/ack"
    fields = form_page(daemon, "/alerts").forms[action]
    assert submit(daemon, action, {**fields, "comment": ""}).status_code == 400
    fields.update(author="ops", comment="on it")
    answer = submit(daemon, action, fields)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/alerts"
    assert state_of(daemon, alert["fingerprint"]) == "suppressed"
    (silence,) = daemon.get("/api/v2/silences").json()
    matchers = {m["name"]: m["value"] for m in silence["matchers"]}
    assert matchers["severity"] == alert["labels"]["severity"]
    assert (silence["createdBy"], silence["comment"]) == ("ops", "on it")
    active = page(daemon, "/silences").body("silences-active")
    assert "(acknowledgement)" in active[0][5]
    # A suppressed alert offers no second acknowledgement.
    assert action not in Form(daemon.get("/alerts").text).forms


@pytest.mark.parametrize("value", ['a "quoted" \\ value', "line\nbreak", "<b>ünï</b>", ""])
def test_prefilled_matchers_read_back_to_the_exact_matchers(value: str) -> None:
    matchers = (
        Matcher("tenant", value),
        Matcher("alertname", "Sync.*", is_regex=True),
        Matcher("sync_id", value, is_equal=False),
        Matcher("odd name=!~", value, is_regex=True, is_equal=False),
    )
    lines = lists.matcher_lines(matchers).splitlines()
    assert len(lines) == len(matchers)
    assert tuple(map(parse_filter, lines)) == matchers


def test_an_alert_is_silenced_by_its_identity_labels_that_it_has() -> None:
    labels = {"alertname": "SyncStale", "severity": "warning", "source": "timbal"}
    labels |= {"tenant": "org_1", "sync_id": "s-1", "name": "Payments"}
    assert lists.alert_matchers(labels) == tuple(
        Matcher(k, labels[k]) for k in ("alertname", "source", "tenant", "sync_id")
    )
    unreachable = {"alertname": "SourceUnreachable", "source": "timbal", "tenant": "org_1"}
    assert lists.alert_matchers({**unreachable, "sync_id": "", "reason": "timeout"}) == tuple(
        Matcher(k, v) for k, v in unreachable.items()
    )


def test_behind_basic_auth_the_form_is_the_users_and_so_is_its_token(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys
) -> None:
    users = f"basic_auth_users:\n  ops: '{hashed(PASSWORD)}'\n  eve: '{hashed(PASSWORD)}'\n"
    d = start_daemon(tmp_path, sim, rsa_keys, write_web_config(tmp_path / "web.yml", users))
    try:
        ops, eve = ("ops", PASSWORD), ("eve", PASSWORD)
        fields = Form(d.get("/silences/new", auth=ops).text).forms["/silences"]
        assert fields["author"] == "ops"  # the authenticated user, pre-filled
        fields.update(matchers='tenant="x"', comment="maintenance")
        assert submit(d, "/silences", fields).status_code == 401  # the browser's own prompt
        assert submit(d, "/silences", fields, auth=eve).status_code == 403  # ops's token
        assert d.get("/api/v2/silences", auth=ops).json() == []
        assert submit(d, "/silences", fields, auth=ops).status_code == 303
        (silence,) = d.get("/api/v2/silences", auth=ops).json()
        assert silence["createdBy"] == "ops"
    finally:
        d.proc.stop()


def test_the_alerts_page_pages_and_its_links_keep_the_filters(tmp_path: Path) -> None:
    many = tuple(
        an_alert(f"s-{i:03}", Severity.CRITICAL if i % 2 else Severity.WARNING) for i in range(250)
    )
    store = SilenceStore(tmp_path / "state.db")
    app = Starlette(
        routes=form_routes(FormsContext(ApiContext(silences=store, alerts=lambda: many)))
    )

    async def get(url: str) -> Page:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://syncwatch") as c:
            answer = await c.get(url)
        assert answer.status_code == 200
        return Page(answer.text)

    try:
        first = asyncio.run(get("/alerts?severity=critical&tenant=org_1"))
        assert len(first.body("alerts")) == PAGE_SIZE
        assert "?tenant=org_1&severity=critical&page=2" in first.links
        last = asyncio.run(get("/alerts?tenant=org_1&severity=critical&page=2"))
        rows = last.body("alerts")
        assert len(rows) == 125 - PAGE_SIZE
        assert all(r[1].endswith("critical") for r in rows)
        assert "?tenant=org_1&severity=critical&page=1" in last.links
    finally:
        store.close()
