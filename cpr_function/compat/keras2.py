"""Giving a version whose `.h5` files Keras 2 wrote a `tf.keras` that is Keras 2.

TensorFlow 2.16 made `tf.keras` Keras 3, which fails on many files Keras 2 wrote
(a 2019 routine's `tf.keras.models.load_model("model.h5")`), and the routine calls it
itself. TensorFlow still serves Keras 2 as `tf.keras` when the `tf-keras` package is
installed and `TF_USE_LEGACY_KERAS` is set before TensorFlow is imported: so it is
decided per version, from its files, before its code runs. A routine of 2019 that
imported Keras itself (`from keras.models import load_model`, Keras 2.2 beside
TensorFlow 1.x) gets that Keras 2 as `keras` too. A process has one `tf.keras`: a
version needing Keras 2 where another already imported TensorFlow with Keras 3 must run
in a process of its own (it does when both run custom code).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from .. import shims
from ..errors import LoadError

_FLAG = "TF_USE_LEGACY_KERAS"


def choose(model_dir: Path, noted: shims.Shims) -> None:
    """Makes `tf.keras` Keras 2 in this process when the model's `.h5` files need it.

    Raises:
        LoadError: TensorFlow was imported here with Keras 3 already.
    """
    from . import keras_files

    if not _h5_below(model_dir):
        return  # the common case, without opening a file
    old = [str(w) for w in keras_files.keras_2_h5(model_dir)]
    if not old or importlib.util.find_spec("tf_keras") is None:
        return  # nothing to do, or nothing to do it with: the load error says what
    if os.environ.get(_FLAG, "").lower() not in ("1", "true"):
        if "tensorflow" in sys.modules:
            raise LoadError(
                f"{', '.join(old)} need tf.keras to be Keras 2, but TensorFlow was already "
                "imported in this process with Keras 3 for another version: serve this "
                "version in a process of its own (CPR_ISOLATION=process)"
            )
        os.environ[_FLAG] = "1"
    _keras_is_keras_2()
    from importlib import metadata

    noted.note(
        shims.KERAS_2,
        f"{', '.join(old)}: tf.keras is Keras 2 (tf-keras {metadata.version('tf-keras')}) "
        "for this version, as when the files were written",
    )


def _h5_below(model_dir: Path) -> bool:
    return any(p.suffix in (".h5", ".hdf5") for p in model_dir.rglob("*"))


def _keras_is_keras_2() -> None:
    """`import keras` is tf-keras from now on in this process, unless Keras 3 is imported."""
    from .legacy import AliasFinder

    ours = any(getattr(f, "alias_for", None) is _as_tf_keras for f in sys.meta_path)
    if ours or "keras" in sys.modules:
        return
    sys.meta_path.insert(0, AliasFinder(_as_tf_keras, "Keras 2 for this version's files"))


def _as_tf_keras(fullname: str) -> str | None:
    """`keras[.x]` -> `tf_keras[.x]`."""
    if fullname == "keras" or fullname.startswith("keras."):
        return "tf_keras" + fullname[len("keras") :]
    return None
