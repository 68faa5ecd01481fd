"""Keeps the process's warning filters short, without changing what any of them does.

Since 1.7, scikit-learn's parallel helper copies `warnings.filters` into every task it
runs and adds each filter back one by one (sklearn.utils.parallel), even when the tasks
run one after another in the calling thread: a 100-tree forest's `predict` re-adds every
filter 100 times. With the 11 filters a process has once NumPy, SciPy and scikit-learn
are imported, that was about two fifths of a 64-row forest prediction, and the 5 more
that Beam, requests and urllib3 add made it 15% slower again (bench/batch.py).

Neighbouring filters with the same action are merged: those that name only a category
become one filter with a tuple of categories (`issubclass` takes a tuple, and so does
`warnings.simplefilter`); those that differ only in their message become one filter whose
pattern is the alternation of theirs. The first filter that matches a warning decides
its action, so a run of neighbours with one action decides the same as their merger.
"""

from __future__ import annotations

import re
import warnings


def compact() -> int:
    """Merges neighbouring filters of the same action in place; returns how many are left.

    Only where the interpreter has the private hook that tells its C side the list
    changed, which caches what it looked up by the list's version (3.11's does). Without
    it the filters stay as they are, and only the speed is lost.
    """
    changed = getattr(warnings, "_filters_mutated", None)
    if changed is None:
        return len(warnings.filters)
    merged = merge(warnings.filters)
    if len(merged) < len(warnings.filters):
        warnings.filters[:] = merged
        changed()
    return len(warnings.filters)


def merge(filters: list[tuple]) -> list[tuple]:
    """The same filters, each run of neighbours that can be one filter made one."""
    out: list[tuple] = []
    for item in filters:
        joined = _join(out[-1], item) if out else None
        if joined is None:
            out.append(item)
        else:
            out[-1] = joined
    return out


def _join(first: tuple, second: tuple) -> tuple | None:
    """One filter that acts as `first` then `second` do, or None."""
    action, message, category, module, lineno = first
    if (action, module, lineno) != (second[0], second[3], second[4]) or module is not None:
        return None
    if message is None and second[1] is None:
        # Either may be merged already: a load after the first meets the list merged.
        return (action, None, (*_categories(category), *_categories(second[2])), None, lineno)
    if (
        isinstance(message, re.Pattern)
        and isinstance(second[1], re.Pattern)
        and category is second[2]
        and message.flags == second[1].flags
    ):
        try:
            pattern = re.compile(f"(?:{message.pattern})|(?:{second[1].pattern})", message.flags)
        except re.error:  # an inline flag, say, that only holds at a pattern's start
            return None
        return (action, pattern, category, None, lineno)
    return None


def _categories(category: type | tuple) -> tuple:
    return category if isinstance(category, tuple) else (category,)
