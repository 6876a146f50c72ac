"""Build hook: record the git commit a wheel or sdist was built from (`syncwatch --version`)."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

TARGET = "syncwatch/_commit.py"


def git_commit(root: str) -> str | None:
    """The checkout's commit, `+dirty` when it has changes; None outside a git checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],  # noqa: S607 - git from PATH
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],  # noqa: S607
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+dirty" if dirty else commit


class CommitHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if version == "editable":
            return  # an editable install asks git at run time instead
        commit = git_commit(self.root)
        if commit is None:
            return  # built from an sdist: its syncwatch/_commit.py is already in the tree
        out = Path(tempfile.mkdtemp(prefix="syncwatch-build-")) / "_commit.py"
        out.write_text(f'"""Written by hatch_build.py."""\n\nCOMMIT = "{commit}"\n')
        build_data["force_include"][str(out)] = TARGET
