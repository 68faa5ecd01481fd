"""Running a patch on a module once it is first imported, without importing it ourselves.

The compatibility layer mends libraries a deployment may never use (pandas,
scikit-learn); importing them to mend them would add their import time to every
cold start. `after(name, patch)` patches a module already imported at once, and
otherwise when the import system has executed it. Each patch runs once per module,
however often it is asked for.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Callable
from types import ModuleType

Patch = Callable[[ModuleType], None]

_lock = threading.Lock()
_waiting: dict[str, list[Patch]] = {}
_asked: set[tuple[str, Patch]] = set()
_finder: _Finder | None = None


def after(name: str, patch: Patch) -> None:
    """Calls `patch(module)` once module `name` is imported: now, if it already is; a
    patch already asked for with that module is not run again."""
    global _finder
    with _lock:
        if (name, patch) in _asked:
            return
        _asked.add((name, patch))
        module = sys.modules.get(name)
        if module is None:
            _waiting.setdefault(name, []).append(patch)
            if _finder is None:
                _finder = _Finder()
                sys.meta_path.insert(0, _finder)
            return
    patch(module)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds a waited-for module as the path finder would, and patches it once it has run."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _waiting:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            with _lock:
                patches = _waiting.pop(fullname, [])
            for patch in patches:
                patch(module)

        spec.loader.exec_module = exec_module
        return spec
