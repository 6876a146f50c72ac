"""One simulated sync: its fixed fields, and how its history depends on the simulated clock."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class TimbalSpec:
    """One Timbal sync: its fixed fields, and how its run history depends on the clock."""

    org_id: str
    sync_id: str
    connector_id: str
    scenario: str
    fixed: dict[str, Any]
    interval: int
    created_age: int
    updated_age: int
    # Scheduled mode: a run starts every `interval` from `phase` and takes `run_secs`; runs
    # starting in the last `fail_window` seconds of each `period` fail (0 = always healthy).
    scheduled: bool = False
    period: int = 0
    fail_window: int = 0
    phase: int = 0
    run_secs: int = 0
    completed_state: str = "completed"
    # Frozen mode: constant ages, so the sync's state never changes (None = never happened).
    lag: int | None = None
    run_age: int | None = None
    last_state: str | None = None


@dataclass(frozen=True, slots=True)
class ParagonSpec:
    """One Paragon sync: fixed fields, ages relative to now, and an optional error cycle."""

    user_id: str
    sync_id: str
    scenario: str
    integration: str
    pipeline: str
    credential_id: str
    configuration_name: str | None
    status: str
    reason: str | None
    created_age: int
    updated_age: int | None
    synced_age: int | None
    total_records: int
    # Churn: ACTIVE, then ERRORED for the last `error_window` seconds of every `period`.
    period: int = 0
    error_window: int = 0
    phase: int = 0
    reasons: tuple[str, ...] = ()
