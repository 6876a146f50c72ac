"""A WAL whose last commits SQLite cannot verify: detected at start, named, a copy kept.

SQLite's recovery silently drops every frame from the first bad checksum on. The WALs here
are real: a StateStore writer is SIGKILLed (`fixtures/wal_writer.py`), then bytes are
flipped. The cases that are NOT a loss (a clean crash, an uncommitted transaction, frames
of an older WAL generation) must stay silent.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from syncwatch import wal
from syncwatch.state import StateStore
from tests.conftest import Keys, SimProcess, launch, wait_until

WRITER = Path(__file__).parent / "fixtures" / "wal_writer.py"


def crash_after(db: Path, scenario: str = "committed", count: int = 3) -> None:
    """Run the writer until it has written, then SIGKILL it: no checkpoint, no clean close."""
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(db), scenario, str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"  # EOF (a crashed writer) fails here
    proc.kill()
    proc.wait(10)


def frames_of(db: Path) -> wal.WalFrames:
    path = Path(f"{db}-wal")
    with path.open("rb") as file:
        frames = wal.scan(file, path.stat().st_size)
    assert frames is not None
    return frames


def flip_page_byte(db: Path, frame: int) -> None:
    """Damage the page data of one frame (1-based): its checksum, and all after it, fail."""
    frames = frames_of(db)
    offset = wal.HEADER_SIZE + (frame - 1) * (wal.FRAME_HEADER_SIZE + frames.page_size)
    with Path(f"{db}-wal").open("r+b") as file:
        file.seek(offset + wal.FRAME_HEADER_SIZE + frames.page_size // 2)
        byte = file.read(1)
        file.seek(-1, 1)
        file.write(bytes([byte[0] ^ 0xFF]))


def tenants_sqlite_sees(db: Path, scratch: Path) -> set[str]:
    """What plain SQLite recovers, on a copy (its close would checkpoint the WAL away)."""
    scratch.mkdir()
    for suffix in ("", "-wal"):
        shutil.copyfile(f"{db}{suffix}", scratch / f"copy.db{suffix}")
    conn = sqlite3.connect(scratch / "copy.db")
    try:
        return {row[0] for row in conn.execute("SELECT tenant FROM tenants")}
    finally:
        conn.close()


def opened(db: Path) -> tuple[StateStore, set[str]]:
    store = StateStore(db)
    return store, {tenant for _, tenant in store.load()[1]}


def test_a_clean_crash_keeps_every_commit_and_reports_nothing(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    crash_after(db)
    assert frames_of(db).header_ok
    store, tenants = opened(db)
    try:
        assert store.wal_loss is None
        assert tenants == {"org_1", "org_2", "org_3"}
    finally:
        store.close()


def test_a_bad_checksum_in_the_last_frame_is_reported_with_a_copy(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    crash_after(db)
    frames = frames_of(db)
    flip_page_byte(db, frames.frames)
    corrupted = Path(f"{db}-wal").read_bytes()
    # What this guards against: SQLite drops the last commit without a word.
    assert tenants_sqlite_sees(db, tmp_path / "plain") == {"org_1", "org_2"}

    store, tenants = opened(db)
    try:
        loss = store.wal_loss
        assert loss is not None
        assert tenants == {"org_1", "org_2"}
        assert loss.lost_commits == 1
        assert (loss.frames, loss.recovered) == (frames.frames, frames.frames - 1)
        assert loss.wal == Path(f"{db}-wal")
        assert loss.copy is not None
        assert loss.copy.name.startswith("state.db-wal.corrupt-")
        assert loss.copy.read_bytes() == corrupted  # the evidence, before any write
    finally:
        store.close()


def test_a_bad_checksum_in_an_earlier_frame_loses_every_later_commit(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    crash_after(db, count=5)
    frames = frames_of(db)
    second_to_last_commit = frames.commits[-3]
    flip_page_byte(db, second_to_last_commit)
    store, tenants = opened(db)
    try:
        assert store.wal_loss is not None
        assert store.wal_loss.lost_commits == 3
        assert tenants == {"org_1", "org_2"}
    finally:
        store.close()


def test_a_bad_wal_header_loses_every_commit_and_is_reported(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    crash_after(db)
    commits = len(frames_of(db).commits)  # the schema's migration is a commit too
    with Path(f"{db}-wal").open("r+b") as file:
        file.seek(24)  # the header's checksum
        file.write(b"\x00\x00\x00\x00")
    store, _ = opened(db)
    try:
        assert store.wal_loss is not None
        assert not store.wal_loss.header_ok
        assert store.wal_loss.recovered == 0
        assert store.wal_loss.lost_commits == commits
    finally:
        store.close()


def test_a_torn_last_frame_is_reported(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    crash_after(db)
    path = Path(f"{db}-wal")
    with path.open("r+b") as file:
        file.truncate(path.stat().st_size - 100)
    store, tenants = opened(db)
    try:
        assert store.wal_loss is not None
        assert store.wal_loss.lost_commits == 1
        assert tenants == {"org_1", "org_2"}
    finally:
        store.close()


def test_an_uncommitted_transaction_in_the_wal_is_not_a_loss(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    crash_after(db, "uncommitted")
    frames = frames_of(db)
    store, tenants = opened(db)
    try:
        assert store.wal_loss is None
        assert tenants == {"org_1", "org_2", "org_3"}
        # The case is real: frames of this generation lie beyond the last commit.
        assert frames.frames > frames.commits[-1] + 10
    finally:
        store.close()


def test_frames_of_an_older_wal_generation_are_not_a_loss(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    crash_after(db, "restarted", count=30)
    frames = frames_of(db)
    store, tenants = opened(db)
    try:
        assert store.wal_loss is None
        assert "org_31" in tenants
        # The case is real: the restarted WAL is far shorter than the file.
        assert frames.frames > 2 * frames.commits[-1]
    finally:
        store.close()


def test_syncwatch_run_reports_a_corrupt_wal_once_and_starts(
    tmp_path: Path, sim: SimProcess, rsa_keys: Keys
) -> None:
    db = tmp_path / "state.db"  # where launch() points state_path
    crash_after(db)
    flip_page_byte(db, frames_of(db).frames)
    corrupted = Path(f"{db}-wal").read_bytes()
    daemon = launch(tmp_path, sim, rsa_keys)
    try:
        daemon.wait_cycles(1)  # it runs on, and writes over the WAL
        lines = [json.loads(line) for line in daemon.proc.output.splitlines()]
        reports = [line for line in lines if line["event"] == "state_wal_corrupt"]
        assert len(reports) == 1, reports
        report = reports[0]
        assert report["level"] == "error"
        assert report["state_path"] == str(db)
        assert report["wal"] == f"{db}-wal"
        assert report["commits_lost"] == 1
        assert Path(report["copy"]).read_bytes() == corrupted
        wait_until(lambda: daemon.get("/readyz").status_code == 200)
    finally:
        assert daemon.proc.stop() == 0
