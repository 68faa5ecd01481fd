"""Write the two larger old model files bench/legacy_load.py loads, with the old releases.

Usage: python3 bench/make_legacy_models.py   (once; about three minutes; needs the
package index. Neither CI nor the benchmark runs it: they read the files it wrote.)

A 500-round XGBoost Booster saved by XGBoost 1.7.6 as `model.bst` (its old binary
format), and a 100-tree random forest pickled by scikit-learn 1.2.2 as `model.pkl` (its
node arrays in the layout of before 1.3), each in a folder of bench/data/legacy/, made
in a throwaway virtualenv as tests/fixtures/legacy/make_fixtures.py makes the fixtures.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "data" / "legacy"
sys.path.insert(0, str(HERE.parent / "tests" / "fixtures" / "legacy"))
from make_fixtures import JOBLIB, NUMPY, SCIPY, run  # noqa: E402

WRITE = """
import pickle, sys
from pathlib import Path
import numpy as np
import sklearn
import xgboost as xgb
from sklearn.ensemble import RandomForestClassifier

out = Path(sys.argv[1])
rng = np.random.default_rng(11)
x = rng.normal(size=(2000, 20))
y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).astype(int)
(out / "booster-500").mkdir(parents=True)
params = {"objective": "binary:logistic", "max_depth": 4, "eta": 0.1, "seed": 0, "nthread": 1}
xgb.train(params, xgb.DMatrix(x, label=y), num_boost_round=500).save_model(
    str(out / "booster-500" / "model.bst"))
(out / "forest-100").mkdir(parents=True)
forest = RandomForestClassifier(n_estimators=100, max_depth=6, random_state=0).fit(x, y)
with open(out / "forest-100" / "model.pkl", "wb") as f:
    pickle.dump(forest, f)
print("xgboost", xgb.__version__, "scikit-learn", sklearn.__version__)
"""


def main() -> int:
    requirements = ["xgboost==1.7.6", "scikit-learn==1.2.2", NUMPY, SCIPY, *JOBLIB]
    with tempfile.TemporaryDirectory(prefix="legacy-bench-") as temp:
        temp = Path(temp)
        venv, log, staging = temp / "venv", temp / "log.txt", temp / "legacy"
        run([sys.executable, "-m", "venv", str(venv)], log)
        python = str(venv / "bin" / "python")
        run([python, "-m", "pip", "install", "--only-binary=:all:", *requirements], log)
        run([python, "-c", WRITE, str(staging)], log)
        subprocess.run(["rm", "-rf", str(OUT)], check=True)
        OUT.parent.mkdir(exist_ok=True)
        subprocess.run(["cp", "-r", str(staging), str(OUT)], check=True)
    for path in sorted(OUT.rglob("model.*")):
        print(path.relative_to(HERE), path.stat().st_size, "bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
