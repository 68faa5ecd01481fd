"""Keeping 2019-era prediction code importable on today's Python and libraries.

AI Platform runtime 1.x shipped scikit-learn 0.20, NumPy 1.16 and Python 3.5
to 3.7. Code written then trips on names that were removed since; where the
old name has an exact modern equivalent, it is put back, and only then.
Everything else is explained by `advice()` in the load error.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import threading

from .. import shims

_installed = False
_lock = threading.Lock()

# Old module name prefix -> the module that now holds the same code.
MODULE_ALIASES = {
    "sklearn.externals.joblib": "joblib",
    "sklearn.externals.six": "six",
}


# scikit-learn 0.22 made its modules private; these took another name than `_<old name>`
# (from 0.22's own list of deprecated module paths), and CCA has moved into `_pls` since.
SKLEARN_RENAMED = {
    "sklearn.tree.tree": "sklearn.tree._classes",
    "sklearn.ensemble.gradient_boosting": "sklearn.ensemble._gb",
    "sklearn.cluster.affinity_propagation_": "sklearn.cluster._affinity_propagation",
    "sklearn.cluster.dbscan_": "sklearn.cluster._dbscan",
    "sklearn.cluster.hierarchical": "sklearn.cluster._agglomerative",
    "sklearn.cluster.k_means_": "sklearn.cluster._kmeans",
    "sklearn.cluster.mean_shift_": "sklearn.cluster._mean_shift",
    "sklearn.cluster.optics_": "sklearn.cluster._optics",
    "sklearn.covariance.empirical_covariance_": "sklearn.covariance._empirical_covariance",
    "sklearn.covariance.shrunk_covariance_": "sklearn.covariance._shrunk_covariance",
    "sklearn.covariance.graph_lasso_": "sklearn.covariance._graph_lasso",
    "sklearn.cross_decomposition.cca_": "sklearn.cross_decomposition._pls",
    "sklearn.cross_decomposition.pls_": "sklearn.cross_decomposition._pls",
    "sklearn.decomposition.fastica_": "sklearn.decomposition._fastica",
    "sklearn.decomposition.online_lda": "sklearn.decomposition._lda",
    "sklearn.feature_extraction.hashing": "sklearn.feature_extraction._hash",
    "sklearn.manifold.spectral_embedding_": "sklearn.manifold._spectral_embedding",
}


def install() -> None:
    """Puts the removed modules and names back, and lets old estimators be fitted; safe to
    call more than once."""
    global _installed
    from . import removed, unpickling, xgboost_pickles

    with _lock:
        if _installed:
            return
        # Renamed modules must win over the path finder, which would otherwise load a
        # second copy of joblib's submodules under the old name; private modules are
        # only a fallback for names that no longer exist.
        sys.meta_path.insert(0, AliasFinder(_renamed))
        sys.meta_path.append(AliasFinder(_made_private))
        removed.install()
        unpickling.install()
        xgboost_pickles.install()
        _installed = True


class AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers imports of module names that moved, with the module that holds the code now.

    The old name is bound to the very module object of the new one (never a second
    copy), so classes unpickled through either name are the same classes.
    """

    def __init__(self, alias_for, why: str = "gone from today's libraries"):
        self.alias_for = alias_for
        self._why = why
        self._specs: dict[str, importlib.machinery.ModuleSpec] = {}

    def find_spec(self, fullname, path=None, target=None):
        target_name = self.alias_for(fullname)
        if target_name is None:
            return None
        try:
            found = importlib.util.find_spec(target_name)
        except (ImportError, ValueError):
            return None
        if found is None:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        target = self.alias_for(spec.name)
        module = importlib.import_module(target)
        self._specs[spec.name] = module.__spec__
        shims.note(shims.LEGACY_IMPORT, f"{spec.name} ({self._why}) is {target}")
        return module

    def exec_module(self, module):
        # The import system stamped the alias spec on the shared module; undo that.
        module.__spec__ = self._specs.pop(module.__spec__.name, module.__spec__)


def _renamed(fullname: str) -> str | None:
    """`sklearn.externals.joblib[.x]` -> `joblib[.x]`, and the like."""
    for old, new in MODULE_ALIASES.items():
        if fullname == old or fullname.startswith(old + "."):
            return new + fullname[len(old) :]
    return None


def _made_private(fullname: str) -> str | None:
    """`sklearn.ensemble.forest` -> `sklearn.ensemble._forest` (private since 0.22), and the
    modules 0.22 renamed otherwise (`sklearn.tree.tree` -> `sklearn.tree._classes`)."""
    moved = SKLEARN_RENAMED.get(fullname)
    if moved is not None:
        return moved
    parent, _, leaf = fullname.rpartition(".")
    if parent.startswith("sklearn") and leaf and not leaf.startswith("_"):
        return f"{parent}._{leaf}"
    return None


def describe(exc: BaseException) -> str:
    """An exception from user code as `Type: message`, with a fix when we know one."""
    if isinstance(exc, SystemExit):
        text = f"SystemExit: the code called sys.exit({exc.code!r})"
    else:
        # Native libraries (XGBoost) append their C++ stack to the message: log-only detail.
        message = str(exc).split("\nStack trace:")[0]
        text = f"{type(exc).__name__}: {message}"
    hint = advice(exc)
    return text + (f". To fix: {hint}" if hint else "")


def advice(exc: BaseException) -> str | None:
    """What to change in an old package that failed with `exc`, when we know."""
    text = str(exc)
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        if exc.name.startswith("tensorflow.contrib"):
            return (
                "tf.contrib was removed in TensorFlow 2; replace it with its TensorFlow 2 "
                "equivalent (see the TensorFlow migration guide)"
            )
        if exc.name.startswith("sklearn."):
            return (
                f"scikit-learn no longer has {exc.name}; if a pickle names it, re-export the "
                "model with the scikit-learn in requirements.txt"
            )
        return (
            f"module {exc.name!r} is not installed; add the package that provides it to "
            "CPR_PACKAGE_URIS or requirements.txt, or set CPR_INSTALL_DEPENDENCIES=true to "
            "install the packages' declared dependencies"
        )
    if isinstance(exc, AttributeError) and "module 'tensorflow' has no attribute" in text:
        return (
            "TensorFlow 1.x names moved to tf.compat.v1 (for example tf.compat.v1.Session); "
            "use those or port to TensorFlow 2"
        )
    if isinstance(exc, SystemExit):
        return (
            "do not exit from a module or predictor; command-line parsing (argparse) that "
            "runs on import belongs under `if __name__ == '__main__':`"
        )
    if isinstance(exc, SyntaxError):
        return (
            f"{os.path.basename(exc.filename or '?')}, line {exc.lineno} is not valid Python 3 "
            "(code for the Python 2.7 runtime needs porting, e.g. print statements)"
        )
    return None
