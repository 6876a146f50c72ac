"""docs/architecture.md's layer table, held by the code: imports run one way, kinds stay apart.

The table is read from the doc itself, so the doc and this test cannot drift: every module
of the package must be in exactly one row, and may import only its own row and the rows
below it (`import` and `from … import`, at any depth, type-only ones included).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "syncwatch"
DOC = ROOT / "docs" / "architecture.md"
MAX_LINES = 600

# Known exceptions, each an xfail(strict=True) that flips to a failure once it is fixed, so
# its line here goes then: {module: reason}. (demo's console import and the isinstance over
# TimbalSync in web/view.py and ConsoleNotifier in demo.py were such, until 09d4c91.)
IMPORT_EXCEPTIONS: dict[str, str] = {}
ISINSTANCE_EXCEPTIONS: dict[str, str] = {}
# The commands that wire sources and notifiers (issue 15); `demo` runs the daemon's wiring.
WIRING = {"syncwatch.cli", "syncwatch.daemon", "syncwatch.check"}
# Built into the wheel only (hatch_build.py writes it), so not in the tree.
GENERATED = {"syncwatch._commit": "core"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {
    _module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts
}


@dataclass(frozen=True)
class Layer:
    name: str
    rank: int  # higher imports lower
    entries: tuple[str, ...]  # as written in the doc: `cli`, `config/`, `notifiers/<kind>.py`


@cache
def layers() -> tuple[Layer, ...]:
    """The rows of the doc's table, top (commands) first."""
    text = DOC.read_text(encoding="utf-8")
    table = text.partition("| Layer | Modules | Imports |")[2].partition("\n\n")[0]
    rows = [line.split("|")[1:3] for line in table.strip().splitlines()[1:]]
    assert rows, "docs/architecture.md has no layer table"
    return tuple(
        Layer(
            name.strip(),
            len(rows) - i,
            tuple(re.findall(r"`([^`]+)`", re.sub(r"\([^)]*\)", "", modules))),
        )
        for i, (name, modules) in enumerate(rows)
    )


def _match(relative: str, entry: str) -> int:
    """How specifically `entry` names the file `relative` (under syncwatch/): 0 = not at all."""
    if entry.endswith("/"):
        return 1 if relative.startswith(entry) else 0
    if "<kind>" in entry:
        directory = entry.partition("<kind>")[0]
        rest = relative.removeprefix(directory)
        return 2 if relative.startswith(directory) and "/" not in rest else 0
    path = entry if entry.endswith(".py") else f"{entry}.py"
    return 3 if relative == path else 0


@cache
def layer_of(module: str) -> Layer:
    if module in GENERATED:
        return next(layer for layer in layers() if layer.name == GENERATED[module])
    relative = MODULES[module].relative_to(PACKAGE).as_posix()
    scored = [
        (score, layer)
        for layer in layers()
        for entry in layer.entries
        if (score := _match(relative, entry))
    ]
    assert scored, f"{relative} is in no row of docs/architecture.md's layer table"
    best = max(score for score, _ in scored)
    found = {layer for score, layer in scored if score == best}
    assert len(found) == 1, f"{relative} is in rows {sorted(f.name for f in found)}"
    return found.pop()


@cache
def _tree(module: str) -> ast.Module:
    return ast.parse(MODULES[module].read_text(encoding="utf-8"))


