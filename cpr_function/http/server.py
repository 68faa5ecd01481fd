"""The workers of functions-framework's gunicorn server: bounds on what a client may send
before the app sees a request (the server sets none of its own), and one send a response.

functions-framework starts gunicorn with `limit_request_line=0` (a request line of any
length) and gunicorn's thread worker reads a request's head on one of the worker's few
threads, however slowly it arrives: eight clients sending their headers a byte a second
held every thread of a worker, and a 16 MB URL took 22 s to read. `install`, called by the
entry point in the gunicorn master before the server is built, makes the server:

- refuse a request line over 8 KiB with 414, and a header over 8 KiB or more than 100
  headers with 431 (gunicorn's own limits, which functions-framework turned off for the
  line), answering JSON like every other error, not gunicorn's HTML page;
- end a connection whose request head has not arrived `HEAD_SECONDS` after its first
  bytes, with 408, so that a handful of slow or broken clients cannot hold every thread.
  (A connection that sends nothing waits in gunicorn's poller, on no thread.)
- have the app answer 408 to a request whose body stops arriving, for the same reason
  (`body_deadline`).
- close a connection whose client has taken none of its answer for `SEND_SECONDS`, for
  the same reason: an answer larger than the socket's buffers waits for the client.

The bounded workers also send a response's head and body in one send, where gunicorn
sends them in two (`one_send`). The same hook into gunicorn's configuration also has
several worker processes take equal shares of the connections (`balance`), and the
master import the framework libraries the workers will share once it listens
(`shared_imports`).

Nothing here runs unless functions-framework's gunicorn application is what serves.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time

import orjson

from ..errors import echo
from ..serving import shared_imports
from . import balance, body_deadline, one_send

log = logging.getLogger(__name__)

HEAD_SECONDS = 5.0
SEND_SECONDS = 10.0  # the longest a client may take none of its answer
REQUEST_LINE_BYTES = 8190  # gunicorn's most


def install() -> None:
    """Has functions-framework's gunicorn application use the bounded workers."""
    try:
        from functions_framework._http import gunicorn as host
    except ImportError:
        return
    application = host.GunicornApplication
    if getattr(application, "_cpr_bounded", False):
        return
    original = application.load_config

    def load_config(self) -> None:
        original(self)
        self.cfg.set("limit_request_line", REQUEST_LINE_BYTES)
        bounded = _bounded_class(self.cfg.worker_class)
        if bounded is not None:
            if balance.supported(self.cfg.worker_class) and self.cfg.workers > 1:
                balance.prepare(self.cfg)
                bounded = f"Balanced{bounded}"
            self.cfg.set("worker_class", f"{__name__}.{bounded}")
        ready = self.cfg.when_ready

        def when_ready(server) -> None:
            shared_imports.import_now()
            ready(server)

        self.cfg.set("when_ready", when_ready)

    application.load_config = load_config
    application._cpr_bounded = True


def _bounded_class(worker_class: type) -> str | None:
    """The name of this module's bounded subclass of gunicorn's worker class, if any."""
    for bounded in (BoundedTimeoutWorker, BoundedThreadWorker):
        if issubclass(worker_class, bounded.__bases__[-1]):
            return bounded.__name__
    return None


class _Bounded:
    """What the bounded workers add to gunicorn's thread worker (a mixin)."""

    def init_process(self) -> None:
        self._heads: dict[object, float | None] = {}  # connection -> first bytes seen at
        self._refused: set[object] = set()  # connections answered 408 by the watchdog
        self._heads_lock = threading.Lock()
        threading.Thread(target=self._watch_heads, name="cpr-heads", daemon=True).start()
        super().init_process()

    def handle(self, conn):
        if not conn.initialized:  # a new connection
            _bound_sends(conn.sock)
        with self._heads_lock:
            self._heads[conn] = None
        try:
            return super().handle(conn)
        finally:
            with self._heads_lock:
                self._heads.pop(conn, None)
                self._refused.discard(conn)

    def handle_request(self, req, conn):
        with self._heads_lock:
            self._heads.pop(conn, None)  # the head arrived whole: the app's limits apply now
            if conn in self._refused:  # ... but too late: it was answered 408 meanwhile
                self._refused.discard(conn)
                return False
        # The head waits to leave with the body. Looked up on the module when called, so
        # that bench/two_sends.py can put gunicorn's two sends back to measure them.
        sock, joined = conn.sock, one_send.Joined(conn.sock)
        conn.sock = joined
        # The body is read against its deadline, from the socket gunicorn's reader holds.
        unreader = getattr(req, "unreader", None)
        source = getattr(unreader, "sock", None)
        deadline = None
        if source is not None:
            deadline = unreader.sock = body_deadline.Deadline(source, req)
        try:
            keep_alive = super().handle_request(req, conn)
            joined.finish()  # a response with no body: its head leaves now
            if deadline is not None and deadline.ended:
                _end(sock)  # a client whose body stalled need not be waited for
                return False
            return keep_alive
        except BlockingIOError:  # a send waited SEND_SECONDS for the client (_bound_sends)
            log.warning(
                "a client took none of its answer for %gs; the connection is closed",
                SEND_SECONDS,
            )
            _end(sock)
            return False
        finally:
            conn.sock = sock  # what gunicorn's poller and error pages use
            if source is not None:
                unreader.sock = source

    def _watch_heads(self) -> None:
        while True:
            time.sleep(0.25)
            now, late = time.monotonic(), []
            with self._heads_lock:
                for conn, since in list(self._heads.items()):
                    if since is None:
                        # Timed from the first bytes: one that sends nothing is on the poller.
                        if getattr(conn, "data_ready", True) or getattr(conn, "initialized", 0):
                            self._heads[conn] = now
                    elif now - since > HEAD_SECONDS:
                        late.append(conn)
                        del self._heads[conn]
                        self._refused.add(conn)
            for conn in late:
                _refuse_slow(conn)

    def handle_error(self, req, client, addr, exc):
        answer = _json_refusal(exc)
        if answer is None:
            return super().handle_error(req, client, addr, exc)
        status, reason, message = answer
        log.warning("refused before reading the request: %d %s", status, message)
        _send(client, status, reason, message)
        return None


