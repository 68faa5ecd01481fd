"""Unpickling the XGBoost models that XGBoost 0.8x to 1.5 pickled, which today's refuses.

A pickled `Booster` (alone, or inside an `XGBClassifier` or `XGBRegressor`) holds its
model as that release serialized it: the old binary model (0.8x, 0.90), the binary
model and its configuration behind a `CONFIG-offset:` header (1.0 to 1.2), or JSON
text (1.3 to 1.5). XGBoost 3.2 reads only the UBJSON that 1.6 and later write, and
fails with "Invalid serialization file". In `Booster.__setstate__`, where the user's
own `pickle.load` meets it too, the model is carried over: JSON text as it is, a
binary model through Treelite (binary_booster.py).

Their scikit-learn models also kept a label encoder (`_le`) and answered its labels;
today's answer class indexes. Where the encoder's classes are not the indexes
themselves, `predict` and `classes_` answer the labels again.
"""

from __future__ import annotations

import json
import struct

from .. import shims
from . import onimport

_CONFIG_HEADER = b"CONFIG-offset:"


def install() -> None:
    """Patches XGBoost's Booster and scikit-learn classifier once they are imported; safe to
    call more than once (onimport runs each patch once)."""
    onimport.after("xgboost.core", _patch_booster)
    onimport.after("xgboost.sklearn", _patch_classifier)


def model_of(handle: bytes) -> tuple[bytes, str] | None:
    """The JSON model in an old serialization, and what wrote it; None for today's (UBJSON).

    Raises:
        ImportError: it is a binary model, and Treelite is not installed.
        Exception: the bytes cannot be read as any old serialization.
    """
    from . import binary_booster

    data = bytes(handle)
    if data[:1] == b"{" and data[1:2].isalpha():
        return None  # UBJSON: 1.6 and later
    if data[:2] == b'{"':
        return json.dumps(json.loads(data)["Model"]).encode(), "XGBoost 1.3 to 1.5 (JSON)"
    if data.startswith(_CONFIG_HEADER):
        (size,) = struct.unpack_from("<q", data, len(_CONFIG_HEADER))
        start = len(_CONFIG_HEADER) + 8
        binary = data[start : start + size]
        return binary_booster.to_json(binary), f"XGBoost {binary_booster.release(binary)}"
    return binary_booster.to_json(data), f"XGBoost {binary_booster.release(data)}"


def _patch_booster(core) -> None:
    booster = core.Booster
    original = booster.__setstate__

    def __setstate__(self, state):
        handle = state.get("handle") if isinstance(state, dict) else None
        found = model_of(handle) if handle is not None else None
        if found is not None:
            model, written = found
            # Today's serialization of the same model, which the original reads.
            today = booster(model_file=bytearray(model)).__getstate__()["handle"]
            state = {**state, "handle": today}
            shims.note(
                shims.MODEL_CONVERSION,
                f"a Booster pickled by {written}, which this XGBoost cannot read: carried "
                "over to XGBoost's JSON model",
            )
        original(self, state)

    __setstate__.__wrapped__ = original
    booster.__setstate__ = __setstate__


def _patch_classifier(sklearn) -> None:
    classifier = sklearn.XGBClassifier
    predict, classes = classifier.predict, classifier.classes_

    def predict_labels(self, *args, **kwargs):
        found = predict(self, *args, **kwargs)
        encoder = _labels(self)
        return found if encoder is None else encoder.inverse_transform(found.astype(int))

    def labels(self):
        encoder = _labels(self)
        return classes.fget(self) if encoder is None else encoder.classes_

    predict_labels.__wrapped__ = predict
    classifier.predict = predict_labels
    classifier.classes_ = property(labels, doc=classes.__doc__)


def _labels(model):
    """The label encoder an old classifier pickled, when its classes are not 0, 1, ..."""
    import numpy

    encoder = vars(model).get("_le")
    found = getattr(encoder, "classes_", None)
    if found is None or numpy.array_equal(found, numpy.arange(len(found))):
        return None
    return encoder
