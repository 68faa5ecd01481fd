"""Running many downloads at once, only as many at once as makes them faster.

Cloud Storage answers many requests in parallel and takes tens of milliseconds before
each answer's first byte, so eight downloads in flight fetch a model directory of small
files several times faster than one. A server that answers one request at a time (the
storage emulator most tests use) gains nothing from eight, and its short listen queue
overflows: each connection it drops waits a second for the client to try again; and
there even two at a time are slower than one, since the client's threads then contend
for the interpreter lock with nothing to gain. So the number in flight is found by
measuring (`_Gauge`): two, then four, doubling on while each step makes the work at
least `_GAIN` times faster, or down to one when four did not (two if two were that much
faster than one).

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

_GAIN = 1.3
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
        counted: whether a result did the work its size says (False: someone else did
            it meanwhile, it took no time and says nothing about the server).
        most: the most items in flight at once.

    Raises:
        What `work` raised first; the items not yet started are not started.
    """
    from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

    if len(items) < 2:
        return [work(item) for item in items]
    results: list = [None] * len(items)
    gauge = _Gauge(most=most)
    pending = deque(sorted(range(len(items)), key=lambda i: size(items[i])))
    reordered = False

    def done(i: int, token: tuple) -> None:
        units = 1 + size(items[i]) / _BYTES_PER_REQUEST if counted(results[i]) else None
        gauge.finished(token, units)

    with ThreadPoolExecutor(max_workers=most) as pool:
        running: dict[Future, tuple[int, tuple]] = {}  # the item, its token from the gauge
        while pending or running:
            if gauge.limit == 1 and not running:
                # One at a time: on this thread, without a hand-over to the pool and back.
                i = pending.popleft()
                token = gauge.started()
                results[i] = work(items[i])
                done(i, token)
            else:
                while pending and len(running) < gauge.limit:
                    i = pending.popleft()
                    token = gauge.started()
                    running[pool.submit(work, items[i])] = (i, token)
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    i, token = running.pop(future)
                    if future.exception() is not None:
                        pending.clear()
                        _wait_out(running)
                        raise future.exception()
                    results[i] = future.result()
                    done(i, token)
            if gauge.settled and not reordered:
                # Measured: now the largest first, so that none is left running alone.
                pending = deque(sorted(pending, key=lambda i: -size(items[i])))
                reordered = True
    return results


def _wait_out(running: dict) -> None:
    """Waits for the items under way after a failure; logs what else failed."""
    from concurrent.futures import wait

    for future in wait(running).done:
        if future.exception() is not None:
            log.debug("also failed while stopping: %r", future.exception())


