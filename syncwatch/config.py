"""Configuration: TOML file + `SYNCWATCH_` environment, validated into frozen models."""

from __future__ import annotations

import difflib
import fnmatch
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self, get_args
from urllib.parse import urlsplit

import tomli_w
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from syncwatch.models import Severity
from syncwatch.outbox import Capabilities

EX_CONFIG = 78
DEFAULT_PATHS = (Path("syncwatch.toml"), Path("/etc/syncwatch/config.toml"))


class ConfigError(Exception):
    """A configuration that cannot be used; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _KeyProblemError(ValueError):
    """A cross-field problem raised by a model validator, pinned to a key below that model.

    Pydantic locates model-validator errors at the model itself; `format_errors` appends
    `subpath` so the line names the key to fix (`timbal.orgs[1].id`, not `timbal`).
    """

    def __init__(self, subpath: str, problem: str) -> None:
        super().__init__(f"{subpath}: {problem}")
        self.subpath = subpath
        self.problem = problem


# --- durations --------------------------------------------------------------------------

_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(value: object) -> float:
    """Seconds from `90s`, `5m`, `1h30m`, `2d`, `250ms` or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like '90s', '5m', '1h30m' or a number of seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        # A sign applies to the whole duration: "-5m" is negative, not malformed.
        sign, unsigned = (-1.0, text[1:]) if text.startswith("-") else (1.0, text)
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_PART.findall(unsigned)
            if not unsigned or "".join(n + u for n, u in parts) != unsigned:
                raise ValueError(
                    f"invalid duration {value!r}: use e.g. '90s', '5m', '1h30m', '2d' "
                    "or a number of seconds"
                ) from None
            seconds = sign * sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    else:
        raise ValueError("expected a duration like '90s', '5m', '1h30m' or a number of seconds")
    # float() also reads "nan" and "inf"; neither is a duration, and both break formatting.
    if not math.isfinite(seconds):
        raise ValueError(f"invalid duration {value!r}: must be a finite number of seconds")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest `1h30m`-style spelling of a number of seconds."""
    if not math.isfinite(seconds):
        raise ValueError(f"cannot format {seconds!r} as a duration")
    if seconds != int(seconds):
        # Positional notation: `{:g}` would write 1e-07s, which parse_duration rejects.
        return f"{Decimal(repr(seconds)):f}s"
    rest = int(seconds)
    if rest == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out)


# A before-validator (not a plain one) keeps the float schema, so Field(gt=..., ge=...) bounds
# on duration fields are enforced; a plain validator would silently drop them.
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
]


def _empty_to_none(value: object) -> object:
    """TOML has no null; an empty string means "not set"."""
    return None if value == "" else value


OptionalDuration = Annotated[Duration | None, BeforeValidator(_empty_to_none)]


# --- sizes ------------------------------------------------------------------------------

_SIZE_UNITS = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}
_SIZE = re.compile(r"(\d+)\s*([a-z]*)")
# The largest decoded body read from an upstream (daemon.max_body_size): a listing of
# 10,000 syncs is about 8 MiB of JSON.
DEFAULT_MAX_BODY_SIZE = 64 << 20


def parse_size(value: object) -> int:
    """Bytes from `64MiB`, `512KiB`, `1GiB`, `100B` or a plain number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (match := _SIZE.fullmatch(value.strip().lower())):
        count, unit = match.groups()
        if unit not in _SIZE_UNITS:
            raise ValueError(f"invalid size {value!r}: use e.g. '64MiB', '512KiB' or bytes")
        size = int(count) * _SIZE_UNITS[unit]
    else:
        raise ValueError(f"invalid size {value!r}: use e.g. '64MiB', '512KiB' or bytes")
    if size < 0:
        raise ValueError("a size cannot be negative")
    return size


