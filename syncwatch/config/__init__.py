"""Configuration: TOML file + `SYNCWATCH_` environment, validated into frozen models.

`types` (durations, sizes, secrets, URLs, globs), `sections` (one model per table, and the
base every notifier kind's model extends), `render` (`validate` output) and `load` (the
whole Config, its sources and error lines). `load` is imported as itself: the whole Config
names every notifier kind, and their modules build on `sections`.
"""

from syncwatch.config.render import redacted_dump, secrets_of, to_toml
from syncwatch.config.sections import (
    AlertingConfig,
    DaemonConfig,
    NotifierConfig,
    ParagonConfig,
    ParagonUser,
    Thresholds,
    TimbalConfig,
    TimbalMatch,
    TimbalOrg,
    TimbalOverride,
    secret_value,
)
from syncwatch.config.types import (
    DEFAULT_MAX_BODY_SIZE,
    DEFAULT_PATHS,
    EX_CONFIG,
    ConfigError,
    KeyProblemError,
    SecretFile,
    format_duration,
    format_size,
    glob_match,
    parse_duration,
    parse_size,
)

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_PATHS",
    "EX_CONFIG",
    "AlertingConfig",
    "ConfigError",
    "DaemonConfig",
    "KeyProblemError",
    "NotifierConfig",
    "ParagonConfig",
    "ParagonUser",
    "SecretFile",
    "Thresholds",
    "TimbalConfig",
    "TimbalMatch",
    "TimbalOrg",
    "TimbalOverride",
    "format_duration",
    "format_size",
    "glob_match",
    "parse_duration",
    "parse_size",
    "redacted_dump",
    "secret_value",
    "secrets_of",
    "to_toml",
]
