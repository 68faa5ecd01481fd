"""Marks of the loads under way in this instance, so that a process killed while loading a
version (the kernel's OOM killer sends SIGKILL, which nothing can catch) is known to the
processes after it.

Each load writes `CACHE/.loading/KEY-PID-START.json` (the version, the process, and once
listed the bytes of its model and packages) and removes it when the load ends, whether it
succeeded or failed, and when its process exits normally with the load still running (a
worker gunicorn stops while a warm-up thread loads). A mark whose process is gone (no
such pid, or a pid reused by a process started at another time) is a load that was
killed; it stays, so that every worker of the instance, started before or after, keeps
the version apart.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

_FOLDER = ".loading"
_HOST = socket.gethostname()
# The marks of the loads under way, with the process that made each: a process forked
# from one that was loading holds a copy of this set, but not those loads.
_UNDER_WAY: set[tuple[int, Path]] = set()


@dataclasses.dataclass(frozen=True)
class Death:
    """A load that was killed: by which process, when, and how large the version is."""

    pid: int
    started: float
    bytes: int | None

    def describe(self) -> str:
        size = f"; its model and packages are {shown(self.bytes)}" if self.bytes else ""
        return (
            f"a process that began loading it {max(0, round(time.time() - self.started))} s "
            f"ago (pid {self.pid}) ended before the load did: it was killed, most likely for "
            f"memory by the kernel's OOM killer{size}"
        )


class Mark:
    """The mark of one load under way; `sized` records the version's bytes once listed."""

    def __init__(self, path: Path | None, fields: dict):
        self.path = path
        self._fields = fields

    def sized(self, size: int) -> None:
        if self.path is None:
            return
        self._fields["bytes"] = size
        with contextlib.suppress(OSError):  # a mark must never fail the load it marks
            _write(self.path, self._fields)


@contextlib.contextmanager
def loading(cache: Path, key: str, model: str, version: str) -> Iterator[Mark]:
    """Marks a load of version `key` by this process while the block runs."""
    pid = os.getpid()
    path = cache / _FOLDER / f"{_hashed(key)}-{pid}-{_start_ticks(pid)}.json"
    fields = {"model": model, "version": version, "pid": pid, "host": _HOST, "started": time.time()}
    try:
        _write(path, fields)
    except OSError:
        yield Mark(None, {})  # unmarked: an unwritable cache fails the load elsewhere
        return
    _UNDER_WAY.add((pid, path))
    try:
        yield Mark(path, fields)
    finally:
        _UNDER_WAY.discard((pid, path))
        with contextlib.suppress(OSError):
            path.unlink()


@atexit.register
def _exiting() -> None:
    """A process exiting normally was not killed, whatever its loads: its marks go."""
    for pid, path in list(_UNDER_WAY):
        if pid == os.getpid():
            with contextlib.suppress(OSError):
                path.unlink()


def killed(cache: Path, key: str) -> Death | None:
    """The latest killed load of version `key`, or None when no load of it was killed."""
    deaths = []
    for path in (cache / _FOLDER).glob(f"{_hashed(key)}-*.json"):
        try:
            _, pid, ticks = path.stem.rsplit("-", 2)
            fields = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        # A cache shared between machines holds their marks too: only this one's pids count.
        if fields.get("host", _HOST) == _HOST and _start_ticks(int(pid)) != ticks:
            deaths.append(fields)
    if not deaths:
        return None
    latest = max(deaths, key=lambda f: f.get("started", 0))
    return Death(latest["pid"], latest.get("started", 0.0), latest.get("bytes"))


def shown(size: int) -> str:
    """A size as the messages give it: kB below a megabyte, MB above."""
    return f"{size / 1e3:.1f} kB" if size < 1e6 else f"{size / 1e6:.1f} MB"


def _hashed(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _start_ticks(pid: int) -> str:
    """When the process started, in clock ticks since boot; "gone" if it does not exist."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "gone"


def _write(path: Path, fields: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(fields))
    os.replace(partial, path)
