"""Config value types: durations, sizes, secrets and their files, URLs, globs; errors."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
    PlainSerializer,
    PlainValidator,
    SecretStr,
)

EX_CONFIG = 78
DEFAULT_PATHS = (Path("syncwatch.toml"), Path("/etc/syncwatch/config.toml"))


class ConfigError(Exception):
    """A configuration that cannot be used; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class KeyProblemError(ValueError):
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


def check_secret_url(value: SecretStr | None) -> SecretStr | None:
    # Validate the shape without ever echoing the value: webhook URLs carry tokens.
    if value is not None:
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("invalid URL: expected http(s)://host/... (value not shown)")
    return value


HttpUrl = Annotated[str, AfterValidator(_check_url)]
SecretUrl = Annotated[OptionalSecret, AfterValidator(check_secret_url)]

_STATE_URL_SHAPE = (
    "expected sqlite:///path or postgresql://user@host:port/dbname[?sslmode=...] (value not shown)"
)


def check_state_url(value: SecretStr | None) -> SecretStr | None:
    """`daemon.state_url`'s shape, checked without ever echoing it (it may hold a password)."""
    if value is None:
        return value
    url = value.get_secret_value()
    scheme, sep, rest = url.partition("://")
    if scheme == "sqlite" and sep:
        if not rest.startswith("/") or rest == "/":
            raise ValueError(f"invalid sqlite URL: {_STATE_URL_SHAPE}")
        return value
    if scheme in ("postgresql", "postgres") and sep:
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            raise ValueError(f"invalid PostgreSQL URL: {_STATE_URL_SHAPE}") from None
        return value
    raise ValueError(f"unsupported state_url: {_STATE_URL_SHAPE}")


def sqlite_url_path(url: str) -> Path:
    """The file of `sqlite:///relative.db` or `sqlite:////absolute/path.db` (SQLAlchemy's
    spelling: the third slash ends the empty host)."""
    return Path(url.removeprefix("sqlite://").removeprefix("/"))


def state_url_parts(value: SecretStr) -> tuple[str, ...]:
    """The secret pieces of a PostgreSQL URL: itself and its password, wherever they sit."""
    url = value.get_secret_value()
    if url.startswith("sqlite:"):
        return ()
    found = [url]
    password = urlsplit(url).password
    if password:
        found.append(unquote(password))
    for key, item in parse_qsl(urlsplit(url).query):
        if key == "password" and item:
            found.append(item)
    return tuple(found)


StateUrl = Annotated[OptionalSecret, AfterValidator(check_state_url)]


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


def url_password(url: str) -> str | None:
    """The password inside `http://user:pass@host/`, if any."""
    return urlsplit(url).password or None


def mask_url_password(url: str) -> str:
    """`url` with its password, if any, replaced by asterisks."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return parts._replace(netloc=f"{user}:**********@{hostport}").geturl()
