"""No cyclic garbage collection while a version loads, and none over what it loaded after.

Importing a predictor's libraries builds modules, classes and functions that point at
each other and are never garbage, and the collector's full passes over an ever larger
heap are what it spends on them: loading the bundled example (scikit-learn, SciPy) took
about 0.85 s with the collector on and 0.76 s with it paused (bench/coldstart.py).
Reference counting still frees everything that is not in a cycle as it goes. Downloads
and unpacking, which can take long, run with the collector on.

When the last load running ends, one collection of what it built frees the cycles it
left, and what is left is frozen (`gc.freeze`): later collections skip it. Before, each
full collection while serving walked every object of NumPy, SciPy and scikit-learn
again, and held the interpreter for 60 ms in the middle of requests. A version dropped
to stay within the memory budget gives its objects back to the collector (`unloaded`).
"""

from __future__ import annotations

import contextlib
import gc
import threading

_lock = threading.Lock()
_loads = 0
_was_enabled = False


@contextlib.contextmanager
def paused():
    """Collection off until the last of the loads running at once in this process ends;
    then one collection, and what survives it frozen.

    The collector is switched back on, and collects, only if it was on when the first of
    them began: a process that turned it off before keeps it off (one that switches it off
    or on while a load runs has that undone or redone when the last load ends).
    """
    global _loads, _was_enabled
    with _lock:
        if _loads == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _loads += 1
    try:
        yield
    finally:
        with _lock:
            _loads -= 1
            if _loads == 0 and _was_enabled:
                # With the collector off, everything the load built is in the youngest
                # generation: the pass the first allocation after it would start anyway,
                # now, then none of it again. Before the first load, what is older is the
                # server's own and stays; before a later one, requests' garbage may be,
                # and a full pass leaves out what earlier loads froze. Objects that
                # requests under way hold are frozen too: a cycle among them is kept.
                gc.collect(0 if gc.get_freeze_count() == 0 else 2)
                gc.freeze()
                gc.enable()


def unloaded() -> None:
    """After a version is dropped: its objects in cycles become the collector's again.

    Everything frozen is given back, collected once, and frozen again; while a load runs,
    its end does that.
    """
    with _lock:
        gc.unfreeze()
        if _loads == 0 and gc.isenabled():
            gc.collect()
            gc.freeze()
