"""Beam workers forked from the command, which has Beam imported already.

Beam's local runner starts each worker process as a command of its own: a new Python
that imports Beam (about 1 s of a core) before it loads the model. `forked(count, load)`
forks `count` processes from this one instead, while it has Beam imported but no gRPC
channel or server made yet, and no model loaded (a model's runtime, TensorFlow's or
OpenMP's threads, need not survive a fork). Each fork calls `load` at once; the first
fork's outcome is the command's check that the model loads, and what it says of the
model (`Forks.check`), so the model is loaded once per worker and never in the command.

The command Beam runs for a worker is `worker_relay.py`, which starts in milliseconds,
hands the worker's endpoints to one of the forks and waits for it; the fork runs Beam's
own SDK harness. The forks end with the `with` block, when the command dies, or when
their relay does (Beam stops or kills the worker).

The relays reach the forks over a Unix socket in Linux's abstract namespace: it has no
file, so a command killed outright (SIGKILL, out of memory) leaves nothing behind in the
temporary folder. Its name is random, and since any process on the machine may connect to
such a socket, a fork serves only a relay of the command's own user, and a relay talks
only to a fork of its own user (`SO_PEERCRED`): once the forks hold every connection they
will take, the name is free again for anyone to bind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import logging
import os
import pickle
import secrets
import select
import shlex
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import CprError, LoadError
from .worker_relay import peer

_RELAY = Path(__file__).with_name("worker_relay.py")


@dataclasses.dataclass
class Forks:
    """The forked workers: `command` is what Beam runs to start each one."""

    command: str
    _report: int  # the first fork writes its load's outcome here

    def check(self) -> object:
        """Waits for the first fork to load the model; what its `load()` returned.

        Raises:
            CprError: what loading the model raised there.
        """
        with os.fdopen(self._report, "rb", closefd=False) as report:
            outcome = report.read()
        if not outcome:
            raise LoadError("the worker process loading the model ended before it finished")
        loaded, value = pickle.loads(outcome)
        if not loaded:
            raise value  # a CprError: its class is this package's
        return value


@contextlib.contextmanager
def forked(count: int, load: Callable[[], object]) -> Iterator[Forks]:
    """Forks `count` workers, each calling `load()` at once.

    Call it before any gRPC channel or server is made in this process, and with no other
    thread that may hold a lock the forks would need.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    # What Beam's import made stays, shared by the forks and skipped by every collection
    # in them and here, the last one at exit among them (a fifth of a second).
    gc.freeze()
    name = f"cpr-workers-{secrets.token_hex(16)}"  # the relay's argument
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mine: list[int] = []  # the pipes' ends this process closes at the end
    pids = []
    try:
        listener.bind(b"\0" + name.encode())
        listener.listen(count)
        listener.setblocking(False)
        alive_read, alive_write = os.pipe()
        mine += (alive_read, alive_write)
        report_read, report_write = os.pipe()
        mine += (report_read, report_write)
        for index in range(count):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the fork, which never returns
                os.close(alive_write)
                os.close(report_read)
                if index:
                    os.close(report_write)
                _child(listener, alive_read, load, report_write if index == 0 else None)
            pids.append(pid)
        os.close(report_write)  # the forks hold it: the check reads to their end of it
        mine.remove(report_write)
        listener.close()  # the forks hold it: once each has a worker, it is gone
        command = shlex.join([sys.executable, "-I", "-S", str(_RELAY), name])
        yield Forks(command, report_read)
    finally:
        listener.close()
        for fd in mine:
            with contextlib.suppress(OSError):
                os.close(fd)
        for pid in pids:  # each worker has ended with the job, or is not needed
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def _child(
    listener: socket.socket, alive: int, load: Callable[[], object], report: int | None
) -> None:
    status = 1
    try:
        outcome = _loaded(load)
        if report is not None:
            os.write(report, outcome)
            os.close(report)
        relay = _accept(listener, alive)
        status = 0 if relay is None else _work(relay, alive)
    finally:
        os._exit(status)  # never the command's own exit handlers


def _loaded(load: Callable[[], object]) -> bytes:
    """`(True, what load() returned)`, or `(False, the error it raised)`, pickled: a
    CprError as it was, any other as a LoadError saying what it was (its class may live in
    a package only the fork has imported). A worker whose load failed meets the same error
    again when Beam asks it for the model, and reports it there."""
    try:
        return pickle.dumps((True, load()))
    except CprError as exc:
        try:
            return pickle.dumps((False, exc))
        except Exception:  # noqa: BLE001 - a subclass that does not pickle
            return pickle.dumps((False, LoadError(str(exc))))
    except Exception as exc:  # noqa: BLE001 - reported to the command, which exits 1
        return pickle.dumps((False, LoadError(f"{type(exc).__name__}: {exc}")))


def _accept(listener: socket.socket, alive: int) -> socket.socket | None:
    """The first relay's connection, or None once the command has gone."""
    while True:
        ready, _, _ = select.select([listener, alive], [], [])
        if alive in ready:
            return None
        try:
            relay, _ = listener.accept()
        except BlockingIOError:  # another fork took it
            continue
        if peer(relay)[1] != os.getuid():  # another user's process
            relay.close()
            continue
        listener.close()
        relay.setblocking(True)
        return relay


def _work(relay: socket.socket, alive: int) -> int:
    """Runs Beam's SDK harness with the endpoints the relay sent; its exit status."""
    ready, _, _ = select.select([relay, alive], [], [])  # the command may end first
    if alive in ready:
        return 1
    endpoints = json.loads(relay.makefile("rb").readline())
    os.environ.update(endpoints)
    threading.Thread(target=_leave_with, args=(relay, alive), daemon=True).start()
    root = logging.getLogger()
    for handler in root.handlers[:]:  # a worker Beam starts has none of the command's
        root.removeHandler(handler)
    status = 0
    try:
        from apache_beam.runners.worker import sdk_worker_main

        sdk_worker_main.main([])
    except BaseException:
        logging.getLogger(__name__).exception("the forked Beam worker failed")
        status = 1
    relay.sendall(str(status).encode())
    return status


def _leave_with(relay: socket.socket, alive: int) -> None:
    """Ends the fork when its relay ends first (Beam stopped or killed the worker), or the
    command does: Beam's harness may wait for a runner that has gone."""
    select.select([relay, alive], [], [])  # neither sends anything: only their end
    os._exit(1)
