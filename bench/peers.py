"""This function vs MLServer and BentoML, the same scikit-learn models, side by side.

Usage: python bench/peers.py [--seconds 3] [--rounds 3] [--models example,forest]
                             [--connections 1,8,32] [--sizes 1,100] [--generator python|wrk]
                             [--venvs DIR] [--no-batching] [--requests 1000]
                             [--first-answers-only]

Two models are fitted here on iris and saved once with joblib: `example`, a
LogisticRegression (the bundled example's kind), and `forest`, a 100-tree random forest.
Each server loads the same file as its own documentation says, at its defaults, on one
loopback port:

- this function with no custom code (CPR_ORIGIN, CPR_FRAMEWORK=scikit-learn), answering
  `{"instances": rows}` at /predict;
- MLServer with its scikit-learn runtime (`mlserver start` on a folder holding the model
  and a `model-settings.json` naming `mlserver_sklearn.SKLearnModel`), answering the V2
  inference protocol at /v2/models/NAME/infer;
- BentoML, a `@bentoml.service` class that loads the file and has one `@bentoml.api`
  taking `instances` as a NumPy array, served by `bentoml serve`.

Each system runs from a virtualenv of its own (under the temporary folder, or `--venvs DIR`
to keep them between runs), holding what its own documentation installs: the peers'
packages, and for this function its `requirements.txt`, what Cloud Functions installs for
it. All three get this environment's scikit-learn release, so that they load the same file;
the peers' versions are printed. (This environment holds more: pandas, which scikit-learn
imports whenever it is installed, adds about 0.2 s to any start that imports scikit-learn.)
Before anything is timed, the three answer the same 100 rows and must agree. Then, rounds
alternating and the order turning, each server takes the same load: throughput and p50/p99
for each size and connection count, with batching off (every default) and on (MLServer's
adaptive batching and BentoML's batchable API, each at 32 requests or 2 ms; ours is the
same in both, its defaults, which merge requests for scikit-learn models and run a worker
process a CPU); start to first answer with the model on local disk; and the memory of each
server's process tree after --requests requests, resident (each process's pages in full)
and proportional (pages shared between processes counted once, as an instance's memory
limit counts them). Ratios are ours over theirs (higher is better for throughput, lower for
latency, start and memory); ranges are over rounds.

With `--first-answers-only`, only the start to first answer is measured, `--rounds` times
for each server and model (every default), the order turning each round: one start a
configuration, as the full run takes, is a single sample on a noisy host.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (  # noqa: E402
    GENERATORS,
    REPO,
    Function,
    free_port,
    post,
    tree_pss,
    tree_rss,
    venv,
)

PEERS = ("mlserver", "bentoml")
BATCH_SIZE, BATCH_MS = 32, 2

BENTO_SERVICE = f"""
import os

import bentoml
import joblib
import numpy as np

BATCHING = os.environ.get("PEER_BATCHING") == "on"


@bentoml.service
class Model:
    def __init__(self) -> None:
        self.model = joblib.load(os.environ["PEER_MODEL"])

    if BATCHING:

        @bentoml.api(batchable=True, max_batch_size={BATCH_SIZE}, max_latency_ms=1000)
        def predict(self, instances: np.ndarray) -> np.ndarray:
            return self.model.predict(instances)

    else:

        @bentoml.api
        def predict(self, instances: np.ndarray) -> np.ndarray:
            return self.model.predict(instances)
