"""A child Python process running one version, and the socket pair to it: start, one call
at a time, stop.

The child is `python -m cpr_function.serving.worker`; what crosses the socket pair is
pickled tuples (see `worker`).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

from ..errors import PredictTimeout, Relayed

log = logging.getLogger(__name__)

_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])


class Ended(Relayed):
    """The child process ended in the middle of a call."""

    def __init__(self, message: str, status_code: int = 500):
        super().__init__(message, status_code)


class Child:
    """The process a version runs in; `label` ("model m version v") names it in errors."""

    def __init__(self, label: str):
        self.label = label
        self._proc: subprocess.Popen | None = None
        self._conn = None

    @property
    def running(self) -> bool:
        return self._conn is not None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._conn is not None else None

    def start(self) -> None:
        """Starts the process, whose first message to read is the version to load."""
        from multiprocessing.connection import Connection

        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (_PACKAGE_PARENT, env.get("PYTHONPATH")) if p
        )
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "cpr_function.serving.worker", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        self._conn = Connection(ours.detach())
        log.info("%s: worker process %d started", self.label, self._proc.pid)

    def call(self, message: tuple, doing: str, deadline: float | None = None) -> tuple:
        """Sends `message` and returns the reply.

        Raises:
            PredictTimeout: no reply within `deadline` seconds; the process was ended.
            Ended: the process ended while `doing` it (a 500 naming how it ended).
        """
        try:
            self._conn.send(message)
            if deadline is not None and not self._conn.poll(deadline):
                self._proc.kill()
                self.stop()
                raise PredictTimeout(
                    f"{self.label}: the predictor ran past the {deadline:g} s deadline "
                    "(CPR_PREDICT_TIMEOUT); its process was ended and the next request starts "
                    "it again"
                )
            return self._conn.recv()
        except (EOFError, OSError) as exc:
            code = self.stop()
            raise Ended(
                f"{self.label}: its worker process ended ({_exit(code)}) while {doing}"
                f"{_likely_cause(code)}; the next request starts it again",
                500,
            ) from exc

    def stop(self) -> int | None:
        """Ends the process; its exit status, or None when none was running."""
        conn, proc, self._conn, self._proc = self._conn, self._proc, None, None
        if conn is not None:
            conn.close()
        if proc is None:
            return None
        try:
            return proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()


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
