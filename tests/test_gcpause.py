"""The collector paused while versions load, back on when the last load ends, failed or not."""

from __future__ import annotations

import gc
import threading

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
