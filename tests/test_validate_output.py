"""`syncwatch validate` prints TOML that parses and validates back to itself, whatever strings."""

from __future__ import annotations

import contextlib
import io
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from syncwatch.cli import main
from syncwatch.config import EX_CONFIG
from tests.test_config import run_cli

pytestmark = pytest.mark.usefixtures("clean_env")

REDACTED = "**********"
WEBHOOK_URL = "https://hooks.example.com/s3cr3t-hook"


# --- a TOML encoder of the test's own, so the input does not come from the writer under test


def toml_string(value: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's, plus DEL, which JSON leaves raw."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
        )
    raise TypeError(type(value).__name__)


def toml_document(doc: dict[str, Any]) -> str:
    """Top-level tables and arrays of tables, every value inline."""
    lines: list[str] = []
    for section, body in doc.items():
        tables = body if isinstance(body, list) else [body]
        for table in tables:
            lines.append(f"[[{section}]]" if isinstance(body, list) else f"[{section}]")
            lines.extend(f"{toml_string(k)} = {toml_value(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


def validate(config: Path) -> str:
    """`syncwatch validate -c CONFIG` in-process; its stdout, after asserting exit 0."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["validate", "-c", str(config)])
    assert code == 0, err.getvalue()
    return out.getvalue()


def unredact(printed: Any, given: Any) -> Any:
    """`printed` with each redacted secret put back from `given`, the same path in the input."""
    if printed == REDACTED:
        return given
    if isinstance(printed, dict):
        return {
            k: unredact(v, given.get(k) if isinstance(given, dict) else None)
            for k, v in printed.items()
        }
    if isinstance(printed, list):
        return [
            unredact(v, given[i] if isinstance(given, list) else None)
            for i, v in enumerate(printed)
        ]
    return printed


# --- the reported case --------------------------------------------------------------------


@pytest.mark.parametrize("char", ["\r", "\x01", "\x7f"], ids=["CR", "SOH", "DEL"])
def test_a_control_character_in_a_header_value_is_escaped(tmp_path: Path, char: str) -> None:
    value = f"a{char}b"
    config = tmp_path / "syncwatch.toml"
    config.write_text(
        toml_document(
            {
                "timbal": {"api_key": "k", "orgs": [{"id": "o"}]},
                "notifiers": [
                    {
                        "name": "hook",
                        "type": "webhook",
                        "url": WEBHOOK_URL,
                        "headers": {"X-A": value},
                    }
                ],
            }
        ),
        encoding="utf-8",
    )

    result = run_cli("validate", "-c", str(config), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert char not in result.stdout
    assert tomllib.loads(result.stdout)["notifiers"][0]["headers"] == {"X-A": value}


def test_invalid_config_still_exits_78(tmp_path: Path) -> None:
    config = tmp_path / "syncwatch.toml"
    config.write_text('[timbal]\napi_key = "k"\n[[timbal.orgs]]\nid = ""\n', encoding="utf-8")

    result = run_cli("validate", "-c", str(config), cwd=tmp_path)

    assert result.returncode == EX_CONFIG
    assert result.stdout == ""


# --- the property -------------------------------------------------------------------------

# Every character a TOML file can hold (no surrogates), weighted towards the awkward ones.
AWKWARD = st.sampled_from(
    [
        '"',
        "\\",
        "\n",
        "\r",
        "\t",
        "\x00",
        "\x01",
        "\x1f",
        "\x7f",
        "\x85",
        "\u2028",
        "é",
        "☃",
        "𝄞",
        "'",
        "=",
        "[",
        "]",
        ".",
        "#",
        " ",
    ]
)
CHARS = st.characters(exclude_categories=["Cs"])
TEXT = st.text(st.one_of(AWKWARD, CHARS), max_size=12)
NONEMPTY = st.text(st.one_of(AWKWARD, CHARS), min_size=1, max_size=12)
# A glob without an unclosed '[' (config rejects those), plus a few real classes.
GLOB = st.one_of(TEXT.map(lambda s: s.replace("[", "")), st.sampled_from(["[ab]*", "[!x]?", "[]]"]))
NAME = st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True)
RATIO = st.floats(min_value=5e-324, max_value=1e308, allow_nan=False, allow_infinity=False)


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    """An input document: timbal with orgs and overrides, paragon users, webhook notifiers."""
    warn, critical = sorted(draw(st.lists(RATIO, min_size=2, max_size=2, unique=True)))
    orgs = draw(st.lists(NONEMPTY, min_size=1, max_size=3, unique=True))
    users = draw(st.lists(NONEMPTY, max_size=3, unique=True))
    names = draw(st.lists(NAME, min_size=1, max_size=3, unique=True))
    match_keys = st.sampled_from(["org_id", "connector_id", "sync_id", "name"])
    doc: dict[str, Any] = {
        "timbal": {
            "api_key": draw(NONEMPTY),
            "orgs": [
                {"id": org, "connector_ids": draw(st.lists(TEXT, max_size=2))} for org in orgs
            ],
            "thresholds": {"warn_ratio": warn, "critical_ratio": critical},
            "overrides": [
                {"match": m, "ignore": draw(st.booleans())}
                for m in draw(st.lists(st.dictionaries(match_keys, GLOB, max_size=4), max_size=2))
            ],
        },
        "notifiers": [
            {
                "name": name,
                "type": "webhook",
                "url": WEBHOOK_URL,
                "secret": draw(NONEMPTY),
                "headers": draw(st.dictionaries(TEXT, TEXT, max_size=3)),
                "match": draw(st.dictionaries(TEXT, GLOB, max_size=2)),
            }
            for name in names
        ],
    }
    if users:
        doc["paragon"] = {
            "project_id": draw(TEXT),
            "users": [
                {"id": u, "token": draw(NONEMPTY), "credential_id": draw(TEXT)} for u in users
            ],
        }
    return doc


HEADERS_CASE: dict[str, Any] = {
    "timbal": {"api_key": "k", "orgs": [{"id": 'o"\\\n'}]},
    "notifiers": [
        {
            "name": "n",
            "type": "webhook",
            "url": WEBHOOK_URL,
            "secret": "s",
            "headers": {"\r": "\x01\x7f", "": "", 'k"=': "\\u0000"},
            "match": {"tenant": "\n[ab]*"},
        }
    ],
}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=configs())
@example(doc=HEADERS_CASE)
def test_validate_output_parses_and_validates_to_itself(
    tmp_path_factory: pytest.TempPathFactory, doc: dict[str, Any]
) -> None:
    """Parsed, the output holds every string given; fed back, secrets restored, it prints itself."""
    folder = tmp_path_factory.mktemp("validate")
    given_file = folder / "given.toml"
    given_file.write_text(toml_document(doc), encoding="utf-8")

    printed = validate(given_file)

    resolved = tomllib.loads(printed)
    for i, notifier in enumerate(doc["notifiers"]):
        assert resolved["notifiers"][i]["headers"] == notifier["headers"]
        assert resolved["notifiers"][i]["match"] == notifier["match"]
        assert resolved["notifiers"][i]["secret"] == REDACTED
    assert [o["id"] for o in resolved["timbal"]["orgs"]] == [o["id"] for o in doc["timbal"]["orgs"]]
    assert [o["match"] for o in resolved["timbal"].get("overrides", [])] == [
        {"org_id": "*", "connector_id": "*", "sync_id": "*", "name": "*", **o["match"]}
        for o in doc["timbal"].get("overrides", [])
    ]
    thresholds = doc["timbal"].get("thresholds", {})
    assert thresholds.items() <= resolved["timbal"]["thresholds"].items()
    if "paragon" in doc:
        assert resolved["paragon"]["project_id"] == doc["paragon"]["project_id"]

    again = folder / "again.toml"
    again.write_text(toml_document(unredact(resolved, doc)), encoding="utf-8")
    assert validate(again) == printed
