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
            _remove_orphans(final)
            partial = final.parent / f".{final.name}.partial-{os.getpid()}-{uuid.uuid4().hex}"
            try:
                build(partial)
                os.replace(partial, final)
            finally:
                _remove(partial)
            return True


def _remove_orphans(final: Path) -> None:
    """Removes the partial entries that writers killed mid-build left next to `final`.

    A partial entry exists only while its writer holds the entry's file lock, so
    one whose lock is free has no writer left. Those of `final` are orphans (the
    caller holds its lock); those of other entries are removed when their lock can
    be taken at once, so a generation that is never asked for again, or a model
    that was replaced, does not keep its partial download in /tmp (memory, on
    Cloud Functions) for the instance's whole life.
    """
    from filelock import FileLock, Timeout

    for partial in final.parent.glob(".*.partial-*"):
        name = partial.name[1:].split(".partial-")[0]
        if name == final.name:
            _remove(partial)
            continue
        lock = FileLock(str(final.parent / ".locks" / name))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            continue  # its writer is alive
        try:
            _remove(partial)
        finally:
            lock.release()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)
