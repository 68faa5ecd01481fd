"""Whether JSON values can be a tensor of a declared dtype and shape: one rule for every
signature that declares them (a SavedModel's, an MLflow model's)."""

from __future__ import annotations

# The NumPy kinds of received values (as NumPy reads the JSON) each declared kind takes:
# a float takes integers, nothing numeric takes booleans or strings.
_TAKES = {"b": "b", "i": "iu", "u": "iu", "f": "iuf", "c": "iufc", "S": "SU", "U": "SU"}


def takes(declared: str, received: str) -> bool:
    """Whether values NumPy reads as kind `received` fit a tensor of kind `declared`
    (NumPy kind letters); a declared kind with no rule (objects) takes anything."""
    return received in _TAKES.get(declared, received)


def fits(shape: tuple[int, ...], declared: tuple[int | None, ...] | None) -> bool:
    """Whether an array's shape is the declared one: the same rank, each dimension equal
    or declared as any size (None or -1); a declared shape of None takes any shape."""
    if declared is None:
        return True
    if len(shape) != len(declared):
        return False
    return all(d in (None, -1, s) for s, d in zip(shape, declared, strict=True))
