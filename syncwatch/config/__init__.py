"""Configuration pieces: `types` (durations, sizes, secrets, URLs, globs), `sections` (one
model per table, and the base every notifier kind's model extends) and `render` (TOML out).

The whole Config, which names every notifier kind, is `syncwatch.settings`.
"""

from syncwatch.config.render import secrets_of, to_toml
from syncwatch.config.sections import (
    AlertingConfig,
    DaemonConfig,
    MetricsConfig,
    NotifierConfig,
    ParagonConfig,
    ParagonUser,
    PerSyncSeries,
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
    "MetricsConfig",
    "NotifierConfig",
    "ParagonConfig",
    "ParagonUser",
    "PerSyncSeries",
    "SecretFile",
    "Thresholds",
    "TimbalConfig",
    "TimbalMatch",
    "TimbalOrg",
    "TimbalOverride",
    "format_duration",
    "format_size",
    "parse_duration",
    "parse_size",
    "secret_value",
    "secrets_of",
    "to_toml",
]
