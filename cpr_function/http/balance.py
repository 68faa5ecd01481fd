"""Spreading connections evenly over gunicorn's worker processes.

Every worker polls the one listening socket, and the one that wakes first takes each new
connection. Clients keep their connections alive, so the spread made at connect time
holds for as long as they send: 8 connections opened at once all went to one of two
workers in 3 runs of 8, and that worker served them on one core while the other idled
(2,300 requests a second against 5,000 when they were spread).

Here each worker publishes how many connections it holds, in memory the master shares
with every worker it forks. A worker that holds some, and more than another serving
worker, stops taking new ones until that changes, and the others take them; while it
does not take any, its poll wakes every 50 ms to look again. A worker with none always
takes them, so one that has just started, or the only one, never waits for the others.

The master gives each worker a slot when it forks it and clears the slot when it reaps
the worker, so a worker that died (out of memory) stops counting at once. Only gunicorn
releases whose thread worker switches accepting on and off in its loop (27 and later)
are balanced: older ones keep gunicorn's own behaviour.
"""

from __future__ import annotations

import mmap
import os
from typing import Any

SLOTS = 256  # workers at once; more are served unbalanced
_FIELDS = 2  # a slot's: pid serving (0: none), connections held; after one header field
_RECHECK_SECONDS = 0.05

_shared: memoryview | None = None  # made in the master, inherited by the workers


def prepare(cfg: Any) -> None:
    """In the gunicorn master, before any worker is forked: the shared slots and the hooks
    that hand them out and take them back."""
    global _shared
    if _shared is None:
        _shared = memoryview(mmap.mmap(-1, (1 + SLOTS * _FIELDS) * 8)).cast("q")
    forking, reaped = cfg.pre_fork, cfg.child_exit

    def pre_fork(server, worker) -> None:
        _assign(worker, server.WORKERS.values())
        forking(server, worker)

    def child_exit(server, worker) -> None:
        _clear(getattr(worker, "_cpr_slot", None))
        reaped(server, worker)

    cfg.set("pre_fork", pre_fork)
    cfg.set("child_exit", child_exit)


def supported(worker_class: type) -> bool:
    """Whether `worker_class`'s loop reads its connection limit on every turn."""
    return hasattr(worker_class, "set_accept_enabled") and hasattr(
        worker_class, "wait_for_and_dispatch_events"
    )


def _assign(worker, running) -> None:
    taken = {getattr(w, "_cpr_slot", None) for w in running}
    free = next((i for i in range(SLOTS) if i not in taken), None)
    worker._cpr_slot = free
    _clear(free)
    if free is not None:
        _shared[0] = max(_shared[0], free + 1)  # the slots a worker need look at


def _clear(slot: int | None) -> None:
    if _shared is not None and slot is not None:
        _shared[_pid(slot)] = 0
        _shared[_held(slot)] = 0


def _pid(slot: int) -> int:
    return 1 + slot * _FIELDS


def _held(slot: int) -> int:
    return 2 + slot * _FIELDS


class Balanced:
    """What balancing adds to gunicorn's thread worker (a mixin).

    gunicorn's loop takes new connections while `nr_conns < worker_connections`; here
    `nr_conns` is published as it changes and `worker_connections` reads as what this
    worker may hold now.
    """

    _cpr_slot: int | None = None
    _cpr_conns = 0
    _cpr_limit = 1000

    @property
    def nr_conns(self) -> int:
        return self._cpr_conns

    @nr_conns.setter
    def nr_conns(self, value: int) -> None:
        self._cpr_conns = value
        if _shared is not None and self._cpr_slot is not None:
            _shared[_held(self._cpr_slot)] = value

    @property
    def worker_connections(self) -> int:
        held = self._cpr_conns
        if held == 0 or _shared is None or self._cpr_slot is None:
            return self._cpr_limit
        fewest = _fewest_elsewhere(self._cpr_slot)
        if fewest is not None and held > fewest:
            return held  # full for now: the less loaded take the next
        return self._cpr_limit

    @worker_connections.setter
    def worker_connections(self, value: int) -> None:
        self._cpr_limit = value

    def run(self) -> None:
        if _shared is not None and self._cpr_slot is not None:  # its count cleared at fork
            _shared[_pid(self._cpr_slot)] = os.getpid()  # serving from now on
        super().run()

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        if not self._accepting:
            timeout = min(timeout, _RECHECK_SECONDS)
        super().wait_for_and_dispatch_events(timeout)


def _fewest_elsewhere(mine: int) -> int | None:
    """The fewest connections another serving worker holds; None when none serves."""
    fewest = None
    shared = _shared
    for slot in range(shared[0]):
        if slot != mine and shared[_pid(slot)] != 0:
            held = shared[_held(slot)]
            if fewest is None or held < fewest:
                fewest = held
    return fewest
