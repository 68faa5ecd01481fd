"""Atomic, once-only creation of cache entries shared by threads and processes."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

_guard = threading.Lock()
_thread_locks: dict[Path, threading.Lock] = {}
# The partial entries this process's threads are writing: alive, so not orphans.
_writing: set[Path] = set()


def materialize(final: Path, build: Callable[[Path], None], *, sweep: bool = True) -> bool:
    """Makes `final` exist, built by `build` at most once across threads and processes.

    `build` writes a file or a directory at the temporary path it is given; that
    path is renamed to `final` only once `build` returns, so a crash or an error
    never leaves a partial entry where a reader would take it. Before building, the
    orphans of killed writers in its folder are removed (see `sweep`), unless the
    caller swept the folder itself (`sweep=False`: one listing for many entries).

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
        with _file_lock(final.parent / ".locks" / final.name):
            if final.exists():
                return False
            if sweep:
                _remove_orphans(final.parent, final.name)
            partial = final.parent / f".{final.name}.partial-{os.getpid()}-{uuid.uuid4().hex}"
            with _guard:
                _writing.add(partial)
            renamed = False
            try:
                build(partial)
                os.replace(partial, final)
                renamed = True
            finally:
                if not renamed:
                    _remove(partial)
                with _guard:
                    _writing.discard(partial)
            return True


@contextlib.contextmanager
def in_use(root: Path) -> Iterator[None]:
    """Holds the cache under `root` in use: `discard` removes nothing while anyone holds it.

    A shared lock on a file, so holders in all threads and processes go on side by side.
    """
    import fcntl

    fd = _open_use_lock(root)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # which lets go of the lock


def discard(root: Path, entries: list[Path]) -> None:
    """Removes cache entries under `root` once nobody holds it in use (see `in_use`).

    At once when nobody does; otherwise a background thread waits for the last
    holder, so the caller never waits for another version's load. Each entry is
    first renamed to a partial name, so one half removed by a crash is an orphan
    (see `_remove_orphans`), never an entry a reader would take.
    """
    import fcntl

    fd = _open_use_lock(root)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        waiting = threading.Thread(target=_discard, args=(fd, entries, True), daemon=True)
        waiting.start()
        return
    _discard(fd, entries, False)


def _discard(fd: int, entries: list[Path], wait: bool) -> None:
    """Removes `entries` holding the use lock `fd` alone (waiting for it if `wait`); closes `fd`."""
    import fcntl

    try:
        if wait:
            fcntl.flock(fd, fcntl.LOCK_EX)
        for entry in entries:
            hidden = entry.parent / f".{entry.name}.partial-{os.getpid()}-{uuid.uuid4().hex}"
            try:
                os.replace(entry, hidden)
            except FileNotFoundError:
                continue  # never fetched, or removed already
            _remove(hidden)
    except OSError:
        log.exception("removing cache entries failed; they stay")
    finally:
        os.close(fd)


def _open_use_lock(root: Path) -> int:
    root.mkdir(parents=True, exist_ok=True)
    return os.open(root / ".in-use", os.O_RDWR | os.O_CREAT, 0o644)


def sweep(folder: Path) -> None:
    """Removes the partial entries that writers killed mid-build left in `folder`.

    For a caller about to build many entries there with `materialize(sweep=False)`:
    one listing of the folder instead of one per entry (3,000 entries took 1.8 s of
    listings when each swept).
    """
    with contextlib.suppress(FileNotFoundError):  # nothing was ever built there
        _remove_orphans(folder, None)


def _remove_orphans(folder: Path, held: str | None) -> None:
    """Removes the partial entries that writers killed mid-build left in `folder`.

    A partial entry exists only while its writer holds the entry's file lock, so
    one whose lock is free has no writer left. Those of the entry `held` are orphans
    (the caller holds its lock); those of other entries are removed when their lock
    can be taken at once, so a generation that is never asked for again, or a model
    that was replaced, does not keep its partial download in /tmp (memory, on
    Cloud Functions) for the instance's whole life.
    """
    partials = [
        folder / e.name
        for e in os.scandir(folder)
        if e.name.startswith(".") and ".partial-" in e.name
    ]
    with _guard:
        writing = _writing.copy()
    for partial in partials:
        name = partial.name[1:].split(".partial-")[0]
        if name == held:
            _remove(partial)
            continue
        if partial in writing:
            # Being written by another thread here: asking its lock would only cost
            # time, once per other download in flight for every entry built.
            continue
        with _file_lock(folder / ".locks" / name, wait=False) as free:
            if free:  # else its writer is alive
                _remove(partial)


@contextlib.contextmanager
def _file_lock(path: Path, *, wait: bool = True) -> Iterator[bool]:
    """An exclusive lock on `path` across processes (flock(2)), held for the block.

    Yields whether it is held: always when `wait`, else only if it was free. The kernel
    lets go of it when the holder exits, however it ends.
    """
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except FileNotFoundError:  # the first entry of its folder
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        held = True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held = False
        yield held
    finally:
        os.close(fd)  # which lets go of the lock


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)
