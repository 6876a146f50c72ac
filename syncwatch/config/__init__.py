"""Configuration: TOML file + `SYNCWATCH_` environment, validated into frozen models.

`types` (durations, sizes, secrets, URLs, globs), `sections` (one model per table),
`load` (the whole Config, its sources and error lines), `render` (`validate` output).
"""

from syncwatch.config.load import Config, find_config_path, format_errors, load_config
from syncwatch.config.render import redacted_dump, secrets_of, to_toml
from syncwatch.config.sections import (
    AlertingConfig,
    AlertmanagerNotifier,
    ConsoleNotifier,
    DaemonConfig,
    Notifier,
    ParagonConfig,
    ParagonUser,
    SlackNotifier,
    Thresholds,
    TimbalConfig,
    TimbalMatch,
    TimbalOrg,
    TimbalOverride,
    WebhookNotifier,
    secret_value,
)
from syncwatch.config.types import (
    DEFAULT_MAX_BODY_SIZE,
    DEFAULT_PATHS,
    EX_CONFIG,
    ConfigError,
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
    "AlertmanagerNotifier",
    "Config",
    "ConfigError",
    "ConsoleNotifier",
    "DaemonConfig",
    "Notifier",
    "ParagonConfig",
    "ParagonUser",
    "SecretFile",
    "SlackNotifier",
    "Thresholds",
    "TimbalConfig",
    "TimbalMatch",
    "TimbalOrg",
    "TimbalOverride",
    "WebhookNotifier",
    "find_config_path",
    "format_duration",
    "format_errors",
    "format_size",
    "glob_match",
    "load_config",
    "parse_duration",
    "parse_size",
    "redacted_dump",
    "secret_value",
    "secrets_of",
    "to_toml",
]
