"""The config sections: [daemon], [timbal], [paragon], [alerting], [metrics], [[notifiers]]."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)

from syncwatch.config.types import (
    DEFAULT_MAX_BODY_SIZE,
    Duration,
    Glob,
    HttpUrl,
    KeyProblemError,
    OptionalDuration,
    OptionalSecret,
    ReadableFile,
    SecretFile,
    SecretFilePath,
    Size,
    StateUrl,
    _check_listen,
    _check_shard,
    _check_url,
    check_secret_url,
    check_state_url,
    sqlite_url_path,
    state_url_parts,
)
from syncwatch.models import Severity
from syncwatch.outbox import Capabilities

# --- models -----------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class _WithSecrets(_Model):
    """Fills each secret in `_secrets` from its `*_file` twin when that is set."""

    _secrets: ClassVar[tuple[str, ...]] = ()

    def plain_secrets(self) -> list[str]:
        """Secret values held in plain fields or inside a secret (a URL's password), for
        the log scrubber."""
        return []

    @model_validator(mode="after")
    def _secrets_from_files(self) -> Self:
        for name in self._secrets:
            file: SecretFile | None = getattr(self, f"{name}_file")
            if file is None:
                continue
            if getattr(self, name) is not None:
                raise KeyProblemError(f"{name}_file", f"set either {name} or {name}_file, not both")
            # Frozen model: filled once, during validation.
            object.__setattr__(self, name, file.value)
        return self


def secret_value(secret: SecretStr | None) -> str | None:
    """The plain value of an optional secret, for the one place that sends it."""
    return None if secret is None else secret.get_secret_value()


DEFAULT_STATE_PATH = Path("syncwatch-state.db")


@dataclass(frozen=True, slots=True)
class PostgresTarget:
    """Where `daemon.state_url = "postgresql://…"` points; the DSN stays a SecretStr."""

    dsn: SecretStr


class DaemonConfig(_WithSecrets):
    _secrets = ("state_url",)
    poll_interval: Duration = Field(default=60.0, gt=0)
    listen: Annotated[str, AfterValidator(_check_listen)] = "0.0.0.0:9875"
    state_path: Path = DEFAULT_STATE_PATH
    # sqlite:///path or postgresql://user@host:port/db?sslmode=… (a secret: it may hold a
    # password); unset means state_path.
    state_url: StateUrl = None
    state_url_file: SecretFilePath = None
    concurrency: int = Field(default=32, ge=1, le=4096)
    request_timeout: Duration = Field(default=10.0, gt=0)
    retries: int = Field(default=2, ge=0, le=10)
    shard: Annotated[str, AfterValidator(_check_shard)] = "0/1"
    shard_count: int | None = Field(default=None, ge=1)
    log_format: Literal["json", "console", "auto"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    ca_bundle: ReadableFile = None
    max_body_size: Size = Field(default=DEFAULT_MAX_BODY_SIZE, ge=1024)
    # exporter-toolkit's YAML (TLS, basic auth); checked by settings.load_config, re-read on SIGHUP
    web_config_file: ReadableFile = None

    @model_validator(mode="after")
    def _auto_shard_needs_count(self) -> Self:
        if self.shard == "auto" and self.shard_count is None:
            raise KeyProblemError(
                "shard_count", "required with shard = 'auto' (the StatefulSet replica count)"
            )
        return self

    @model_validator(mode="after")
    def _one_state_location(self) -> Self:
        if self.state_url is None:
            return self
        key = "state_url_file" if self.state_url_file is not None else "state_url"
        try:
            check_state_url(self.state_url)
        except ValueError as exc:
            raise KeyProblemError(key, str(exc)) from None
        if self.state_path != DEFAULT_STATE_PATH:
            raise KeyProblemError(key, "set either state_path or state_url, not both")
        return self

    def plain_secrets(self) -> list[str]:
        if self.state_url is None:
            return []
        return list(state_url_parts(self.state_url))

    def state_target(self) -> Path | PostgresTarget:
        """The state database: a SQLite file (`state_path` or a sqlite:/// URL, resolved
        like `resolved_state_path`) or a PostgreSQL DSN."""
        if self.state_url is not None:
            url = self.state_url.get_secret_value()
            if not url.startswith("sqlite:"):
                return PostgresTarget(self.state_url)
            return _under_state_directory(sqlite_url_path(url))
        return self.resolved_state_path()

    def resolved_state_path(self) -> Path:
        """`state_path`, under `$STATE_DIRECTORY` (systemd StateDirectory=) when relative."""
        return _under_state_directory(self.state_path)


def _under_state_directory(path: Path) -> Path:
    state_dir = os.environ.get("STATE_DIRECTORY")
    if state_dir and not path.is_absolute():
        # systemd may pass several colon-separated directories; the first is ours.
        return Path(state_dir.split(":")[0]) / path
    return path


class Thresholds(_Model):
    warn_ratio: float = Field(default=1.5, gt=0)
    critical_ratio: float = Field(default=3.0, gt=0)
    min_stale_seconds: Duration = 300.0
    alert_on_disabled: bool = False

    @model_validator(mode="after")
    def _warn_below_critical(self) -> Self:
        if self.warn_ratio >= self.critical_ratio:
            raise ValueError(
                f"warn_ratio ({self.warn_ratio:g}) must be below critical_ratio "
                f"({self.critical_ratio:g})"
            )
        return self


class TimbalMatch(_Model):
    org_id: Glob = "*"
    connector_id: Glob = "*"
    sync_id: Glob = "*"
    name: Glob = "*"


class TimbalOverride(_Model):
    match: TimbalMatch = TimbalMatch()
    ignore: bool = False
    warn_ratio: float | None = Field(default=None, gt=0)
    critical_ratio: float | None = Field(default=None, gt=0)
    min_stale_seconds: Duration | None = None
    alert_on_disabled: bool | None = None

    def apply(self, base: Thresholds) -> Thresholds:
        """`base` refined by the threshold keys this override sets."""
        changes = self.model_dump(
            exclude={"match", "ignore"}, exclude_none=True, mode="python", round_trip=True
        )
        return base.model_validate({**base.model_dump(round_trip=True), **changes})


class TimbalOrg(_WithSecrets):
    _secrets = ("api_key",)
    id: str = Field(min_length=1)
    connector_ids: list[str] = []
    api_key: OptionalSecret = None
    api_key_file: SecretFilePath = None


class TimbalConfig(_WithSecrets):
    _secrets = ("api_key",)
    base_url: HttpUrl = "https://api.timbal.ai"
    api_key: OptionalSecret = None
    api_key_file: SecretFilePath = None
    orgs: list[TimbalOrg] = []
    thresholds: Thresholds = Thresholds()
    overrides: list[TimbalOverride] = []

    @model_validator(mode="after")
    def _check_orgs(self) -> Self:
        seen: set[str] = set()
        for i, org in enumerate(self.orgs):
            if org.id in seen:
                raise KeyProblemError(f"orgs[{i}].id", f"org {org.id!r} is listed twice")
            seen.add(org.id)
            if org.api_key is None and self.api_key is None:
                raise KeyProblemError(
                    f"orgs[{i}].api_key",
                    f"org {org.id!r} has no API key: set timbal.api_key_file "
                    "(or timbal.api_key, or a per-org api_key)",
                )
        for i, override in enumerate(self.overrides):
            try:
                override.apply(self.thresholds)
            except ValidationError as exc:
                first = exc.errors(include_url=False, include_input=False)[0]
                inner = _loc_path(first["loc"])
                raise KeyProblemError(
                    f"overrides[{i}].{inner}" if inner else f"overrides[{i}]",
                    first["msg"].removeprefix("Value error, "),
                ) from None
        return self


class ParagonUser(_WithSecrets):
    _secrets = ("token",)
    id: str = Field(min_length=1)
    token: OptionalSecret = None
    token_file: SecretFilePath = None
    credential_id: str | None = None


def _users_from_strings(value: object) -> object:
    if isinstance(value, list):
        return [{"id": v} if isinstance(v, str) else v for v in value]
    return value


class ParagonConfig(_WithSecrets):
    _secrets = ("signing_key",)
    base_url: HttpUrl = "https://sync.useparagon.com"
    project_id: str | None = None
    signing_key: OptionalSecret = None
    signing_key_file: SecretFilePath = None
    token_ttl: Duration = Field(default=3600.0, ge=60)
    users: Annotated[list[ParagonUser], BeforeValidator(_users_from_strings)] = []
    users_file: ReadableFile = None
    disabled_severity: Literal["warning", "critical", "none"] = "warning"
    initializing_grace: Duration = 3600.0
    idle_stale_after: OptionalDuration = None

    @model_validator(mode="after")
    def _check_auth(self) -> Self:
        if self.signing_key is not None:
            key_name = "signing_key_file" if self.signing_key_file else "signing_key"
            try:
                _check_rsa_private_key(self.signing_key)
            except ValueError as exc:
                raise KeyProblemError(key_name, str(exc)) from None
            if not self.project_id:
                raise KeyProblemError(
                    "project_id",
                    "required to mint user tokens with signing_key "
                    "(the token audience is useparagon.com/<project_id>)",
                )
        else:
            for i, user in enumerate(self.users):
                if user.token is None:
                    raise KeyProblemError(
                        f"users[{i}].token",
                        f"user {user.id!r} has no token: set its token_file (or token), or "
                        "paragon.signing_key_file (the RS256 signing key from the Paragon "
                        "dashboard) to mint one",
                    )
            if self.users_file is not None:
                raise KeyProblemError(
                    "users_file",
                    "users listed in a file have no static token: set "
                    "paragon.signing_key_file (the RS256 signing key from the Paragon "
                    "dashboard) to mint theirs",
                )
        seen: set[str] = set()
        for i, user in enumerate(self.users):
            if user.id in seen:
                raise KeyProblemError(f"users[{i}].id", f"user {user.id!r} is listed twice")
            seen.add(user.id)
        return self

    def all_users(self) -> list[ParagonUser]:
        """`users` plus those in `users_file` (re-read on every call: one id per line)."""
        users = list(self.users)
        if self.users_file is not None:
            known = {u.id for u in users}
            for line in self.users_file.read_text(encoding="utf-8").splitlines():
                user_id = line.split("#", 1)[0].strip()
                if user_id and user_id not in known:
                    known.add(user_id)
                    users.append(ParagonUser(id=user_id))
        return users


def _check_rsa_private_key(key: SecretStr) -> None:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey  # noqa: PLC0415
    from cryptography.hazmat.primitives.serialization import (  # noqa: PLC0415
        load_pem_private_key,
    )

    try:
        loaded = load_pem_private_key(key.get_secret_value().encode(), password=None)
    except (ValueError, TypeError):
        raise ValueError(
            "signing_key is not an unencrypted PEM private key (value not shown)"
        ) from None
    if not isinstance(loaded, RSAPrivateKey):
        raise ValueError("signing_key must be an RSA key: Paragon user tokens are RS256")


class AlertingConfig(_Model):
    for_: Duration = Field(default=0.0, alias="for")
    keep_firing_for: Duration = 0.0
    repeat_interval: Duration = Field(default=4 * 3600.0, gt=0)
    send_resolved: bool = True
    source_failure_threshold: int = Field(default=3, ge=1)
    external_url: Annotated[str, AfterValidator(lambda v: v and _check_url(v))] = ""
    # Expired silences stay listed (amtool silence query --expired) this long, then go.
    silence_retention: Duration = Field(default=5 * 86400.0, gt=0)
    # /api/v1/history keeps transitions, deliveries and silence writes this long, at most
    # history_max_rows of them (the oldest dropped first, counted).
    history_retention: Duration = Field(default=30 * 86400.0, gt=0)
    history_max_rows: int = Field(default=500_000, ge=1)


# Which syncs get per-sync series on /metrics: every one, only those with an alert
# (pending, firing or suppressed), or none; the per-tenant aggregates are always there.
PerSyncSeries = Literal["all", "alerting", "none"]


class MetricsConfig(_Model):
    per_sync_series: PerSyncSeries = "all"


class NotifierConfig(_WithSecrets):
    """What every [[notifiers]] entry has; each kind's module subclasses it with its `type`."""

    # The kind's needs of routing and delivery (Alertmanager hears every resolve…).
    capabilities: ClassVar[Capabilities] = Capabilities()
    type: str
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    min_severity: Severity = Severity.WARNING
    match: dict[str, Glob] = {}

    def redact(self, dumped: dict[str, Any]) -> None:
        """Mask, in this entry as `validate` prints it, what is secret but no SecretStr."""

    def _require_url(self, key: str, missing: str) -> None:
        """Secret URL `key` must be set (`missing` says how); one read from `key_file` is
        checked here, as an inline value was checked as a field."""
        url: SecretStr | None = getattr(self, key)
        if url is None:
            raise KeyProblemError(key, f"required: {missing}")
        if getattr(self, f"{key}_file") is not None:
            try:
                check_secret_url(url)
            except ValueError as exc:
                raise KeyProblemError(f"{key}_file", str(exc)) from None


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _loc_path(loc: Iterable[int | str], tags: Collection[str] = ()) -> str:
    """`loc` spelt as a key path; `tags` (the notifier types) are union branches, skipped."""
    out = ""
    parts = tuple(loc)
    for i, part in enumerate(parts):
        if isinstance(part, int):
            out += f"[{part}]"
        elif i == 2 and parts[0] == "notifiers" and part in tags:
            # Discriminated-union branch names are internal; the key path skips them.
            continue
        else:
            # Spelt as in the file: JSON's string escapes are TOML's.
            key = part if _BARE_KEY.match(part) else json.dumps(part, ensure_ascii=False)
            out += f".{key}" if out else key
    return out
