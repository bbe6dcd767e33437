"""Scratch folders that the next run cleans up, however the last one ended.

Each process gets one folder per scratch root, ``{root}/h2a-scratch/{pid}-{uuid}/``, made on
first use, and holds an exclusive ``fcntl.flock`` on the ``.lock`` file inside it until it
exits. ``scratch_dir`` hands out fresh folders inside it; ``clean_stale_scratch`` removes every
process folder whose lock it can take. Why that is safe:

* The kernel drops a flock when the last descriptor of its open file description closes, which
  happens however the process ends (exit, exception, SIGKILL, OOM kill). A lock that can be
  taken therefore means its owner is gone.
* The lock belongs to the open file description, not to the process: a second ``open`` of the
  same file, even in the owning process, conflicts with it, so a process never removes its own
  folder. A forked child inherits the descriptor, and the lock with it: it reuses the parent's
  folder (names inside are unique), which lives while either of them does. A spawned or
  exec'd process gets a folder of its own (the descriptor is not inheritable).
* A process folder is made under a hidden staging name, locked, then renamed, so no cleaner
  ever sees a live one without its lock. Staging folders left by a crash in that instant are
  removed once they are older than a minute and unlocked.
* flock is advisory: it only orders processes that use this module.
* A process that exits normally removes its own folders (``atexit``); the cleaner is for the
  ones that did not.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["clean_stale_scratch", "scratch_dir"]

_FOLDER = "h2a-scratch"
_LOCK = ".lock"
_STAGING = ".new-"
_PROCESS_NAME = re.compile(r"^\d+-[0-9a-f]{32}$")
_STAGING_GRACE_S = 60.0

_guard = threading.Lock()
# Scratch base -> (this process's folder in it, the descriptor that holds its lock).
_held: dict[Path, tuple[Path, int]] = {}


def _reset_guard() -> None:
    # A fork while another thread held the guard would leave it locked forever in the child.
    global _guard
    _guard = threading.Lock()


os.register_at_fork(after_in_child=_reset_guard)


def _base(root: Path | None) -> Path:
    return (Path(root) if root is not None else Path(tempfile.gettempdir())).resolve() / _FOLDER


def _remove_own_folders() -> None:
    # A forked child shares its parent's folders: only their creator removes them.
    own = f"{os.getpid()}-"
    for folder, descriptor in list(_held.values()):
        if folder.name.startswith(own):
            shutil.rmtree(folder, ignore_errors=True)
            os.close(descriptor)


atexit.register(_remove_own_folders)


def _process_folder(root: Path | None) -> Path:
    """This process's locked folder under ``root``, made on first use."""
    base = _base(root)
    with _guard:
        held = _held.get(base)
        if held is not None and held[0].is_dir():
            return held[0]
        if held is not None:
            os.close(held[1])  # its root was deleted (a test's temporary store): start over
            del _held[base]
        base.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=_STAGING, dir=base))
        descriptor = os.open(staging / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            folder = base / f"{os.getpid()}-{uuid.uuid4().hex}"
            os.rename(staging, folder)
        except BaseException:
            os.close(descriptor)
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _held[base] = (folder, descriptor)
        return folder


@contextlib.contextmanager
def scratch_dir(prefix: str, root: Path | None = None) -> Iterator[Path]:
    """A fresh empty folder, removed on exit, or by the next run if this process dies.

    Args:
        prefix: start of the folder's name, for people reading the disk.
        root: where the scratch space lives (default: the system temporary folder); use a
            folder on the file system the results are renamed into.

    Returns:
        A context manager yielding the folder's path.
    """
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=_process_folder(root)))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _is_owned(folder: Path) -> bool:
    try:
        descriptor = os.open(folder / _LOCK, os.O_RDONLY)
    except FileNotFoundError:
        return False  # process folders are born locked: one without a lock file is debris
    except OSError:
        return True  # cannot tell: leave it
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True  # held (or locks unsupported here): leave it
    finally:
        os.close(descriptor)
    return False


def clean_stale_scratch(root: Path | None = None) -> int:
    """Remove the scratch folders of processes that are gone.

    Args:
        root: the scratch root given to ``scratch_dir`` (default: the system temporary folder).

    Returns:
        How many process folders were removed.
    """
    base = _base(root)
    try:
        entries = list(base.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return 0
    removed = 0
    for folder in entries:
        process = bool(_PROCESS_NAME.match(folder.name))
        staging = folder.name.startswith(_STAGING)
        if not (process or staging) or folder.is_symlink() or not folder.is_dir():
            continue
        if staging:
            with contextlib.suppress(OSError):
                if time.time() - folder.stat().st_mtime < _STAGING_GRACE_S:
                    continue  # may be a process between making and locking it
        if _is_owned(folder):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed += process
    return removed
