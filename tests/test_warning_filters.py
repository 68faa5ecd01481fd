"""Merged warning filters act as the filters they replace, scikit-learn's tasks included."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

from cpr_function.serving import warning_filters


class Custom(UserWarning):
    pass


class Other(RuntimeWarning):
    pass


def _filters(*calls) -> list[tuple]:
    """The filter list that `calls` of filterwarnings/simplefilter build, newest first."""
    with warnings.catch_warnings():
        warnings.resetwarnings()
        for kind, kwargs in calls:
            getattr(warnings, kind)(**kwargs)
        return list(warnings.filters)


# Runs of neighbours with one action, and neighbours that must stay apart.
MIXED = _filters(
    ("simplefilter", {"action": "default"}),
    ("filterwarnings", {"action": "ignore", "category": ResourceWarning}),
    ("filterwarnings", {"action": "ignore", "category": ImportWarning}),
    ("filterwarnings", {"action": "error", "message": "fatal"}),
    ("filterwarnings", {"action": "ignore", "message": "numpy.dtype size", "category": Warning}),
    ("filterwarnings", {"action": "ignore", "message": "numpy.ufunc size", "category": Warning}),
    ("filterwarnings", {"action": "ignore", "message": "quiet.*please", "category": Custom}),
    ("filterwarnings", {"action": "ignore", "message": "(loud|noisy) one", "category": Custom}),
    ("filterwarnings", {"action": "always", "category": Other, "module": "mod_a"}),
    ("filterwarnings", {"action": "always", "category": Other, "module": "mod_b"}),
    ("filterwarnings", {"action": "ignore", "category": Other, "lineno": 7}),
    ("filterwarnings", {"action": "ignore", "category": Custom}),
    ("filterwarnings", {"action": "ignore", "category": DeprecationWarning}),
)

MESSAGES = (
    "fatal error",
    "numpy.dtype size changed",
    "numpy.ufunc size changed",
    "quiet, please",
    "NOISY ONE",
    "loud one",
    "just a message",
)
CATEGORIES = (
    UserWarning,
    Custom,
    Other,
    DeprecationWarning,
    ResourceWarning,
    ImportWarning,
    RuntimeWarning,
)
MODULES = ("mod_a", "mod_b", "elsewhere")
LINES = (7, 8)


def _outcome(filters, message, category, module, lineno) -> str:
    """What the warnings machinery does with one warning under `filters`."""
    with warnings.catch_warnings(record=True) as shown:
        warnings.filters[:] = filters
        warnings._filters_mutated()
        try:
            # A registry of its own each time: "default" and "once" show the first time.
            for _ in range(2):
                warnings.warn_explicit(message, category, f"{module}.py", lineno, module, {})
        except Warning as exc:
            return f"raised {type(exc).__name__}"
    return f"shown {len(shown)}"


def test_merged_filters_decide_every_warning_as_the_originals_do():
    merged = warning_filters.merge(MIXED)

    assert len(merged) == len(MIXED) - 4, merged  # two runs of categories, two of messages
    cases = itertools.product(MESSAGES, CATEGORIES, MODULES, LINES)
    differ = [case for case in cases if _outcome(MIXED, *case) != _outcome(merged, *case)]
    assert differ == []


def test_a_later_load_merges_into_filters_merged_before():
    """A load after the first meets the list merged, with new filters in front of it."""
    merged = warning_filters.merge(MIXED)
    later = [
        *_filters(("filterwarnings", {"action": "ignore", "category": Other})),
        *merged,
    ]

    again = warning_filters.merge(later)

    assert len(again) == len(merged)
    assert all(isinstance(c, type) for f in again if isinstance(f[2], tuple) for c in f[2])
    cases = itertools.product(MESSAGES, CATEGORIES, MODULES, LINES)
    assert [c for c in cases if _outcome(later, *c) != _outcome(again, *c)] == []


def test_filters_of_different_actions_or_modules_stay_apart():
    apart = _filters(
        ("filterwarnings", {"action": "ignore", "category": Custom, "module": "mod_a"}),
        ("filterwarnings", {"action": "ignore", "category": Other, "module": "mod_a"}),
        ("filterwarnings", {"action": "always", "category": Custom}),
        ("filterwarnings", {"action": "ignore", "category": Other}),
        ("filterwarnings", {"action": "ignore", "message": "a", "category": Custom}),
        ("filterwarnings", {"action": "ignore", "message": "b", "category": Other}),
    )

    assert warning_filters.merge(apart) == apart


def test_a_pattern_that_cannot_be_joined_keeps_its_own_filter():
    flagged = _filters(
        ("filterwarnings", {"action": "ignore", "message": "(?s)first", "category": Custom}),
        ("filterwarnings", {"action": "ignore", "message": "(?s)second", "category": Custom}),
    )

    assert warning_filters.merge(flagged) == flagged


@pytest.fixture
def forest():
    from sklearn.ensemble import RandomForestClassifier

    rows = np.random.RandomState(0).uniform(0, 8, (60, 4))
    return RandomForestClassifier(n_estimators=5, random_state=0).fit(rows, rows[:, 0] > 4)


def test_scikit_learn_tasks_keep_the_merged_filters(forest):
    """scikit-learn adds each filter back in each task: merged ones must survive that."""
    rows = np.random.RandomState(1).uniform(0, 8, (10, 4))
    expected = forest.predict(rows)
    with warnings.catch_warnings():
        warnings.filters[:] = MIXED
        left = warning_filters.compact()
        with warnings.catch_warnings(record=True) as shown:
            got = forest.predict(rows)
        assert left == len(warning_filters.merge(MIXED)) < len(MIXED)
        assert warnings.filters == warning_filters.merge(MIXED), "predict left them as they were"

    assert (got == expected).all()
    assert [str(w.message) for w in shown] == []
