"""Every command's --help and the README's command table say the same thing."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from syncwatch.cli import EXIT_CODES, build_parser

ROOT = Path(__file__).resolve().parent.parent


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _readme_rows() -> dict[str, tuple[str, str]]:
    """command name → (usage cell, exit-codes cell) from the README's command table."""
    rows = {}
    text = (ROOT / "README.md").read_text()
    for line in text.splitlines():
        match = re.match(r"^\| `syncwatch ([a-z-]+)([^`]*)` \| .* \| (.*) \|$", line)
        if match:
            rows[match[1]] = (match[2], match[3])
    return rows


def _options(p: argparse.ArgumentParser) -> list[Sequence[str]]:
    """Each option's spellings (`["-c", "--config"]`), --help left out."""
    return [a.option_strings for a in p._actions if a.option_strings and a.dest != "help"]


COMMANDS = sorted(_subparsers())


def test_the_readme_table_lists_every_command() -> None:
    assert set(_readme_rows()) - {"--version"} == set(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_readme_usage_names_exactly_the_options_of_the_command(name: str) -> None:
    usage, _ = _readme_rows()[name]
    shown = set(re.findall(r"(?<![\w-])--?[a-z][a-z-]*", usage))
    options = _options(_subparsers()[name])
    missing = [spellings for spellings in options if not shown & set(spellings)]
    unknown = shown - {s for spellings in options for s in spellings}
    assert not missing, f"README lacks {missing}"
    assert not unknown, f"README names options {name} does not have: {unknown}"


@pytest.mark.parametrize("name", COMMANDS)
def test_readme_exit_codes_are_the_ones_help_prints(name: str) -> None:
    _, codes = _readme_rows()[name]
    assert codes.replace("\\|", "|") == EXIT_CODES[name]
    assert f"exit codes: {EXIT_CODES[name]}" in " ".join(_subparsers()[name].format_help().split())


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_with_a_default_shows_it(name: str) -> None:
    for action in _subparsers()[name]._actions:
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
            shown = " ".join(_subparsers()[name].format_help().split())
            assert f"(default: {action.default})" in shown, action.option_strings


def test_simulate_listen_is_validated_by_argparse() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "syncwatch", "simulate", "--listen", "nope"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "argument --listen: invalid address 'nope'" in result.stderr
