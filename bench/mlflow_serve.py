"""The same scikit-learn model served by this function and by `mlflow models serve`, side by side.

Usage: python bench/mlflow_serve.py [--seconds 3] [--rounds 3]

One LogisticRegression, fitted on iris in this script, is saved twice: as `model.joblib`
for the function (CPR_FRAMEWORK=scikit-learn, a local directory as CPR_ORIGIN) and with
`mlflow.sklearn.save_model` for `mlflow models serve --env-manager local`, which is left
at its defaults (one uvicorn worker). The function gets AI Platform's `{"instances": rows}`
at /predict; MLflow gets `{"dataframe_split": ...}` with the column names at /invocations,
the form of the serving example MLflow writes next to the model. Rounds alternate between
the two, so machine noise falls on both alike.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Function, Load, free_port, load, post  # noqa: E402

SIZES = (1, 100)
CONNECTIONS = (1, 8)


class MLflowServer:
    """An `mlflow models serve --env-manager local` process on loopback, and its uvicorn server."""

    def __init__(self, model_dir: Path, log: Path):
        self.port = free_port()
        self.log = log
        # The CLI execs `uvicorn` through bash, so this interpreter's scripts must be on PATH.
        scripts = str(Path(sys.executable).parent)
        env = {
            **os.environ,
            "PATH": os.pathsep.join([scripts, os.environ.get("PATH", "")]),
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
        with open(log, "wb") as out:
            # A session of its own, so that a last resort in stop() reaches uvicorn too.
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model_dir)]
                + ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(self.port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_listening(120)
        except BaseException:
            self.stop()
            raise

    def _wait_listening(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mlflow models serve exited with {self.proc.returncode}:\n{self._tail()}"
                )
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            time.sleep(0.1)
        raise RuntimeError(
            f"mlflow models serve did not listen within {seconds:.0f}s:\n{self._tail()}"
        )

    def _tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        # The server first, so that the CLI reaps it and exits: an orphaned server would be
        # left to PID 1, which need not reap it.
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        with contextlib.suppress(OSError):
            for pid in children.read_text().split() or [self.proc.pid]:
                os.kill(int(pid), signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def save_models(root: Path) -> tuple[list[str], list[list[float]]]:
    """Fits one iris classifier and saves it for both servers; returns iris's columns and rows."""
    import joblib
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True, as_frame=True)
    # Fitted on the data frame, as an MLflow user would. The function gives this plain
    # estimator the rows as an array in the fitted column order; MLflow gives it a frame.
    model = LogisticRegression(max_iter=1000).fit(features, labels)
    (root / "sk").mkdir()
    joblib.dump(model, root / "sk" / "model.joblib")
    mlflow.sklearn.save_model(
        model,
        root / "mlflow",
        signature=infer_signature(features, model.predict(features)),
        input_example=features.head(3),
    )
    return list(features.columns), features.to_numpy().tolist()


def measure(servers: dict, requests: dict, *, rounds: int, seconds: float) -> dict:
    """Loads each server in turn, every size and connection count, `rounds` times over."""
    results: dict[tuple[str, int, int], list[Load]] = {}
    for round_ in range(rounds):
        # Who goes first alternates too, so that neither always follows the other's load.
        order = list(servers) if round_ % 2 == 0 else list(reversed(servers))
        for n in SIZES:
            for connections in CONNECTIONS:
                for side in order:
                    path, bodies = requests[side]
                    run = load(
                        servers[side].port,
                        path,
                        bodies[n],
                        connections=connections,
                        seconds=seconds,
                    )
                    results.setdefault((side, n, connections), []).append(run)
    return results


def report(results: dict[tuple[str, int, int], list[Load]]) -> None:
    def ms(values) -> float:
        return statistics.median(values) * 1000

    print("this function vs mlflow models serve, one iris LogisticRegression, side by side")
    print(
        f"{'instances':>9} {'conns':>5} {'throughput ratio':>17} "
        f"{'ours p50':>9} {'ours p99':>9} {'mlflow p50':>11} {'mlflow p99':>11}  (ms)"
    )
    for n in SIZES:
        for connections in CONNECTIONS:
            ours = results[("ours", n, connections)]
            theirs = results[("mlflow", n, connections)]
            ratio = statistics.median(
                o.throughput / t.throughput for o, t in zip(ours, theirs, strict=True)
            )
            print(
                f"{n:>9} {connections:>5} {ratio:>16.2f}x "
                f"{ms(o.p50 for o in ours):>9.2f} {ms(o.p99 for o in ours):>9.2f} "
                f"{ms(t.p50 for t in theirs):>11.2f} {ms(t.p99 for t in theirs):>11.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    # A terminated benchmark still stops both servers, through the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    with tempfile.TemporaryDirectory(prefix="cpr-bench-mlflow-") as tmp:
        root = Path(tmp)
        columns, iris = save_models(root)
        rows = {n: (iris[::3] + iris[1::3])[:n] for n in SIZES}  # every class, in both sizes
        requests = {
            "ours": ("/predict", {n: {"instances": rows[n]} for n in SIZES}),
            "mlflow": (
                "/invocations",
                {n: {"dataframe_split": {"columns": columns, "data": rows[n]}} for n in SIZES},
            ),
        }
        servers: dict[str, Function | MLflowServer] = {}
        try:
            servers["ours"] = Function(
                {
                    "CPR_ORIGIN": str(root / "sk"),
                    "CPR_FRAMEWORK": "scikit-learn",
                    "CPR_CACHE_DIR": str(root / "cache"),
                }
            )
            servers["mlflow"] = MLflowServer(root / "mlflow", root / "mlflow-serve.log")
            for n in SIZES:
                answers = {
                    side: post(servers[side].port, path, bodies[n])["predictions"]
                    for side, (path, bodies) in requests.items()
                }
                if answers["ours"] != answers["mlflow"] or len(answers["ours"]) != n:
                    raise RuntimeError(f"the two servers disagree on {n} instances: {answers}")
            results = measure(servers, requests, rounds=args.rounds, seconds=args.seconds)
        finally:
            for server in servers.values():
                server.stop()
    report(results)


if __name__ == "__main__":
    main()
