"""The floor for bench/coldstart.py: the least a process does before its first prediction.

It imports what the function's process holds when it answers (functions_framework,
flask, numpy, scikit-learn, the example's predictor), calls `from_path` on the example's
local model directory, predicts once and prints the answer, with how long its imports
and `from_path` took. No server, no request.
"""

import time

started = time.perf_counter()

import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import flask  # noqa: E402, F401
import functions_framework  # noqa: E402, F401

served = time.perf_counter()

import joblib  # noqa: E402
import numpy  # noqa: E402, F401
import sklearn  # noqa: E402, F401

EXAMPLE = Path(__file__).resolve().parent.parent / "examples"

# The example imports `sklearn.externals.joblib`, which scikit-learn 0.23 removed.
sys.modules.setdefault("sklearn.externals.joblib", joblib)
sys.path.insert(0, str(EXAMPLE / "custom_code"))

from predictor import MyPredictor  # noqa: E402

imported = time.perf_counter()
predictor = MyPredictor.from_path(str(EXAMPLE / "model"))
loaded = time.perf_counter()
answer = {"predictions": predictor.predict([[5.1, 3.5, 1.4, 0.2]])}
phases = {"server imports": served - started, "model imports": imported - served}
phases["from_path"] = loaded - imported
print(json.dumps({"answer": answer, "phases": phases}), flush=True)
