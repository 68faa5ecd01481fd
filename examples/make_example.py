"""Rebuilds the bundled example: the iris model directory and the custom code sdist.

Run from anywhere: `python examples/make_example.py`. It writes
`examples/model/` (model.joblib, preprocessor.pkl) and
`examples/dist/my_custom_code-0.1.tar.gz`, as a user of AI Platform's custom
prediction routine guide would have made them.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CODE = HERE / "custom_code"


def train(model_dir: Path) -> None:
    """Trains a classifier on centered iris data and saves it with its preprocessor."""
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    sys.path.insert(0, str(CODE))
    from preprocess import ZeroCenterer

    features, labels = load_iris(return_X_y=True)
    preprocessor = ZeroCenterer()
    model = LogisticRegression(max_iter=1000).fit(preprocessor.preprocess(features), labels)
    model_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, model_dir / "model.joblib")
    with open(model_dir / "preprocessor.pkl", "wb") as f:
        pickle.dump(preprocessor, f)


def build_sdist(dist_dir: Path) -> Path:
    """Writes the sdist `python setup.py sdist --formats=gztar` made in 2019.

    Today's setuptools refuses this setup.py ("Multiple top-level modules
    discovered in a flat-layout"), so the archive is laid out by hand, member
    for member as setuptools 41 wrote it, with fixed timestamps so that
    rebuilding gives the same bytes.
    """
    import gzip
    import io
    import tarfile

    top = "my_custom_code-0.1"
    pkg_info = (
        "Metadata-Version: 1.0\nName: my_custom_code\nVersion: 0.1\nSummary: UNKNOWN\n"
        "Home-page: UNKNOWN\nAuthor: UNKNOWN\nAuthor-email: UNKNOWN\nLicense: UNKNOWN\n"
        "Description: UNKNOWN\nPlatform: UNKNOWN\n"
    )
    members = {
        f"{top}/PKG-INFO": pkg_info,
        f"{top}/setup.cfg": "[egg_info]\ntag_build = \ntag_date = 0\n\n",
        f"{top}/my_custom_code.egg-info/PKG-INFO": pkg_info,
        f"{top}/my_custom_code.egg-info/SOURCES.txt": "predictor.py\npreprocess.py\nsetup.py\n",
        f"{top}/my_custom_code.egg-info/dependency_links.txt": "\n",
        f"{top}/my_custom_code.egg-info/top_level.txt": "\n",
    }
    for name in ("predictor.py", "preprocess.py", "setup.py"):
        members[f"{top}/{name}"] = (CODE / name).read_text()
    dist_dir.mkdir(parents=True, exist_ok=True)
    target = dist_dir / f"{top}.tar.gz"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, text in sorted(members.items()):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1566000000, 0o644
            tar.addfile(info, io.BytesIO(data))
    with open(target, "wb") as out, gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz:
        gz.write(raw.getvalue())
    return target


if __name__ == "__main__":
    train(HERE / "model")
    print("sdist:", build_sdist(HERE / "dist"))
