"""Writes that keep the interpreter lock: only where they cannot wait, and always whole."""

from __future__ import annotations

import fcntl
import os
import socket

from cpr_function import lockedwrite


def test_a_pipe_with_room_takes_the_whole_line():
    read_end, write_end = os.pipe()
    try:
        line = b'{"message": "POST /predict -> 200"}\n' * 100
        assert lockedwrite.write(write_end, line) is True
        assert os.read(read_end, len(line) + 1) == line
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_full_pipe_is_left_to_the_ordinary_write_with_nothing_written():
    """Waiting on a pipe while holding the lock would stop every thread, its reader too."""
    read_end, write_end = os.pipe()
    try:
        os.set_blocking(write_end, False)
        capacity = fcntl.fcntl(write_end, fcntl.F_GETPIPE_SZ)
        os.write(write_end, b"x" * (capacity - 10))
        os.set_blocking(write_end, True)
        assert lockedwrite.write(write_end, b"y" * 11) is False
        assert lockedwrite.write(write_end, b"y" * 10) is True  # exactly the room left
        assert len(os.read(read_end, capacity + 1)) == capacity
        os.set_blocking(read_end, False)
        assert _read_all(read_end) == b""
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_file_takes_a_line_larger_than_any_pipe(tmp_path):
    path = tmp_path / "log"
    line = b"z" * (1 << 20) + b"\n"
    with path.open("ab") as file:
        assert lockedwrite.write(file.fileno(), line) is True
    assert path.read_bytes() == line


def test_a_socket_is_left_to_the_ordinary_write():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        assert lockedwrite.write(ours.fileno(), b"line\n") is False
        theirs.setblocking(False)
        assert _read_all(theirs.fileno()) == b""


def _read_all(fd: int) -> bytes:
    try:
        return os.read(fd, 1 << 20)
    except BlockingIOError:
        return b""
