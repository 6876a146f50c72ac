"""Probe: `syncwatch run` on each broken state file or listen address; exit code, stderr lines.

    python -m benchmarks.startup_failures

Builds each case the way tests/test_startup.py does (run as root: setpriv, unshare) and
prints one row per case; a daemon still running after 8 s is reported as such. The
before/after figures in docs/reliability.md come from it.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from tests import test_startup as t

Case = Callable[[Path], tuple[Path, tuple[str, ...]]]


def _corrupt(make: Callable[[Path], None]) -> Case:
    def build(tmp: Path) -> tuple[Path, tuple[str, ...]]:
        make(tmp / "state.db")
        return t.write_config(tmp, tmp / "state.db"), ()

    return build


def _moded(mode: int) -> Case:
    def build(tmp: Path) -> tuple[Path, tuple[str, ...]]:
        db = t.real_db(tmp / "state.db")
        db.chmod(mode)
        return t.write_config(tmp, db), t.NO_DAC

    return build


def _read_only_directory(tmp: Path) -> tuple[Path, tuple[str, ...]]:
    (tmp / "s").mkdir()
    db = t.real_db(tmp / "s" / "state.db")
    (tmp / "s").chmod(0o555)
    return t.write_config(tmp, db), t.NO_DAC


def _read_only_fs(tmp: Path) -> tuple[Path, tuple[str, ...]]:
    d = tmp / "s"
    d.mkdir()
    db = t.real_db(d / "state.db")
    remount = f"mount --bind {d} {d} && mount -o remount,ro,bind {d}"
    return t.write_config(tmp, db), ("unshare", "-m", "sh", "-c", f'{remount} && exec "$@"', "sh")


def _full(existing: bool) -> Case:
    def build(tmp: Path) -> tuple[Path, tuple[str, ...]]:
        source = t.real_db(tmp / "state.db", tenants=200) if existing else None
        (tmp / "full").mkdir()
        return t.write_config(tmp, tmp / "full" / "state.db"), t._on_full_tmpfs(
            tmp / "full", source
        )

    return build


def _directory(tmp: Path) -> tuple[Path, tuple[str, ...]]:
    (tmp / "state.db").mkdir()
    return t.write_config(tmp, tmp / "state.db"), ()


def _listen(listen: str) -> Case:
    return lambda tmp: (t.write_config(tmp, tmp / "state.db", listen), ())


def main() -> int:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    cases: dict[str, Case] = {c.id: _corrupt(c.make) for c in t.CORRUPT}
    cases |= {
        "unreadable (0000)": _moded(0),
        "read-only file (0444)": _moded(0o444),
        "read-only directory": _read_only_directory,
        "read-only file system": _read_only_fs,
        "full disk, existing db": _full(existing=True),
        "full disk, new db": _full(existing=False),
        "state_path is a directory": _directory,
        "listen port taken": _listen(f"127.0.0.1:{holder.getsockname()[1]}"),
        "listen address not on host": _listen("192.0.2.1:9875"),
    }
    for name, build in cases.items():
        with tempfile.TemporaryDirectory() as tmp:
            config, wrapper = build(Path(tmp))
            command = [*wrapper, sys.executable, "-m", "syncwatch", "run", "-c", str(config)]
            try:
                result = subprocess.run(
                    command, capture_output=True, text=True, timeout=8, check=False
                )
            except subprocess.TimeoutExpired as exc:
                lines = (exc.stderr or b"").decode(errors="replace").splitlines()
                failed = sum('"cycle_failed"' in line for line in lines)
                print(f"{name:28} still running after 8 s; {failed} cycle_failed lines")
                continue
            lines = result.stderr.splitlines()
            last = lines[-1][:110] if lines else ""
            print(f"{name:28} exit {result.returncode:3} {len(lines):3} stderr lines | {last}")
    holder.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