"""


def fit(root: Path) -> dict[str, Path]:
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    made = {}
    for name, model in (
        ("example", LogisticRegression(max_iter=1000)),
        ("forest", RandomForestClassifier(n_estimators=100, random_state=0)),
    ):
        folder = root / "models" / name
        folder.mkdir(parents=True)
        joblib.dump(model.fit(features, labels), folder / "model.joblib")
        made[name] = folder
    return made


def version(python: Path, package: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True).stdout.strip()


class Peer:
    """A peer's server process on loopback: MLServer or BentoML, one model."""

    def __init__(self, kind: str, python: Path, model_dir: Path, work: Path, *, batching: bool):
        self.kind, self.port = kind, free_port()
        env = {**os.environ, "PEER_MODEL": str(model_dir / "model.joblib")}
        env["PEER_BATCHING"] = "on" if batching else "off"
        env["PATH"] = os.pathsep.join([str(python.parent), env.get("PATH", "")])
        env["BENTOML_DO_NOT_TRACK"] = "True"
        work.mkdir(parents=True, exist_ok=True)
        if kind == "mlserver":
            repo = work / "repository"
            repo.mkdir(exist_ok=True)
            (repo / "model.joblib").write_bytes((model_dir / "model.joblib").read_bytes())
            settings = {
                "name": "model",
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib"},
            }
            if batching:
                settings |= {"max_batch_size": BATCH_SIZE, "max_batch_time": BATCH_MS / 1000}
            (repo / "model-settings.json").write_text(json.dumps(settings))
            server = {
                "host": "127.0.0.1",
                "http_port": self.port,
                "grpc_port": free_port(),
                "metrics_port": free_port(),
            }
            (repo / "settings.json").write_text(json.dumps(server))
            command = [str(python.parent / "mlserver"), "start", str(repo)]
            self.path = "/v2/models/model/infer"
        else:
            (work / "service.py").write_text(BENTO_SERVICE)
            command = [str(python.parent / "bentoml"), "serve", "service:Model"]
            command += ["--host", "127.0.0.1", "--port", str(self.port)]
            self.path = "/predict"
        self.started = time.perf_counter()
        with open(work / "server.log", "ab") as log:  # the server holds it once started
            self.proc = subprocess.Popen(
                command,
                cwd=work,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def body(self, rows: list) -> dict:
        if self.kind == "mlserver":
            flat = [v for row in rows for v in row]
            shape = [len(rows), len(rows[0])]
            return {"inputs": [{"name": "x", "shape": shape, "datatype": "FP64", "data": flat}]}
        return {"instances": rows}

    def answer(self, body: dict) -> list:
        if self.kind == "mlserver":
            return body["outputs"][0]["data"]
        return body

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class Ours:
    """This function, with no custom code, wrapped to look like a Peer."""

    kind, path = "ours", "/predict"

    def __init__(self, python: Path, model_dir: Path, cache: Path, *, batching: bool):
        env = {"CPR_ORIGIN": str(model_dir), "CPR_FRAMEWORK": "scikit-learn"}
        env["CPR_CACHE_DIR"] = str(cache)
        # Every default, in both modes: micro-batching is on by default for scikit-learn.
        del batching
        self.started = time.perf_counter()
        self.fn = Function(env, python=python, threads=None, workers=None)
        self.port, self.proc = self.fn.port, self.fn.proc

    def body(self, rows: list) -> dict:
        return {"instances": rows}

    def answer(self, body: dict) -> list:
        return body["predictions"]

    def stop(self) -> None:
        self.fn.stop()


def first_answer(server, rows: list, limit: float = 120) -> float:
    """Seconds from the server's start to its first right answer."""
    deadline = server.started + limit
    while time.perf_counter() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.kind} exited with {server.proc.returncode}")
        with contextlib.suppress(OSError, RuntimeError, http.client.HTTPException):
            post(server.port, server.path, server.body(rows), timeout=5)
            return time.perf_counter() - server.started
        time.sleep(0.02)
    raise RuntimeError(f"{server.kind} did not answer within {limit:.0f} s")


def start(kind: str, pythons: dict, model_dir: Path, work: Path, *, batching: bool):
    if kind == "ours":
        return Ours(pythons[kind], model_dir, work / "cache", batching=batching)
    folder = work / f"{kind}-{model_dir.name}-{'on' if batching else 'off'}-{time.time_ns()}"
    return Peer(kind, pythons[kind], model_dir, folder, batching=batching)


