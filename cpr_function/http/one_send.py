"""A response's head and body in one send, where gunicorn sends them in two.

gunicorn's thread worker writes a response's status line and headers with one `sendall`
and then each piece of its body with another. For the small JSON answers this function
gives, that is two system calls and two TCP segments where one would do, and on loopback
or a Cloud Run instance's proxy each costs the worker several microseconds of CPU, a
tenth of what answering a small prediction costs it in all (bench/overhead.py). The
socket `Joined` stands in for a connection's while one response is written: it holds the
head until the body's first bytes and sends both together. The bytes on the wire are the
same; only how many sends carry them changes.
"""

from __future__ import annotations

# Bodies up to this size are copied behind the head and sent with it; a larger one is sent
# on its own after the head, as gunicorn would: one copy of a large body costs more than a
# system call saves.
JOIN_BYTES = 64 * 1024


class Joined:
    """A connection's socket while one response is written: its first `sendall` (the head)
    waits for the next one, or for `finish`, and anything else asked of the socket
    (`fileno` for a sendfile, `send`, `shutdown`) first sends what waits."""

    __slots__ = ("_sock", "_head", "_first")

    def __init__(self, sock):
        self._sock = sock
        self._head: bytes | None = None
        self._first = True

    def sendall(self, data) -> None:
        if self._first:
            self._first = False
            self._head = bytes(data)
            return
        head, self._head = self._head, None
        if head is not None and len(data) <= JOIN_BYTES:
            self._sock.sendall(head + bytes(data))
            return
        if head is not None:
            self._sock.sendall(head)
        self._sock.sendall(data)

    def finish(self) -> None:
        """Sends the head if it still waits (a response with no body, an error page)."""
        head, self._head = self._head, None
        if head is not None:
            self._sock.sendall(head)

    def __getattr__(self, name: str):
        self.finish()
        return getattr(self._sock, name)
