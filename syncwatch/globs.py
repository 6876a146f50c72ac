"""The one glob rule of every `match` table (notifier routing, overrides, maintenance)."""

from __future__ import annotations

import fnmatch


def glob_match(value: str, pattern: str) -> bool:
    """Case-sensitive shell-style glob match."""
    return fnmatch.fnmatchcase(value, pattern)
