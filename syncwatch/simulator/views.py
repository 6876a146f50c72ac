"""The upstream JSON of one sync at one simulated second, and the state syncwatch should see."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from syncwatch.simulator.specs import ParagonSpec, TimbalSpec
from syncwatch.simulator.wire import MINUTE, is_int, parse_datetime, utc

# The default thresholds the intended states in /_sim/fleet are computed with.
WARN_RATIO: Final = 1.5
CRITICAL_RATIO: Final = 3.0
MIN_STALE_SECONDS: Final = 300
INITIALIZING_GRACE: Final = 3600


def _run_history(spec: TimbalSpec, now: int) -> tuple[int, int, str]:
    """(last run start, last success end, last_state) of a scheduled sync at `now`."""
    interval = spec.interval
    started = now - (now - spec.phase) % interval
    running = now - started < spec.run_secs
    done = started - interval if running else started
    offset = (done - spec.phase) % spec.period
    ok_window = spec.period - spec.fail_window
    succeeded = offset < ok_window
    # Inside the failing window the last success is the last run before it began.
    success = done if succeeded else done - offset + ok_window - interval
    state = "running" if running else (spec.completed_state if succeeded else "failed")
    return started, success + spec.run_secs, state


def timbal_at(spec: TimbalSpec, now: int) -> dict[str, Any]:
    last_run: int | None
    last_success: int | None
    state: str | None
    if spec.scheduled:
        last_run, last_success, state = _run_history(spec, now)
    else:
        last_run = None if spec.run_age is None else now - spec.run_age
        last_success = None if spec.lag is None else now - spec.lag
        state = spec.last_state
    view = dict(spec.fixed)
    view["has_cursor"] = last_success is not None
    view["last_run_at"] = None if last_run is None else utc(last_run)
    view["last_state"] = state
    view["last_success_at"] = None if last_success is None else utc(last_success)
    view["seconds_since_success"] = None if last_success is None else now - last_success
    view["created_at"] = utc(now - spec.created_age)
    view["updated_at"] = utc(now - spec.updated_age)
    return view


def paragon_at(spec: ParagonSpec, now: int, detail: bool) -> dict[str, Any]:
    status, reason = spec.status, spec.reason
    updated_age, synced_age = spec.updated_age, spec.synced_age
    if spec.period:
        offset = (now - spec.phase) % spec.period
        ok_window = spec.period - spec.error_window
        if offset < ok_window:
            status, reason = "ACTIVE", None
            updated_age, synced_age = offset, offset % (10 * MINUTE)
        else:
            cycle = (now - spec.phase) // spec.period
            status, reason = "ERRORED", spec.reasons[cycle % len(spec.reasons)]
            updated_age = offset - ok_window
            synced_age = updated_age + 2 * MINUTE
    view: dict[str, Any] = {
        "id": spec.sync_id,
        "integration": spec.integration,
        "pipeline": spec.pipeline,
        "status": status,
    }
    if reason is not None:
        view["reason"] = reason
    if spec.configuration_name is not None:
        view["configurationName"] = spec.configuration_name
    view["dateCreated"] = utc(now - spec.created_age)
    if updated_age is not None:
        view["dateUpdated"] = utc(now - updated_age)
    view["credentialId"] = spec.credential_id
    if detail:
        view["summary"] = {
            "lastSyncedAt": None if synced_age is None else utc(now - synced_age),
            "totalRecords": spec.total_records,
        }
    return view


def apply_timbal_override(view: dict[str, Any], override: Mapping[str, Any], now: int) -> None:
    view.update(override)
    # Keep the pair consistent unless the test set both on purpose.
    if "seconds_since_success" in override and "last_success_at" not in override:
        lag = override["seconds_since_success"]
        if lag is None:
            view["last_success_at"] = None
        elif is_int(lag):
            view["last_success_at"] = utc(now - lag)


def apply_paragon_override(view: dict[str, Any], override: Mapping[str, Any], detail: bool) -> None:
    view.update({k: v for k, v in override.items() if k != "summary" or detail})
    status = override.get("status")
    # Upstream sends `reason` only with ERRORED; a recovered sync loses it.
    if isinstance(status, str) and status.upper() != "ERRORED" and "reason" not in override:
        view.pop("reason", None)


def timbal_intended(view: Mapping[str, Any], now: datetime) -> tuple[str, str | None]:
    """The state and alertname the default thresholds give one Timbal SyncView."""
    enabled = view.get("enabled")
    interval = view.get("interval_secs")
    if not isinstance(enabled, bool) or not is_int(interval) or interval <= 0:
        return "invalid", None
    if not enabled:
        return "disabled", None
    lag_value = view.get("seconds_since_success")
    if lag_value is None:
        created = parse_datetime(view.get("created_at"))
        if created is None:
            return "invalid", None
        lag = max(0.0, (now - created).total_seconds())
        alertname = "SyncNeverSucceeded"
    elif is_int(lag_value) and lag_value >= 0:
        lag, alertname = float(lag_value), "SyncStale"
    else:
        return "invalid", None
    ratio = lag / interval
    if lag < MIN_STALE_SECONDS or ratio < WARN_RATIO:
        return "ok", None
    return ("critical" if ratio >= CRITICAL_RATIO else "warning"), alertname


def paragon_intended(view: Mapping[str, Any], now: datetime) -> tuple[str, str | None]:
    """The state and alertname the default Paragon rules give one sync."""
    status = view.get("status")
    if not isinstance(status, str):
        return "invalid", None
    status = status.strip().upper()
    if status == "ERRORED":
        return "critical", "SyncErrored"
    if status == "DISABLED":
        return "warning", "SyncDisabled"
    if status == "INITIALIZING":
        raw = view.get("dateCreated")
        if raw is None:
            return "ok", None
        created = parse_datetime(raw)
        if created is None:
            return "invalid", None
        if (now - created).total_seconds() > INITIALIZING_GRACE:
            return "warning", "SyncStuckInitializing"
        return "ok", None
    if status in ("ACTIVE", "IDLE"):
        return "ok", None
    return "unknown", None