def format_size(size: int) -> str:
    """The shortest exact `64MiB`-style spelling of a number of bytes."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


Size = Annotated[
    int,
    BeforeValidator(parse_size),
    PlainSerializer(format_size, return_type=str),
]


# --- secrets and files ------------------------------------------------------------------


@dataclass(frozen=True)
class SecretFile:
    """A `*_file` twin: the path (shown) and the secret read from it (never shown)."""

    path: Path
    value: SecretStr


def _resolve_credential_path(raw: str) -> Path:
    path = Path(raw).expanduser()
    # systemd LoadCredential= puts files in $CREDENTIALS_DIRECTORY; relative names go there.
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if not path.is_absolute() and cred_dir:
        path = Path(cred_dir) / path
    return path


def _read_secret_file(value: object) -> SecretFile:
    if isinstance(value, SecretFile):
        return value
    if not isinstance(value, str | Path):
        raise ValueError("expected a file path")  # pydantic wants ValueError, even here
    path = _resolve_credential_path(str(value))
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        why = f"cannot read secret file {path.absolute()}: {exc.strerror or exc}"
        if not path.is_absolute():
            # The usual surprise: a LoadCredential= name used outside systemd.
            why += (
                f" ({str(value)!r} is relative and $CREDENTIALS_DIRECTORY is unset, "
                "so it was looked up in the working directory)"
            )
        raise ValueError(why) from None
    except UnicodeDecodeError:
        raise ValueError(f"secret file {path} is not UTF-8 text") from None
    secret = text.strip()
    if not secret:
        raise ValueError(f"secret file {path} is empty")
    return SecretFile(path=path, value=SecretStr(secret))


def _optional_secret_file(value: object) -> SecretFile | None:
    # "" means "not set" (TOML has no null); done here because a plain validator replaces
    # the whole schema, before-validators included.
    return None if value is None or value == "" else _read_secret_file(value)


SecretFilePath = Annotated[
    SecretFile | None,
    PlainValidator(_optional_secret_file),
    PlainSerializer(lambda s: None if s is None else str(s.path), return_type=str | None),
]
OptionalSecret = Annotated[SecretStr | None, BeforeValidator(_empty_to_none)]


def _readable_file(value: Path) -> Path:
    path = value.expanduser()
    if not path.is_file():
        raise ValueError(f"file {path} does not exist or is not a regular file")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    return path


ReadableFile = Annotated[
    Path | None,
    BeforeValidator(_empty_to_none),
    AfterValidator(lambda p: None if p is None else _readable_file(p)),
]


# --- small validated strings ------------------------------------------------------------


def _check_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"invalid URL {value!r}: expected http(s)://host[:port][/path]")
    return value.rstrip("/")


def _check_secret_url(value: SecretStr | None) -> SecretStr | None:
    # Validate the shape without ever echoing the value: webhook URLs carry tokens.
    if value is not None:
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("invalid URL: expected http(s)://host/... (value not shown)")
    return value


HttpUrl = Annotated[str, AfterValidator(_check_url)]
SecretUrl = Annotated[OptionalSecret, AfterValidator(_check_secret_url)]


def _check_glob(value: str) -> str:
    # fnmatch silently treats an unclosed '[' as a literal; that is never what was meant.
    # Scan as fnmatch does: a ']' right after '[' or '[!' is a member, not the close.
    i = 0
    while i < len(value):
        if value[i] == "[":
            j = i + 1
            if j < len(value) and value[j] == "!":
                j += 1
            if j < len(value) and value[j] == "]":
                j += 1
            close = value.find("]", j)
            if close == -1:
                raise ValueError(f"invalid glob {value!r}: unclosed '['")
            i = close
        i += 1
    return value


Glob = Annotated[str, AfterValidator(_check_glob)]


def glob_match(value: str, pattern: str) -> bool:
    """Case-sensitive shell-style glob match, as used by every `match` table."""
    return fnmatch.fnmatchcase(value, pattern)


def _check_listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    # Port 0: any free port, the kernel's pick (the `started` log line says which).
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"invalid listen address {value!r}: expected HOST:PORT, e.g. 0.0.0.0:9875")
    if not host:
        raise ValueError(f"invalid listen address {value!r}: expected HOST:PORT, e.g. 0.0.0.0:9875")
    bracketed = host.startswith("[") and host.endswith("]")
    if host.startswith("[") != host.endswith("]") or (":" in host and not bracketed):
        raise ValueError(f"invalid listen address {value!r}: IPv6 hosts look like [::]:9875")
    return value


_SHARD = re.compile(r"^(\d+)/(\d+)$")


def _check_shard(value: str) -> str:
    if value == "auto":
        return value
    m = _SHARD.match(value)
    if not m or int(m[2]) < 1 or int(m[1]) >= int(m[2]):
        raise ValueError(f"invalid shard {value!r}: expected 'i/n' with 0 <= i < n, or 'auto'")
    return value


# --- models -----------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class _WithSecrets(_Model):
    """Fills each secret in `_secrets` from its `*_file` twin when that is set."""

    _secrets: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="after")
    def _secrets_from_files(self) -> Self:
        for name in self._secrets:
            file: SecretFile | None = getattr(self, f"{name}_file")
            if file is None:
                continue
            if getattr(self, name) is not None:
                raise _KeyProblemError(
                    f"{name}_file", f"set either {name} or {name}_file, not both"
                )
            # Frozen model: filled once, during validation.
            object.__setattr__(self, name, file.value)
        return self


def secret_value(secret: SecretStr | None) -> str | None:
    """The plain value of an optional secret, for the one place that sends it."""
    return None if secret is None else secret.get_secret_value()


class DaemonConfig(_Model):
    poll_interval: Duration = Field(default=60.0, gt=0)
    listen: Annotated[str, AfterValidator(_check_listen)] = "0.0.0.0:9875"
    state_path: Path = Path("syncwatch-state.db")
    concurrency: int = Field(default=32, ge=1, le=4096)
    request_timeout: Duration = Field(default=10.0, gt=0)
    retries: int = Field(default=2, ge=0, le=10)
    shard: Annotated[str, AfterValidator(_check_shard)] = "0/1"
    shard_count: int | None = Field(default=None, ge=1)
    log_format: Literal["json", "console", "auto"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    ca_bundle: ReadableFile = None
    max_body_size: Size = Field(default=DEFAULT_MAX_BODY_SIZE, ge=1024)

    @model_validator(mode="after")
    def _auto_shard_needs_count(self) -> Self:
        if self.shard == "auto" and self.shard_count is None:
            raise _KeyProblemError(
                "shard_count", "required with shard = 'auto' (the StatefulSet replica count)"
            )
        return self

    def resolved_state_path(self) -> Path:
        """`state_path`, under `$STATE_DIRECTORY` (systemd StateDirectory=) when relative."""
        state_dir = os.environ.get("STATE_DIRECTORY")
        if state_dir and not self.state_path.is_absolute():
            # systemd may pass several colon-separated directories; the first is ours.
            return Path(state_dir.split(":")[0]) / self.state_path
        return self.state_path


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
                raise _KeyProblemError(f"orgs[{i}].id", f"org {org.id!r} is listed twice")
            seen.add(org.id)
            if org.api_key is None and self.api_key is None:
                raise _KeyProblemError(
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
                raise _KeyProblemError(
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
                raise _KeyProblemError(key_name, str(exc)) from None
            if not self.project_id:
                raise _KeyProblemError(
                    "project_id",
                    "required to mint user tokens with signing_key "
                    "(the token audience is useparagon.com/<project_id>)",
                )
        else:
            for i, user in enumerate(self.users):
                if user.token is None:
                    raise _KeyProblemError(
                        f"users[{i}].token",
                        f"user {user.id!r} has no token: set its token_file (or token), or "
                        "paragon.signing_key_file (the RS256 signing key from the Paragon "
                        "dashboard) to mint one",
                    )
            if self.users_file is not None:
                raise _KeyProblemError(
                    "users_file",
                    "users listed in a file have no static token: set "
                    "paragon.signing_key_file (the RS256 signing key from the Paragon "
                    "dashboard) to mint theirs",
                )
        seen: set[str] = set()
        for i, user in enumerate(self.users):
            if user.id in seen:
                raise _KeyProblemError(f"users[{i}].id", f"user {user.id!r} is listed twice")
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


class _NotifierBase(_WithSecrets):
    # The kind's needs of routing and delivery (Alertmanager hears every resolve…).
    capabilities: ClassVar[Capabilities] = Capabilities()
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    min_severity: Severity = Severity.WARNING
    match: dict[str, Glob] = {}


class SlackNotifier(_NotifierBase):
    # Slack allows about one message per second per incoming webhook.
    capabilities = Capabilities(min_interval=1.0)
    _secrets = ("webhook_url",)
    type: Literal["slack"]
    webhook_url: SecretUrl = None
    webhook_url_file: SecretFilePath = None

    @model_validator(mode="after")
    def _needs_url(self) -> Self:
        if self.webhook_url is None:
            raise _KeyProblemError(
                "webhook_url", "required: a slack notifier needs webhook_url_file (or webhook_url)"
            )
        if self.webhook_url_file is not None:
            # An inline value was checked as a field; one read from a file is checked here.
            try:
                _check_secret_url(self.webhook_url)
            except ValueError as exc:
                raise _KeyProblemError("webhook_url_file", str(exc)) from None
        return self


class WebhookNotifier(_NotifierBase):
    _secrets = ("url", "secret")
    type: Literal["webhook"]
    url: SecretUrl = None
    url_file: SecretFilePath = None
    secret: OptionalSecret = None
    secret_file: SecretFilePath = None
    headers: dict[str, str] = {}

    @model_validator(mode="after")
    def _needs_url(self) -> Self:
        if self.url is None:
            raise _KeyProblemError("url", "required: a webhook notifier needs url (or url_file)")
        if self.url_file is not None:
            try:
                _check_secret_url(self.url)
            except ValueError as exc:
                raise _KeyProblemError("url_file", str(exc)) from None
        return self


class AlertmanagerNotifier(_NotifierBase):
    # Fed the way Prometheus feeds it: every resolve, and firing alerts every cycle.
    capabilities = Capabilities(always_resolves=True, resends_active=True)
    type: Literal["alertmanager"]
    urls: list[HttpUrl] = Field(min_length=1)


class ConsoleNotifier(_NotifierBase):
    type: Literal["console"]


Notifier = Annotated[
    SlackNotifier | WebhookNotifier | AlertmanagerNotifier | ConsoleNotifier,
    Field(discriminator="type"),
]


class Config(BaseSettings):
    """The whole configuration; env (`SYNCWATCH_A__B`) overrides the TOML file."""

    model_config = SettingsConfigDict(
        env_prefix="SYNCWATCH_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        populate_by_name=True,
    )

    daemon: DaemonConfig = DaemonConfig()
    timbal: TimbalConfig | None = None
    paragon: ParagonConfig | None = None
    alerting: AlertingConfig = AlertingConfig()
    notifiers: list[Notifier] = []

    # Set per load by `load_config`; a class attribute because sources are classmethods.
    _toml_path: ClassVar[Path | None] = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003 - no .env files
        file_secret_settings: PydanticBaseSettingsSource,  # noqa: ARG003 - *_file twins instead
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls._toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls._toml_path))
        return tuple(sources)

    @model_validator(mode="after")
    def _check_whole(self) -> Self:
        # An empty [timbal] or [paragon] table watches nothing either: tenants are never
        # discovered, only listed.
        has_orgs = self.timbal is not None and bool(self.timbal.orgs)
        has_users = self.paragon is not None and (
            bool(self.paragon.users) or self.paragon.users_file is not None
        )
        if not has_orgs and not has_users:
            raise ValueError(
                "nothing to watch: configure [[timbal.orgs]] and/or [paragon] users (or users_file)"
            )
        seen: set[str] = set()
        for i, notifier in enumerate(self.notifiers):
            if notifier.name in seen:
                raise _KeyProblemError(
                    f"notifiers[{i}].name",
                    f"notifier name {notifier.name!r} is used twice; names must be unique",
                )
            seen.add(notifier.name)
        return self


# --- loading and reporting --------------------------------------------------------------


def find_config_path(explicit: str | None, environ: Mapping[str, str]) -> Path | None:
    """`-c`, else `$SYNCWATCH_CONFIG`, else ./syncwatch.toml, else /etc/syncwatch/config.toml."""
    for origin, value in (
        ("-c/--config", explicit),
        ("SYNCWATCH_CONFIG", environ.get("SYNCWATCH_CONFIG")),
    ):
        if value:
            path = Path(value).expanduser()
            if not path.is_file():
                raise ConfigError([f"{origin}: config file {path} does not exist"])
            return path
    return next((p for p in DEFAULT_PATHS if p.is_file()), None)


def load_config(path: Path | None, **overrides: Any) -> Config:
    """Load and validate; raises ConfigError with one line per problem."""
    if path is not None:
        try:
            with path.open("rb") as fh:
                tomllib.load(fh)
        except OSError as exc:
            raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"{path}: invalid TOML: {exc}"]) from None
    Config._toml_path = path
    try:
        return Config(**overrides)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc)) from None
    except SettingsError as exc:
        # e.g. SYNCWATCH_NOTIFIERS that is not JSON; the message names the field, not the value.
        field = re.search(r'field "([^"]+)"', str(exc))
        key = field[1] if field else "environment"
        # Nested variables (SYNCWATCH_TIMBAL__ORGS) are reported under their top-level key.
        raise ConfigError(
            [
                f"{key}: cannot parse $SYNCWATCH_{key.upper()}[__...] from the environment: "
                "lists and tables must be JSON"
            ]
        ) from None
    finally:
        Config._toml_path = None


def _loc_path(loc: Iterable[int | str]) -> str:
    out = ""
    parts = tuple(loc)
    for i, part in enumerate(parts):
        if isinstance(part, int):
            out += f"[{part}]"
        elif i == 2 and parts[0] == "notifiers" and part in _UNION_TAGS:
            # Discriminated-union branch names are internal; the key path skips them.
            continue
        else:
            # Spelt as in the file: JSON's string escapes are TOML's.
            key = part if _BARE_KEY.match(part) else json.dumps(part, ensure_ascii=False)
            out += f".{key}" if out else key
    return out


def _notifier_types() -> list[str]:
    """The `type` of every notifier kind, read from the config union itself."""
    union = get_args(Notifier)[0]
    return [get_args(m.model_fields["type"].annotation)[0] for m in get_args(union)]


_UNION_TAGS = set(_notifier_types())


def _keys_of(models: Iterable[type[BaseModel]]) -> set[str]:
    return {info.alias or name for m in models for name, info in m.model_fields.items()}


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _models_at(loc: tuple[int | str, ...]) -> list[type[BaseModel]]:
    """The models whose fields may sit at `loc` (a table's location), for suggestions."""
    models: list[type[BaseModel]] = [Config]
    for part in loc:
        if isinstance(part, int):
            continue
        if part in _UNION_TAGS and not any(part in m.model_fields for m in models):
            tagged = [m for m in models if part in get_args(_field_annotation(m, "type"))]
            models = tagged or models
            continue
        models = [
            arg
            for m in models
            for name, info in m.model_fields.items()
            if part in (name, info.alias)
            for arg in _model_args(info.annotation)
        ]
    return models


def _field_annotation(model: type[BaseModel], name: str) -> Any:
    info = model.model_fields.get(name)
    return None if info is None else info.annotation


def _model_args(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _model_args(arg)]


def _all_models() -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = [Config]
    for model in found:
        for info in model.model_fields.values():
            found.extend(m for m in _model_args(info.annotation) if m not in found)
    return found


_NOTIFIER_TYPES = ", ".join(_notifier_types())


def format_errors(exc: ValidationError) -> list[str]:
    """One `key.path: problem` line per validation error, never echoing secret values."""
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = tuple(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        subpath = ""
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, _KeyProblemError):
            subpath, msg = cause.subpath, cause.problem
        if err["type"] == "extra_forbidden":
            key = str(loc[-1])
            # Suggest keys of the table the typo is in, else any key syncwatch knows.
            known = _keys_of(_models_at(loc[:-1])) or _keys_of(_all_models())
            close = difflib.get_close_matches(key, sorted(known - {key}), n=1)
            msg = "unknown key" + (f"; did you mean {close[0]!r}?" if close else "")
        elif err["type"] == "missing":
            msg = "field required"
        elif err["type"] == "union_tag_invalid":
            loc = (*loc, "type")
            tag = err.get("ctx", {}).get("tag", "")
            msg = f"unknown notifier type {tag!r}; expected one of {_NOTIFIER_TYPES}"
        elif err["type"] == "union_tag_not_found":
            loc = (*loc, "type")
            msg = f"field required (one of {_NOTIFIER_TYPES})"
        elif msg and msg[0].isupper() and not msg[:2].isupper():
            msg = msg[0].lower() + msg[1:]
        path = _loc_path(loc)
        if subpath:
            # A fragment such as `orgs[1].id`, already in key-path spelling.
            path = f"{path}.{subpath}" if path else subpath
        lines.append(f"{path}: {msg}" if path else msg)
    return lines


# --- `validate` output ------------------------------------------------------------------


def redacted_dump(config: Config) -> dict[str, Any]:
    """The resolved config as plain data, every secret replaced by asterisks."""
    data: dict[str, Any] = config.model_dump(mode="json", by_alias=True, exclude_none=True)
    # An Alertmanager URL may carry basic-auth credentials (http://user:pass@host).
    for notifier in data.get("notifiers", []):
        if notifier.get("type") == "alertmanager":
            notifier["urls"] = [_mask_url_password(u) for u in notifier.get("urls", [])]
    return data


def _url_password(url: str) -> str | None:
    return urlsplit(url).password or None


def _mask_url_password(url: str) -> str:
    parts = urlsplit(url)
    if not parts.password:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return parts._replace(netloc=f"{user}:**********@{hostport}").geturl()


def to_toml(data: Mapping[str, Any]) -> str:
    """`data` as TOML, written by tomli-w (it escapes every control character)."""
    # One-line strings: tomli-w's multi-line strings turn "\r\n" into "\n", losing the "\r".
    return tomli_w.dumps(data, multiline_strings=False)


def effective_thresholds(
    timbal: TimbalConfig,
) -> Callable[[str, str, str, str | None], Thresholds | None]:
    """A resolver (org_id, connector_id, sync_id, name) → thresholds, or None if ignored.

    A sync without a name (null upstream) matches a `name` glob as the empty string, so
    only `*`-like patterns select it.
    """
    resolved = [(o, None if o.ignore else o.apply(timbal.thresholds)) for o in timbal.overrides]

    def resolve(
        org_id: str, connector_id: str, sync_id: str, name: str | None
    ) -> Thresholds | None:
        for override, thresholds in resolved:
            m = override.match
            if (
                glob_match(org_id, m.org_id)
                and glob_match(connector_id, m.connector_id)
                and glob_match(sync_id, m.sync_id)
                and glob_match(name or "", m.name)
            ):
                return thresholds
        return timbal.thresholds

    return resolve


def secrets_of(model: BaseModel) -> list[str]:
    """Every secret value in a config, so the log scrubber can mask any that slip out."""
    found: list[str] = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, SecretStr):
                found.append(item.get_secret_value())
            elif isinstance(item, BaseModel):
                found.extend(secrets_of(item))
    if isinstance(model, AlertmanagerNotifier):
        found.extend(p for p in map(_url_password, model.urls) if p)
    return found
