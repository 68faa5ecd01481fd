"""The floor for bench/overhead.py: the bundled example served by a hand-written function.

`functions-framework --target predict --source bench/bare_handler.py` answers
`{"instances": [...]}` with `{"predictions": [...]}` and does nothing else: no routes,
no checks, no logs. It loads the example's own code once, at import, the way a
hand-written `main.py` would.
"""

import json
import sys
from pathlib import Path

import joblib

EXAMPLE = Path(__file__).resolve().parent.parent / "examples"

# The example imports `sklearn.externals.joblib`, which scikit-learn 0.23 removed; a
# hand-written function would patch it back with one line too.
sys.modules.setdefault("sklearn.externals.joblib", joblib)
sys.path.insert(0, str(EXAMPLE / "custom_code"))

from predictor import MyPredictor  # noqa: E402

_predictor = MyPredictor.from_path(str(EXAMPLE / "model"))


def predict(request):
    """Decodes the body, predicts, encodes the predictions."""
    instances = json.loads(request.get_data())["instances"]
    predictions = _predictor.predict(instances)
    return json.dumps({"predictions": predictions}), 200, {"Content-Type": "application/json"}
