"""Which Keras and TensorFlow wrote the model files in a directory, read without loading them.

For load errors: Keras 3 (today's `tf.keras`) cannot load every file Keras 2 wrote, and
its errors name neither. An `.h5` file records `keras_version`, a `.keras` archive its
metadata, a SavedModel the TensorFlow that wrote it (and Keras 2's `keras_metadata.pb`
when Keras wrote it).
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path

_H5 = (".h5", ".hdf5")
_DEEPEST = 3  # folders below the model directory that are looked in


@dataclasses.dataclass(frozen=True)
class Written:
    """A Keras file or SavedModel, and what wrote it where the file says."""

    file: str  # relative to the model directory (a SavedModel's folder, or saved_model.pb)
    by: str  # "Keras 2.2.4", "TensorFlow 2.6.0, Keras 2"
    old_keras: bool  # Keras 1 or 2 wrote it
    savedmodel: bool

    def __str__(self) -> str:
        return f"{self.file} ({self.by})"


def writers(model_dir: Path) -> list[Written]:
    """`model.h5 (Keras 2.2.4)`, `export/1 (TensorFlow 2.6.0, Keras 2)`, ...: what wrote
    each Keras file and SavedModel in the directory, where the file says."""
    found = []
    for path in sorted(_files(model_dir)):
        if path.name == "saved_model.pb":
            folder = path.parent.relative_to(model_dir).as_posix()
            folder = path.name if folder == "." else folder
            written = _savedmodel_tensorflow(path) or "of unknown release"
            keras_2 = (path.parent / "keras_metadata.pb").exists()
            by = f"TensorFlow {written}" + (", Keras 2" if keras_2 else "")
            found.append(Written(folder, by, keras_2, savedmodel=True))
            continue
        reads = _h5_keras_version if path.suffix in _H5 else _archive_keras_version
        version = reads(path)
        old = version is not None and version.startswith(("1.", "2."))
        shown = path.relative_to(model_dir).as_posix()
        found.append(Written(shown, f"Keras {version or 'of unknown release'}", old, False))
    return found


def keras_2_h5(model_dir: Path) -> list[Written]:
    """The Keras files (not SavedModels) in the directory that Keras 1 or 2 wrote."""
    return [w for w in writers(model_dir) if w.old_keras and not w.savedmodel]


def advice(model_dir: Path) -> str | None:
    """What to do when Keras failed on files an older Keras wrote; None when none did."""
    old = [str(w) for w in writers(model_dir) if w.old_keras]
    if not old:
        return None
    here = _installed_keras()
    if not here.startswith("3"):
        return None  # Keras 2 here: what failed is not the Keras 3 gap
    return (
        f"the model directory holds {', '.join(old)}, and tf.keras here is Keras {here}, "
        "which cannot load every file Keras 2 wrote. To fix: add tf-keras (Keras 2, of "
        "TensorFlow's release) to requirements.txt, which TensorFlow loads Keras 2's "
        "SavedModels with and a routine's .h5 files of Keras 2 then load with; or save the "
        "model again with Keras 3 (model.save('model.keras'), or model.export(path) for a "
        "SavedModel) and load that"
    )


def _files(model_dir: Path):
    for path in model_dir.rglob("*"):
        wanted = path.suffix in (*_H5, ".keras") or path.name == "saved_model.pb"
        if wanted and len(path.relative_to(model_dir).parts) <= _DEEPEST and path.is_file():
            yield path


def _h5_keras_version(path: Path) -> str | None:
    try:
        import h5py

        with h5py.File(path, "r") as f:
            version = f.attrs.get("keras_version")
    except Exception:  # noqa: BLE001 - not readable as HDF5: nothing to say
        return None
    return version.decode() if isinstance(version, bytes) else version and str(version)


def _archive_keras_version(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("metadata.json")).get("keras_version")
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def _savedmodel_tensorflow(path: Path) -> str | None:
    try:
        from tensorflow.core.protobuf import saved_model_pb2

        model = saved_model_pb2.SavedModel()
        model.ParseFromString(path.read_bytes())
        return model.meta_graphs[0].meta_info_def.tensorflow_version or None
    except Exception:  # noqa: BLE001 - TensorFlow absent or the file unreadable
        return None


def _installed_keras() -> str:
    try:
        import keras

        return keras.__version__
    except Exception:  # noqa: BLE001 - no Keras at all
        return "(not installed)"
