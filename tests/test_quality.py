"""The code stays lint-, format- and type-clean: the same gates a reviewer would run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


def test_ruff_check_is_clean() -> None:
    result = _run(require_tool("ruff", "pip install ruff"), "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean() -> None:
    result = _run(require_tool("ruff", "pip install ruff"), "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean() -> None:
    """The package, the tests and the benchmarks: `files` in pyproject's [tool.mypy]."""
    require_tool("mypy", "pip install mypy")
    result = _run(sys.executable, "-m", "mypy", "--strict")
    assert result.returncode == 0, result.stdout + result.stderr
