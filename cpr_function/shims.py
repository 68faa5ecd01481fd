"""The compatibility shims a version needed to run as it ran on AI Platform: noted, logged, shown.

A shim is a place where this function does what AI Platform's runtime did rather
than what today's libraries do: a framework named by the v1 API's enum, predictions
of another length than the instances, an old estimator declared fitted, an import
of a module that moved. Each is logged once per version when it first applies,
shown in `GET /`, and listed by `python -m cpr_function check`, so a user sees
what differs before deploying.

Code deep in a load (an import hook, an unpickled estimator) cannot be handed the
version it serves: it calls `note()`, which reaches the version whose load or
prediction is running on this thread (`Shims.active`).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections.abc import Iterable, Iterator

from . import logs

log = logging.getLogger(__name__)

# What each kind of shim is called in logs, `GET /` and `check`.
FRAMEWORK_SPELLING = "framework spelling"
PREDICTION_COUNT = "prediction count"
FITTED_CHECK = "fitted check"
LEGACY_IMPORT = "legacy import"
PICKLE_UPGRADE = "pickle upgrade"
MODEL_CONVERSION = "model conversion"
MODEL_FILE = "model file"
KERAS_2 = "keras 2"

_ACTIVE: contextvars.ContextVar[Shims | None] = contextvars.ContextVar("cpr_shims", default=None)
# Shims noted with no version's load running (a test calling the hooks directly): logged once.
_unattributed: set[tuple[str, str]] = set()
_unattributed_lock = threading.Lock()


class Shims:
    """The shims one version needed, in the order they first applied."""

    def __init__(self, model: str, version: str, noted: Iterable[tuple[str, str]] = ()):
        self.model = model
        self.version = version
        self._lock = threading.Lock()
        self._noted: dict[tuple[str, str], None] = {}
        for kind, detail in noted:
            self.note(kind, detail)

    def note(self, kind: str, detail: str) -> bool:
        """Records that shim `kind` applied, logging it the first time.

        Returns:
            Whether this was the first time.
        """
        with self._lock:
            if (kind, detail) in self._noted:
                return False
            self._noted[(kind, detail)] = None
        log.info(
            "model %s version %s: compatibility shim (%s): %s",
            self.model,
            self.version,
            kind,
            detail,
            extra=logs.fields(model=self.model, version=self.version, shim=kind),
        )
        return True

    def listed(self) -> list[dict[str, str]]:
        """Every shim noted so far, as `GET /` shows them."""
        with self._lock:
            return [{"shim": kind, "detail": detail} for kind, detail in self._noted]

    @contextlib.contextmanager
    def active(self) -> Iterator[Shims]:
        """Makes `note()` on this thread (and what it starts with a copied context) reach us."""
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)


def note(kind: str, detail: str) -> None:
    """Records a shim for the version being loaded or predicting on this thread."""
    shims = _ACTIVE.get()
    if shims is not None:
        shims.note(kind, detail)
        return
    with _unattributed_lock:
        if (kind, detail) in _unattributed:
            return
        _unattributed.add((kind, detail))
    log.info("compatibility shim (%s): %s", kind, detail, extra=logs.fields(shim=kind))
