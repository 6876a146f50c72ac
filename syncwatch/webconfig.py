"""`daemon.web_config_file`: Prometheus exporter-toolkit's web configuration (YAML).

Same keys and meanings as exporter-toolkit's docs/web-configuration.md: `tls_server_config`
serves HTTPS (optionally verifying client certificates), `basic_auth_users` maps user names
to bcrypt hashes. Relative file names are relative to the web config file, as there.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import structlog
import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from syncwatch.config.types import ConfigError

log = structlog.get_logger("syncwatch.webconfig")

KEY = "daemon.web_config_file"

TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
TlsVersionName = Literal["TLS10", "TLS11", "TLS12", "TLS13"]

# exporter-toolkit's names; the two that accept an unverified certificate are Go-only
# (Python's TLS verifies every client certificate it asks for), so they are refused.
CLIENT_AUTH = {
    "": ssl.CERT_NONE,
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_UNVERIFIED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert")

# The headers exporter-toolkit lets http_server_config.headers set, with their allowed values.
EXTRA_HEADERS: dict[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}

# $2a$/$2b$/$2y$, a two-digit cost, 22 characters of salt and 31 of hash.
_BCRYPT = re.compile(r"^\$2[aby]?\$(\d\d)\$[./A-Za-z0-9]{53}$")
BCRYPT_HINT = "generate one with: htpasswd -nBC 10 \"\" | tr -d ':\\n'"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsServerConfig(_Strict):
    cert: str | None = None
    key: SecretStr | None = None
    client_ca: str | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    client_auth_type: str = "NoClientCert"
    client_ca_file: Path | None = None
    client_allowed_sans: list[str] | None = None
    min_version: TlsVersionName = "TLS12"
    max_version: TlsVersionName = "TLS13"
    cipher_suites: list[str] = []
    prefer_server_cipher_suites: bool = True
    curve_preferences: list[str] = []


class HttpServerConfig(_Strict):
    http2: bool = True  # accepted for compatibility; syncwatch serves HTTP/1.1
    headers: dict[str, str] = {}


class RateLimit(_Strict):
    interval: str = "0s"
    burst: int = Field(default=0, ge=0)


class WebConfigFile(_Strict):
    tls_server_config: TlsServerConfig | None = None
    http_server_config: HttpServerConfig = HttpServerConfig()
    rate_limit: RateLimit | None = None
    basic_auth_users: dict[str, SecretStr] = {}


@dataclass(frozen=True, slots=True)
class Tls:
    """A validated tls_server_config: absolute paths or inline PEM, ready for `ssl_context`."""

    cert: Path | str  # a file, or inline PEM (str), as are key and client_ca
    key: Path | str
    client_ca: Path | str | None
    verify_mode: ssl.VerifyMode
    min_version: ssl.TLSVersion
    max_version: ssl.TLSVersion
    allowed_sans: tuple[str, ...] | None
    prefer_server_ciphers: bool


@dataclass(frozen=True, slots=True)
class WebConfig:
    """What the HTTP server enforces; the empty one (no file) is plain HTTP, no users."""

    tls: Tls | None = None
    users: tuple[tuple[str, bytes], ...] = ()  # (name, bcrypt hash)
    headers: tuple[tuple[str, str], ...] = ()
    path: Path | None = None

    def user_hashes(self) -> dict[str, bytes]:
        return dict(self.users)


def load_web_config(path: Path | None) -> WebConfig:
    """Read and check the file; ConfigError with one `daemon.web_config_file: …` line each."""
    if path is None:
        return WebConfig()
    where = f"{KEY} ({path})"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"{where}: cannot read: {exc.strerror or exc}"]) from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError([f"{where}: invalid YAML{at}"]) from None
    if raw is None:
        raw = {}  # an empty file is valid: no TLS, no users
    if not isinstance(raw, dict):
        raise ConfigError([f"{where}: expected a mapping of keys such as tls_server_config"])
    try:
        parsed = WebConfigFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError([f"{where}: {line}" for line in _lines(exc)]) from None
    problems: list[str] = []
    config = _check(parsed, path.parent, problems.append)
    if problems:
        raise ConfigError([f"{where}: {p}" for p in problems])
    return WebConfig(tls=config[0], users=config[1], headers=config[2], path=path)


def _lines(exc: ValidationError) -> list[str]:
    lines = []
    # include_input=False: an inline key or a hash never reaches the message.
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in err["loc"])
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"{loc}: {msg}")
    return lines


def _check(
    parsed: WebConfigFile, base: Path, problem: Callable[[str], None]
) -> tuple[Tls | None, tuple[tuple[str, bytes], ...], tuple[tuple[str, str], ...]]:
    if parsed.rate_limit is not None:
        problem("rate_limit: not supported by syncwatch; remove it (limit at a proxy)")
    for name, value in parsed.http_server_config.headers.items():
        allowed = EXTRA_HEADERS.get(name)
        if allowed is None:
            problem(f"http_server_config.headers.{name}: this header can not be configured")
        elif allowed and value not in allowed:
            problem(f"http_server_config.headers.{name}: expected one of {', '.join(allowed)}")
    users = []
    for name, secret in parsed.basic_auth_users.items():
        hashed = secret.get_secret_value()
        match = _BCRYPT.match(hashed)
        if match is None or not 4 <= int(match[1]) <= 31:
            problem(f"basic_auth_users.{name}: not a bcrypt hash; {BCRYPT_HINT}")
            continue
        users.append((name, hashed.encode()))
    tls = None
    if parsed.tls_server_config is not None and _tls_enabled(parsed.tls_server_config):
        tls = _check_tls(parsed.tls_server_config, base, problem)
    headers = tuple(parsed.http_server_config.headers.items())
    return tls, tuple(users), headers


def _tls_enabled(t: TlsServerConfig) -> bool:
    """exporter-toolkit's IsEnabled: any TLS key set turns TLS on (and then it must be whole)."""
    return any(
        v not in (None, "")
        for v in (t.cert, t.key, t.client_ca, t.cert_file, t.key_file, t.client_ca_file)
    ) or t.client_auth_type not in ("", "NoClientCert")


