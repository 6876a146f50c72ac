"""Docs that are generated stay in step with the code."""

from __future__ import annotations

import ast
import base64
import functools
import importlib.util
import re
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import tomli_w

from syncwatch.config import ConfigError
from syncwatch.settings import Config, load_config
from syncwatch.simulator import rsa_keypair

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


# --- code blocks in the docs --------------------------------------------------------------

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^\s*```(\S*)\s*$")


def _code_blocks(path: Path) -> tuple[list[tuple[int, str, str]], list[str]]:
    """(line, language, text) of each fenced block, and the fences that are wrong.

    Every fence opens with a language, so a lost opening fence shows: the closing fence
    after it is read as an opener without one, and every pair after it shifts."""
    blocks: list[tuple[int, str, str]] = []
    problems: list[str] = []
    opened: tuple[int, str] | None = None
    body: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fence = FENCE.match(line)
        if fence is None:
            body.append(line)
        elif opened is None:
            if not fence[1]:
                problems.append(f"{path.name}:{number}: a code block without a language")
            opened, body = (number, fence[1]), []
        else:
            if fence[1]:
                problems.append(f"{path.name}:{number}: ```{fence[1]} inside the block above")
            blocks.append((*opened, "\n".join(body) + "\n"))
            opened = None
    if opened is not None:
        problems.append(f"{path.name}:{opened[0]}: a code block that never closes")
    return blocks, problems


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_code_block_in_the_docs_names_its_language_and_closes(path: Path) -> None:
    assert _code_blocks(path)[1] == []


# A sample for each kind of `*_file` the docs name: a block is validated with real files.
SECRET_SAMPLES = {
    "api_key_file": "sample-timbal-api-key",
    "token_file": "sample-paragon-token",
    "webhook_url_file": "https://hooks.example.com/services/sample",
    "url_file": "https://hooks.example.com/sample",
    "secret_file": "whsec_" + base64.b64encode(bytes(range(32))).decode(),
    "routing_key_file": "0123456789abcdef0123456789abcdef",
    "password_file": "sample-password",
    "users_file": "user-1\n",
}
# What a fragment (a [[notifiers]] table, a [[maintenance]] window) is merged into.
BASE = {"timbal": {"orgs": [{"id": "org_docs", "api_key": "sample-timbal-api-key"}]}}


def _merged(base: Any, block: Any) -> Any:
    """`block` over `base`: tables merge, arrays of tables are appended."""
    if isinstance(base, dict) and isinstance(block, dict):
        return {k: _merged(base[k], v) if k in base else v for k, v in block.items()} | {
            k: v for k, v in base.items() if k not in block
        }
    if isinstance(base, list) and isinstance(block, list):
        return base + block
    return block


def _with_files(node: Any, directory: Path, private_pem: bytes) -> Any:
    """Each `*_file` of the block pointed at a real file holding a sample of its secret."""
    if isinstance(node, list):
        return [_with_files(item, directory, private_pem) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.endswith("_file") and isinstance(value, str):
            path = directory / f"{len(list(directory.iterdir()))}-{Path(value).name}"
            if key == "signing_key_file":
                path.write_bytes(private_pem)
            else:
                assert key in SECRET_SAMPLES, f"add a sample for {key} to SECRET_SAMPLES"
                path.write_text(SECRET_SAMPLES[key], encoding="utf-8")
            out[key] = str(path)
        else:
            out[key] = _with_files(value, directory, private_pem)
    return out


@functools.cache
def _private_pem() -> bytes:
    return rsa_keypair()[0]


TOML_BLOCKS = [
    pytest.param(path, line, text, id=f"{path.name}:{line}")
    for path in DOCS
    for line, language, text in _code_blocks(path)[0]
    if language == "toml"
]


@pytest.mark.parametrize(("path", "line", "text"), TOML_BLOCKS)
def test_every_toml_block_in_the_docs_is_a_valid_config_or_fragment(
    path: Path, line: int, text: str, tmp_path: Path, clean_env: None
) -> None:
    """Parsed by tomllib, then loaded as syncwatch loads a config: a whole config as it is,
    a fragment ([[notifiers]], [[maintenance]], a section) merged into a minimal one."""
    try:
        block = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        pytest.fail(f"{path.name}:{line}: invalid TOML: {exc}")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    whole = _with_files(_merged(BASE, block), secrets, _private_pem())
    config = tmp_path / "docs.toml"
    config.write_text(tomli_w.dumps(whole), encoding="utf-8")
    try:
        load_config(config)
    except ConfigError as exc:
        pytest.fail(f"{path.name}:{line}: not a valid config: {'; '.join(exc.problems)}")
