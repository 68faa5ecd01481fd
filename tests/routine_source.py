"""Two releases of one custom prediction routine whose modules share names, for version tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import make_tar

# Two releases of the same custom prediction routine, as AI Platform users shipped them:
# each package has its own `predictor` and `preprocess` modules, and each model directory
# holds a pickle naming `preprocess.Scaler`, whose meaning differs between them.
PREPROCESS = """
class Scaler:
    def __init__(self, factor):
        self.factor = factor

    def transform(self, row):
        return [{op} for v in row]
"""

PREDICTOR = """
import os
import pickle

from preprocess import Scaler

TAG = {tag!r}


class Predictor:
    def __init__(self, scaler):
        self._scaler = scaler

    @classmethod
    def from_path(cls, model_dir):
        with open(os.path.join(model_dir, "scaler.pkl"), "rb") as f:
            scaler = pickle.load(f)
        assert isinstance(scaler, Scaler), type(scaler)
        return cls(scaler)

    def predict(self, instances, **kwargs):
        import preprocess  # imported again at prediction time, as some predictors do

        again = pickle.loads(pickle.dumps(self._scaler))
        assert type(again) is preprocess.Scaler
        return [
            {{"tag": TAG, "scaled": again.transform(row), "kwargs": kwargs, "pid": os.getpid()}}
            for row in instances
        ]
"""

RELEASES = {"v1": ("one", "v * self.factor"), "v2": ("two", "v + self.factor")}


def expected(version: str, instances, kwargs=None) -> list:
    tag, _ = RELEASES[version]
    scale = (lambda v: v * 10) if version == "v1" else (lambda v: v + 10)
    return [
        {"tag": tag, "scaled": [scale(v) for v in row], "kwargs": kwargs or {}} for row in instances
    ]


def without_pid(predictions: list) -> list:
    return [{k: v for k, v in p.items() if k != "pid"} for p in predictions]


def build_releases(make_dir) -> dict[str, tuple[Path, Path]]:
    """Per version: a model directory with its pickle, and its package."""
    made = {}
    for version, (tag, op) in RELEASES.items():
        root = make_dir(version)
        source, model_dir = root / "src", root / "model"
        source.mkdir()
        model_dir.mkdir()
        files = {
            "preprocess.py": PREPROCESS.format(op=op),
            "predictor.py": PREDICTOR.format(tag=tag),
        }
        for name, text in files.items():
            (source / name).write_text(text)
        pickle_it = (
            "import pickle, sys; sys.path.insert(0, sys.argv[1]); import preprocess;"
            "pickle.dump(preprocess.Scaler(10), open(sys.argv[2], 'wb'))"
        )
        subprocess.run(
            [sys.executable, "-c", pickle_it, str(source), str(model_dir / "scaler.pkl")],
            check=True,
        )
        sdist = {f"routine-{version}/{name}": text for name, text in files.items()}
        sdist[f"routine-{version}/setup.py"] = (
            "from setuptools import setup\n"
            f"setup(name='routine', version='{version[1:]}', "
            "scripts=['predictor.py', 'preprocess.py'])\n"
        )
        made[version] = (model_dir, make_tar(root / f"routine-{version}.tar.gz", sdist))
    return made


def models_file(tmp_path: Path, models: dict, **top) -> str:
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"models": models, **top}))
    return str(path)


def routine_versions(releases, names=("v1", "v2")) -> dict:
    return {
        name: {
            "origin": str(releases[name][0]),
            "package_uris": [str(releases[name][1])],
            "prediction_class": "predictor.Predictor",
        }
        for name in names
    }