def _check_tls(t: TlsServerConfig, base: Path, problem: Callable[[str], None]) -> Tls | None:
    at = "tls_server_config."
    problems_before = _Counter(problem)
    if t.cipher_suites:
        problem(f"{at}cipher_suites: not supported by syncwatch; remove it (OpenSSL's defaults)")
    if t.curve_preferences:
        problem(f"{at}curve_preferences: not supported by syncwatch; remove it")
    if t.client_auth_type in _UNVERIFIED_CLIENT_AUTH:
        problems_before(
            f"{at}client_auth_type: {t.client_auth_type} (a certificate nobody verifies) is not "
            "supported; use RequireAndVerifyClientCert or VerifyClientCertIfGiven"
        )
    elif t.client_auth_type not in CLIENT_AUTH:
        problems_before(
            f"{at}client_auth_type: invalid ClientAuth; expected one of NoClientCert, "
            "VerifyClientCertIfGiven, RequireAndVerifyClientCert"
        )
    if TLS_VERSIONS[t.min_version] > TLS_VERSIONS[t.max_version]:
        problems_before(f"{at}min_version: {t.min_version} is above max_version {t.max_version}")
    certfile = _one_of(t.cert_file, t.cert, "cert", base, problems_before, at=at)
    key = t.key.get_secret_value() if t.key else None
    keyfile = _one_of(t.key_file, key, "key", base, problems_before, at=at)
    client_ca: Path | str | None = None
    if t.client_ca_file and t.client_ca:
        problems_before(f"{at}client_ca_file: set client_ca_file or client_ca, not both")
    elif t.client_ca_file:
        client_ca = _absolute(t.client_ca_file, base)
    elif t.client_ca:
        client_ca = t.client_ca
    verify = CLIENT_AUTH.get(t.client_auth_type, ssl.CERT_NONE)
    if client_ca is not None and verify == ssl.CERT_NONE:
        problems_before(
            f"{at}client_ca_file: client CA's have been configured without a Client Auth "
            "Policy; set client_auth_type: RequireAndVerifyClientCert"
        )
    if client_ca is None and verify != ssl.CERT_NONE:
        problems_before(f"{at}client_ca_file: required with client_auth_type {t.client_auth_type}")
    if problems_before.count or certfile is None or keyfile is None:
        return None
    tls = Tls(
        cert=certfile,
        key=keyfile,
        client_ca=client_ca,
        verify_mode=verify,
        min_version=TLS_VERSIONS[t.min_version],
        max_version=TLS_VERSIONS[t.max_version],
        allowed_sans=None if t.client_allowed_sans is None else tuple(t.client_allowed_sans),
        prefer_server_ciphers=t.prefer_server_cipher_suites,
    )
    try:
        ssl_context(tls)
    except TlsError as exc:
        problem(f"{at}{exc}")
        return None
    return tls


class _Counter:
    def __init__(self, sink: Callable[[str], None]) -> None:
        self.sink = sink
        self.count = 0

    def __call__(self, message: str) -> None:
        self.count += 1
        self.sink(message)


