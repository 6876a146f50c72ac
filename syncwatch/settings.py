"""The whole config (`Config`): loaded from TOML and `SYNCWATCH_` env, one line per problem.

Its `[[notifiers]]` union comes from the notifier registry, so it sits above the notifier
kinds, which build on `syncwatch.config` (types and sections)."""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Self, get_args

from pydantic import (
    BaseModel,
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

from syncwatch.config.maintenance import MaintenanceConfig
from syncwatch.config.sections import (
    AlertingConfig,
    DaemonConfig,
    MetricsConfig,
    ParagonConfig,
    TimbalConfig,
    _loc_path,
)
from syncwatch.config.types import DEFAULT_PATHS, ConfigError, KeyProblemError
from syncwatch.notifiers.registry import TYPES, AnyNotifierConfig
from syncwatch.webconfig import load_web_config


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
    metrics: MetricsConfig = MetricsConfig()
    notifiers: list[AnyNotifierConfig] = []
    maintenance: list[MaintenanceConfig] = []

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
                raise KeyProblemError(
                    f"notifiers[{i}].name",
                    f"notifier name {notifier.name!r} is used twice; names must be unique",
                )
            seen.add(notifier.name)
        windows: set[str] = set()
        for i, window in enumerate(self.maintenance):
            if window.name in windows:
                raise KeyProblemError(
                    f"maintenance[{i}].name",
                    f"maintenance window {window.name!r} is named twice; names must be unique",
                )
            windows.add(window.name)
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
        config = Config(**overrides)
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
    # The web config file is its own format: checked here so validate and run agree.
    load_web_config(config.daemon.web_config_file)
    return config


def _keys_of(models: Iterable[type[BaseModel]]) -> set[str]:
    return {info.alias or name for m in models for name, info in m.model_fields.items()}


def _models_at(loc: tuple[int | str, ...]) -> list[type[BaseModel]]:
    """The models whose fields may sit at `loc` (a table's location), for suggestions."""
    models: list[type[BaseModel]] = [Config]
    for part in loc:
        if isinstance(part, int):
            continue
        if part in TYPES and not any(part in m.model_fields for m in models):
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


_NOTIFIER_TYPES = ", ".join(TYPES)


def format_errors(exc: ValidationError) -> list[str]:
    """One `key.path: problem` line per validation error, never echoing secret values."""
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = tuple(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        subpath = ""
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, KeyProblemError):
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
        path = _loc_path(loc, TYPES)
        if subpath:
            # A fragment such as `orgs[1].id`, already in key-path spelling.
            path = f"{path}.{subpath}" if path else subpath
        lines.append(f"{path}: {msg}" if path else msg)
    return lines


# --- `validate` output ------------------------------------------------------------------


def redacted_dump(config: Config) -> dict[str, Any]:
    """The resolved config as plain data, every secret replaced by asterisks."""
    data: dict[str, Any] = config.model_dump(mode="json", by_alias=True, exclude_none=True)
    # Each kind masks what it keeps secret outside a SecretStr (a URL's password…).
    for notifier, dumped in zip(config.notifiers, data.get("notifiers", []), strict=True):
        notifier.redact(dumped)
    return data
