"""Running many downloads at once, only as many at once as makes them faster.

Cloud Storage answers many requests in parallel and takes tens of milliseconds before
each answer's first byte, so eight downloads in flight fetch a model directory of small
files several times faster than one. A server that answers one request at a time (the
storage emulator most tests use) gains nothing from eight, and its short listen queue
overflows: each connection it drops waits a second for the client to try again; and
there even two at a time are slower than one, since the client's threads then contend
for the interpreter lock with nothing to gain. So the number in flight is found by
measuring (`_Gauge`): two, then four, doubling on while each step makes the work at
least `_GAIN` times faster, or down to one when four did not.

Speed is measured in work units per second, a unit being one request plus every
`_BYTES_PER_REQUEST` bytes (what a request costs in time on a typical connection), so
that a window of small objects and one of large ones compare fairly. The ramp runs on
the smallest items first (many short requests, the case where parallelism pays); once
it has settled, the largest remaining items go first, so that none is left running
alone at the end.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)

_GAIN = 1.4
_BYTES_PER_REQUEST = 256 * 1024


def run(
    items: Sequence[T],
    work: Callable[[T], R],
    *,
    size: Callable[[T], int],
    counted: Callable[[R], bool] = lambda result: True,
    most: int,
) -> list[R]:
    """`work(item)` for every item on up to `most` threads, the results in the items' order.

    Args:
        size: an item's bytes, for the measure of speed.
        counted: whether a result did the work its size says (False: it was already
            cached, took no time, and says nothing about the server).
        most: the most items in flight at once.

    Raises:
        What `work` raised first; the items not yet started are not started.
    """
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    results: list = [None] * len(items)
    gauge = _Gauge(most=most)
    order = sorted(range(len(items)), key=lambda i: size(items[i]), reverse=gauge.settled)
    pending, reordered = deque(order), gauge.settled
    with ThreadPoolExecutor(max_workers=most) as pool:
        running: dict = {}
        while pending or running:
            if gauge.limit == 1 and not running:
                # One at a time: on this thread, without a hand-over to the pool and back.
                i = pending.popleft()
                results[i] = work(items[i])
                if counted(results[i]):
                    gauge.completed(1 + size(items[i]) / _BYTES_PER_REQUEST)
                continue
            while pending and len(running) < gauge.limit:
                i = pending.popleft()
                running[pool.submit(work, items[i])] = i
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                i = running.pop(future)
                error = future.exception()
                if error is not None:
                    pending.clear()
                    wait(running)
                    raise error
                results[i] = future.result()
                if counted(results[i]):
                    gauge.completed(1 + size(items[i]) / _BYTES_PER_REQUEST)
            if gauge.settled and not reordered:
                pending, reordered = deque(sorted(pending, key=lambda i: -size(items[i]))), True
    return results


class _Gauge:
    """How many items to keep in flight, from the speed of successive windows of completions.

    Two first (safe against a listen queue of five), then four. When four is `_GAIN`
    times faster, the store answers in parallel: eight next, and so on up to `most`,
    while each doubling pays. When it is not, the store answers one at a time: one is
    tried, and kept unless two were faster.
    """

    def __init__(self, *, most: int):
        self.limit = min(2, most)
        self.settled = self.limit >= most
        self._most = most
        self._speeds: dict[int, float] = {}
        # The first window pays for connections and threads being set up: not a measure.
        self._warming = not self.settled
        self._window_start = time.perf_counter()
        self._window_units = 0.0
        self._window_count = 0

    def completed(self, units: float) -> None:
        """Counts one finished item of `units` work; at the end of a window, decides."""
        if self.settled:
            return
        self._window_units += units
        self._window_count += 1
        # A window: one item per slot, at least two (the warm-up: one).
        if self._window_count < (1 if self._warming else max(2, self.limit)):
            return
        now = time.perf_counter()
        speed = self._window_units / max(now - self._window_start, 1e-9)
        log.debug("ramp: %d at a time: %.1f units/s over %d", self.limit, speed, self._window_count)
        self._window_start, self._window_units, self._window_count = now, 0.0, 0
        if self._warming:
            self._warming = False
            return
        self._speeds[self.limit] = speed
        self.limit, self.settled = self._next()
        if self.settled:
            log.info("%d at a time: the fastest (at most %d)", self.limit, self._most)

    def _next(self) -> tuple[int, bool]:
        speeds, limit = self._speeds, self.limit
        if limit == 1:
            return (1, True) if speeds[1] >= speeds[2] else (2, True)
        if limit == 2:
            return min(4, self._most), False
        lower = limit // 2 if limit // 2 in speeds else max(k for k in speeds if k < limit)
        if speeds[limit] >= _GAIN * speeds[lower]:
            return (limit, True) if limit >= self._most else (min(2 * limit, self._most), False)
        if lower == 2:
            return 1, False  # four did not pay: the store takes one at a time
        return lower, True
