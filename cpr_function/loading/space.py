"""Room in the cache: checked before a download, and named when a write runs out of it.

On Cloud Functions `/tmp` is memory, so a model too large for its instance fills it; the
answer must say so, with the sizes and what fixes it, never blame Cloud Storage.
"""

from __future__ import annotations

import contextlib
import errno
import shutil
from collections.abc import Iterator
from pathlib import Path

from ..errors import DiskFull

_FULL = (errno.ENOSPC, errno.EDQUOT)
_FIX = (
    "on Cloud Functions the cache is in memory: deploy with more --memory (the model "
    "counts once in the cache and once in each worker process that loads it), or set "
    "CPR_CACHE_DIR to a larger disk"
)


def free_bytes(root: Path) -> int:
    """The bytes free to this process on the filesystem that holds, or will hold, `root`."""
    while not root.exists() and root != root.parent:
        root = root.parent  # not made yet: its folder's filesystem is where it will be
    return shutil.disk_usage(root).free


def partial_bytes(folder: Path) -> int:
    """The bytes the partial files of downloads under way in `folder` hold already."""
    total = 0
    for path in folder.glob(".*.partial-*"):
        with contextlib.suppress(OSError):  # finished and renamed meanwhile
            total += path.stat().st_size
    return total


def check_room(root: Path, needed: int, what: str) -> None:
    """Refuses before a byte is written when `needed` bytes will not fit under `root`.

    Raises:
        DiskFull: less than `needed` bytes are free there.
    """
    free = free_bytes(root)
    if needed > free:
        raise DiskFull(
            f"{what} needs {_mb(needed)} in the cache ({root}) and {_mb(free)} are free there; "
            + _FIX
        )


def is_full(exc: BaseException) -> bool:
    """Whether an error is a write that found no space left (or the quota spent)."""
    return isinstance(exc, OSError) and exc.errno in _FULL


@contextlib.contextmanager
def reported(root: Path, what: str) -> Iterator[None]:
    """Turns a write under `root` that runs out of space into `DiskFull`, naming `what`.

    Raises:
        DiskFull: no space was left (or the quota was spent) while the block wrote.
    """
    try:
        yield
    except OSError as exc:
        if is_full(exc):
            raise ran_out(root, what) from exc
        raise


def ran_out(root: Path, what: str) -> DiskFull:
    """The error for a write under `root` that ran out of space while writing `what`."""
    try:
        free = _mb(free_bytes(root))
    except OSError:
        free = "an unknown amount"
    return DiskFull(
        f"the cache ({root}) ran out of space while writing {what} (No space left on device, "
        f"{free} free now); nothing partial was kept. " + _FIX[0].upper() + _FIX[1:]
    )


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
