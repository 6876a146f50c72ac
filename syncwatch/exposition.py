"""The Prometheus text format, written directly: a family's header and its sample lines.

Both the daemon's own families (metrics.py) and each source's per-sync families build on
these; what they write is byte for byte what prometheus_client's encoders write
(tests/test_exposition.py compares them): labels sorted by name, values as Go floats.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.utils import floatToGoString


@dataclass(frozen=True, slots=True)
class Family:
    """One family's samples, already rendered: the same lines in both exposition formats."""

    name: str  # the OpenMetrics name (an info family without its `_info` suffix)
    documentation: str
    type: str  # "gauge" or "info"
    lines: bytes

    def header(self, openmetrics: bool) -> str:
        doc = self.documentation.replace("\\", r"\\").replace("\n", r"\n")
        if openmetrics:
            doc = doc.replace('"', r"\"")
            return f"# HELP {self.name} {doc}\n# TYPE {self.name} {self.type}\n"
        name = f"{self.name}_info" if self.type == "info" else self.name
        return f"# HELP {name} {doc}\n# TYPE {name} gauge\n"


def lines(lines: Iterable[str]) -> bytes:
    return "".join(lines).encode()


def escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


def value(value: float) -> str:
    if value == 1:
        return "1.0"
    if value == 0 and math.copysign(1.0, value) > 0:  # -0.0 is written "-0.0", as Go does
        return "0.0"
    text: str = floatToGoString(value)  # type: ignore[no-untyped-call]  # untyped upstream
    return text
