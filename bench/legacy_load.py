"""Cold-start cost of old model files: loading through the conversion vs as today's files.

Usage: python bench/legacy_load.py [--rounds 5]

Two models written by the old releases themselves (bench/make_legacy_models.py): a
500-round XGBoost Booster of XGBoost 1.7.6 in its binary format, carried over to JSON
through Treelite, and a 100-tree random forest pickled by scikit-learn 1.2.2, whose node
arrays are upgraded as it is unpickled. Against each, the same model saved by today's
release (the Booster as JSON, the forest pickled again). Each load runs in a process of
its own, timed from before the legacy layer is installed to after the framework adapter
returned, with the libraries both sides need already imported: what a cold start pays
for the compatibility (Treelite's import included). Both answer the same predictions,
checked first. Rounds alternate which side goes first; the ratio is old over today's,
the median of the rounds' ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data" / "legacy"
MODELS = {"booster-500": "xgboost", "forest-100": "scikit-learn"}

# One load in a fresh process: seconds spent, and the predictions for fixed rows.
LOAD = """
import json, sys, time, warnings
from pathlib import Path
warnings.simplefilter("ignore")
sys.path.insert(0, sys.argv[3])
import numpy as np
import sklearn.ensemble, xgboost
from cpr_function import frameworks
from cpr_function.compat import legacy
rows = np.random.default_rng(1).normal(size=(16, 20)).tolist()
started = time.perf_counter()
legacy.install()
model = frameworks.load(Path(sys.argv[1]), sys.argv[2])
seconds = time.perf_counter() - started
predictions = np.asarray(model.respond({"instances": rows})["predictions"], dtype=float)
print(json.dumps({"seconds": seconds, "predictions": predictions.tolist()}))
"""

# Saves what an old file loads to as today's release saves it.
RESAVE = """
import pickle, sys, warnings
from pathlib import Path
warnings.simplefilter("ignore")
sys.path.insert(0, sys.argv[3])
from cpr_function.compat import legacy
from cpr_function.compat import binary_booster
legacy.install()
old, today = Path(sys.argv[1]), Path(sys.argv[2])
if sys.argv[4] == "xgboost":
    booster = binary_booster.booster((old / "model.bst").read_bytes())
    (today / "model.bst").write_bytes(bytes(booster.save_raw("json")))
else:
    with open(old / "model.pkl", "rb") as f:
        model = pickle.load(f)
    with open(today / "model.pkl", "wb") as f:
        pickle.dump(model, f)
"""


def _load(folder: Path, framework: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", LOAD, str(folder), framework, str(REPO)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"{'model':<14}{'old file (ms)':>15}{'today (ms)':>13}{'ratio':>9}  range")
    with tempfile.TemporaryDirectory(prefix="legacy-load-") as temp:
        for name, framework in MODELS.items():
            old, today = DATA / name, Path(temp) / name
            today.mkdir()
            subprocess.run(
                [sys.executable, "-c", RESAVE, str(old), str(today), str(REPO), framework],
                check=True,
            )
            first_old, first_today = _load(old, framework), _load(today, framework)
            if first_old["predictions"] != first_today["predictions"]:
                raise SystemExit(f"{name}: the old file and today's answer differently")
            times: dict[str, list[float]] = {"old": [], "today": []}
            for round_ in range(args.rounds):
                order = [("old", old), ("today", today)]
                for side, folder in order if round_ % 2 == 0 else order[::-1]:
                    times[side].append(_load(folder, framework)["seconds"])
            ratios = [o / t for o, t in zip(times["old"], times["today"], strict=True)]
            print(
                f"{name:<14}{statistics.median(times['old']) * 1000:>15.1f}"
                f"{statistics.median(times['today']) * 1000:>13.1f}"
                f"{statistics.median(ratios):>8.2f}x  {min(ratios):.2f}x-{max(ratios):.2f}x"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
