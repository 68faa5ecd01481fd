"""A child Python process running one version, and the socket pair to it: start, calls
from any number of threads at once, stop.

The child is `python -m cpr_function.serving.worker`; what crosses the socket pair is
pickled tuples (see `worker`).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

from ..errors import PredictTimeout, Relayed

log = logging.getLogger(__name__)

_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])


class Ended(Relayed):
    """The child process ended in the middle of a call."""

    def __init__(self, message: str, status_code: int = 500):
        super().__init__(message, status_code)


class Child:
    """The process a version runs in; `label` ("model m version v") names it in errors.

    Calls may be made from several threads at once: each carries an id, a reader thread
    hands each reply to its caller, and the child answers them concurrently.
    """

    def __init__(self, label: str):
        self.label = label
        self._channel: _Channel | None = None

    @property
    def running(self) -> bool:
        return self._channel is not None and self._channel.open

    @property
    def pid(self) -> int | None:
        return self._channel.proc.pid if self.running else None

    def start(self) -> None:
        """Starts the process, whose first call is to be the version to load."""
        from multiprocessing.connection import Connection

        self.stop()  # what is left of a process that ended

        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_PACKAGE_PARENT, env.get("PYTHONPATH")) if p
        )
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "cpr_function.serving.worker", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        self._channel = _Channel(Connection(ours.detach()), proc)
        log.info("%s: worker process %d started", self.label, proc.pid)

    def call(self, message: tuple, doing: str, deadline: float | None = None) -> tuple:
        """Sends `message` and returns the reply.

        Raises:
            PredictTimeout: no reply within `deadline` seconds; the process was ended.
            Ended: the process ended while `doing` it (a 500 naming how it ended).
        """
        channel = self._channel
        if channel is None or not channel.open:
            raise Ended(
                f"{self.label}: its worker process is not running; the next request starts it again"
            )
        reply = channel.call(message, deadline)
        if reply is _TIMED_OUT:
            if self._channel is channel:  # not one another thread has started since
                self._channel = None
            channel.close(kill=True)
            raise PredictTimeout(
                f"{self.label}: the predictor ran past the {deadline:g} s deadline "
                "(CPR_PREDICT_TIMEOUT); its process was ended and the next request starts "
                "it again"
            )
        if reply is _ENDED:
            code = channel.exit_code()
            raise Ended(
                f"{self.label}: its worker process ended ({_exit(code)}) while {doing}"
                f"{_likely_cause(code)}; the next request starts it again"
            )
        return reply

    def stop(self, *, kill: bool = False) -> int | None:
        """Ends the process (at once with `kill`, else once it has read its socket's end);
        its exit status, or None when none was running."""
        channel, self._channel = self._channel, None
        return None if channel is None else channel.close(kill=kill)


_TIMED_OUT, _ENDED = object(), object()


class _Channel:
    """One child process and its socket: calls by id, replies read by a thread of its own."""

    def __init__(self, conn, proc: subprocess.Popen):
        self.conn = conn
        self.proc = proc
        self.open = True
        self._lock = threading.Lock()  # the pending calls, and sending
        self._ids = itertools.count()
        self._pending: dict[int, list] = {}  # id -> [event, reply]
        threading.Thread(target=self._read, name="cpr-child-replies", daemon=True).start()

    def call(self, message: tuple, deadline: float | None) -> object:
        slot = [threading.Event(), _ENDED]
        with self._lock:
            if not self.open:
                return _ENDED
            call_id = next(self._ids)
            self._pending[call_id] = slot
            try:
                self.conn.send((call_id, *message))
            except (OSError, ValueError):
                self._pending.pop(call_id, None)
                return _ENDED
        if not slot[0].wait(deadline):
            with self._lock:
                self._pending.pop(call_id, None)
            return _TIMED_OUT
        return slot[1]

    def _read(self) -> None:
        while True:
            try:
                call_id, *reply = self.conn.recv()
            except Exception:  # the process ended, or the socket was closed here
                break
            with self._lock:
                slot = self._pending.pop(call_id, None)
            if slot is not None:
                slot[1] = tuple(reply)
                slot[0].set()
        with self._lock:
            self.open, pending, self._pending = False, self._pending, {}
        for slot in pending.values():
            slot[0].set()  # still _ENDED: the process ended before it answered

    def exit_code(self) -> int | None:
        try:
            return self.proc.wait(5)
        except subprocess.TimeoutExpired:
            return None

    def close(self, *, kill: bool = False) -> int | None:
        with self._lock:
            self.open = False
        if kill:
            self.proc.kill()
        # Closing the descriptor alone sends nothing while the reader thread is blocked on
        # it: shut the socket down, so that the child reads its end now.
        with contextlib.suppress(OSError), socket.socket(fileno=os.dup(self.conn.fileno())) as end:
            end.shutdown(socket.SHUT_RDWR)
        self.conn.close()
        try:
            return self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def _likely_cause(code: int | None) -> str:
    import signal

    if code == -signal.SIGKILL:
        return ", most likely for memory: the kernel's OOM killer sends SIGKILL"
    return ""


def _exit(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"
