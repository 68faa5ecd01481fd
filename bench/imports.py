"""Import cost: a fresh `python -c "import main"` vs `python -c "import functions_framework"`.

Usage: python bench/imports.py [--rounds 15]

`import main` reads the configuration and builds the app, in every mode the function
has: no CPR_* variable (the bundled example), a single model in Cloud Storage
(CPR_ORIGIN and CPR_FRAMEWORK), a local models file (CPR_MODELS, several models, one of
them forwarded), and forwarding (CPR_FORWARD_TO and CPR_API_ENDPOINT). Each mode runs
both commands in fresh interpreters, rounds alternating which goes first; the figures are
the medians over the rounds of the differences in wall-clock time and in CPU time (user
plus system, which other work on the machine disturbs less). Bytecode is cached by an
unmeasured first run, as on a deployed function. A last run per mode counts the
modules `import main` loads that `import functions_framework` does not, and names the
heavy ones among them: there should be none, since nothing is downloaded or loaded
before the first request.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import REPO  # noqa: E402

# What only a request may bring in: Cloud Storage and the other Google clients, the HTTP
# client forwarding uses, the model frameworks.
HEAVY = ("google", "requests", "numpy", "sklearn", "pandas", "xgboost", "tensorflow", "mlflow")

MODELS_FILE = """\
models:
  iris:
    default_version: v2
    versions:
      v1: {origin: "gs://bucket/iris/v1", framework: scikit-learn}
      v2:
        origin: gs://bucket/iris/v2
        package_uris: ["gs://bucket/iris/code-0.1.tar.gz"]
        prediction_class: predictor.MyPredictor
  remote:
    versions:
      v1: {forward_to: projects/p/models/m, api_endpoint: "http://127.0.0.1:9"}
"""

LOADED = "import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"


def modes(folder: Path) -> dict[str, dict[str, str]]:
    models = folder / "models.yaml"
    models.write_text(MODELS_FILE)
    return {
        "example (no CPR_*)": {},
        "single model": {"CPR_ORIGIN": "gs://bucket/iris/v1", "CPR_FRAMEWORK": "scikit-learn"},
        "models file": {"CPR_MODELS": str(models)},
        "forwarding": {
            "CPR_FORWARD_TO": "projects/p/models/m",
            "CPR_API_ENDPOINT": "http://127.0.0.1:9",
        },
    }


def run(code: str, env: dict[str, str]) -> tuple[float, float, str]:
    """Runs `python -c code`; its wall-clock seconds, CPU seconds and output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"python -c {code!r} failed:\n{done.stderr}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return seconds, cpu, done.stdout


def measure(env: dict[str, str], rounds: int) -> tuple[list[float], list[float]]:
    """Seconds of wall-clock and of CPU time `import main` takes beyond
    `import functions_framework`, one of each per round."""
    commands = {"main": "import main", "ff": "import functions_framework"}
    for code in commands.values():
        run(code, env)  # caches bytecode; warms the page cache
    wall, cpu = [], []
    for round_ in range(rounds):
        order = list(commands) if round_ % 2 == 0 else list(reversed(commands))
        runs = {name: run(commands[name], env) for name in order}
        wall.append(runs["main"][0] - runs["ff"][0])
        cpu.append(runs["main"][1] - runs["ff"][1])
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CPR_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    print(f"import main vs import functions_framework, fresh interpreters, {args.rounds} rounds")
    print(f"{'':<20} {'added wall-clock (ms)':>24} {'added CPU (ms)':>20}")
    print(
        f"{'mode':<20} {'median':>8} {'(range)':>15} {'median':>8} {'(range)':>11} {'modules':>8}"
    )
    with tempfile.TemporaryDirectory(prefix="cpr-bench-imports-") as tmp:
        for mode, settings in modes(Path(tmp)).items():
            env = {**base, "CPR_CACHE_DIR": str(Path(tmp) / "cache"), **settings}
            wall, cpu = (sorted(s * 1000 for s in d) for d in measure(env, args.rounds))
            loaded = set(json.loads(run(LOADED.format(module="main"), env)[2]))
            loaded -= set(json.loads(run(LOADED.format(module="functions_framework"), env)[2]))
            heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
            print(
                f"{mode:<20} {statistics.median(wall):>8.1f} "
                f"{f'({wall[0]:.0f} to {wall[-1]:.0f})':>15} {statistics.median(cpu):>8.1f} "
                f"{f'({cpu[0]:.0f} to {cpu[-1]:.0f})':>11} {len(loaded):>8}  "
                f"heavy: {', '.join(heavy) or 'none'}"
            )


if __name__ == "__main__":
    main()
