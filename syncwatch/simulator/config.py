"""The simulator's settings: fleet size and seed, clock speed, credentials, added latency."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SimConfig:
    """The simulated fleet, its clock, its credentials and its added latency."""

    orgs: int = 3
    syncs_per_org: int = 10
    users: int = 3
    syncs_per_user: int = 3
    seed: int = 0
    # Unix second the scheduled histories count their phases from. With the default, where a
    # run is in its story depends on the wall clock; the demo passes its start, so every demo
    # tells the same story from its first poll.
    epoch: int = 0
    time_scale: float = 1.0
    churn: float = 0.1
    timbal_api_key: str = "sim-timbal-key"
    paragon_static_token_prefix: str = "sim-paragon-token"  # noqa: S105 - a public demo value
    paragon_project_id: str = "sim-project"
    paragon_public_key_pem: bytes | None = None
    latency: float = 0.0

    def __post_init__(self) -> None:
        """Reject values the generator cannot honour."""
        for name in ("orgs", "syncs_per_org", "users", "syncs_per_user"):
            if getattr(self, name) < 0:
                raise ValueError(f"SimConfig.{name} must be >= 0")
        if self.time_scale < 0:
            raise ValueError("SimConfig.time_scale must be >= 0")
        if not 0.0 <= self.churn <= 1.0:
            raise ValueError("SimConfig.churn must be between 0 and 1")
        if self.latency < 0:
            raise ValueError("SimConfig.latency must be >= 0")
