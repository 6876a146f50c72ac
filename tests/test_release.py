"""What ships: the sdist and wheel build, and the wheel works alone, outside the checkout."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement

from tests.conftest import require_tool, wait_until

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
# The command written at the top of requirements.lock; the test re-runs it.
LOCK_ARGS = ["--generate-hashes", "--python-version", "3.11", "--universal"]
LOCK_COMMAND = "uv pip compile pyproject.toml " + " ".join(LOCK_ARGS) + " -o requirements.lock"
# The build backend, locked and hashed as well (the Dockerfile builds with it, unisolated):
# [build-system] requires of pyproject.toml on stdin.
BUILD_LOCK = ROOT / "requirements-build.lock"
BUILD_LOCK_COMMAND = "uv pip compile - " + " ".join(LOCK_ARGS) + " -o requirements-build.lock"


@dataclass(frozen=True)
class Built:
    wheel: Path
    sdist: Path
    venv: Path

    def syncwatch(self, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SYNCWATCH_CONFIG")}
        return subprocess.run(
            [str(self.venv / "bin" / "syncwatch"), *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def _run(*cmd: str, cwd: Path, timeout: float = 600, stdin: str | None = None) -> str:
    done = subprocess.run(
        cmd, cwd=cwd, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{' '.join(cmd)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """`python -m build`, then the wheel alone in a fresh venv far from the checkout."""
    out = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "build", "--outdir", str(out), str(ROOT), cwd=out)
    (wheel,) = out.glob("syncwatch-*.whl")
    (sdist,) = out.glob("syncwatch-*.tar.gz")
    venv = tmp_path_factory.mktemp("venv") / "v"
    _run(sys.executable, "-m", "venv", str(venv), cwd=out)
    # The locked versions, hash-checked, as the container installs them; then the wheel.
    pip = str(venv / "bin" / "pip")
    _run(pip, "install", "--quiet", "--require-hashes", "--no-deps", "-r", str(LOCK), cwd=out)
    _run(pip, "install", "--quiet", "--no-deps", str(wheel), cwd=out)
    _run(pip, "check", cwd=out)
    return Built(wheel, sdist, venv)


def test_the_wheel_holds_the_package_and_its_license_and_nothing_else(built: Built) -> None:
    names = zipfile.ZipFile(built.wheel).namelist()
    assert "syncwatch/cli.py" in names
    # The status page's templates are package data: a wheel without them serves 500s.
    assert {
        "syncwatch/web/templates/overview.html",
        "syncwatch/web/templates/tenant.html",
        "syncwatch/web/static/refresh.js",
    } <= set(names)
    assert any(n.endswith("dist-info/licenses/LICENSE") for n in names)
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/"))]
    metadata = zipfile.ZipFile(built.wheel).read(
        next(n for n in names if n.endswith("dist-info/METADATA"))
    )
    assert b"License-Expression: Apache-2.0" in metadata
    assert b"Author: The syncwatch authors" in metadata


def test_the_sdist_carries_what_a_rebuild_and_the_tests_need(built: Built) -> None:
    with tarfile.open(built.sdist) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    for needed in (
        "LICENSE",
        "CHANGELOG.md",
        "requirements.lock",
        "requirements-build.lock",
        "hatch_build.py",
    ):
        assert needed in names
    assert "syncwatch/_commit.py" in names
    assert "tests/conftest.py" in names


def test_the_installed_version_names_the_commit_it_was_built_from(
    built: Built, tmp_path: Path
) -> None:
    head = _run("git", "rev-parse", "--short=12", "HEAD", cwd=ROOT).strip()
    shown = built.syncwatch("--version", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert re.fullmatch(rf"syncwatch \d+\.\d+\.\d+\S* \(commit {head}(\+dirty)?\)\n", shown.stdout)


def test_the_installed_wheel_validates_the_example_config(built: Built, tmp_path: Path) -> None:
    result = built.syncwatch("validate", "-c", str(ROOT / "config.example.toml"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "[daemon]" in result.stdout


def test_the_installed_wheels_demo_serves_the_status_page(built: Built, tmp_path: Path) -> None:
    """Templates are package data: a wheel without them would serve no page."""
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        demo = subprocess.Popen(
            [str(built.venv / "bin" / "syncwatch"), "demo", "--duration", "60s"],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        found = wait_until(
            lambda: re.search(r"status page: (http://127\.0\.0\.1:\d+/)", log.read_text()),
            timeout=30,
        )

        def overview() -> httpx.Response | None:
            answer = httpx.get(found[1], headers={"Accept": "text/html"}, timeout=5)
            return answer if answer.status_code == 200 else None

        page: httpx.Response = wait_until(overview, timeout=30)
        assert page.headers["content-type"].startswith("text/html")
        assert "<h1>Overview</h1>" in page.text
    finally:
        demo.terminate()
        assert demo.wait(15) == 0, log.read_text()


def test_the_installed_wheel_runs_the_demo(built: Built, tmp_path: Path) -> None:
    result = built.syncwatch("demo", "--duration", "5s", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FIRING" in result.stdout
    assert "Traceback" not in result.stderr


def test_the_lock_pins_every_runtime_dependency_within_its_range() -> None:
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", LOCK.read_text(), flags=re.M))
    pins = {_normal(name): version for name, version in pins.items()}
    pyproject = (ROOT / "pyproject.toml").read_text()
    block = pyproject.split("dependencies = [", 1)[1].split("]", 1)[0]
    for line in re.findall(r'"([^"]+)"', block):
        requirement = Requirement(line)
        version = pins.get(_normal(requirement.name))
        assert version is not None, f"{requirement.name} is not in requirements.lock"
        assert requirement.specifier.contains(version), f"{requirement} vs {version}"
    entries = re.split(r"^(?=[A-Za-z0-9])", LOCK.read_text(), flags=re.M)[1:]
    assert len(entries) == len(pins)
    assert all("--hash=sha256:" in entry for entry in entries)


def test_the_lock_is_current(tmp_path: Path) -> None:
    """Re-resolving from pyproject.toml, keeping the locked pins, reproduces the lock."""
    uv = require_tool("uv", "pip install uv")
    assert f"#    {LOCK_COMMAND}\n" in LOCK.read_text()
    fresh = tmp_path / "requirements.lock"
    fresh.write_text(LOCK.read_text())
    _run(
        uv,
        "pip",
        "compile",
        str(ROOT / "pyproject.toml"),
        *LOCK_ARGS,
        "--quiet",
        "--custom-compile-command",
        LOCK_COMMAND,
        "-o",
        str(fresh),
        cwd=ROOT,
        timeout=300,
    )
    assert fresh.read_text() == LOCK.read_text(), f"stale lock: run `{LOCK_COMMAND}`"


def _build_requires() -> list[str]:
    requires: list[str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"][
        "requires"
    ]
    return requires


def test_the_build_lock_pins_the_build_backend_within_its_range_with_hashes() -> None:
    text = BUILD_LOCK.read_text()
    pins = {_normal(n): v for n, v in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", text, flags=re.M)}
    requires = _build_requires()
    assert [Requirement(r).name for r in requires] == ["hatchling"]
    for line in requires:
        requirement = Requirement(line)
        version = pins.get(_normal(requirement.name))
        assert version is not None, f"{requirement.name} is not in requirements-build.lock"
        assert requirement.specifier.contains(version), f"{requirement} vs {version}"
    entries = re.split(r"^(?=[A-Za-z0-9])", text, flags=re.M)[1:]
    assert len(entries) == len(pins) > 1  # the backend and what it needs, all pinned
    assert all("--hash=sha256:" in entry for entry in entries)


def test_the_build_lock_is_current(tmp_path: Path) -> None:
    """Re-resolving [build-system] requires, keeping the locked pins, reproduces the lock."""
    uv = require_tool("uv", "pip install uv")
    assert f"#    {BUILD_LOCK_COMMAND}\n" in BUILD_LOCK.read_text()
    fresh = tmp_path / "requirements-build.lock"
    fresh.write_text(BUILD_LOCK.read_text())
    _run(
        uv,
        "pip",
        "compile",
        "-",
        *LOCK_ARGS,
        "--quiet",
        "--custom-compile-command",
        BUILD_LOCK_COMMAND,
        "-o",
        str(fresh),
        cwd=ROOT,
        timeout=300,
        stdin="\n".join(_build_requires()) + "\n",
    )
    regenerate = (
        "python3 -c \"import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))"
        f"['build-system']['requires'], sep=chr(10))\" | {BUILD_LOCK_COMMAND}"
    )
    assert fresh.read_text() == BUILD_LOCK.read_text(), f"stale build lock: run `{regenerate}`"


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