def run(args, work: Path, pythons: dict, models: dict) -> None:
    import joblib

    rows_all = json.loads(json.dumps(_iris_rows()))
    sides = ("ours", *PEERS)
    for name in args.models:
        model_dir = models[name]
        expected = joblib.load(model_dir / "model.joblib").predict(rows_all[:100]).tolist()
        for batching in [False] if args.no_batching else [False, True]:
            label = f"{name}, theirs batching {'on' if batching else 'off'}"
            servers, starts = {}, {}
            try:
                for side in sides:
                    servers[side] = start(side, pythons, model_dir, work, batching=batching)
                    starts[side] = first_answer(servers[side], rows_all[:1])
                for side, server in servers.items():
                    got = server.answer(post(server.port, server.path, server.body(rows_all[:100])))
                    if [int(v) for v in got] != expected:
                        raise SystemExit(f"{side} answers {got[:10]}..., not {expected[:10]}...")
                print(
                    f"\n{label}: the three agree on 100 rows; first answer (s): "
                    + ", ".join(f"{s} {starts[s]:.2f}" for s in sides),
                    flush=True,
                )
                results = measure(args, servers, rows_all)
                report(label, results, args)
                for server in servers.values():
                    body = server.body(rows_all[:1])
                    for _ in range(args.requests):
                        post(server.port, server.path, body)
                for kind, held in (("resident", tree_rss), ("proportional", tree_pss)):
                    memory = {side: held(server.proc.pid) for side, server in servers.items()}
                    print(
                        f"  {kind} memory of the process tree after "
                        f"{args.requests} requests (MB): "
                        + ", ".join(f"{s} {memory[s] / 2**20:.0f}" for s in sides)
                        + "; ratio ours/theirs: "
                        + ", ".join(f"{p} {memory['ours'] / memory[p]:.2f}x" for p in PEERS)
                    )
                print(
                    "  first answer ratio ours/theirs: "
                    + ", ".join(f"{p} {starts['ours'] / starts[p]:.2f}x" for p in PEERS)
                )
            finally:
                for server in servers.values():
                    server.stop()


def measure(args, servers: dict, rows: list) -> dict:
    generate = GENERATORS[args.generator]
    results: dict = {}
    sides = list(servers)
    for round_ in range(args.rounds):
        order = sides[round_ % len(sides) :] + sides[: round_ % len(sides)]
        for n in args.sizes:
            for connections in args.connections:
                for side in order:
                    server = servers[side]
                    body = server.body(rows[:n])
                    try:
                        done = generate(
                            server.port,
                            server.path,
                            body,
                            connections=connections,
                            seconds=args.seconds,
                        )
                    except RuntimeError as exc:  # a server refusing requests under load
                        print(
                            f"  {side}, {n} instance(s), {connections} connections: "
                            f"{str(exc).splitlines()[0]}; counted as failed",
                            flush=True,
                        )
                        done = None
                    results.setdefault((side, n, connections), []).append(done)
    return results


def report(label: str, results: dict, args) -> None:
    print(f"  {label}: throughput ratio ours/theirs (median, range over rounds); p50/p99 ms")
    print(
        f"  {'n':>4} {'conns':>5} {'vs mlserver':>22} {'vs bentoml':>22}"
        f" {'ours p50/p99':>14} {'mlserver':>14} {'bentoml':>14}"
    )
    for n in args.sizes:
        for connections in args.connections:
            ours = results[("ours", n, connections)]
            cells = []
            for peer in PEERS:
                theirs = results[(peer, n, connections)]
                pairs = zip(ours, theirs, strict=True)
                ratios = [o.throughput / t.throughput for o, t in pairs if o and t]
                if not ratios:
                    cells.append("failed")
                    continue
                cells.append(
                    f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
                )
            lat = []
            for side in ("ours", *PEERS):
                runs = [r for r in results[(side, n, connections)] if r]
                if not runs:
                    lat.append("failed")
                    continue
                p50 = statistics.median(r.p50 for r in runs) * 1000
                p99 = statistics.median(r.p99 for r in runs) * 1000
                lat.append(f"{p50:.1f}/{p99:.1f}")
            print(
                f"  {n:>4} {connections:>5} {cells[0]:>22} {cells[1]:>22}"
                f" {lat[0]:>14} {lat[1]:>14} {lat[2]:>14}",
                flush=True,
            )


