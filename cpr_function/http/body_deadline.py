"""A request's body read against a deadline, so that a client that stops sending it cannot
hold one of the worker's threads.

gunicorn's thread worker reads a request's body on one of the worker's few threads and
waits for it as long as the client takes: two connections that sent their heads and the
first bytes of a body, then nothing, held both threads of a 2-thread worker until they
closed, and every other request waited (a head has its own bound, `server.HEAD_SECONDS`).
While a request is answered, `Deadline` stands in for the socket gunicorn reads its body
from. Each read may wait only until the body's deadline: `GRACE_SECONDS` after the worker
read the request's head, plus a second for every `BYTES_A_SECOND` bytes received since. A
large body sent at a steady pace gets through however long it takes; one that stalls or
trickles does not. At the deadline the read raises `BodyTimeout`, which the app answers
with 408, and the connection closes after the answer, as it does when a read fails
otherwise (functions-framework's own deadline landing in it, say). Later reads find the
body ended, so that what reads the rest of it (functions-framework reads every request's
body before answering) does not wait a second time.
"""

from __future__ import annotations

import time
from typing import NoReturn

from ..errors import BodyTimeout

GRACE_SECONDS = 5.0
# The slowest pace a body may keep up after the grace: 128 kbit/s, slower than any
# network a prediction client is likely to send from. Eight connections holding the
# threads of a worker this way must send 128 KiB a second between them.
BYTES_A_SECOND = 16 * 1024


class Deadline:
    """The socket a request's body is read from, each read bounded by the body's deadline."""

    __slots__ = ("_sock", "_request", "_started", "_received", "_late")

    def __init__(self, sock, request) -> None:
        self._sock = sock
        self._request = request  # gunicorn's request: closes its connection when late
        self._started = time.monotonic()
        self._received = 0
        self._late = False

    @property
    def ended(self) -> bool:
        """Whether the body stopped being read: it came late, or a read of it failed."""
        return self._late

    def recv(self, size: int, *flags) -> bytes:
        if self._late:
            return b""
        allowed = GRACE_SECONDS + self._received / BYTES_A_SECOND
        # Past the deadline, what has arrived is still taken (the app may have been slow
        # to read it, behind a credential check say): only a read that would wait fails.
        wait = max(self._started + allowed - time.monotonic(), 0.0)
        self._sock.settimeout(wait)
        try:
            data = self._sock.recv(size, *flags)
        except (TimeoutError, BlockingIOError):  # BlockingIOError: nothing there, no wait
            self._expire(allowed)
        except BaseException:  # the connection failed, or functions-framework's deadline came
            self._end()
            raise
        finally:
            self._sock.settimeout(None)  # blocking again, as gunicorn keeps it
        self._received += len(data)
        return data

    def _end(self) -> None:
        """No more of the body is read; its connection closes after the answer."""
        self._late = True
        self._request.must_close = True

    def _expire(self, allowed: float) -> NoReturn:
        self._end()
        raise BodyTimeout(
            f"the request's body did not arrive in time: a body must come within "
            f"{GRACE_SECONDS:g} s of the request's headers, plus a second for every "
            f"{BYTES_A_SECOND // 1024} KiB of it, and this one had not after {allowed:.1f} s; "
            "send the body with its headers, at a steady pace"
        )

    def __getattr__(self, name: str):
        return getattr(self._sock, name)
