"""The collector paused while versions load, back on when the last load ends, failed or not;
what a load built frozen out of later collections, its garbage collected first."""

from __future__ import annotations

import gc
import threading
import weakref

import pytest

from cpr_function.serving import gcpause


def test_overlapping_loads_switch_it_back_on_only_when_the_last_ends():
    assert gc.isenabled()
    entered, release = threading.Barrier(3), [threading.Event() for _ in range(2)]
    seen = []

    def load(n: int) -> None:
        try:
            with gcpause.paused():
                entered.wait()
                release[n].wait()
                seen.append((n, gc.isenabled()))
                if n == 1:
                    raise ValueError("from_path failed")
        except ValueError:
            seen.append((n, "failed"))

    threads = [threading.Thread(target=load, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    entered.wait()
    assert not gc.isenabled()
    release[1].set()  # the failing one ends first
    threads[1].join()
    assert not gc.isenabled(), "the other load still runs"
    release[0].set()
    threads[0].join()
    assert seen == [(1, False), (1, "failed"), (0, False)]
    assert gc.isenabled()


def test_a_process_that_turned_it_off_keeps_it_off():
    gc.disable()
    try:
        with pytest.raises(RuntimeError), gcpause.paused():
            raise RuntimeError("load failed")
        assert not gc.isenabled()
    finally:
        gc.enable()


class _Node:
    """An object in a cycle with itself: only the collector frees it."""

    def __init__(self):
        self.me = self


def _dropped_cycle() -> weakref.ref:
    node = _Node()
    return weakref.ref(node)  # the cycle is garbage as soon as this returns


def _tracked(obj) -> bool:
    """Whether later collections walk `obj`: frozen objects are in no generation."""
    return any(o is obj for o in gc.get_objects())


@pytest.mark.parametrize("earlier_load", [False, True], ids=["first load", "later load"])
def test_a_load_collects_its_garbage_then_freezes_what_it_kept(earlier_load):
    gc.unfreeze()
    if earlier_load:
        with gcpause.paused():
            pass
        assert gc.get_freeze_count() > 0
        request = _Node()  # what a request between the two loads held
        gc.collect(0)  # ...long enough to be out of the youngest generation
        before = weakref.ref(request)
        del request  # and then dropped: garbage the youngest generation does not hold
    with gcpause.paused():
        kept = _Node()  # what from_path returns
        garbage = _dropped_cycle()
        assert garbage() is not None, "no collection while loading"
    assert garbage() is None, "the load's cyclic garbage is collected when it ends"
    if earlier_load:
        assert before() is None, "a later load's full pass finds older garbage"
    assert gc.get_freeze_count() > 0
    assert not _tracked(kept), "later collections must not walk what the load kept"
    assert gc.isenabled()


def test_a_dropped_version_is_collected_and_the_rest_frozen_again():
    gc.unfreeze()
    with gcpause.paused():
        loaded = [_Node()]
        other = _Node()
    dropped = weakref.ref(loaded[0])
    loaded.clear()  # the version is unloaded: only its cycle holds it
    gc.collect()
    assert dropped() is not None, "frozen: no collection finds it"
    gcpause.unloaded()
    assert dropped() is None
    assert gc.get_freeze_count() > 0 and not _tracked(other)


def test_nothing_is_frozen_where_the_process_turned_the_collector_off():
    gc.unfreeze()
    gc.disable()
    try:
        with gcpause.paused():
            kept = _Node()
        assert gc.get_freeze_count() == 0 and _tracked(kept)
    finally:
        gc.enable()
