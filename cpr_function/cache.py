"""Atomic, once-only creation of cache entries shared by threads and processes."""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

_guard = threading.Lock()
_thread_locks: dict[Path, threading.Lock] = {}


def materialize(final: Path, build: Callable[[Path], None]) -> bool:
    """Makes `final` exist, built by `build` at most once across threads and processes.

    `build` writes a file or a directory at the temporary path it is given; that
    path is renamed to `final` only once `build` returns, so a crash or an error
    never leaves a partial entry where a reader would take it.

    Returns:
        True when this call built the entry, False when it was already there.
    """
    if final.exists():
        return False
    with _guard:
        thread_lock = _thread_locks.setdefault(final, threading.Lock())
    with thread_lock:
        if final.exists():
            return False
        final.parent.mkdir(parents=True, exist_ok=True)
        from filelock import FileLock

        locks = final.parent / ".locks"
        locks.mkdir(exist_ok=True)
        with FileLock(str(locks / final.name)):
            if final.exists():
                return False
            _remove_leftovers(final)
            partial = final.parent / f".{final.name}.partial-{os.getpid()}-{uuid.uuid4().hex}"
            try:
                build(partial)
                os.replace(partial, final)
            finally:
                _remove(partial)
            return True


def _remove_leftovers(final: Path) -> None:
    # Holding the file lock, any partial entry for `final` belongs to a dead writer.
    for stale in final.parent.glob(f".{final.name}.partial-*"):
        _remove(stale)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)