def _iris_rows() -> list[list[float]]:
    from sklearn.datasets import load_iris

    features, _ = load_iris(return_X_y=True)
    return (features[::3].tolist() + features[1::3].tolist())[:100]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", type=lambda s: s.split(","), default=["example", "forest"])
    parser.add_argument(
        "--connections", type=lambda s: [int(c) for c in s.split(",")], default=[1, 8, 32]
    )
    parser.add_argument("--sizes", type=lambda s: [int(c) for c in s.split(",")], default=[1, 100])
    parser.add_argument("--generator", choices=sorted(GENERATORS), default="python")
    parser.add_argument("--venvs", type=Path, help="keep the peers' virtualenvs here")
    parser.add_argument("--no-batching", action="store_true", help="only every default")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument(
        "--first-answers-only", action="store_true", help="only start to first answer, --rounds"
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    import sklearn

    with tempfile.TemporaryDirectory(prefix="cpr-bench-peers-") as tmp:
        work = Path(tmp)
        venvs = args.venvs or work / "venvs"
        same = [f"scikit-learn=={sklearn.__version__}"]
        requirements = REPO / "requirements.txt"
        # Named by the file's contents, so that a changed requirements.txt gets a new one.
        ours = "ours-" + hashlib.sha256(requirements.read_bytes()).hexdigest()[:12]
        pythons = {
            "ours": venv(venvs / ours, ["-r", str(requirements), *same]),
            # MLServer 1.7.1's workers call asyncio.get_event_loop() in a new process, which
            # uvloop 0.22 and later refuse: every model fails to load with them.
            "mlserver": venv(
                venvs / "mlserver", ["mlserver", "mlserver-sklearn", "uvloop<0.22", *same]
            ),
            "bentoml": venv(venvs / "bentoml", ["bentoml", *same]),
        }
        print(
            "peers: "
            + ", ".join(
                f"{p} {version(pythons['mlserver'], p)}" for p in ("mlserver", "mlserver-sklearn")
            )
            + f", bentoml {version(pythons['bentoml'], 'bentoml')}; scikit-learn "
            f"{sklearn.__version__} in all three; load from {args.generator}",
            flush=True,
        )
        (first_answers if args.first_answers_only else run)(args, work, pythons, fit(work))


def first_answers(args, work: Path, pythons: dict, models: dict) -> None:
    """Start to first answer, every default, `args.rounds` times a side, order turning."""
    rows = json.loads(json.dumps(_iris_rows()))[:1]
    sides = ("ours", *PEERS)
    for name in args.models:
        times: dict[str, list[float]] = {side: [] for side in sides}
        for round_ in range(args.rounds):
            for side in sides[round_ % len(sides) :] + sides[: round_ % len(sides)]:
                server = start(side, pythons, models[name], work, batching=False)
                try:
                    times[side].append(first_answer(server, rows))
                finally:
                    server.stop()
        med = {side: statistics.median(t) for side, t in times.items()}
        shown = [f"{s} {med[s]:.3f} ({min(times[s]):.2f}-{max(times[s]):.2f})" for s in sides]
        print(
            f"\n{name}: start to first answer, {args.rounds} rounds, medians (s): "
            + ", ".join(shown)
            + "; ratio ours/theirs: "
            + ", ".join(f"{p} {med['ours'] / med[p]:.2f}x" for p in PEERS),
            flush=True,
        )


if __name__ == "__main__":
    main()
