"""Writing bytes to a file descriptor without letting go of the interpreter lock, when the
write cannot wait.

Python's own writes let go of the lock for the system call. When other threads are
waiting for it (requests answered at the same time, gunicorn's main thread), each write
hands it to one of them and then waits to get it back. For the request log, one line per
request, bench/overhead.py counted 1.3 more context switches a request at one connection
and 2.4 at 8, and about 5% of the throughput.

Keeping the lock is safe only when the write returns at once. A write to a pipe that is
full waits for the reader; if that reader is a thread of this process, it would wait for
the lock forever. So the lock is kept only for a pipe with room for all of the bytes, or
a file or device that can seek (a regular file, /dev/null). Sockets, terminals, full
pipes and platforms without these calls are left to the ordinary write.
"""

from __future__ import annotations

import errno
import functools
import os


def write(fd: int, data: bytes) -> bool:
    """Writes all of `data` to `fd` holding the interpreter lock, if that cannot wait.

    Returns:
        True once all of it is written; False, with nothing written, when the write
        might wait: then write it the ordinary way.

    Raises:
        OSError: the write failed.
    """
    calls = _calls()
    if calls is None or not _room_for(calls, fd, len(data)):
        return False
    while data:
        written = calls.write(fd, data, len(data))
        if written < 0:
            code = _errno()
            if code != errno.EINTR:
                raise OSError(code, os.strerror(code))
            continue
        data = data[written:]
    return True


def _room_for(calls, fd: int, size: int) -> bool:
    import ctypes

    capacity = calls.fcntl(fd, calls.F_GETPIPE_SZ)
    if capacity >= 0:  # a pipe: room is its capacity less what its reader has not read
        unread = ctypes.c_int()
        if calls.ioctl(fd, calls.FIONREAD, ctypes.byref(unread)) != 0:
            return False
        return capacity - unread.value >= size
    return calls.lseek(fd, 0, os.SEEK_CUR) >= 0


@functools.cache
def _calls():
    """The C library's calls, made with the interpreter lock held; None where they are missing."""
    import ctypes

    try:
        import fcntl
        import termios

        libc = ctypes.PyDLL(None, use_errno=True)
        calls = _Calls(
            write=libc.write,
            fcntl=libc.fcntl,
            ioctl=libc.ioctl,
            lseek=libc.lseek,
            F_GETPIPE_SZ=fcntl.F_GETPIPE_SZ,
            FIONREAD=termios.FIONREAD,
        )
    except (AttributeError, ImportError, OSError, TypeError):
        return None
    calls.write.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t)
    calls.write.restype = ctypes.c_ssize_t
    calls.fcntl.argtypes = (ctypes.c_int, ctypes.c_int)
    calls.ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
    calls.lseek.argtypes = (ctypes.c_int, ctypes.c_long, ctypes.c_int)
    calls.lseek.restype = ctypes.c_long
    return calls


class _Calls:
    def __init__(self, **calls):
        self.__dict__.update(calls)


def _errno() -> int:
    import ctypes

    return ctypes.get_errno()
