"""Names Python, NumPy and pandas removed since 2019, served again where one means the same.

Each is served by the module's `__getattr__` (PEP 562), which runs only when a
name is missing: code using today's names pays nothing, and each use of an old
name is noted once per version as a legacy import shim, so `check` shows it.
Only names with an exact modern equivalent are here; `legacy.advice` explains
the rest in the load error.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType
from typing import Any

from .. import shims
from . import onimport

# What an old name is today: the release that removed it, today's name, and a getter.
Entry = tuple[str, str, Callable[[], Any]]


def _named(release: str, dotted: str) -> Entry:
    module, _, name = dotted.rpartition(".")
    return release, dotted, lambda: _attr(module, name)


_ABCS = [
    "Awaitable", "Coroutine", "AsyncIterable", "AsyncIterator", "AsyncGenerator", "Hashable",
    "Iterable", "Iterator", "Generator", "Reversible", "Sized", "Container", "Callable",
    "Collection", "Set", "MutableSet", "Mapping", "MutableMapping", "MappingView", "KeysView",
    "ItemsView", "ValuesView", "Sequence", "MutableSequence", "ByteString",
]  # fmt: skip
_PYTHON: dict[str, dict[str, Entry]] = {
    "time": {"clock": _named("Python 3.8", "time.perf_counter")},
    "base64": {
        "encodestring": _named("Python 3.9", "base64.encodebytes"),
        "decodestring": _named("Python 3.9", "base64.decodebytes"),
    },
    "fractions": {"gcd": _named("Python 3.9", "math.gcd")},
    "inspect": {"getargspec": ("Python 3.11", "inspect.getfullargspec", lambda: _getargspec)},
    "collections": {n: _named("Python 3.10", f"collections.abc.{n}") for n in _ABCS},
}
# NumPy 1.20 deprecated its aliases of builtins, 1.24 removed them; 2.0 removed many more.
_NUMPY = {
    **{n: ("NumPy 1.24", f"builtins.{n}") for n in ("float", "int", "bool", "object", "str")},
    "complex": ("NumPy 1.24", "builtins.complex"),
    "unicode": ("NumPy 1.24", "builtins.str"),
    "float_": ("NumPy 2.0", "numpy.float64"),
    "complex_": ("NumPy 2.0", "numpy.complex128"),
    "cfloat": ("NumPy 2.0", "numpy.complex128"),
    "singlecomplex": ("NumPy 2.0", "numpy.complex64"),
    "longfloat": ("NumPy 2.0", "numpy.longdouble"),
    "clongfloat": ("NumPy 2.0", "numpy.clongdouble"),
    "longcomplex": ("NumPy 2.0", "numpy.clongdouble"),
    "string_": ("NumPy 2.0", "numpy.bytes_"),
    "unicode_": ("NumPy 2.0", "numpy.str_"),
    "NaN": ("NumPy 2.0", "numpy.nan"),
    "Inf": ("NumPy 2.0", "numpy.inf"),
    "Infinity": ("NumPy 2.0", "numpy.inf"),
    "PINF": ("NumPy 2.0", "numpy.inf"),
    "infty": ("NumPy 2.0", "numpy.inf"),
    "product": ("NumPy 2.0", "numpy.prod"),
    "cumproduct": ("NumPy 2.0", "numpy.cumprod"),
    "sometrue": ("NumPy 2.0", "numpy.any"),
    "alltrue": ("NumPy 2.0", "numpy.all"),
    "round_": ("NumPy 2.0", "numpy.round"),
}


def _numpy() -> dict[str, Entry]:
    names = {old: _named(release, today) for old, (release, today) in _NUMPY.items()}
    names["asscalar"] = ("NumPy 1.23", "array.item()", lambda: _asscalar)
    names["NINF"] = ("NumPy 2.0", "-numpy.inf", lambda: -math.inf)
    names["NZERO"] = ("NumPy 2.0", "-0.0", lambda: -0.0)
    names["PZERO"] = ("NumPy 2.0", "0.0", lambda: 0.0)
    return names


def install() -> None:
    """Serves the old names of the standard library and NumPy now, and of pandas once
    it is imported."""
    import importlib

    for module, names in _PYTHON.items():
        serve(importlib.import_module(module), names)
    try:
        import numpy
    except ImportError:
        pass
    else:
        serve(numpy, _numpy())
    onimport.after("pandas", _pandas)
    onimport.after("xgboost.compat", _xgboost)


def serve(module: ModuleType, names: dict[str, Entry]) -> None:
    """Makes `module.<old name>` answer what the name is today, noting the shim on each use."""
    before = module.__dict__.get("__getattr__")

    def __getattr__(name: str) -> Any:
        found = names.get(name)
        if found is None:
            if before is not None:
                return before(name)
            raise AttributeError(f"module {module.__name__!r} has no attribute {name!r}")
        release, today, value = found
        shims.note(
            shims.LEGACY_IMPORT, f"{module.__name__}.{name} (removed in {release}) is {today}"
        )
        return value()

    module.__getattr__ = __getattr__


def _pandas(pandas: ModuleType) -> None:
    """`pandas.np` (removed in 2.0) and `DataFrame.as_matrix`, `Series.as_matrix` (in 1.0)."""
    import numpy

    serve(pandas, {"np": ("pandas 2.0", "numpy", lambda: numpy)})
    for cls in (pandas.DataFrame, pandas.Series):
        if not hasattr(cls, "as_matrix"):
            cls.as_matrix = _as_matrix


def _xgboost(compat: ModuleType) -> None:
    """XGBoost 1.6 removed the label encoder its scikit-learn models pickled (`_le`): a
    LabelEncoder that only added JSON methods, so today's LabelEncoder reads its state."""
    serve(
        compat,
        {"XGBoostLabelEncoder": _named("XGBoost 1.6", "sklearn.preprocessing.LabelEncoder")},
    )


def _as_matrix(self, columns=None):
    """What pandas 0.x's `as_matrix` returned: the values, of the given columns if named."""
    shims.note(
        shims.LEGACY_IMPORT, f"{type(self).__name__}.as_matrix (removed in pandas 1.0) is .values"
    )
    return (self if columns is None else self[columns]).values


def _asscalar(array):
    """NumPy's `asscalar`, removed in 1.23: `array.item()`."""
    return array.item()


def _getargspec(func):
    """`inspect.getargspec`, removed in Python 3.11, from `getfullargspec`."""
    import collections
    import inspect

    spec = inspect.getfullargspec(func)
    arg_spec = collections.namedtuple("ArgSpec", "args varargs keywords defaults")
    return arg_spec(spec.args, spec.varargs, spec.varkw, spec.defaults)


def _attr(module: str, name: str) -> Any:
    import importlib

    return getattr(importlib.import_module(module), name)
