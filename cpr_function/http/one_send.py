"""A response's head and body in one send, where gunicorn sends them in two.

gunicorn's thread worker writes a response's status line and headers with one `sendall`
and then each piece of its body with another. For the small JSON answers this function
gives, that is two system calls and two TCP segments where one would do: measured side by
side, the second send cost the worker 20 to 66 us of CPU a request, 2% to 6% of all it
spends answering the bundled example (bench/RESULTS.md, warm overhead). While one response
is written, `Joined` stands in for the connection's socket: it holds the head until the
body's first bytes and sends both together. The bytes on the wire are the same; only how
many sends carry them changes.
"""

from __future__ import annotations

# Bodies up to this size are copied behind the head and sent with it; a larger one is sent
# on its own after the head, as gunicorn would: one copy of a large body costs more than a
# system call saves.
JOIN_BYTES = 64 * 1024


class Joined:
    """A connection's socket while one response is written, sending its head with its body.

    The first `sendall` (gunicorn's head) waits for the next one, or for `finish`; anything
    else asked of the socket (`sendfile`, `send` for a 100 Continue, `shutdown`) first
    sends what waits. Two kinds of response gain nothing and lose nothing: a 103 Early
    Hints head waits for the final one, and an empty first chunk of a streamed body does
    not push the head out early. This function sends neither.
    """

    __slots__ = ("_sock", "_head", "_awaiting_head")

    def __init__(self, sock) -> None:
        self._sock = sock
        self._head: bytes | None = None
        self._awaiting_head = True

    def sendall(self, data, flags: int = 0) -> None:
        if self._awaiting_head:
            self._awaiting_head = False
            self._head = bytes(data)
            return
        head, self._head = self._head, None  # taken first: a failed send never repeats it
        if head is not None and len(data) <= JOIN_BYTES:
            self._sock.sendall(head + bytes(data), flags)
            return
        if head is not None:
            self._sock.sendall(head, flags)
        self._sock.sendall(data, flags)

    def finish(self) -> None:
        """Sends the head if it still waits: a response with no body (HEAD, 204, 304)."""
        head, self._head = self._head, None
        if head is not None:
            self._sock.sendall(head)

    def __getattr__(self, name: str):
        if name in Joined.__slots__:  # not yet set: no socket to reach
            raise AttributeError(name)
        self.finish()
        return getattr(self._sock, name)