def _absolute(path: Path, base: Path) -> Path:
    return path if path.is_absolute() else base / path


def _one_of(
    file: Path | None,
    inline: str | None,
    name: str,
    base: Path,
    problem: Callable[[str], None],
    *,
    at: str,
) -> Path | str | None:
    """`cert_file` or inline `cert` (likewise key): a path, or the PEM text itself."""
    if file and inline:
        problem(f"{at}{name}_file: set {name}_file or {name}, not both")
        return None
    if file:
        return _absolute(file, base)
    if inline:
        return inline
    problem(f"{at}{name}_file: missing one of {name} or {name}_file")
    return None


class TlsError(Exception):
    """A TLS file that cannot be used; the message names the key, never the key material."""


def ssl_context(tls: Tls) -> ssl.SSLContext:
    """A server context for `tls`; TlsError names the key whose file is unusable."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = tls.min_version
    context.maximum_version = tls.max_version
    context.verify_mode = tls.verify_mode
    if tls.prefer_server_ciphers:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    _load_pair(context, tls.cert, tls.key)
    if isinstance(tls.client_ca, str):
        try:
            context.load_verify_locations(cadata=tls.client_ca)
        except (ssl.SSLError, ValueError):
            raise TlsError("client_ca: not a PEM certificate") from None
    elif tls.client_ca is not None:
        try:
            context.load_verify_locations(cafile=str(tls.client_ca))
        except ssl.SSLError:  # before OSError, its base class
            raise TlsError(f"client_ca_file: {tls.client_ca} holds no PEM certificate") from None
        except OSError as exc:
            raise TlsError(
                f"client_ca_file: cannot read {tls.client_ca}: {exc.strerror or exc}"
            ) from None
    return context


def _load_pair(context: ssl.SSLContext, cert: Path | str, key: Path | str) -> None:
    for name, source in (("cert_file", cert), ("key_file", key)):
        if isinstance(source, Path) and not source.is_file():
            raise TlsError(f"{name}: cannot read {source}: no such file")
    # ssl loads a chain only from files: inline PEM goes through a private temporary file.
    with tempfile.TemporaryDirectory(prefix="syncwatch-tls-") as tmp:
        paths = [_as_file(cert, Path(tmp) / "cert"), _as_file(key, Path(tmp) / "key")]
        try:
            context.load_cert_chain(paths[0], paths[1])
        except ssl.SSLError:  # before OSError, its base class
            what = "key" if isinstance(key, str) else f"key_file {key}"
            of = "cert" if isinstance(cert, str) else f"cert_file {cert}"
            raise TlsError(
                f"{what.split(maxsplit=1)[0]}: {what} is not the key of {of} (or not PEM)"
            ) from None
        except OSError as exc:
            raise TlsError(f"cert_file: cannot read {cert}: {exc.strerror or exc}") from None


def _as_file(source: Path | str, target: Path) -> str:
    if isinstance(source, Path):
        return str(source)
    target.touch(mode=0o600)
    target.write_text(source, encoding="utf-8")
    return str(target)


class LiveTls:
    """The listener's SSL context, whose certificate, CAs and policy a reload can replace.

    asyncio keeps the context it was given; each handshake switches to the current one
    (the SNI callback runs for every ClientHello, with or without a server name).
    """

    def __init__(self, tls: Tls) -> None:
        self.tls = tls
        self.current = ssl_context(tls)
        self.listener = ssl_context(tls)
        self.listener.sni_callback = self._switch

    def _switch(self, sslobj: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> None:
        sslobj.context = self.current

    def admits(self, transport: asyncio.BaseTransport) -> bool:
        """client_allowed_sans: the verified client certificate names one of them."""
        allowed = self.tls.allowed_sans
        if allowed is None:
            return True
        peer = transport.get_extra_info("peercert") or {}
        names = [value for _kind, value in peer.get("subjectAltName", ())]
        if any(name in allowed for name in names):
            return True
        log.warning(
            "client_certificate_refused",
            client=str((transport.get_extra_info("peername") or ("?",))[0]),
            sans=names,
            hint="its SANs are not in tls_server_config.client_allowed_sans",
        )
        return False

    def update(self, tls: Tls) -> None:
        """Use `tls` for new connections; TlsError (and the old context kept) if unusable."""
        context = ssl_context(tls)
        # Verify mode and versions are read from the listener's context at accept time.
        self.listener.verify_mode = tls.verify_mode
        self.listener.minimum_version = tls.min_version
        self.listener.maximum_version = tls.max_version
        self.current, self.tls = context, tls
