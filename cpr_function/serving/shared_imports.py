"""The framework libraries a process imports once before it forks the processes that load
the models, so that they share them: gunicorn's master before its workers, the
`batch-predict` command before its Beam workers (`batch/forked_workers.py`).

Each worker process loads its own copy of each model, and with it its own copy of NumPy,
SciPy and scikit-learn: on 2 CPUs (two workers) serving a forest, the process tree held
334 MB (proportional) after its first requests. Imported in the master before it forks
the workers, the libraries' pages are shared by all of them; frozen out of the collector
(`gc.freeze`, as after a load: `serving/gcpause.py`), no collection in a worker writes to
those pages and copies them. The same tree held 238 MB (a LogisticRegression: 322 MB and
230 MB). A batch job on two forked workers also ends sooner with them imported once (a
forest on 64 instances: 2.00 s against 2.08 s, 0.6 s less CPU, six alternating runs).

Only the libraries of the built-in scikit-learn and XGBoost adapters, and of the bundled
example, are imported here, for versions whose settings name them: importing them in a
process that then forks is what Python's multiprocessing does every day. TensorFlow and
whatever a custom routine imports are not fork-safe in general, and load in the workers
as before. Nothing is imported when the master's `import main` runs (it stays light, see
`function.py`): gunicorn calls `import_now` once the port is open, before the first fork.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Iterable

from ..catalog import VersionSpec
from . import gcpause

log = logging.getLogger(__name__)

# scikit-learn itself, and the estimators most saved models are made of: importing
# sklearn alone left 18 MB more in each worker serving the forest (259 MB against 238).
_SKLEARN = (
    "sklearn",
    "sklearn.ensemble",
    "sklearn.linear_model",
    "sklearn.pipeline",
    "sklearn.preprocessing",
)
_BY_FRAMEWORK = {"scikit-learn": _SKLEARN, "xgboost": ("xgboost", *_SKLEARN)}
# What the bundled example's routine imports to load its LogisticRegression, and no more:
# the rest of _SKLEARN added 0.1 s to its start.
_EXAMPLE = ("sklearn", "sklearn.linear_model")

_chosen: tuple[str, ...] = ()


def choose(specs: Iterable[VersionSpec]) -> None:
    """Notes the libraries the versions' frameworks need, for `import_now` to import."""
    global _chosen
    chosen: dict[str, None] = {}
    for spec in specs:
        if not spec.in_process:
            continue
        names = _EXAMPLE if spec.is_example else _BY_FRAMEWORK.get(spec.framework or "", ())
        chosen.update(dict.fromkeys(names))
    _chosen = tuple(chosen)


def import_now() -> None:
    """Before the forks (in gunicorn's master, once it listens): imports what `choose`
    noted, then freezes.

    A library that fails to import is left to the workers' loads, which say why.
    """
    if not _chosen:
        return
    start = time.perf_counter()
    imported = []
    # As for a version's load: no collection over the imports, one of what they built
    # after, and all of it frozen (gcpause.py).
    with gcpause.paused():
        for name in _chosen:
            try:
                importlib.import_module(name)
            except Exception as exc:  # noqa: BLE001 - each worker's load reports it
                log.info("not importing %s before forking the workers: %s", name, exc)
            else:
                imported.append(name)
    log.info(
        "imported %s in %.3fs before forking the workers, to share them",
        ", ".join(imported) or "nothing",
        time.perf_counter() - start,
    )
