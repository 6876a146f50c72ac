"""Configuration: the example, error reporting, lookup, env overrides, secrets, durations."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from syncwatch.cli import main
from syncwatch.config import (
    EX_CONFIG,
    DaemonConfig,
    ParagonConfig,
    TimbalConfig,
    TimbalMatch,
    format_duration,
    parse_duration,
    secrets_of,
)
from syncwatch.settings import _all_models, load_config
from syncwatch.sources.timbal.rules import effective_thresholds
from tests.conftest import ENV_OWNED

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.toml"
PREFIX = "syncwatch: config: "

# Distinctive secret values: if one shows up in any output, it leaked.
TIMBAL_KEY = "s3cr3t-timbal-XYZ"
ORG_KEY = "s3cr3t-org-key-QRS"
PARAGON_TOKEN = "s3cr3t-paragon-token-JKL"
SLACK_URL = "https://hooks.slack.com/services/T0/B0/s3cr3t-slack-MNO"
WEBHOOK_URL = "https://hooks.example.com/s3cr3t-webhook-path-UVW"
WEBHOOK_SECRET = "s3cr3t-hmac-DEF"

MINIMAL = f"""
[timbal]
api_key = "{TIMBAL_KEY}"
[[timbal.orgs]]
id = "org_1"
"""


pytestmark = pytest.mark.usefixtures("clean_env")

# --- helpers ----------------------------------------------------------------------------


def write(directory: Path, text: str, name: str = "syncwatch-test.toml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def validate(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`syncwatch validate -c CONFIG` in-process: (exit code, stdout, stderr)."""
    code = main(["validate", "-c", str(config)])
    out, err = capsys.readouterr()
    return code, out, err


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m syncwatch ARGS` in a child process with a clean environment plus `env`."""
    child_env = {
        k: v for k, v in os.environ.items() if not k.startswith("SYNCWATCH_") and k not in ENV_OWNED
    }
    child_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), child_env.get("PYTHONPATH", "")) if p
    )
    child_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "syncwatch", *args],
        cwd=cwd,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@cache
def rsa_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@cache
def ec_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def problem_lines(err: str) -> list[str]:
    lines = err.splitlines()
    assert all(line.startswith(PREFIX) for line in lines), err
    return [line.removeprefix(PREFIX) for line in lines]


# --- the example ------------------------------------------------------------------------


def test_example_validates_and_prints_parseable_toml(tmp_path: Path) -> None:
    result = run_cli("validate", "-c", str(EXAMPLE), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    resolved = tomllib.loads(result.stdout)
    assert [o["id"] for o in resolved["timbal"]["orgs"]] == ["org_123", "org_456"]
    assert [n["type"] for n in resolved["notifiers"]] == [
        "slack",
        "webhook",
        "alertmanager",
        "console",
    ]


def test_example_secrets_are_redacted_in_validate_output(tmp_path: Path) -> None:
    example = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    secrets = [
        example["timbal"]["api_key"],
        example["timbal"]["orgs"][1]["api_key"],
        *(u["token"] for u in example["paragon"]["users"]),
        example["notifiers"][0]["webhook_url"],
        example["notifiers"][1]["url"],
        example["notifiers"][1]["secret"],
    ]

    result = run_cli("validate", "-c", str(EXAMPLE), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    leaked = [s for s in secrets if s in result.stdout or s in result.stderr]
    assert leaked == []
    resolved = tomllib.loads(result.stdout)
    assert resolved["timbal"]["api_key"] == "**********"
    assert resolved["notifiers"][1]["secret"] == "**********"


def test_example_mentions_every_config_key() -> None:
    """Each key of every config table appears in the example, set or commented out."""
    text = EXAMPLE.read_text(encoding="utf-8")
    keys = {info.alias or name for m in _all_models() for name, info in m.model_fields.items()}

    def mentioned(key: str) -> bool:
        k = re.escape(key)
        as_key = rf"(?m)^\s*#?\s*{k}\s*="  # `key = …`, possibly commented out
        inline = rf"[{{,]\s*{k}\s*="  # inside an inline table
        header = rf"(?m)^#?\s*\[+(\w+\.)*{k}\]+"  # [table] or [[array.of.tables]], maybe commented
        return any(re.search(p, text) for p in (as_key, inline, header))

    assert sorted(k for k in keys if not mentioned(k)) == []


# --- broken configs ---------------------------------------------------------------------


@dataclass(frozen=True)
class Broken:
    """A config that must fail with `expected` at the start of one stderr problem line."""

    id: str
    toml: str
    expected: str
    files: dict[str, str] = field(default_factory=dict)


BROKEN = [
    Broken(
        "missing_org_id",
        MINIMAL + "[[timbal.orgs]]\nconnector_ids = []\n",
        "timbal.orgs[1].id: field required",
    ),
    Broken(
        "wrong_type",
        MINIMAL + '[daemon]\nconcurrency = "lots"\n',
        "daemon.concurrency: input should be a valid integer",
    ),
    Broken(
        "bad_duration",
        MINIMAL + '[daemon]\npoll_interval = "5 minutes"\n',
        "daemon.poll_interval: invalid duration '5 minutes'",
    ),
    Broken(
        "negative_duration",
        MINIMAL + '[daemon]\nrequest_timeout = "-5s"\n',
        "daemon.request_timeout: a duration cannot be negative",
    ),
    Broken(
        "negative_number_of_seconds",
        MINIMAL + "[alerting]\nfor = -1\n",
        "alerting.for: a duration cannot be negative",
    ),
    Broken(
        "zero_poll_interval",
        MINIMAL + "[daemon]\npoll_interval = 0\n",
        "daemon.poll_interval: input should be greater than 0",
    ),
    Broken(
        "token_ttl_below_a_minute",
        MINIMAL + '[paragon]\ntoken_ttl = "30s"\nusers = [{ id = "u", token = "t" }]\n',
        "paragon.token_ttl: input should be greater than or equal to 60",
    ),
    Broken(
        "nan_duration",
        MINIMAL + '[alerting]\nrepeat_interval = "nan"\n',
        "alerting.repeat_interval: invalid duration 'nan'",
    ),
    Broken(
        "unreadable_secret_file",
        '[timbal]\napi_key_file = "{tmp}/no-such-file"\n[[timbal.orgs]]\nid = "org_1"\n',
        "timbal.api_key_file: cannot read secret file {tmp}/no-such-file",
    ),
    Broken(
        "secret_file_is_a_directory",
        '[timbal]\napi_key_file = "{tmp}"\n[[timbal.orgs]]\nid = "org_1"\n',
        "timbal.api_key_file: cannot read secret file {tmp}",
    ),
    Broken(
        "empty_secret_file",
        '[timbal]\napi_key_file = "{tmp}/blank"\n[[timbal.orgs]]\nid = "org_1"\n',
        "timbal.api_key_file: secret file {tmp}/blank is empty",
        files={"blank": " \n\n"},
    ),
    Broken(
        "secret_and_secret_file_both_set",
        MINIMAL.replace("[[timbal.orgs]]", 'api_key_file = "{tmp}/key"\n[[timbal.orgs]]'),
        "timbal.api_key_file: set either api_key or api_key_file, not both",
        files={"key": "another-key\n"},
    ),
    Broken(
        "org_without_any_api_key",
        '[timbal]\n[[timbal.orgs]]\nid = "org_1"\n',
        "timbal.orgs[0].api_key: org 'org_1' has no API key",
    ),
    Broken(
        "duplicate_org_id",
        MINIMAL + '[[timbal.orgs]]\nid = "org_1"\n',
        "timbal.orgs[1].id: org 'org_1' is listed twice",
    ),
    Broken(
        "unknown_notifier_type",
        MINIMAL + '[[notifiers]]\nname = "pd"\ntype = "carrier-pigeon"\n',
        "notifiers[0].type: unknown notifier type 'carrier-pigeon'; expected one of slack, webhook",
    ),
    Broken(
        "notifier_without_type",
        MINIMAL + '[[notifiers]]\nname = "pd"\n',
        "notifiers[0].type: field required",
    ),
    Broken(
        "bad_glob_in_override_match",
        MINIMAL + '[[timbal.overrides]]\nmatch = { name = "billing-[" }\nignore = true\n',
        "timbal.overrides[0].match.name: invalid glob 'billing-[': unclosed '['",
    ),
    Broken(
        "bad_glob_in_notifier_match",
        MINIMAL + '[[notifiers]]\nname = "c"\ntype = "console"\nmatch = { slack = "[ab" }\n',
        "notifiers[0].match.slack: invalid glob '[ab': unclosed '['",
    ),
    Broken(
        "warn_ratio_equal_to_critical_ratio",
        MINIMAL + "[timbal.thresholds]\nwarn_ratio = 3.0\ncritical_ratio = 3.0\n",
        "timbal.thresholds: warn_ratio (3) must be below critical_ratio (3)",
    ),
    Broken(
        "override_warn_ratio_above_default_critical",
        MINIMAL + '[[timbal.overrides]]\nmatch = { org_id = "org_1" }\nwarn_ratio = 4.0\n',
        "timbal.overrides[0]: warn_ratio (4) must be below critical_ratio (3)",
    ),
    Broken(
        "unknown_key_with_suggestion",
        MINIMAL + '[daemon]\npoll_intervall = "1m"\n',
        "daemon.poll_intervall: unknown key; did you mean 'poll_interval'?",
    ),
    Broken(
        "unknown_key_in_array_table_with_suggestion",
        MINIMAL + '[[notifiers]]\nname = "s"\ntype = "slack"\nwebhok_url = "https://h.example"\n',
        "notifiers[0].webhok_url: unknown key; did you mean 'webhook_url'?",
    ),
    Broken(
        "unknown_top_level_table",
        MINIMAL + "[notifier]\n",
        "notifier: unknown key; did you mean 'notifiers'?",
    ),
    Broken(
        "listen_without_port",
        MINIMAL + '[daemon]\nlisten = "0.0.0.0"\n',
        "daemon.listen: invalid listen address '0.0.0.0'",
    ),
    Broken(
        "listen_port_out_of_range",
        MINIMAL + '[daemon]\nlisten = "0.0.0.0:70000"\n',
        "daemon.listen: invalid listen address '0.0.0.0:70000'",
    ),
    Broken(
        "listen_ipv6_without_brackets",
        MINIMAL + '[daemon]\nlisten = "::1:9875"\n',
        "daemon.listen: invalid listen address '::1:9875': IPv6 hosts look like [::]:9875",
    ),
    Broken(
        "shard_index_not_below_count",
        MINIMAL + '[daemon]\nshard = "2/2"\n',
        "daemon.shard: invalid shard '2/2'",
    ),
    Broken(
        "shard_auto_without_shard_count",
        MINIMAL + '[daemon]\nshard = "auto"\n',
        "daemon.shard_count: required with shard = 'auto'",
    ),
    Broken(
        "invalid_base_url",
        MINIMAL.replace("[timbal]", '[timbal]\nbase_url = "api.timbal.ai"'),
        "timbal.base_url: invalid URL 'api.timbal.ai'",
    ),
    Broken(
        "slack_notifier_without_url",
        MINIMAL + '[[notifiers]]\nname = "ops"\ntype = "slack"\n',
        "notifiers[0].webhook_url: required: a slack notifier needs webhook_url_file",
    ),
    Broken(
        "webhook_notifier_without_url",
        MINIMAL + '[[notifiers]]\nname = "hook"\ntype = "webhook"\n',
        "notifiers[0].url: required: a webhook notifier needs url (or url_file)",
    ),
    Broken(
        "alertmanager_without_urls",
        MINIMAL + '[[notifiers]]\nname = "am"\ntype = "alertmanager"\nurls = []\n',
        "notifiers[0].urls: list should have at least 1 item",
    ),
    Broken(
        "duplicate_notifier_names",
        MINIMAL + '[[notifiers]]\nname = "ops"\ntype = "console"\n' * 2,
        "notifiers[1].name: notifier name 'ops' is used twice",
    ),
    Broken(
        "paragon_user_without_token_or_signing_key",
        '[paragon]\nusers = ["user-1"]\n',
        "paragon.users[0].token: user 'user-1' has no token",
    ),
    Broken(
        "paragon_users_file_without_signing_key",
        '[paragon]\nusers_file = "{tmp}/users.txt"\n',
        "paragon.users_file: users listed in a file have no static token",
        files={"users.txt": "user-1\n"},
    ),
    Broken(
        "signing_key_not_pem",
        '[paragon]\nproject_id = "p"\nsigning_key_file = "{tmp}/key.pem"\nusers = ["u"]\n',
        "paragon.signing_key_file: signing_key is not an unencrypted PEM private key",
        files={
            "key.pem": "-----BEGIN RSA PRIVATE KEY-----\ngarbage\n-----END RSA PRIVATE KEY-----\n"
        },
    ),
    Broken(
        "signing_key_not_rsa",
        '[paragon]\nproject_id = "p"\nsigning_key_file = "{tmp}/key.pem"\nusers = ["u"]\n',
        "paragon.signing_key_file: signing_key must be an RSA key",
        files={"key.pem": "{ec_pem}"},
    ),
    Broken(
        "signing_key_without_project_id",
        '[paragon]\nsigning_key_file = "{tmp}/key.pem"\nusers = ["u"]\n',
        "paragon.project_id: required to mint user tokens with signing_key",
        files={"key.pem": "{rsa_pem}"},
    ),
    Broken(
        "invalid_toml_syntax",
        "[daemon\npoll_interval = 1\n",
        "{config}: invalid TOML: Expected ']' at the end of a table declaration (at line 1",
    ),
    Broken("nothing_configured", "", "nothing to watch"),
    Broken(
        "sources_without_tenants",
        f'[timbal]\napi_key = "{TIMBAL_KEY}"\n[paragon]\n',
        "nothing to watch",
    ),
    Broken(
        "bad_per_sync_series",
        MINIMAL + '[metrics]\nper_sync_series = "some"\n',
        "metrics.per_sync_series: input should be 'all', 'alerting' or 'none'",
    ),
    Broken(
        "bad_log_level",
        MINIMAL + '[daemon]\nlog_level = "verbose"\n',
        "daemon.log_level: input should be 'debug', 'info', 'warning' or 'error'",
    ),
]


@pytest.mark.parametrize("case", BROKEN, ids=[c.id for c in BROKEN])
def test_broken_config_exits_78_naming_the_key(
    case: Broken, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def fill(text: str) -> str:
        return (
            text.replace("{tmp}", str(tmp_path))
            .replace("{config}", str(tmp_path / "syncwatch-test.toml"))
            .replace("{rsa_pem}", rsa_pem() if "{rsa_pem}" in text else "")
            .replace("{ec_pem}", ec_pem() if "{ec_pem}" in text else "")
        )

    for name, content in case.files.items():
        write(tmp_path, fill(content), name)
    config = write(tmp_path, fill(case.toml))

    code, out, err = validate(config, capsys)

    assert code == EX_CONFIG
    assert out == ""
    problems = problem_lines(err)
    assert any(p.startswith(fill(case.expected)) for p in problems), problems


def test_missing_config_file_exits_78(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = validate(tmp_path / "absent.toml", capsys)

    assert code == EX_CONFIG
    assert problem_lines(err) == [f"-c/--config: config file {tmp_path}/absent.toml does not exist"]


def test_each_problem_prints_its_own_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(
        tmp_path,
        MINIMAL
        + '[daemon]\nconcurrency = "lots"\nlog_level = "loud"\n[alerting]\nrepeat_interval = "x"\n',
    )

    code, _, err = validate(config, capsys)

    assert code == EX_CONFIG
    assert [p.split(":", 1)[0] for p in problem_lines(err)] == [
        "daemon.concurrency",
        "daemon.log_level",
        "alerting.repeat_interval",
    ]


def test_unknown_key_gets_no_suggestion_from_another_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`api_key` is a key elsewhere, but suggesting it under [daemon] would mislead."""
    config = write(tmp_path, MINIMAL + '[daemon]\napi_key = "x"\n')

    code, _, err = validate(config, capsys)

    assert code == EX_CONFIG
    assert problem_lines(err) == ["daemon.api_key: unknown key"]


def test_unparsable_env_value_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SYNCWATCH_NOTIFIERS", "not json")

    code, _, err = validate(write(tmp_path, MINIMAL), capsys)

    assert code == EX_CONFIG
    assert problem_lines(err) == [
        "notifiers: cannot parse $SYNCWATCH_NOTIFIERS[__...] from the environment: "
        "lists and tables must be JSON"
    ]


# --- valid edge cases -------------------------------------------------------------------


def test_empty_string_means_unset_for_optional_keys(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            MINIMAL.replace("[[timbal.orgs]]", 'api_key_file = ""\n[[timbal.orgs]]')
            + '[daemon]\nca_bundle = ""\n'
            + '[paragon]\nusers_file = ""\nidle_stale_after = ""\n'
            + 'users = [{ id = "u", token = "t" }]\n',
        )
    )

    assert config.daemon.ca_bundle is None
    assert config.timbal is not None
    assert config.timbal.api_key_file is None
    assert config.paragon is not None
    assert config.paragon.users_file is None
    assert config.paragon.idle_stale_after is None


def test_paragon_users_accept_plain_id_strings(tmp_path: Path) -> None:
    key = write(tmp_path, rsa_pem(), "key.pem")
    config = load_config(
        write(
            tmp_path,
            f'[paragon]\nproject_id = "p"\nsigning_key_file = "{key}"\nusers = ["u1", "u2"]\n',
        )
    )

    assert config.paragon is not None
    assert [u.id for u in config.paragon.users] == ["u1", "u2"]
    assert all(u.token is None for u in config.paragon.users)


@pytest.mark.parametrize(
    "listen", ["0.0.0.0:9875", "127.0.0.1:1", "[::]:9875", "host:65535", "127.0.0.1:0"]
)
def test_valid_listen_addresses(listen: str) -> None:
    assert DaemonConfig(listen=listen).listen == listen


@pytest.mark.parametrize("pattern", ["*", "billing-*", "x[ab]y", "[!a]*", "[]]", "[!]]", "a?c"])
def test_valid_globs(pattern: str) -> None:
    assert TimbalMatch(name=pattern).name == pattern


@pytest.mark.parametrize("pattern", ["[", "a[b", "x[ab]y[", "[]", "[!]"])
def test_unclosed_bracket_globs_are_rejected(pattern: str) -> None:
    with pytest.raises(ValueError, match="unclosed"):
        TimbalMatch(name=pattern)


# --- lookup and environment -------------------------------------------------------------


def test_env_overrides_the_file(tmp_path: Path) -> None:
    config = write(tmp_path, MINIMAL + '[daemon]\npoll_interval = "1m"\nlog_level = "info"\n')

    result = run_cli(
        "validate",
        "-c",
        str(config),
        cwd=tmp_path,
        env={"SYNCWATCH_DAEMON__POLL_INTERVAL": "5m", "SYNCWATCH_DAEMON__LOG_LEVEL": "debug"},
    )

    assert result.returncode == 0, result.stderr
    daemon = tomllib.loads(result.stdout)["daemon"]
    assert (daemon["poll_interval"], daemon["log_level"]) == ("5m", "debug")


def test_env_supplies_a_secret_the_file_lacks(tmp_path: Path) -> None:
    config = write(tmp_path, '[timbal]\n[[timbal.orgs]]\nid = "org_1"\n')

    result = run_cli(
        "validate", "-c", str(config), cwd=tmp_path, env={"SYNCWATCH_TIMBAL__API_KEY": TIMBAL_KEY}
    )

    assert result.returncode == 0, result.stderr
    assert tomllib.loads(result.stdout)["timbal"]["api_key"] == "**********"
    assert TIMBAL_KEY not in result.stdout + result.stderr


def test_syncwatch_config_env_locates_the_file(tmp_path: Path) -> None:
    config = write(tmp_path, MINIMAL + '[daemon]\npoll_interval = "2m"\n', "elsewhere.toml")

    result = run_cli("validate", cwd=tmp_path, env={"SYNCWATCH_CONFIG": str(config)})

    assert result.returncode == 0, result.stderr
    assert tomllib.loads(result.stdout)["daemon"]["poll_interval"] == "2m"


def test_c_flag_wins_over_syncwatch_config(tmp_path: Path) -> None:
    flagged = write(tmp_path, MINIMAL + '[daemon]\npoll_interval = "3m"\n', "flagged.toml")
    from_env = write(tmp_path, MINIMAL + '[daemon]\npoll_interval = "7m"\n', "env.toml")

    result = run_cli(
        "validate", "-c", str(flagged), cwd=tmp_path, env={"SYNCWATCH_CONFIG": str(from_env)}
    )

    assert result.returncode == 0, result.stderr
    assert tomllib.loads(result.stdout)["daemon"]["poll_interval"] == "3m"


def test_syncwatch_config_naming_a_missing_file_exits_78(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SYNCWATCH_CONFIG", str(tmp_path / "gone.toml"))

    code = main(["validate"])

    assert code == EX_CONFIG
    assert problem_lines(capsys.readouterr().err) == [
        f"SYNCWATCH_CONFIG: config file {tmp_path}/gone.toml does not exist"
    ]


def test_syncwatch_toml_in_working_directory_is_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, MINIMAL + '[daemon]\npoll_interval = "4m"\n', "syncwatch.toml")

    code = main(["validate"])

    assert code == 0
    assert tomllib.loads(capsys.readouterr().out)["daemon"]["poll_interval"] == "4m"


def test_relative_secret_file_is_read_from_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    write(creds, f"{TIMBAL_KEY}\n", "timbal")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))

    config = load_config(
        write(tmp_path, '[timbal]\napi_key_file = "timbal"\n[[timbal.orgs]]\nid = "org_1"\n')
    )

    assert config.timbal is not None
    assert config.timbal.api_key_file is not None
    assert config.timbal.api_key_file.path == creds / "timbal"
    assert config.timbal.api_key is not None
    assert config.timbal.api_key.get_secret_value() == TIMBAL_KEY


def test_absolute_secret_file_ignores_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "creds"))
    key = write(tmp_path, f"{TIMBAL_KEY}\n", "timbal-key")

    config = load_config(
        write(tmp_path, f'[timbal]\napi_key_file = "{key}"\n[[timbal.orgs]]\nid = "org_1"\n')
    )

    assert config.timbal is not None
    assert config.timbal.api_key is not None
    assert config.timbal.api_key.get_secret_value() == TIMBAL_KEY


def test_state_directory_applies_to_relative_state_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/syncwatch")

    daemon = DaemonConfig(state_path=Path("state.db"))

    assert daemon.resolved_state_path() == Path("/var/lib/syncwatch/state.db")


def test_state_directory_uses_the_first_of_several(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/syncwatch:/var/lib/other")

    assert DaemonConfig().resolved_state_path() == Path("/var/lib/syncwatch/syncwatch-state.db")


def test_state_directory_leaves_absolute_state_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/syncwatch")

    daemon = DaemonConfig(state_path=Path("/data/state.db"))

    assert daemon.resolved_state_path() == Path("/data/state.db")


def test_relative_state_path_without_state_directory_is_kept() -> None:
    assert DaemonConfig(state_path=Path("s.db")).resolved_state_path() == Path("s.db")


# --- secrets ----------------------------------------------------------------------------


def _config_with_every_secret(tmp_path: Path) -> Path:
    signing_key = write(tmp_path, rsa_pem(), "paragon.pem")
    write(tmp_path, f"{WEBHOOK_SECRET}\n", "hmac")
    return write(
        tmp_path,
        f"""
[timbal]
api_key = "{TIMBAL_KEY}"
[[timbal.orgs]]
id = "org_1"
[[timbal.orgs]]
id = "org_2"
api_key = "{ORG_KEY}"

[paragon]
project_id = "p"
signing_key_file = "{signing_key}"
users = [{{ id = "u1", token = "{PARAGON_TOKEN}" }}, {{ id = "u2" }}]

[[notifiers]]
name = "slack"
type = "slack"
webhook_url = "{SLACK_URL}"

[[notifiers]]
name = "hook"
type = "webhook"
url = "{WEBHOOK_URL}"
secret_file = "{tmp_path}/hmac"
""",
    )


SECRETS = (TIMBAL_KEY, ORG_KEY, PARAGON_TOKEN, SLACK_URL, WEBHOOK_URL, WEBHOOK_SECRET)


def test_validate_never_prints_a_secret(tmp_path: Path) -> None:
    result = run_cli("validate", "-c", str(_config_with_every_secret(tmp_path)), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    printed = result.stdout + result.stderr
    assert [s for s in SECRETS if s in printed] == []
    assert "PRIVATE KEY" not in printed
    assert "slack" in tomllib.loads(result.stdout)["notifiers"][0]["type"]


def test_secrets_of_lists_every_secret_value(tmp_path: Path) -> None:
    """The log scrubber masks exactly what secrets_of returns."""
    config = load_config(_config_with_every_secret(tmp_path))

    found = secrets_of(config)

    assert set(SECRETS) <= set(found)
    assert rsa_pem().strip() in found


def test_invalid_secret_url_is_reported_without_its_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = "not-a-url-s3cr3t-hook-XYZ"
    config = write(
        tmp_path, MINIMAL + f'[[notifiers]]\nname = "h"\ntype = "webhook"\nurl = "{bad}"\n'
    )

    code, out, err = validate(config, capsys)

    assert code == EX_CONFIG
    assert problem_lines(err) == [
        "notifiers[0].url: invalid URL: expected http(s)://host/... (value not shown)"
    ]
    assert bad not in out + err


def test_invalid_secret_url_from_file_is_reported_without_its_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = "ftp://s3cr3t-slack-ABC"
    write(tmp_path, bad + "\n", "slack-url")
    config = write(
        tmp_path,
        MINIMAL
        + f'[[notifiers]]\nname = "s"\ntype = "slack"\nwebhook_url_file = "{tmp_path}/slack-url"\n',
    )

    code, out, err = validate(config, capsys)

    assert code == EX_CONFIG
    assert problem_lines(err) == [
        "notifiers[0].webhook_url_file: invalid URL: expected http(s)://host/... (value not shown)"
    ]
    assert bad not in out + err


def test_invalid_signing_key_is_reported_without_its_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = "s3cr3t-not-a-pem-GHI"
    config = write(tmp_path, f'[paragon]\nproject_id = "p"\nsigning_key = "{bad}"\nusers = ["u"]\n')

    code, out, err = validate(config, capsys)

    assert code == EX_CONFIG
    assert problem_lines(err) == [
        "paragon.signing_key: signing_key is not an unencrypted PEM private key (value not shown)"
    ]
    assert bad not in out + err


def test_misspelt_secret_key_is_reported_without_its_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path, f'[timbal]\napi_kee = "{TIMBAL_KEY}"\n[[timbal.orgs]]\nid = "o"\n')

    code, out, err = validate(config, capsys)

    assert code == EX_CONFIG
    assert "timbal.api_kee: unknown key; did you mean 'api_key'?" in problem_lines(err)
    assert TIMBAL_KEY not in out + err


def test_secret_file_content_is_stripped(tmp_path: Path) -> None:
    key = write(tmp_path, f"\n  {TIMBAL_KEY}  \n\n", "key")

    config = load_config(
        write(tmp_path, f'[timbal]\napi_key_file = "{key}"\n[[timbal.orgs]]\nid = "o"\n')
    )

    assert config.timbal is not None
    assert config.timbal.api_key is not None
    assert config.timbal.api_key.get_secret_value() == TIMBAL_KEY


# --- durations --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("2d", 172800.0),
        ("1w", 604800.0),
        ("250ms", 0.25),
        ("1m30s", 90.0),
        ("1.5h", 5400.0),
        ("1.5", 1.5),
        (" 5m ", 300.0),
        ("0", 0.0),
        (60, 60.0),
        (0.5, 0.5),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["", "5M", "m", "5 minutes", "1h30", "h1", "5m-", "nan", "inf", True, None, [5]],
    ids=repr,
)
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["-5", "-5m", -1, -0.5])
def test_parse_duration_rejects_negative(text: str | float) -> None:
    with pytest.raises(ValueError, match="cannot be negative"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (1, "1s"),
        (60, "1m"),
        (90, "1m30s"),
        (3600, "1h"),
        (5400, "1h30m"),
        (86400, "1d"),
        (90061, "1d1h1m1s"),
        (0.25, "0.25s"),
        (1.5, "1.5s"),
        (1e-7, "0.0000001s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    "seconds", [0, 0.001, 0.25, 1, 59, 61, 90.5, 3599, 3600, 86399, 86401, 1e-7, 10**9]
)
def test_format_duration_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["1m30s", "5m", "1h30m", "2d"])
def test_canonical_duration_spelling_round_trips(text: str) -> None:
    assert format_duration(parse_duration(text)) == text


# --- threshold overrides ----------------------------------------------------------------


def _timbal(*overrides: dict[str, object]) -> TimbalConfig:
    return TimbalConfig.model_validate(
        {"api_key": "k", "orgs": [{"id": "org_1"}], "overrides": list(overrides)}
    )


def test_sync_matching_no_override_gets_default_thresholds() -> None:
    timbal = _timbal({"match": {"org_id": "org_9"}, "critical_ratio": 2.0})

    assert effective_thresholds(timbal)("org_1", "c", "s", "n") == timbal.thresholds


def test_first_matching_override_wins() -> None:
    resolve = effective_thresholds(
        _timbal(
            {"match": {"name": "billing-*"}, "critical_ratio": 2.0},
            {"match": {"name": "*"}, "critical_ratio": 5.0},
        )
    )

    billing = resolve("org_1", "c", "s", "billing-daily")
    other = resolve("org_1", "c", "s", "crm")

    assert billing is not None
    assert billing.critical_ratio == 2.0
    assert other is not None
    assert other.critical_ratio == 5.0


def test_override_keeps_unset_keys_from_defaults() -> None:
    thresholds = effective_thresholds(_timbal({"min_stale_seconds": "10m"}))("o", "c", "s", "n")

    assert thresholds is not None
    assert (thresholds.warn_ratio, thresholds.critical_ratio) == (1.5, 3.0)
    assert thresholds.min_stale_seconds == 600.0


@pytest.mark.parametrize("key", ["org_id", "connector_id", "sync_id", "name"])
def test_every_match_key_is_a_glob(key: str) -> None:
    resolve = effective_thresholds(_timbal({"match": {key: "ab[cd]-*"}, "critical_ratio": 2.0}))
    ids = {"org_id": "o", "connector_id": "c", "sync_id": "s", "name": "n"}

    def ratio_for(value: str) -> float | None:
        args = {**ids, key: value}
        t = resolve(args["org_id"], args["connector_id"], args["sync_id"], args["name"])
        return None if t is None else t.critical_ratio

    assert ratio_for("abd-1") == 2.0
    assert ratio_for("abe-1") == 3.0


def test_globs_are_case_sensitive() -> None:
    resolve = effective_thresholds(_timbal({"match": {"name": "Billing*"}, "ignore": True}))

    assert resolve("o", "c", "s", "Billing-1") is None
    assert resolve("o", "c", "s", "billing-1") is not None


def test_ignore_override_resolves_to_none() -> None:
    resolve = effective_thresholds(_timbal({"match": {"connector_id": "scratch"}, "ignore": True}))

    assert resolve("o", "scratch", "s", "n") is None
    assert resolve("o", "prod", "s", "n") is not None


def test_sync_with_null_name_matches_star_only() -> None:
    resolve = effective_thresholds(
        _timbal(
            {"match": {"name": "billing-*"}, "ignore": True},
            {"match": {"name": "*"}, "critical_ratio": 2.0},
        )
    )

    thresholds = resolve("o", "c", "s", None)

    assert thresholds is not None
    assert thresholds.critical_ratio == 2.0


# --- Paragon users_file -----------------------------------------------------------------


def _paragon(tmp_path: Path, users_file_text: str, users: list[str]) -> ParagonConfig:
    users_file = write(tmp_path, users_file_text, "users.txt")
    key = write(tmp_path, rsa_pem(), "paragon.pem")
    config = load_config(
        write(
            tmp_path,
            f'[paragon]\nproject_id = "p"\nsigning_key_file = "{key}"\n'
            f'users_file = "{users_file}"\nusers = {json.dumps(users)}\n',
        )
    )
    assert config.paragon is not None
    return config.paragon


def test_all_users_rereads_users_file_on_every_call(tmp_path: Path) -> None:
    paragon = _paragon(tmp_path, "u1\n", [])
    first = [u.id for u in paragon.all_users()]

    (tmp_path / "users.txt").write_text("u1\nu2\n", encoding="utf-8")

    assert first == ["u1"]
    assert [u.id for u in paragon.all_users()] == ["u1", "u2"]


def test_users_file_ignores_comments_and_blank_lines(tmp_path: Path) -> None:
    paragon = _paragon(tmp_path, "# fleet\n\nu1  # primary\n   \n  u2\n#u3\n", [])

    assert [u.id for u in paragon.all_users()] == ["u1", "u2"]


def test_users_file_ids_already_listed_are_not_duplicated(tmp_path: Path) -> None:
    paragon = _paragon(tmp_path, "u2\nu3\nu3\n", ["u1", "u2"])

    assert [u.id for u in paragon.all_users()] == ["u1", "u2", "u3"]
