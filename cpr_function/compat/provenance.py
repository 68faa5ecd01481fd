"""Which release wrote a model file, read from the file, and what to do when it cannot load.

A scikit-learn pickle records the release that wrote each estimator
(`_sklearn_version` in its state). A load error names that release beside the one
installed here, and says how to get a file this one reads.
"""

from __future__ import annotations

import re
from pathlib import Path

from .. import shims

# The key scikit-learn stores in each estimator's pickled state, then its value nearby
# (whatever pickle protocol wrote the string).
_SKLEARN_VERSION = re.compile(rb"_sklearn_version.{1,12}?(\d+\.\d+(?:\.\d+)?(?:\.?post\d+)?)", re.S)
# Libraries a pickle of a framework model may name; any other module is the user's own.
_LIBRARIES = {"sklearn", "xgboost", "joblib", "numpy", "scipy", "pandas", "skops", "lightgbm"}


def sklearn_release(path: Path) -> str | None:
    """The scikit-learn release that wrote a `.pkl` or `.joblib`, when the file records it."""
    with open(path, "rb") as f:
        head = f.read(4 << 20)  # each estimator records it; the first is near the start
    found = _SKLEARN_VERSION.search(head)
    return found.group(1).decode() if found else None


def note_writer(path: Path) -> None:
    """Notes the scikit-learn release that wrote a pickle, when it is not the one installed
    here: `check` and `GET /` then say which release wrote the model file."""
    if path.suffix not in (".pkl", ".joblib"):
        return
    written = sklearn_release(path)
    if written is None:
        return
    import sklearn

    if written != sklearn.__version__:
        shims.note(
            shims.MODEL_FILE,
            f"{path.name} was written by scikit-learn {written}; this runs {sklearn.__version__}",
        )


def first_line(exc: BaseException) -> str:
    """`Type: message` of an exception, its first line only: the rest (a native stack, a
    NumPy dtype dump) is for the log."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def load_failed(framework: str, path: Path, exc: BaseException) -> str:
    """The message of a framework model that failed to load: the error's first line, the
    release that wrote the file when it says, and what to do about it."""
    message = f"loading {path.name} as a {framework} model failed: {first_line(exc)}"
    written = sklearn_release(path) if path.suffix in (".pkl", ".joblib") else None
    here = None
    if written is not None:
        import sklearn

        here = sklearn.__version__
        message += f"; the file was written by scikit-learn {written}" + (
            ", the release installed here" if written == here else f", and this runs {here}"
        )
    if isinstance(exc, ImportError) and exc.name:
        return message + f". To fix: {_missing_module(exc.name)}"
    if written is not None and written != here:
        return message + f". To fix: {_resave(written, here)}"
    return message


def _missing_module(name: str) -> str:
    top = name.split(".")[0]
    if top in _LIBRARIES:
        return (
            f"the pickle names {name}, which the installed {top} does not have: install the "
            f"{top} release that wrote the file (requirements.txt), or save the model again "
            "with the release installed here"
        )
    return (
        f"the pickle names module {name!r}, which is your own code (where the class was "
        "defined when the model was saved): ship it in a package with CPR_PACKAGE_URIS "
        "(deploy.sh --package-uris), as AI Platform's --package-uris did"
    )


def _resave(written: str, here: str) -> str:
    major, minor = (int(p) for p in written.split(".")[:2])
    if (major, minor) >= (1, 3):
        return (
            f"pin scikit-learn=={written} in requirements.txt, or save the model again "
            f"with scikit-learn {here}"
        )
    return (
        f"scikit-learn {written} does not install on today's Python; load the file once with "
        f"scikit-learn {written} (on a Python it supports) and save the model again, with "
        f"scikit-learn {here}, or in a format both read"
    )
