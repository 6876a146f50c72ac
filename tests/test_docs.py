"""Docs that are generated stay in step with the code."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path
from types import ModuleType

from syncwatch.settings import Config

ROOT = Path(__file__).resolve().parent.parent


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "config_reference", ROOT / "docs" / "config_reference.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_reference_is_up_to_date() -> None:
    """Regenerate with `python docs/config_reference.py`."""
    assert (ROOT / "docs" / "configuration.md").read_text() == _generator().render()


def test_configuration_reference_names_every_top_level_key() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    for section in Config.model_fields:
        assert re.search(rf"`{section}[.\[`]", text), section


def test_alerts_reference_covers_every_alertname() -> None:
    from syncwatch.models import AlertName

    text = (ROOT / "docs" / "alerts.md").read_text()
    for name in AlertName:
        assert f"## `{name.value}`" in text, name


def test_metrics_reference_covers_every_metric_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    text = (ROOT / "docs" / "metrics.md").read_text()
    for name in set(re.findall(r"`(syncwatch_[a-z_]+)`", readme)):
        assert name in text, name


def test_the_delivery_guarantee_is_stated_as_at_least_once_with_a_stable_id() -> None:
    """Issue 13 item 13: a kill -9 between the 2xx and the ack's commit re-sends; say so."""
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "at-least-once with a stable id" in readme
    assert "X-Syncwatch-Delivery-Id" in readme
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = " ".join(doc.read_text().split()).lower()
        for promise in ("exactly-once delivery", "exactly once delivery", "never delivered twice"):
            assert promise not in text, (doc.name, promise)


def test_the_fault_matrix_has_one_row_per_issue_13_item_naming_real_tests() -> None:
    """docs/reliability.md: items 1-18 once each, and every test a row names exists."""
    text = (ROOT / "docs" / "reliability.md").read_text()
    section = text.split("## Issue 13: one row per item", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if re.match(r"\| \d+ \|", line)]
    assert [int(row.split("|")[1]) for row in rows] == list(range(1, 19))
    for row in rows:
        named = re.findall(r"`(test_\w+\.py)::(test_\w+)", row)
        assert named, row[:60]
        for module, test in named:
            source = (ROOT / "tests" / module).read_text()
            assert re.search(rf"^(async )?def {test}\(", source, re.M), f"{module}::{test}"


def _apt_tools() -> dict[str, str]:
    """{tool: Debian package} for every `require_tool("tool", "apt-get install pkg")` call."""
    tools: dict[str, str] = {}
    for path in sorted((ROOT / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "require_tool"
                and len(node.args) == 2
                and all(isinstance(a, ast.Constant) for a in node.args)
            ):
                tool, install = (str(a.value) for a in node.args if isinstance(a, ast.Constant))
                if install.startswith("apt-get install "):
                    tools[tool] = install.removeprefix("apt-get install ")
    return tools


def test_every_debian_tool_the_tests_require_is_installed_by_ci_and_named_in_the_readme() -> None:
    tools = _apt_tools()
    assert {"prometheus", "amtool", "chromium", "curl"} <= set(tools)  # the scan finds them
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (apt_line,) = re.findall(r"^apt-get install (.+)$", readme, re.MULTILINE)
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for tool, package in sorted(tools.items()):
        assert package in apt_line.split(), f"README's apt-get line lacks {package} ({tool})"
        assert re.search(rf"command -v \S+ >/dev/null \|\| need\+=\({re.escape(package)}\)", ci), (
            f".ci/run does not install {package} ({tool})"
        )