def _bound_sends(sock) -> None:
    """Has a send on this connection fail once it has waited `SEND_SECONDS` for the client
    to take any of the answer (the kernel's SO_SNDTIMEO: set once, no cost a request). An
    answer larger than the socket's buffers waits for the client to read it, and a client
    that never did held a thread for as long as it kept the connection open."""
    timeval = struct.pack("ll", int(SEND_SECONDS), 0)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)


def _json_refusal(exc: BaseException) -> tuple[int, str, str] | None:
    """Status, reason and message for a request gunicorn refused while reading its head."""
    from gunicorn.http import errors

    if isinstance(exc, errors.LimitRequestLine):
        return (
            414,
            "URI Too Long",
            f"the request line is longer than {REQUEST_LINE_BYTES} bytes; expected a path "
            "such as /predict or /v1/projects/P/models/M:predict",
        )
    if isinstance(exc, errors.LimitRequestHeaders):
        return (
            431,
            "Request Header Fields Too Large",
            f"the request's headers are too large ({echo(str(exc))}); at most 100 headers "
            "of 8190 bytes each are accepted",
        )
    if isinstance(
        exc,
        errors.InvalidRequestLine
        | errors.InvalidRequestMethod
        | errors.InvalidHTTPVersion
        | errors.InvalidHeader
        | errors.InvalidHeaderName,
    ):
        return 400, "Bad Request", f"not an HTTP request: {type(exc).__name__}"
    return None


def _refuse_slow(conn) -> None:
    """Answers 408 on a connection whose head is late, and ends it (its thread is freed)."""
    log.warning(
        "a request's head did not arrive within %gs; the connection is closed", HEAD_SECONDS
    )
    message = (
        f"the request's headers did not arrive within {HEAD_SECONDS:g} s of its first bytes; "
        "send the request line and headers at once"
    )
    _send(conn.sock, 408, "Request Timeout", message)
    _end(conn.sock)


def _end(sock) -> None:
    """Ends a connection to a client that stalled, both ways, once its answer is sent.
    gunicorn then closes it at once; closing it gracefully, its main thread waits up to
    2 s for the client to end its side, which such a client does not: each one stopped
    the worker accepting and finishing requests for that long."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _send(sock, status: int, reason: str, message: str) -> None:
    body = orjson.dumps({"error": message})
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    with contextlib.suppress(OSError):
        sock.sendall(head.encode("latin-1") + body)


def _thread_worker():
    from gunicorn.workers.gthread import ThreadWorker

    return ThreadWorker


class BoundedThreadWorker(_Bounded, _thread_worker()):
    """gunicorn's thread worker, with the bounds above."""


def _timeout_worker():
    # In every functions-framework release requirements.txt admits (3.8 and later).
    from functions_framework._http.gunicorn import GThreadWorkerWithTimeoutSupport

    return GThreadWorkerWithTimeoutSupport


class _KeptAlive:
    """functions-framework's timeout worker (`THREADED_TIMEOUT_ENABLED=true` with
    `CLOUD_RUN_TIMEOUT_SECONDS`) drops what gunicorn's `handle_request` returns, whether
    the connection stays open: every connection was closed after one response, though
    the response had announced keep-alive, and a client that sent its next request on it
    found it closed. Here the same timeout wraps gunicorn's own `handle_request`, and
    its answer is kept."""

    def handle_request(self, req, conn):
        from functions_framework._http import gunicorn as host
        from functions_framework.request_timeout import ThreadingTimeout

        with ThreadingTimeout(host.TIMEOUT_SECONDS):
            return _thread_worker().handle_request(self, req, conn)


class BoundedTimeoutWorker(_Bounded, _KeptAlive, _timeout_worker()):
    """functions-framework's thread worker with request timeouts, with the bounds above."""


class BalancedBoundedThreadWorker(balance.Balanced, BoundedThreadWorker):
    """The bounded thread worker, taking its share of the connections (balance.py)."""


class BalancedBoundedTimeoutWorker(balance.Balanced, BoundedTimeoutWorker):
    """The bounded timeout worker, taking its share of the connections (balance.py)."""
