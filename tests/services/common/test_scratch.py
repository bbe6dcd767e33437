"""Scratch folders: fresh, removed on exit, and removed by the next run when a process is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.common.scratch import clean_stale_scratch, scratch_dir

REPO = Path(__file__).resolve().parents[3]
HOLD = """
import sys, time
from pathlib import Path
from services.common.scratch import scratch_dir
with scratch_dir("held-", Path(sys.argv[1])) as folder:
    (folder / "work.bin").write_bytes(b"x" * 1000)
    print(folder, flush=True)
    time.sleep(60)
"""


def _holder(root: Path) -> tuple[subprocess.Popen[str], Path]:
    """A process that made a scratch folder under ``root`` and sleeps; and that folder."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(root)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert process.stdout is not None
    return process, Path(process.stdout.readline().strip())


def test_scratch_dir_is_fresh_locked_and_removed_on_exit(tmp_path: Path):
    with scratch_dir("a-", tmp_path) as first, scratch_dir("b-", tmp_path) as second:
        assert first != second and first.is_dir() and not list(first.iterdir())
        assert first.name.startswith("a-") and second.name.startswith("b-")
        process_folder = first.parent
        assert process_folder.parent == (tmp_path / "h2a-scratch").resolve()
        assert process_folder.name.startswith(f"{os.getpid()}-")
        assert (process_folder / ".lock").is_file()
        (first / "data").write_bytes(b"x")
    assert not first.exists() and not second.exists()
    with pytest.raises(RuntimeError), scratch_dir("c-", tmp_path) as third:
        raise RuntimeError("boom")
    assert not third.exists()
    assert clean_stale_scratch(tmp_path) == 0  # our own folder is locked by us
    assert process_folder.is_dir()


def test_killed_process_scratch_is_removed_and_live_ones_kept(tmp_path: Path):
    killed, killed_folder = _holder(tmp_path)
    live, live_folder = _holder(tmp_path)
    try:
        assert (killed_folder / "work.bin").is_file() and (live_folder / "work.bin").is_file()
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(timeout=10)
        with scratch_dir("mine-", tmp_path) as mine:
            assert clean_stale_scratch(tmp_path) == 1
            assert not killed_folder.parent.exists()
            assert live_folder.is_dir() and mine.is_dir()
    finally:
        live.kill()
        live.wait(timeout=10)
    assert clean_stale_scratch(tmp_path) == 1
    assert not live_folder.parent.exists()


def test_debris_is_removed_and_young_staging_folders_kept(tmp_path: Path):
    base = tmp_path / "h2a-scratch"
    unlocked = base / f"123-{'a' * 32}"  # a process folder whose lock file was already removed
    (unlocked / "sub").mkdir(parents=True)
    old_staging = base / ".new-old"
    young_staging = base / ".new-young"
    for folder in (old_staging, young_staging):
        folder.mkdir()
        (folder / ".lock").touch()
    hour_ago = time.time() - 3600
    os.utime(old_staging, (hour_ago, hour_ago))
    foreign = base / "not-ours"
    foreign.mkdir()
    assert clean_stale_scratch(tmp_path) == 1  # staging folders are not counted
    assert not unlocked.exists() and not old_staging.exists()
    assert young_staging.is_dir() and foreign.is_dir()
    assert clean_stale_scratch(tmp_path / "missing") == 0
