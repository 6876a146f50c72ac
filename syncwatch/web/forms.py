"""The alerts and silences pages, and their write forms (no JavaScript needed).

Writes go through the same code as the APIs (`SilenceStore.set` / `expire`, `acks`), are
admitted by `ApiContext.may_write` (a 403 page otherwise) and carry a CSRF token. Editing a
silence is Alertmanager's update: `SilenceStore.set` with its id keeps the id when only the
end or the comment changes, and expires it for a new one when its matchers or an active
silence's start do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlencode

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from syncwatch.acks import ack_silence
from syncwatch.amapi import MAX_BODY, ApiContext, BadRequestError, parse_filter, rfc3339
from syncwatch.config.types import parse_duration
from syncwatch.lifecycle import Alert
from syncwatch.silence_store import SilenceNotFoundError
from syncwatch.silences import Silence, any_of, problems
from syncwatch.web import lists, view
from syncwatch.web.csrf import Csrf, same_origin
from syncwatch.web.pages import refresh_param, render
from syncwatch.webauth import SCOPE_KEY, AuthInfo

log = structlog.get_logger("syncwatch.web.forms")

PAGE_SIZE = 100  # alerts per page; the rest behind ?page=


@dataclass
class FormsContext:
    api: ApiContext
    csrf: Csrf = field(default_factory=Csrf)  # its secret lives as long as the process


DEFAULT_DURATION = "2h"
FIELDS = ("matchers", "starts", "duration", "author", "comment")  # the silence form's


def _user(request: Request) -> str:
    info = request.scope.get(SCOPE_KEY)
    return (info.user or "") if isinstance(info, AuthInfo) else ""


async def _form(request: Request) -> dict[str, str] | None:
    """The urlencoded form (first value of each field); None once it passes MAX_BODY."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
    body = b"".join(chunks).decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}


def _refused(request: Request, why: str) -> Response:
    host = request.client.host if request.client else "unknown"
    log.warning("form_refused", client=host, path=request.url.path, reason=why)
    return render("error.html", 403, message=why)


def _see(location: str) -> Response:
    return RedirectResponse(location, 303)  # POST-redirect-GET: a reload does not repost


def _instant(text: str) -> datetime:
    """An RFC 3339 / ISO 8601 time; one without an offset is UTC (the page shows UTC)."""
    parsed = datetime.fromisoformat(text)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def parse_silence_form(
    form: dict[str, str], created_by: str, now: datetime, silence_id: str = ""
) -> Silence:
    """The silence a form describes (`silence_id` "": new; else the one it edits), starting
    at `starts` (empty: now) for `duration`; BadRequestError naming every problem."""
    found = []
    starts = now
    if raw := form.get("starts", "").strip():
        try:
            starts = _instant(raw)
        except ValueError:
            found.append(f"starts: {raw!r} is not a time like 2030-01-31T09:00:00Z")
    matchers = []
    for line in form.get("matchers", "").splitlines():
        if line.strip():
            try:
                matchers.append(parse_filter(line))
            except BadRequestError as exc:
                found.append(str(exc))
    seconds = 0.0
    try:
        seconds = parse_duration(form.get("duration", ""))
    except ValueError as exc:
        found.append(f"duration: {exc}")
    else:
        if seconds <= 0:
            found.append("duration must be more than 0")
        elif starts + timedelta(seconds=seconds) <= now:
            found.append("it would end in the past: give a later start or a longer duration")
    if not created_by.strip():
        found.append("author is required")
    if not form.get("comment", "").strip():
        found.append("comment is required")
    if found:
        raise BadRequestError("; ".join(found))
    silence = Silence(
        id=silence_id,
        matchers=tuple(matchers),
        starts_at=starts,
        ends_at=starts + timedelta(seconds=seconds),
        created_by=created_by.strip(),
        comment=form["comment"].strip(),
        updated_at=now,
    )
    if bad := problems(silence):
        raise BadRequestError("; ".join(bad))
    return silence


def _page_param(request: Request) -> int | None:
    raw = request.query_params.get("page", "")
    if not raw:
        return 1
    return int(raw) if raw.isdigit() and int(raw) >= 1 else None


