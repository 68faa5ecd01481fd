"""Which loaded versions to unload, least recently used first, to stay within CPR_MEMORY_BUDGET."""

from __future__ import annotations

import collections
import logging
import threading
from typing import Any

log = logging.getLogger(__name__)


class MemoryBudget:
    """The versions in the order they were last used, and their handles' memory.

    Only handles that report `memory` (a version in a process of its own) count; with no
    budget nothing is ever unloaded, and only which versions were used is kept.
    """

    def __init__(self, budget: int | None, handles: dict[str, Any]):
        self._budget = budget
        self._handles = handles
        self._lock = threading.Lock()
        self._recent: collections.OrderedDict[str, None] = collections.OrderedDict()

    def used(self, key: str) -> None:
        """Marks a version used now, then unloads others while the loaded ones exceed the budget."""
        if self._budget is None and key in self._recent:
            return  # without a budget, which versions were used matters, not in what order
        with self._lock:
            self._recent[key] = None
            self._recent.move_to_end(key)
            victims = self._over_budget(keep=key)
        for victim in victims:
            log.info("unloading %s, least recently used, to stay within CPR_MEMORY_BUDGET", victim)
            self._handles[victim].unload()

    def loaded_bytes(self) -> int:
        """The memory of the versions used and still loaded."""
        return sum(_memory(self._handles[k]) for k in list(self._recent))

    def _over_budget(self, keep: str) -> list[str]:
        if self._budget is None:
            return []
        sizes = {k: _memory(self._handles[k]) for k in self._recent}
        total, victims = sum(sizes.values()), []
        for key in list(self._recent):
            if total <= self._budget:
                break
            if key != keep:
                victims.append(key)
                total -= sizes[key]
                del self._recent[key]
        return victims


def _memory(handle) -> int:
    return (getattr(handle, "memory", None) or 0) if handle.loaded else 0
