"""No cyclic garbage collection while a version's code is imported and its `from_path` runs.

Importing a predictor's libraries builds modules, classes and functions that point at
each other and are never garbage, and the collector's full passes over an ever larger
heap are what it spends on them: loading the bundled example (scikit-learn, SciPy) took
about 0.85 s with the collector on and 0.76 s with it paused (bench/coldstart.py).
Reference counting still frees everything that is not in a cycle as it goes; cycles made
during a load wait for the first collection after it. Downloads and unpacking, which can
take long, run with the collector on.
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
    """Collection off until the last of the loads running at once in this process ends.

    The collector is switched back on only if it was on when the first of them began: a
    process that turned it off before keeps it off (one that switches it off or on while
    a load runs has that undone or redone when the last load ends).
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
                gc.enable()