class _Gauge:
    """How many items to keep in flight, from the speed measured at each number tried.

    Two first (safe against a listen queue of five), then four. When four is `_GAIN`
    times faster, the store answers in parallel: eight next, and so on up to `most`,
    while each doubling pays. When it is not, the store answers one at a time: one is
    tried, and kept unless two were `_GAIN` times faster (a store that answers two at once).

    Speed at a number in flight is taken from the items started after it was chosen,
    each on its own (Little's law): its work times the mean number of items in flight
    over its life, over the time it took. A store that answers one at a time makes each
    item wait behind the others, so the speed stays; one that answers in parallel does
    not, so it doubles. Items still under way from the number before, or the slots
    filling up after a change, do not blur the measure as a count of completions per
    window would. The number in flight is averaged over each item's life, not read when
    it starts: items that finish together are replaced one by one, so the first of the
    next wave starts alone and then runs beside the others (read at the start, four at a
    time measured 0.6x what it was on a store with 30 ms per item). A window is the first
    items started at a number, waited for until all have finished: the first to finish
    would favour the items a store served out of turn, which finish fast with many in
    flight (four measured 1.26x two on a store that takes one at a time, in 5 runs of 25
    of a test store built on a semaphore, which lets a newcomer in before the thread it
    woke). Even waiting for the whole window, such a store can still look faster with
    more in flight on a busy machine: with that store a clean CI run settled on 4, and 4
    of 12 runs did beside four busy processes. A server taking connections from its
    listen queue serves them in order; the tests' stores now do too. And a gain at four
    or more is measured in a second window before it is believed (`_believed`), which a
    chance window on a busy CI machine had passed (the test of a one-at-a-time store saw 8
    in flight in 1 of 3 runs).
    """

    def __init__(self, *, most: int):
        self.limit = min(2, most)
        self.settled = self.limit >= most
        self._most = most
        self._speeds: dict[int, float] = {}
        self._doubted: dict[int, float] = {}  # a gain measured once, to measure again
        self._step = 0
        # The first item pays for connections and threads being set up: not a measure.
        self._warming = not self.settled
        self._in_flight = 0
        self._area = 0.0  # items in flight integrated over time, in item-seconds
        self._last = time.perf_counter()
        self._new_window()

    def _new_window(self) -> None:
        self._work, self._seconds, self._count, self._issued = 0.0, 0.0, 0, 0
        # Two items per slot: one window of single items was seen to be thrown off by a
        # hiccup of the machine (4 measured 1.1x 2 where it is otherwise 1.6x).
        self._needed = 1 if self._warming else 2 * self.limit
        self._size = self._needed  # the items started first that make the window

    def _believed(self, speed: float) -> bool:
        """False the first time four or more in flight look `_GAIN` times faster than the
        number before: a gain is measured twice before it is believed (the slower of the
        two counts), since one window on a busy machine can look faster with more in
        flight even against a store that takes one at a time."""
        if self.limit < 4 or self.limit in self._doubted:
            return True
        previous = self._speeds[max(k for k in self._speeds if k < self.limit)]
        if speed < _GAIN * previous:
            return True
        self._doubted[self.limit] = speed
        return False

    def _advance(self) -> float:
        now = time.perf_counter()
        self._area += self._in_flight * (now - self._last)
        self._last = now
        return now

    def started(self) -> tuple[int, float, float, int]:
        """A token for an item starting now."""
        now = self._advance()
        self._in_flight += 1
        self._issued += 1
        return self._step, now, self._area, self._issued - 1

    def finished(self, token: tuple[int, float, float, int], units: float | None) -> None:
        """Counts a finished item of `units` work (None: it did none, someone else did);
        once the window's items are all counted, decides."""
        now = self._advance()
        self._in_flight -= 1
        step, started, area, index = token
        if self.settled or step != self._step or index >= self._size:
            return
        if units is None:
            self._size += 1  # the next item started takes its place
            return
        seconds = max(now - started, 1e-9)
        self._work += units * (self._area - area) / seconds
        self._seconds += seconds
        self._count += 1
        if self._count < self._needed:
            return
        speed = self._work / max(self._seconds, 1e-9)
        log.debug("ramp: %d at a time: %.1f units/s over %d", self.limit, speed, self._count)
        self._step += 1
        if self._warming:
            self._warming = False
        elif self._believed(speed):
            self._speeds[self.limit] = min(speed, self._doubted.pop(self.limit, speed))
            self.limit, self.settled = _next(self._speeds, self.limit, self._most)
            if self.settled:
                log.info("%d at a time: the fastest (at most %d)", self.limit, self._most)
        self._new_window()


def _next(speeds: dict[int, float], limit: int, most: int) -> tuple[int, bool]:
    """The number in flight to try next, and whether it is the one to keep.

    `speeds` maps each number tried to its speed; `limit` is the one just measured.
    """
    if limit == 1:
        return (2, True) if speeds[2] >= _GAIN * speeds[1] else (1, True)
    if limit == 2:
        return min(4, most), False
    previous = max(k for k in speeds if k < limit)
    if speeds[limit] >= _GAIN * speeds[previous]:
        return (limit, True) if limit >= most else (min(2 * limit, most), False)
    if previous == 2:
        return 1, False  # four did not pay: the store takes one at a time
    return previous, True
