"""Batch prediction on Apache Beam: the model handler, and the `batch-predict` job.

Only this package imports Beam (the `[batch]` extra); the deployed function never does.
"""

from __future__ import annotations

_PUBLIC = {"CprModelHandler": "handler", "Failure": "handler", "isolate": "handler"}


def __getattr__(name: str):
    # Lazy, so that `cpr_function.batch` can be named without Beam installed.
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