@cache
def imports_of(module: str) -> frozenset[str]:
    """The syncwatch modules `module` imports (a `from pkg import sub` counts as pkg.sub)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(_tree(module)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES or sub in GENERATED else base)
    return frozenset(m for m in found if m == "syncwatch" or m.startswith("syncwatch."))


def kind_of(module: str) -> str | None:
    """The kind package a module belongs to (`syncwatch.sources.timbal`, …), if any."""
    relative = MODULES[module].relative_to(PACKAGE).as_posix()
    kinds = next(layer for layer in layers() if layer.name == "kinds")
    for entry in kinds.entries:
        if entry.endswith("/") and relative.startswith(entry):
            return "syncwatch." + entry.rstrip("/").replace("/", ".")
        # notifiers/<kind>.py: the files named in the row besides it are not kinds
        if (
            "<kind>" in entry
            and _match(relative, entry) == 2
            and not any(_match(relative, other) == 3 for other in kinds.entries)
        ):
            return module
    return None


def _params(exceptions: dict[str, str]) -> list[object]:
    return [
        pytest.param(
            m,
            id=m,
            marks=[pytest.mark.xfail(strict=True, reason=exceptions[m])] if m in exceptions else [],
        )
        for m in MODULES
    ]


def test_the_table_names_every_module_once_and_the_doc_rows_in_order() -> None:
    assert [layer.name for layer in layers()] == [
        "commands",
        "registries",
        "kinds",
        "engine",
        "core",
        "simulator",
    ]
    for module in MODULES:
        layer_of(module)
    assert kind_of("syncwatch.notifiers.slack") == "syncwatch.notifiers.slack"
    assert kind_of("syncwatch.sources.timbal.rules") == "syncwatch.sources.timbal"
    assert kind_of("syncwatch.notifiers.base") is None


@pytest.mark.parametrize("module", _params({}))
def test_imports_run_down_the_layer_table(module: str) -> None:
    mine = layer_of(module)
    upward = sorted(
        f"{target} ({layer_of(target).name})"
        for target in imports_of(module)
        if layer_of(target).rank > mine.rank
    )
    assert upward == [], f"{module} ({mine.name}) imports a layer above it"


@pytest.mark.parametrize("module", _params(IMPORT_EXCEPTIONS))
def test_only_the_registries_and_the_wiring_commands_import_a_kind(module: str) -> None:
    """What the engine needs of a kind reaches it through the registries (SourceRules,
    Capabilities), and only the commands that wire sources and notifiers import them; inside
    the kinds row a kind builds on sources/base.py or notifiers/base.py, never on another."""
    mine = layer_of(module)
    if mine.name == "registries" or module in WIRING:
        return
    own = kind_of(module)
    reached = sorted(
        target
        for target in imports_of(module)
        if layer_of(target).name == "kinds"
        and (mine.name != "kinds" or kind_of(target) not in (None, own))
    )
    assert reached == [], f"{module} imports from the kinds row"


@pytest.mark.parametrize("module", _params({}))
def test_only_the_commands_import_the_simulator(module: str) -> None:
    if layer_of(module).name in ("commands", "simulator"):
        return
    assert not [m for m in imports_of(module) if layer_of(m).name == "simulator"]


@cache
def kind_types() -> dict[str, str]:
    """{class name: its kind package}: classes defined in a kind, and the per-kind records and
    config tables that live in the core (models.TimbalSync, config.sections.TimbalConfig)."""
    types: dict[str, str] = {}
    for module in MODULES:
        kind = kind_of(module)
        if kind is None:
            continue
        for node in ast.walk(_tree(module)):
            if isinstance(node, ast.ClassDef):
                types[node.name] = kind
    for source in ("timbal", "paragon"):
        title = source.title()
        for name in (f"{title}Sync", f"{title}Config"):
            types[name] = f"syncwatch.sources.{source}"
    return types


def _names(node: ast.expr) -> set[str]:
    """The class names in isinstance's second argument: X, mod.X, (X, Y), X | Y."""
    if isinstance(node, ast.Name):
        return {node.id}
    if isinstance(node, ast.Attribute):
        return {node.attr}
    if isinstance(node, ast.Tuple):
        return set().union(*(_names(e) for e in node.elts))
    if isinstance(node, ast.BinOp):
        return _names(node.left) | _names(node.right)
    return set()


@pytest.mark.parametrize("module", _params(ISINSTANCE_EXCEPTIONS))
def test_no_isinstance_over_a_kinds_types_outside_that_kind(module: str) -> None:
    types = kind_types()
    assert {"TimbalSync", "ParagonSync", "SlackNotifier", "SlackConfig"} <= set(types)
    own = kind_of(module)
    found = sorted(
        f"line {node.lineno}: {name}"
        for node in ast.walk(_tree(module))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("isinstance", "issubclass")
        and len(node.args) == 2
        for name in _names(node.args[1])
        if name in types and types[name] != own
    )
    assert found == [], f"{module} tests a kind's type; ask its SourceRules or Capabilities"


def test_no_file_of_the_package_is_over_600_lines() -> None:
    files = [p for p in PACKAGE.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    lengths = {p.relative_to(ROOT).as_posix(): len(p.read_bytes().splitlines()) for p in files}
    assert "syncwatch/daemon.py" in lengths
    assert {name: n for name, n in lengths.items() if n > MAX_LINES} == {}