class Forms:
    def __init__(self, ctx: FormsContext) -> None:
        self.ctx = ctx
        # The alerts by urgency and their sources, once per snapshot (its alerts tuple).
        self._ordered: tuple[Sequence[Alert] | None, list[Alert], list[str]] = (None, [], [])

    def _by_urgency(self) -> tuple[list[Alert], list[str]]:
        alerts, ordered, sources = self._ordered
        current = self.ctx.api.alerts()
        if alerts is not current:
            ordered, sources = lists.by_urgency(current), sorted({a.source for a in current})
            self._ordered = (current, ordered, sources)
        return ordered, sources

    def _states(self, wanted: lists.AlertFilter) -> lists.AlertStates:
        """The alerts `wanted` admits by state; only those are asked of the silences."""
        api = self.ctx.api
        muter = any_of([api.silences.muter(), *api.muters()])
        ordered, _ = self._by_urgency()
        if wanted.source or wanted.tenant or wanted.severity:
            ordered = [a for a in ordered if wanted.admits_alert(a)]
        return lists.alert_states(ordered, muter, api.now())

    async def alerts(self, request: Request) -> Response:
        q = request.query_params
        wanted = lists.AlertFilter(
            q.get("source", ""), q.get("tenant", ""), q.get("severity", ""), q.get("state", "")
        )
        page = _page_param(request)
        refresh = refresh_param(request)
        if (
            page is None
            or refresh is None
            or (wanted.severity and wanted.severity not in lists.SEVERITIES)
            or (wanted.state and wanted.state not in lists.ALERT_STATES)
        ):
            return render(
                "error.html", 400, message="severity, state, page or refresh: not a known value"
            )
        states = self._states(wanted)
        total = states.count(wanted.state)
        pages = max(1, -(-total // PAGE_SIZE))
        kept = {k: v for k, v in vars_of(wanted).items() if v}
        return render(
            "alerts.html",
            token=self.ctx.csrf.token(_user(request)),
            user=_user(request),
            rows=states.rows(wanted.state, (page - 1) * PAGE_SIZE, page * PAGE_SIZE),
            total=total,
            f=wanted,
            sources=self._by_urgency()[1],
            severities=lists.SEVERITIES,
            states=lists.ALERT_STATES,
            page=page,
            pages=pages,
            link=lambda n: "?" + urlencode({**kept, "page": n}),
            refresh=refresh,
        )

    async def silences(self, request: Request) -> Response:
        now = self.ctx.api.now()
        groups = lists.silences_by_state(self.ctx.api.silences.all(now), now)
        token = self.ctx.csrf.token(_user(request))
        return render("silences.html", groups=groups, token=token)

    def _form_page(
        self, request: Request, status: int = 200, editing: str = "", **values: str
    ) -> Response:
        """The silence form: a new silence, or (`editing` its id) an edit of a stored one."""
        fields = {"matchers": "", "starts": "", "duration": DEFAULT_DURATION}
        fields |= {"author": _user(request), "comment": "", "error": ""} | values
        token = self.ctx.csrf.token(_user(request))
        return render("silence_form.html", status, token=token, editing=editing, **fields)

    async def new_silence(self, request: Request) -> Response:
        fingerprint = request.query_params.get("fingerprint", "")
        if not fingerprint:
            return self._form_page(request)
        alert = next((a for a in self.ctx.api.alerts() if a.fingerprint == fingerprint), None)
        if alert is None:
            return render("error.html", 404, message=f"no alert has fingerprint {fingerprint}")
        matchers = lists.matcher_lines(lists.alert_matchers(alert.labels))
        return self._form_page(request, matchers=matchers)

    async def edit_silence(self, request: Request) -> Response:
        silence_id = request.path_params["silence_id"]
        found = self.ctx.api.silences.get(silence_id, self.ctx.api.now())
        if found is None:
            return render("error.html", 404, message=f"no silence has id {silence_id}")
        return self._form_page(
            request,
            editing=silence_id,
            matchers=lists.matcher_lines(found.matchers),
            starts=rfc3339(found.starts_at),
            duration=_span(found),
            author=found.created_by,
            comment=found.comment,
        )

    async def _admit(self, request: Request) -> dict[str, str] | Response:
        """The posted form, if this request may write and is not forged; else the refusal."""
        if not self.ctx.api.may_write(request):
            return _refused(
                request,
                "changing silences needs an authenticated user (daemon.web_config_file), or "
                "a loopback client when no basic_auth_users are configured",
            )
        origin = request.headers.get("origin")
        if not same_origin(origin, request.url.scheme, request.headers.get("host")):
            return _refused(request, "a form posted from another site is refused")
        form = await _form(request)
        if form is None:
            return render("error.html", 413, message=f"the form is larger than {MAX_BODY} bytes")
        if not self.ctx.csrf.valid(form.get("csrf", ""), _user(request)):
            return _refused(
                request, "the form's token is missing, expired or not yours: reload the page"
            )
        return form

    async def create_silence(self, request: Request) -> Response:
        form = await self._admit(request)
        return form if isinstance(form, Response) else await self._save(request, form, "")

    async def update_silence(self, request: Request) -> Response:
        form = await self._admit(request)
        if isinstance(form, Response):
            return form
        return await self._save(request, form, request.path_params["silence_id"])

    async def _save(self, request: Request, form: dict[str, str], silence_id: str) -> Response:
        """Store the form's silence (new, or an update of `silence_id`); see its row."""
        now = self.ctx.api.now()
        entered = {k: form.get(k, "") for k in FIELDS}
        try:
            silence = parse_silence_form(form, entered["author"], now, silence_id)
        except BadRequestError as exc:
            return self._form_page(request, 400, silence_id, error=str(exc), **entered)
        try:
            change = await run_in_threadpool(self.ctx.api.silences.set, silence, now)
        except SilenceNotFoundError:
            return render("error.html", 404, message=f"no silence has id {silence_id}")
        except Exception as exc:  # the disk: say so, never a silence only in memory
            return _store_failed(exc)
        stored = change.stored
        log.info(
            "silence_set",
            silence_id=stored.id,
            replaced=None if change.expired is None else change.expired.id,
            matchers=[str(m) for m in stored.matchers],
            created_by=stored.created_by,
            ends_at=rfc3339(stored.ends_at),
            via="form",
        )
        return _see(f"/silences#silence-{stored.id}")

    async def expire(self, request: Request) -> Response:
        form = await self._admit(request)
        if isinstance(form, Response):
            return form
        silence_id = request.path_params["silence_id"]
        try:
            await run_in_threadpool(self.ctx.api.silences.expire, silence_id, self.ctx.api.now())
        except SilenceNotFoundError:
            return render("error.html", 404, message=f"no silence has id {silence_id}")
        except Exception as exc:
            return _store_failed(exc)
        log.info("silence_expired", silence_id=silence_id, via="form")
        return _see(f"/silences#silence-{silence_id}")

    async def ack(self, request: Request) -> Response:
        form = await self._admit(request)
        if isinstance(form, Response):
            return form
        author, comment = form.get("author", "").strip(), form.get("comment", "").strip()
        if not author or not comment:
            return render("error.html", 400, message="author and comment are required")
        fingerprint = request.path_params["fingerprint"]
        alert = next((a for a in self.ctx.api.alerts() if a.fingerprint == fingerprint), None)
        if alert is None or not alert.firing:
            return render(
                "error.html", 404, message=f"no firing alert has fingerprint {fingerprint}"
            )
        now = self.ctx.api.now()
        try:
            change = await run_in_threadpool(
                self.ctx.api.silences.set, ack_silence(alert, author, comment, now), now
            )
        except Exception as exc:
            return _store_failed(exc)
        log.info(
            "alert_acked",
            silence_id=change.stored.id,
            fingerprint=fingerprint,
            severity=str(alert.severity),
            created_by=author,
            via="form",
        )
        return _see("/alerts")


def _span(silence: Silence) -> str:
    """Its duration to the second, as `parse_duration` reads it back ("2h", "1d 3h 5m 2s";
    rounded: a start the store moved to "now" leaves it a fraction of a second short)."""
    return view.duration(round((silence.ends_at - silence.starts_at).total_seconds()), most=4)


def _store_failed(exc: Exception) -> Response:
    error = f"{type(exc).__name__}: {exc}"
    log.error("silence_write_failed", error=error, via="form")
    return render("error.html", 500, message=f"state store: not saved ({error}); try again")


def vars_of(f: lists.AlertFilter) -> dict[str, str]:
    return {"source": f.source, "tenant": f.tenant, "severity": f.severity, "state": f.state}


def form_routes(ctx: FormsContext) -> list[BaseRoute]:
    """The /alerts and /silences pages, for `server.build_app`."""
    forms = Forms(ctx)
    return [
        Route("/alerts", forms.alerts, methods=["GET"]),
        Route("/silences", forms.silences, methods=["GET"]),
        Route("/silences", forms.create_silence, methods=["POST"]),
        Route("/silences/new", forms.new_silence, methods=["GET"]),
        Route("/silences/{silence_id}/edit", forms.edit_silence, methods=["GET"]),
        Route("/silences/{silence_id}", forms.update_silence, methods=["POST"]),
        Route("/silences/{silence_id}/expire", forms.expire, methods=["POST"]),
        Route("/alerts/{fingerprint}/ack", forms.ack, methods=["POST"]),
    ]
