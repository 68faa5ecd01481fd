"""How many downloads run at once (ramp.py), against stores of known shape built from threads.

A store here is a function that takes 30 ms of waiting per item and answers at most
`parallel` items at once (or any number): the shape of the emulator (one at a time),
of a store that takes two, and of Cloud Storage (many, each after a delay).
"""

from __future__ import annotations

import collections
import threading
import time

import pytest

from cpr_function.loading import ramp


class Slots:
    """At most `n` items served at once, the others in the order they came, as a server
    takes connections from its listen queue. (A semaphore lets a newcomer take a slot
    before a thread it woke: items served out of turn finish at once and make more in
    flight look faster on a store that is not.)"""

    def __init__(self, n: int):
        self._changed = threading.Condition()
        self._free = n
        self._queue: collections.deque = collections.deque()

    def __enter__(self) -> None:
        with self._changed:
            ticket = object()
            self._queue.append(ticket)
            try:
                while self._queue[0] is not ticket or not self._free:
                    self._changed.wait()
            except BaseException:
                self._queue.remove(ticket)  # interrupted: not the head of the queue forever
                self._changed.notify_all()
                raise
            self._queue.popleft()
            self._free -= 1
            self._changed.notify_all()  # the next in the queue may take a free slot too

    def __exit__(self, *exc) -> None:
        with self._changed:
            self._free += 1
            self._changed.notify_all()


class Store:
    # 30 ms an item: a hiccup of the machine of a few ms is then a small part of a window.
    def __init__(self, parallel: int | None, seconds: float = 0.03):
        self._slots = Slots(parallel) if parallel else None
        self._seconds = seconds
        self._lock = threading.Lock()
        self._in_flight = 0
        self.at_once: list[int] = []  # in flight as each item started, in order
        self.calls: list[int] = []

    def fetch(self, item: int) -> int:
        with self._lock:
            self._in_flight += 1
            self.at_once.append(self._in_flight)
            self.calls.append(item)
        try:
            if self._slots is None:
                time.sleep(self._seconds)
            else:
                with self._slots:
                    time.sleep(self._seconds)
            return item * 10
        finally:
            with self._lock:
                self._in_flight -= 1


@pytest.mark.parametrize(
    "parallel,settles",
    [(1, 1), (2, 2), (None, 8)],
    ids=["one-at-a-time", "two-at-a-time", "many-at-once"],
)
def test_settles_on_the_number_the_store_answers_at_once(parallel, settles):
    store = Store(parallel)
    items = list(range(60))
    results = ramp.run(items, store.fetch, size=lambda i: 1000, most=8)
    assert results == [i * 10 for i in items], "every item once, in the items' order"
    assert sorted(store.calls) == items
    # The measuring takes 2 + 4 + 8 items at most (and 2 at one); the last 20 ran after it.
    assert max(store.at_once[-20:]) == settles


def test_the_first_error_is_raised_and_nothing_starts_after_it():
    started = []

    def fetch(item: int) -> int:
        started.append(item)
        time.sleep(0.005)
        if item == 3:
            raise OSError("object 3 is gone")
        return item

    with pytest.raises(OSError, match="object 3 is gone"):
        ramp.run(list(range(50)), fetch, size=lambda i: 1000, most=8)
    count = len(started)
    time.sleep(0.05)
    assert len(started) == count < 50, "no item starts once an error is raised"


def test_one_item_none_and_most_one_run_on_the_calling_thread():
    caller = threading.get_ident()
    seen = []

    def fetch(item: int) -> int:
        seen.append(threading.get_ident())
        return item

    assert ramp.run([], fetch, size=lambda i: 1, most=8) == []
    assert ramp.run([7], fetch, size=lambda i: 1, most=8) == [7]
    assert ramp.run([3, 1, 2], fetch, size=lambda i: i, most=1) == [3, 1, 2]
    assert set(seen) == {caller}


@pytest.mark.parametrize(
    "speeds,limit,most,decision",
    [
        ({2: 10.0}, 2, 8, (4, False)),
        ({2: 10.0}, 2, 3, (3, False)),
        ({2: 10.0, 4: 19.0}, 4, 8, (8, False)),
        ({2: 10.0, 4: 19.0}, 4, 4, (4, True)),
        ({2: 10.0, 4: 19.0, 8: 38.0}, 8, 8, (8, True)),
        ({2: 10.0, 4: 19.0, 8: 38.0}, 8, 16, (16, False)),
        ({2: 10.0, 4: 19.0, 8: 20.0}, 8, 16, (4, True)),
        ({2: 10.0, 4: 15.0, 5: 16.0}, 5, 5, (4, True)),
        ({2: 10.0, 4: 20.0, 8: 40.0, 9: 41.0}, 9, 9, (8, True)),
        ({2: 10.0, 3: 12.0}, 3, 3, (1, False)),
        ({2: 10.0, 4: 10.5}, 4, 8, (1, False)),
        ({2: 10.0, 4: 10.5, 1: 9.0}, 1, 8, (1, True)),
        ({2: 20.0, 4: 20.5, 1: 10.0}, 1, 8, (2, True)),
    ],
)
def test_each_step_compares_with_the_number_tried_before(speeds, limit, most, decision):
    assert ramp._next(speeds, limit, most) == decision


def test_a_window_is_the_items_started_first_whatever_finishes_first():
    """A store that serves a later item out of turn finishes it fast with many in flight:
    counted in place of one still waiting, it makes that number look faster than it is."""
    gauge = ramp._Gauge(most=8)
    gauge.finished(gauge.started(), 1.0)  # the warm-up item
    assert gauge.limit == 2
    window = [gauge.started() for _ in range(4)]
    served_out_of_turn = gauge.started()
    gauge.finished(served_out_of_turn, 1.0)
    for token in window[:3]:
        gauge.finished(token, 1.0)
    assert gauge.limit == 2, "the window's fourth item is still under way"
    gauge.finished(window[3], 1.0)
    assert gauge.limit == 4


def test_an_item_someone_else_did_gives_its_place_in_the_window_to_the_next():
    gauge = ramp._Gauge(most=8)
    gauge.finished(gauge.started(), 1.0)
    tokens = [gauge.started() for _ in range(5)]
    gauge.finished(tokens[0], None)  # another process downloaded it meanwhile
    for token in tokens[1:4]:
        gauge.finished(token, 1.0)
    assert gauge.limit == 2
    gauge.finished(tokens[4], 1.0)
    assert gauge.limit == 4
