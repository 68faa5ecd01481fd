"""batch-predict on Apache Beam: real local-runner jobs with two worker processes, every
input line in exactly one output line, predictions equal to local-predict's."""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EXAMPLES, REPO, cmdline, descendant_pids, free_port, running
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("apache_beam")

EXAMPLE = [
    "--model-dir",
    str(EXAMPLES / "model"),
    "--package-uris",
    str(EXAMPLES / "dist" / "my_custom_code-0.1.tar.gz"),
    "--prediction-class",
    "predictor.MyPredictor",
]
# Two workers forked from the command (the default on Linux), or started by Beam.
TWO_WORKERS = ["--direct_num_workers", "2"]
BEAMS_WORKERS = [*TWO_WORKERS, "--direct_running_mode", "multi_processing"]
IN_PROCESS = ["--direct_num_workers", "1", "--direct_running_mode", "in_memory"]


@pytest.fixture(scope="module")
def token_server():
    """A stand-in for Google's OAuth2 token endpoint on loopback: it grants any refresh
    token an access token, which the Cloud Storage emulator then ignores."""
    import http.server
    import threading

    class Grant(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = json.dumps({"access_token": "test-token", "expires_in": 3600}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Grant)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/token"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def env(tmp_path_factory, emulator, token_server):
    """The jobs' environment: loopback only. Cloud Storage is the emulator; Google's
    metadata server is a closed local port; Beam's Cloud Storage client finds application
    default credentials (a service account key made here) whose token endpoint is the
    stand-in above, in every worker process, since each inherits the environment. Each
    module gets a cache of its own."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    closed = f"127.0.0.1:{free_port()}"
    root = tmp_path_factory.mktemp("batch-env")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    credentials = root / "credentials.json"
    credentials.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "test-project",
                "private_key_id": "test-key",
                "private_key": key.decode(),
                "client_email": "batch@test-project.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": token_server,
            }
        )
    )
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("CPR_")},
        "STORAGE_EMULATOR_HOST": emulator,
        "GOOGLE_APPLICATION_CREDENTIALS": str(credentials),
        "GOOGLE_CLOUD_PROJECT": "test-project",
        "NO_GCE_CHECK": "True",
        "GCE_METADATA_HOST": closed,
        "GCE_METADATA_IP": closed,
        "CPR_CACHE_DIR": str(root / "cache"),
    }


def cli(env, *args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cpr_function", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def batch(env, *args) -> subprocess.CompletedProcess:
    return cli(env, "batch-predict", *args)


def outputs(folder: Path) -> tuple[list[dict], list[dict], dict]:
    """The result lines, the error lines and the summary of a finished job."""

    def lines(kind: str) -> list[dict]:
        shards = sorted(folder.glob(f"prediction.{kind}-*-of-*"))
        assert shards, f"no prediction.{kind} shards in {sorted(folder.iterdir())}"
        return [json.loads(line) for s in shards for line in s.read_text().splitlines()]

    summary = json.loads((folder / "prediction.summary.json").read_text())
    return lines("results"), lines("errors"), summary


def assert_pairs(results: list[dict], instances: list, predictions: list) -> None:
    """Each instance's line holds its prediction, once, in whatever order the shards hold
    them. Pairs compare as JSON text: instances may be objects, which do not sort."""
    got = sorted(json.dumps([r["instance"], r["prediction"]]) for r in results)
    want = sorted(json.dumps(pair) for pair in zip(instances, predictions, strict=True))
    assert got == want


def local_predict(env, model_args: list[str], instances: list, tmp_path: Path) -> list:
    path = tmp_path / "local.jsonl"
    path.write_text("".join(json.dumps(i) + "\n" for i in instances))
    done = cli(env, "local-predict", *model_args, "--json-instances", str(path))
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_a_routine_from_a_models_file_answers_every_line_exactly_once(env, releases, tmp_path):
    from routine_source import expected, models_file, routine_versions, without_pid

    models = models_file(
        tmp_path, {"scaler": {"versions": routine_versions(releases), "default_version": "v1"}}
    )
    rows = [[i, i + 0.5] for i in range(150)]
    first, second = tmp_path / "in-1.jsonl", tmp_path / "in-2.jsonl"
    # A bad instance (5: not a row) among good ones, a line that is not JSON, a blank line.
    first.write_text("".join(json.dumps(r) + "\n" for r in rows[:100]) + "5\n\n{oops\n")
    second.write_text("".join(json.dumps(r) + "\n" for r in rows[100:]))
    out = tmp_path / "out"
    done = batch(
        env,
        *("--models", models, "--model", "scaler", "--version", "v2"),
        *("--input-paths", f"{tmp_path}/in-*.jsonl", "--output-path", str(out)),
        *("--batch-size", "10", "--kwargs", '{"scale": 2}', *TWO_WORKERS),
    )
    assert done.returncode == 0, done.stderr
    results, errors, summary = outputs(out)

    got = sorted((r["instance"], r["prediction"]) for r in results)
    want = sorted(zip(rows, expected("v2", rows, {"scale": 2}), strict=True))
    assert [(i, without_pid([p])[0]) for i, p in got] == want
    assert len({r["prediction"]["pid"] for r in results}) == 2, "two worker processes predicted"
    bad, unparsable = sorted(errors, key=lambda e: e["line"])
    assert bad["instance"] == 5 and bad["error"]["status"] == 500
    assert "prediction failed" in bad["error"]["message"]
    assert (bad["path"], bad["line"]) == (str(first), 101)
    assert (unparsable["path"], unparsable["line"], unparsable["text"]) == (
        str(first),
        103,
        "{oops",
    )
    assert unparsable["error"]["status"] == 400
    assert "not a JSON instance" in unparsable["error"]["message"]
    assert summary["instancesRead"] == 152
    assert (summary["predicted"], summary["failed"], summary["unparsable"]) == (150, 2, 1)
    assert "instancesRead: 152" in done.stdout


def _tf_records(path: Path, records: list[bytes], *, gzip: bool = True) -> None:
    # TensorFlow's own writer, in a child process (it warns at import).
    options = "'GZIP'" if gzip else "None"
    script = (
        "import sys, json, tensorflow as tf\n"
        f"with tf.io.TFRecordWriter(sys.argv[1], options={options}) as w:\n"
        "    for r in json.loads(sys.stdin.read()):\n"
        "        w.write(bytes.fromhex(r))\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(path)],
        input=json.dumps([r.hex() for r in records]),
        text=True,
        check=True,
        capture_output=True,
    )


def test_gzipped_tf_records_of_the_bundled_routine_predict_as_local_predict(env, tmp_path):
    pytest.importorskip("tensorflow")
    from conftest import IRIS

    instances = [IRIS[i % 3] for i in range(40)]
    records = [json.dumps(i).encode() for i in instances]
    records.insert(7, b"\x08\x01 not JSON: a serialized proto, say")
    _tf_records(tmp_path / "in.tfrecord.gz", records)
    out = tmp_path / "out"
    done = batch(
        env,
        *EXAMPLE,
        *("--input-paths", str(tmp_path / "in.tfrecord.gz"), "--output-path", str(out)),
        *("--data-format", "tf-record-gzip", "--batch-size", "8", *BEAMS_WORKERS),
    )
    assert done.returncode == 0, done.stderr
    results, errors, summary = outputs(out)

    reference = local_predict(env, EXAMPLE, instances, tmp_path)
    assert_pairs(results, instances, reference)
    # A record that is not JSON is sent as {"b64": ...}, as a request would send bytes.
    (error,) = errors
    assert error["line"] == 8 and set(error["instance"]) == {"b64"}
    assert summary["instancesRead"] == 41 and summary["failed"] == 1


EXAMPLES_MODEL = r"""
import sys
import tensorflow as tf

class Parse(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve(self, examples):
        parsed = tf.io.parse_example(examples, {"x": tf.io.FixedLenFeature([2], tf.float32)})
        return {"total": tf.reduce_sum(parsed["x"], axis=1)}

module = Parse()
tf.saved_model.save(module, sys.argv[1], signatures={"from_examples": module.serve})
with tf.io.TFRecordWriter(sys.argv[2]) as records:
    for i in range(20):
        x = tf.train.Feature(float_list=tf.train.FloatList(value=[i, 0.5]))
        example = tf.train.Example(features=tf.train.Features(feature={"x": x}))
        records.write(example.SerializeToString())
"""


def test_serialized_examples_reach_a_savedmodel_that_parses_them(env, tmp_path):
    pytest.importorskip("tensorflow")
    model, records = tmp_path / "model", tmp_path / "examples.tfrecord"
    subprocess.run(
        [sys.executable, "-c", EXAMPLES_MODEL, str(model), str(records)],
        check=True,
        capture_output=True,
    )
    out = tmp_path / "out"
    done = batch(
        env,
        *("--model-dir", str(model), "--framework", "tensorflow"),
        *("--input-paths", str(records), "--output-path", str(out)),
        *("--data-format", "tf-record", "--signature-name", "from_examples", "--batch-size", "8"),
        *IN_PROCESS,
    )
    assert done.returncode == 0, done.stderr
    results, errors, _ = outputs(out)
    assert errors == []
    # Each record went as {"b64": ...}, decoded to the bytes the signature parses.
    assert sorted(r["prediction"] for r in results) == [i + 0.5 for i in range(20)]
    assert all(set(r["instance"]) == {"b64"} for r in results)


def test_a_corrupt_tf_record_fails_itself_and_what_cannot_be_framed_after_it(env, tmp_path):
    pytest.importorskip("tensorflow")
    from conftest import IRIS

    path = tmp_path / "in.tfrecord"
    _tf_records(path, [json.dumps(row).encode() for row in IRIS * 2], gzip=False)
    data = bytearray(path.read_bytes())
    record = len(data) // 6  # each of the 6 records takes the same room
    data[3 * record + 14] ^= 0xFF  # a byte of the 4th record's data: its checksum breaks
    path.write_bytes(bytes(data))
    out = tmp_path / "out"
    done = batch(
        env,
        *EXAMPLE,
        *("--input-paths", str(path), "--output-path", str(out), "--data-format", "tf-record"),
        *IN_PROCESS,
    )
    assert done.returncode == 0, done.stderr
    results, errors, summary = outputs(out)
    assert [r["instance"] for r in results] == IRIS
    (error,) = errors
    assert error["line"] == 4 and "corrupt" in error["error"]["message"], error
    assert "the rest of its file is skipped" in error["error"]["message"]
    assert (summary["predicted"], summary["unparsable"]) == (3, 1)


FOREST = r"""
import sys
from pathlib import Path

import joblib
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier

features, labels = load_iris(return_X_y=True)
model = RandomForestClassifier(n_estimators=10, random_state=0).fit(features, labels)
Path(sys.argv[1]).mkdir()
joblib.dump(model, Path(sys.argv[1]) / "model.joblib")
"""


@pytest.fixture(scope="module")
def frameworks(tmp_path_factory):
    """A scikit-learn forest and an MLflow model with a column signature, and instances."""
    from test_mlflow import BUILD

    root = tmp_path_factory.mktemp("frameworks")
    subprocess.run([sys.executable, "-c", FOREST, str(root / "forest")], check=True)
    subprocess.run(
        [sys.executable, "-c", BUILD, str(root / "mlflow")], check=True, capture_output=True
    )
    rows = json.loads((root / "mlflow" / "expected.json").read_text())["rows"]
    return {
        "forest": (
            ["--model-dir", str(root / "forest"), "--framework", "scikit-learn"],
            [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]],
            [1, 2],
        ),
        "mlflow": (
            ["--model-dir", str(root / "mlflow" / "columns"), "--framework", "mlflow"],
            rows,
            {"sepal_length": "wide"},
        ),
    }


@pytest.mark.parametrize("kind", ["forest", "mlflow"])
def test_a_framework_model_predicts_as_local_predict(env, frameworks, kind, tmp_path):
    pytest.importorskip("mlflow")
    model_args, good, bad = frameworks[kind]
    instances = [good[i % len(good)] for i in range(30)]
    lines = [json.dumps(i) for i in instances]
    lines.insert(13, json.dumps(bad))
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    done = batch(
        env,
        *model_args,
        *("--input-paths", str(tmp_path / "in.jsonl"), "--output-path", str(out)),
        *("--batch-size", "4", *TWO_WORKERS),
    )
    assert done.returncode == 0, done.stderr
    results, errors, summary = outputs(out)

    reference = local_predict(env, model_args, instances, tmp_path)
    assert_pairs(results, instances, reference)
    (error,) = errors
    assert error["instance"] == bad and error["line"] == 14
    assert error["error"]["status"] == 400, error
    assert summary["predicted"] == 30 and summary["failed"] == 1


def test_more_errors_than_allowed_fail_the_command_after_writing_everything(env, tmp_path):
    (tmp_path / "in.jsonl").write_text("[5.1, 3.5, 1.4, 0.2]\n[1, 2]\n")
    out = tmp_path / "out"
    done = batch(
        env,
        *EXAMPLE,
        *("--input-paths", str(tmp_path / "in.jsonl"), "--output-path", str(out)),
        *("--max-error-rate", "0.25", *IN_PROCESS),
    )
    assert done.returncode == 1
    assert "1 of 2 instances failed (50.00%), more than --max-error-rate 0.25" in done.stderr
    results, errors, _ = outputs(out)
    assert len(results) == 1 and len(errors) == 1


@pytest.mark.parametrize(
    "args,status,message",
    [
        (
            ["--model-dir", "/nowhere/at/all", "--framework", "scikit-learn"],
            1,
            "the model cannot load",
        ),
        ([*EXAMPLE, "--input-paths", "/nowhere/*.jsonl"], 1, "--input-paths: nothing matches"),
        ([*EXAMPLE, "--kwargs", "[1]"], 2, "--kwargs must be a JSON object"),
        ([*EXAMPLE, "--kwargs", "{"], 2, "--kwargs is not JSON"),
        ([*EXAMPLE, "--max-error-rate", "2"], 2, "--max-error-rate must be between 0 and 1"),
        ([*EXAMPLE, "--models", "m.yaml"], 2, "--model-dir or as --models with --model, not both"),
        (["--input-paths", "x"], 2, "give the model: --model-dir"),
        ([*EXAMPLE, "--framework", "torch"], 2, "framework"),
    ],
)
def test_a_job_that_cannot_run_says_why_before_any_worker_starts(
    env, tmp_path, args, status, message
):
    (tmp_path / "in.jsonl").write_text("[5.1, 3.5, 1.4, 0.2]\n")
    if "--input-paths" not in args:
        args = [*args, "--input-paths", str(tmp_path / "in.jsonl")]
    done = batch(env, *args, "--output-path", str(tmp_path / "out"), *IN_PROCESS)
    assert done.returncode == status, done.stderr
    assert message in done.stderr
    assert not (tmp_path / "out").exists()


# A routine that notes each load (a process id a line in $LOADS) and answers with the
# process that predicted.
COUNTED = """
import os


class Counted:
    @classmethod
    def from_path(cls, model_dir):
        with open(os.environ["LOADS"], "a") as loads:
            loads.write(f"{os.getpid()}\\n")
        return cls()

    def predict(self, instances, **kwargs):
        return [os.getpid() for _ in instances]


class Sized:
    # Answers each instance with the size of the call it came in.
    @classmethod
    def from_path(cls, model_dir):
        return cls()

    def predict(self, instances, **kwargs):
        return [len(instances) for _ in instances]


class SizedBatchable(Sized):
    batchable = True


class ModelCorrupt(Exception):
    pass


class Broken:
    @classmethod
    def from_path(cls, model_dir):
        raise ModelCorrupt("the weights are truncated")

    def predict(self, instances, **kwargs):
        return instances
"""


@pytest.fixture
def counted(tmp_path):
    """The arguments that run the counting routine, and the file of its loads."""
    from conftest import make_tar

    (tmp_path / "model").mkdir()
    files = {"counted-0.1/counted.py": COUNTED}
    files["counted-0.1/setup.py"] = (
        "from setuptools import setup\n"
        "setup(name='counted', version='0.1', py_modules=['counted'])\n"
    )
    package = make_tar(tmp_path / "counted-0.1.tar.gz", files)
    (tmp_path / "in.jsonl").write_text("".join(f"[{i}]\n" for i in range(40)))
    args = ["--model-dir", str(tmp_path / "model"), "--package-uris", str(package)]
    args += ["--prediction-class", "counted.Counted", "--input-paths", str(tmp_path / "in.jsonl")]
    return args, tmp_path / "loads"


def test_one_worker_takes_the_model_the_command_checked(env, counted, tmp_path):
    args, loads = counted
    out = tmp_path / "out"
    done = batch({**env, "LOADS": str(loads)}, *args, "--output-path", str(out), *IN_PROCESS)
    assert done.returncode == 0, done.stderr
    results, _, _ = outputs(out)

    predicted_by = {r["prediction"] for r in results}
    assert len(results) == 40 and len(predicted_by) == 1
    assert loads.read_text().split() == [str(p) for p in predicted_by], "loaded once"


def test_forked_workers_load_the_model_and_the_command_does_not(env, counted, tmp_path):
    args, loads = counted
    out = tmp_path / "out"
    more = ["--output-path", str(out), "--batch-size", "4", *TWO_WORKERS]
    done = batch({**env, "LOADS": str(loads)}, *args, *more)
    assert done.returncode == 0, done.stderr
    results, _, _ = outputs(out)

    predicted_by = {r["prediction"] for r in results}
    assert len(results) == 40 and len(predicted_by) == 2
    assert sorted(loads.read_text().split()) == sorted(str(p) for p in predicted_by)


def test_a_fork_that_fails_leaves_no_pipe_open_nor_any_fork_running(monkeypatch):
    import errno

    from cpr_function.batch import forked_workers

    # The system refuses the second fork (as at a process limit); the first is real.
    real_fork, forks = os.fork, []

    def fork_once():
        if forks:
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        forks.append(real_fork())
        return forks[-1]

    open_before = set(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(os, "fork", fork_once)
    refused = pytest.raises(OSError, match="temporarily unavailable")
    with refused, forked_workers.forked(2, lambda: True):
        pytest.fail("the block runs only once every worker is forked")
    assert set(os.listdir("/proc/self/fd")) == open_before
    with pytest.raises(ChildProcessError):
        os.waitpid(forks[0], os.WNOHANG)  # the first fork was killed and collected


def test_forked_workers_check_the_model_loads_before_the_job_starts(env, tmp_path):
    (tmp_path / "in.jsonl").write_text("[5.1, 3.5, 1.4, 0.2]\n")
    done = batch(
        env,
        *("--model-dir", str(tmp_path / "nowhere"), "--framework", "scikit-learn"),
        *("--input-paths", str(tmp_path / "in.jsonl"), "--output-path", str(tmp_path / "out")),
        *TWO_WORKERS,
    )
    assert done.returncode == 1, done.stderr
    assert "error (500): the model cannot load: model directory" in done.stderr
    assert "is not a directory or does not exist" in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_routine_failing_in_forked_workers_fails_the_command_with_its_error(
    env, counted, tmp_path
):
    args, _ = counted
    args = [("counted.Broken" if a == "counted.Counted" else a) for a in args]
    done = batch(env, *args, "--output-path", str(tmp_path / "out"), *TWO_WORKERS)
    assert done.returncode == 1, done.stderr
    assert "error (500): the model cannot load: " in done.stderr
    assert "ModelCorrupt" in done.stderr and "the weights are truncated" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("workers", [IN_PROCESS, TWO_WORKERS, BEAMS_WORKERS])
@pytest.mark.parametrize("cls,size", [("Sized", 64), ("SizedBatchable", 1024)])
def test_calls_are_as_large_as_the_predictor_allows_unless_told(
    env, counted, tmp_path, workers, cls, size
):
    args, _ = counted
    args = [(f"counted.{cls}" if a == "counted.Counted" else a) for a in args]
    (tmp_path / "in.jsonl").write_text("".join(f"[{i}]\n" for i in range(2100)))
    done = batch(env, *args, "--output-path", str(tmp_path / "out"), *workers)
    assert done.returncode == 0, done.stderr
    results, _, summary = outputs(tmp_path / "out")
    assert len(results) == 2100 and summary["batchSize"] == size
    assert max(r["prediction"] for r in results) == size

    told = batch(env, *args, "--output-path", str(tmp_path / "told"), "--batch-size", "100")
    assert told.returncode == 0, told.stderr
    results, _, summary = outputs(tmp_path / "told")
    assert max(r["prediction"] for r in results) == 100 == summary["batchSize"]


@pytest.mark.parametrize(
    "cls,fields,size",
    [
        ("SizedBatchable", {"microbatch_max_size": 300}, 300),
        ("SizedBatchable", {"microbatch": "false"}, 64),
        ("Sized", {"microbatch": "all", "microbatch_max_size": 200}, 200),
    ],
)
def test_calls_follow_the_versions_own_micro_batching_in_a_models_file(
    env, counted, tmp_path, cls, fields, size
):
    from routine_source import models_file

    args, _ = counted
    flags = dict(zip(args[::2], args[1::2], strict=True))
    version = {
        "origin": flags["--model-dir"],
        "package_uris": [flags["--package-uris"]],
        "prediction_class": f"counted.{cls}",
        **fields,
    }
    models = models_file(tmp_path, {"sized": {"versions": {"v1": version}}})
    (tmp_path / "in.jsonl").write_text("".join(f"[{i}]\n" for i in range(700)))
    done = batch(
        env,
        *("--models", models, "--model", "sized", "--input-paths", flags["--input-paths"]),
        *("--output-path", str(tmp_path / "out"), *IN_PROCESS),
    )
    assert done.returncode == 0, done.stderr
    results, _, summary = outputs(tmp_path / "out")
    assert len(results) == 700 and summary["batchSize"] == size
    assert max(r["prediction"] for r in results) == size


def test_no_worker_outlives_the_command_even_when_it_is_killed(env, frameworks, tmp_path):
    import signal
    import time

    model_args, good, _ = frameworks["forest"]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(good[i % 3]) + "\n" for i in range(20000)))
    command = [sys.executable, "-m", "cpr_function", "batch-predict", *model_args]
    command += ["--input-paths", str(path), "--output-path", str(tmp_path / "out")]
    command += ["--batch-size", "1", *TWO_WORKERS]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    temporary = tmp_path / "tmp"  # the command's temporary folder
    temporary.mkdir()
    job = subprocess.Popen(command, cwd=REPO, env={**env, "TMPDIR": str(temporary)}, **quiet)
    deadline = time.monotonic() + 120
    workers: set[int] = set()
    while len(workers) < 2 and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # until Beam has started both workers (their relay commands)
        tree = descendant_pids(job.pid)
        relays = [c for c in map(cmdline, tree) if c.startswith(f"{sys.executable} -I")]
        workers = tree if len(relays) == 2 else set()
    assert job.poll() is None and workers, "the job ended before both workers ran"
    job.send_signal(signal.SIGKILL)
    job.wait()
    deadline = time.monotonic() + 30
    while any(running(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = {p: cmdline(p) for p in workers if running(p)}
    assert not left, f"workers left running after the command was killed: {left}"
    # Nothing of the forks' own is left either (the model cache stays, as it should, and
    # Beam's pipeline leaves an empty folder of its own).
    assert not list(temporary.glob("cpr-workers-*"))


@pytest.mark.skipif(os.getuid() != 0, reason="connecting as another user needs root")
def test_a_forked_worker_takes_no_relay_of_another_user():
    import secrets
    import signal
    import socket

    from cpr_function.batch import forked_workers, worker_relay

    # Any process on the machine may connect to an abstract socket: a fork must hand Beam's
    # worker (which runs what its runner sends) to no relay but one of the command's user.
    name = f"cpr-workers-{secrets.token_hex(8)}"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(b"\0" + name.encode())
    listener.listen(2)
    listener.setblocking(False)
    alive_read, alive_write = os.pipe()
    # The other user's relay: a fork of this process that becomes nobody and connects as
    # worker_relay.py does (another user may not reach this checkout or its interpreter).
    stranger = os.fork()
    if stranger == 0:  # pragma: no cover - runs in the fork
        code = 2
        try:
            os.setgid(65534)
            os.setuid(65534)
            relay = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            relay.connect(b"\0" + name.encode())
            try:
                relay.sendall(b"{}\n")
                code = 1 if relay.recv(16) == b"" else 0  # closed with no status: refused
            except (BrokenPipeError, ConnectionResetError):
                code = 1  # closed before its line was sent, or with it unread: refused
        finally:
            os._exit(code)
    script = REPO / "cpr_function" / "batch" / "worker_relay.py"
    ours = None
    try:
        ready, _, _ = select.select([listener], [], [], 30)
        assert ready, "the other user's relay did not connect"
        ours = subprocess.Popen([sys.executable, "-I", "-S", str(script), name])
        taken = forked_workers._accept(listener, alive_read)
        assert taken is not None
        assert worker_relay.peer(taken)[0] == ours.pid
        assert taken.makefile("rb").readline() == b"{}\n"  # no endpoints in this environment
        taken.sendall(b"0")
        taken.close()
        assert ours.wait(timeout=30) == 0
        _, status = os.waitpid(stranger, 0)
        stranger = 0
        assert os.waitstatus_to_exitcode(status) == 1, "the other user's relay was served"
    finally:
        if stranger:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stranger, signal.SIGKILL)
            os.waitpid(stranger, 0)
        if ours is not None and ours.poll() is None:
            ours.kill()
            ours.wait()
        listener.close()
        os.close(alive_read)
        os.close(alive_write)


def test_an_output_folder_holding_a_job_is_never_written_over(env, tmp_path):
    (tmp_path / "in.jsonl").write_text("[5.1, 3.5, 1.4, 0.2]\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "prediction.results-00000-of-00001").write_text("earlier\n")
    done = batch(
        env,
        *EXAMPLE,
        *("--input-paths", str(tmp_path / "in.jsonl"), "--output-path", str(out), *IN_PROCESS),
    )
    assert done.returncode == 1
    assert f"--output-path {out} already holds the output of a job" in done.stderr
    assert (out / "prediction.results-00000-of-00001").read_text() == "earlier\n"


@pytest.mark.skipif(os.getuid() != 0, reason="listening as another user needs root")
def test_a_relay_hands_no_endpoints_to_another_users_socket():
    import secrets
    import socket

    # Once the forks hold their connections, the socket's name is free: another user may
    # bind it and wait for a relay Beam starts later.
    name = f"cpr-workers-{secrets.token_hex(8)}"
    report_read, report_write = os.pipe()
    stranger = os.fork()
    if stranger == 0:  # pragma: no cover - runs in the fork
        try:
            os.setgid(65534)
            os.setuid(65534)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(b"\0" + name.encode())
            listener.listen(1)
            os.write(report_write, b"listening\n")
            listener.settimeout(30)
            taken, _ = listener.accept()
            taken.settimeout(5)
            received = b""
            with contextlib.suppress(OSError):
                while chunk := taken.recv(1024):
                    received += chunk
            os.write(report_write, received or b"nothing")
        finally:
            os._exit(0)
    os.close(report_write)
    try:
        with os.fdopen(report_read, "rb") as report:
            assert report.readline() == b"listening\n"
            script = REPO / "cpr_function" / "batch" / "worker_relay.py"
            endpoints = {"CONTROL_API_SERVICE_DESCRIPTOR": "url: 127.0.0.1:1", "WORKER_ID": "w"}
            relay = subprocess.run(
                [sys.executable, "-I", "-S", str(script), name],
                env={**os.environ, **endpoints},
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert relay.returncode == 1
            assert f"{name} is held by another user's process" in relay.stderr
            assert report.read() == b"nothing", "the relay sent its endpoints"
    finally:
        os.waitpid(stranger, 0)


def dataflow(bucket) -> list[str]:
    return [
        *("--runner", "DataflowRunner", "--project", "my-project", "--region", "europe-west1"),
        *("--temp_location", f"gs://{bucket.name}/tmp", "--requirements_cache", "skip"),
    ]


def test_a_dataflow_dry_run_builds_its_options_and_stages_the_package(
    env, tmp_path, wheel, module_bucket
):
    (tmp_path / "in.jsonl").write_text("[5.1, 3.5, 1.4, 0.2]\n")
    (tmp_path / "requirements.txt").write_text("xgboost-cpu\n")
    out = f"gs://{module_bucket.name}/dry-run"
    done = batch(
        env,
        *EXAMPLE,
        *("--input-paths", str(tmp_path / "in.jsonl"), "--output-path", out),
        *dataflow(module_bucket),
        *("--extra_package", str(wheel), "--requirements_file", str(tmp_path / "requirements.txt")),
        "--dry-run",
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "runner: DataflowRunner" in lines
    for option in (
        "option project: my-project",
        "option region: europe-west1",
        f"option temp_location: gs://{module_bucket.name}/tmp",
        f"option extra_packages: ['{wheel}']",
    ):
        assert option in lines, done.stdout
    staged = {line.removeprefix("staged: ") for line in lines if line.startswith("staged: ")}
    assert {wheel.name, "requirements.txt", "extra_packages.txt"} <= staged, staged


@pytest.mark.parametrize(
    "model,size",
    [
        ("example", 64),  # a custom routine: only loading it could tell
        ("framework", 1024),  # the scikit-learn adapter says batchable = True
        ("version-300", 300),  # its models-file version's micro-batching size
        ("version-off", 64),  # a version whose requests are never merged
        ("told", 200),  # --batch-size
    ],
)
def test_a_dataflow_job_calls_a_named_framework_as_the_function_would(
    env, tmp_path, wheel, module_bucket, iris_dir, model, size
):
    from routine_source import models_file

    def version(**fields):
        versions = {"v1": {"origin": str(iris_dir), "framework": "scikit-learn", **fields}}
        models = models_file(tmp_path, {"iris": {"versions": versions}})
        return ["--models", models, "--model", "iris"]

    model_args = {  # each written only when its case runs: they share one models file
        "example": lambda: EXAMPLE,
        "framework": lambda: ["--model-dir", str(iris_dir), "--framework", "scikit-learn"],
        "version-300": lambda: version(microbatch_max_size=300),
        "version-off": lambda: version(microbatch="false"),
        "told": lambda: [*EXAMPLE, "--batch-size", "200"],
    }[model]()
    (tmp_path / "in.jsonl").write_text("[5.1, 3.5, 1.4, 0.2]\n")
    done = batch(
        env,
        *model_args,
        *("--input-paths", str(tmp_path / "in.jsonl")),
        *("--output-path", f"gs://{module_bucket.name}/sized"),
        *dataflow(module_bucket),
        *("--extra_package", str(wheel), "--dry-run"),
    )
    assert done.returncode == 0, done.stderr
    assert f"batch size: {size}" in done.stdout.splitlines(), done.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        ([], "Dataflow's workers need this package"),
        (
            ["--extra_package", "x.whl", "--temp_location", "/tmp/t"],
            "--temp_location must be a gs:// path on Dataflow; got /tmp/t",
        ),
    ],
)
def test_a_dataflow_job_missing_what_it_needs_is_refused_offline(
    env, tmp_path, args, message, module_bucket
):
    (tmp_path / "in.jsonl").write_text("[5.1, 3.5, 1.4, 0.2]\n")
    out = f"gs://{module_bucket.name}/refused"
    done = batch(
        env,
        *EXAMPLE,
        *("--input-paths", str(tmp_path / "in.jsonl"), "--output-path", out),
        *dataflow(module_bucket),
        *args,
    )
    assert done.returncode == 1
    assert message in done.stderr


def test_cloud_storage_in_and_out_through_beams_own_io(env, tmp_path, module_bucket):
    from conftest import IRIS, iris_expected, upload_dir

    model = upload_dir(module_bucket, EXAMPLES / "model", "gcs-job/model")
    package = EXAMPLES / "dist" / "my_custom_code-0.1.tar.gz"
    module_bucket.blob("gcs-job/my_custom_code-0.1.tar.gz").upload_from_filename(package)
    for part in range(2):
        text = "".join(json.dumps(i) + "\n" for i in IRIS) + ("[1, 2]\n" if part else "")
        module_bucket.blob(f"gcs-job/in/part-{part}.jsonl").upload_from_string(text)
    root = f"gs://{module_bucket.name}/gcs-job"
    done = batch(
        env,
        *("--model-dir", model, "--package-uris", f"{root}/my_custom_code-0.1.tar.gz"),
        *("--prediction-class", "predictor.MyPredictor"),
        *("--input-paths", f"{root}/in/part-*.jsonl", "--output-path", f"{root}/out"),
        *TWO_WORKERS,
    )
    assert done.returncode == 0, done.stderr

    def lines(kind):
        blobs = module_bucket.list_blobs(prefix=f"gcs-job/out/prediction.{kind}-")
        return [json.loads(x) for b in blobs for x in b.download_as_text().splitlines()]

    results, (error,) = lines("results"), lines("errors")
    assert_pairs(results, IRIS * 2, iris_expected(EXAMPLES / "model", IRIS) * 2)
    assert error["instance"] == [1, 2] and error["path"] == f"{root}/in/part-1.jsonl"
    assert error["line"] == len(IRIS) + 1
    summary = json.loads(
        module_bucket.blob("gcs-job/out/prediction.summary.json").download_as_text()
    )
    assert summary["instancesRead"] == 7 and summary["failed"] == 1


def test_ranges_of_a_file_in_cloud_storage_read_it_back_whole(module_bucket, monkeypatch):
    from apache_beam.io.fileio import ReadableFile
    from apache_beam.io.filesystem import FileMetadata

    from cpr_function.batch import records

    text = "".join(f"[{i:05d}]\n" for i in range(3000))  # 8 bytes a line
    module_bucket.blob("ranges/in.jsonl").upload_from_string(text)
    path = f"gs://{module_bucket.name}/ranges/in.jsonl"
    monkeypatch.setattr(records, "_MOST_BYTES", 800)  # a local file's most, not a store's
    # Ranges that end inside a line, whose end is read from Cloud Storage in small pieces.
    monkeypatch.setattr(records, "_PAST", 3)
    monkeypatch.setattr(records, "_BLOCK", 2)
    cut = list(records.ranges(ReadableFile(FileMetadata(path, len(text))), "text", 8))
    assert len(cut) == 16, "a store's file is not cut at the local files' most"
    read = _read_by_ranges(cut, 8)
    assert read == [((path, i + 1), f"[{i:05d}]".encode()) for i in range(3000)]


def test_ranges_in_cloud_storage_fetch_their_file_about_once(
    lying_proxy, module_bucket, monkeypatch
):
    from apache_beam.io.fileio import ReadableFile
    from apache_beam.io.filesystem import FileMetadata

    from cpr_function.batch import records

    # Beam's own reads from Cloud Storage fetch 16 MB from wherever they start: cut into
    # 16 ranges, this 2 MB file was fetched about 8.5 times over.
    text = "".join(f"[{i:07d}]\n" for i in range(200_000))  # 10 bytes a line
    module_bucket.blob("fetched/in.jsonl").upload_from_string(text)
    path = f"gs://{module_bucket.name}/fetched/in.jsonl"
    lying_proxy.lie, lying_proxy.own_links = False, True
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", lying_proxy.url)
    cut = list(records.ranges(ReadableFile(FileMetadata(path, len(text))), "text", 64))
    read = _read_by_ranges(cut, 64)
    assert len(cut) == 16 and len(read) == 200_000 and read[-1][0] == (path, 200_000)
    assert len(text) <= lying_proxy.served <= 1.25 * len(text), f"{lying_proxy.served} bytes"


def test_the_handler_runs_in_a_users_own_pipeline(tmp_path):
    import apache_beam as beam
    from apache_beam.ml.inference.base import RunInference
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from apache_beam.testing.util import assert_that
    from conftest import IRIS, iris_expected

    from cpr_function.batch import CprModelHandler, Failure

    handler = CprModelHandler(
        model_dir=str(EXAMPLES / "model"),
        package_uris=[str(EXAMPLES / "dist" / "my_custom_code-0.1.tar.gz")],
        prediction_class="predictor.MyPredictor",
        cache_dir=str(tmp_path / "cache"),
        max_batch_size=2,
    )
    want = dict(zip(map(json.dumps, IRIS), iris_expected(EXAMPLES / "model", IRIS), strict=True))

    def check(results):
        got = {json.dumps(r.example): r.inference for r in results}
        failure = got.pop(json.dumps("not a row"))
        assert isinstance(failure, Failure) and failure.status == 500, failure
        assert got == want

    with beam.Pipeline(runner=FnApiRunner()) as p:
        results = p | beam.Create([*IRIS, "not a row"]) | RunInference(handler)
        assert_that(results, check)


def _read_by_ranges(cut: list, size: int) -> list:
    """The records read back through the ranges, each numbered as in its file, as the
    job numbers its error lines."""
    from cpr_function.batch import records

    counts, read = [], []
    for where in cut:
        reading = records.Reading(where, "text")
        chunks = list(records.chunks(reading, size))
        assert all(len(chunk) <= size for chunk in chunks)
        read += [r for chunk in chunks for r in chunk]
        counts.append((where[0], (where[1], reading.lines)))
    before = dict(records.lines_before(counts))
    return [(records.numbered(source, before), record) for source, record in read]


def _ranges(path: Path, size: int) -> list:
    from apache_beam.io.fileio import ReadableFile
    from apache_beam.io.filesystem import FileMetadata

    from cpr_function.batch import records

    readable = ReadableFile(FileMetadata(str(path), path.stat().st_size))
    return list(records.ranges(readable, "text", size))


LINES = st.lists(st.sampled_from(["[1]", "", "  ", "[2, 3]\r", "{oops", '"x"']), max_size=60)


@settings(max_examples=200, deadline=None)
@given(
    lines=LINES,
    size=st.integers(1, 5),
    step=st.integers(1, 40),
    block=st.integers(1, 16),
    end=st.booleans(),
)
def test_ranges_read_back_every_line_once_with_its_number(lines, size, step, block, end):
    """However a file is cut into byte ranges (through lines, at line breaks, inside long
    ones) and its last lines read past a range's end in whatever blocks, its ranges hold
    every non-blank line once, in order, numbered as in the file."""
    import tempfile

    from cpr_function.batch import records

    text = "\n".join(lines) + ("\n" if end and lines else "")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "in.jsonl"
        path.write_text(text)
        cut = list(records.byte_ranges(str(path), len(text.encode()), step))
        original = records._PAST, records._BLOCK
        records._PAST = records._BLOCK = block
        try:
            read = _read_by_ranges(cut, size)
        finally:
            records._PAST, records._BLOCK = original

    want = [
        ((str(path), n), line.strip().encode())
        for n, line in enumerate(text.split("\n"), start=1)
        if line.strip()
    ]
    assert read == want


def test_a_file_is_cut_by_its_size_into_ranges_of_whole_chunks_or_more(tmp_path, monkeypatch):
    from cpr_function.batch import records

    path = tmp_path / "in.jsonl"
    path.write_text("".join(f"[{i:05d}]\n" for i in range(3000)))  # 8 bytes a line
    size = 8

    def lines_per_range(cut):
        return {(end - start) // 8 for _, start, end in cut[:-1]}

    # At least 16 ranges a file: here of 187.5 lines (at least 2 chunks of 8 lines).
    cut = _ranges(path, size)
    assert len(cut) == 16 and lines_per_range(cut) == {187}
    assert _read_by_ranges(cut, size)[-1] == ((str(path), 3000), b"[02999]")
    # Never shorter than 2 chunks: with calls of 100, ranges of 200 lines, 15 of them.
    assert lines_per_range(_ranges(path, 100)) == {200}
    # At most _MOST_BYTES a range (1 MB) when 2 chunks fit in it.
    monkeypatch.setattr(records, "_MOST_BYTES", 800)
    cut = _ranges(path, size)
    assert len(cut) == 30 and lines_per_range(cut) == {100}
    # The length of a line is judged from the file's first _SAMPLE bytes only.
    monkeypatch.setattr(records, "_SAMPLE", 80)  # 10 lines
    assert len(_ranges(path, size)) == 30


def test_a_bad_instance_is_isolated_in_few_calls():
    from cpr_function.batch import Failure, isolate
    from cpr_function.errors import BadRequest

    calls = []

    def predict(part):
        calls.append(len(part))
        if "bad" in part:
            raise BadRequest(f"{part.index('bad')} is bad")
        return [x * 2 for x in part]

    instances = [*range(30), "bad", *range(33)]
    outcomes = isolate(predict, instances)
    assert outcomes[:30] == [x * 2 for x in range(30)]
    assert outcomes[30] == Failure(400, "0 is bad")
    assert outcomes[31:] == [x * 2 for x in range(33)]
    assert len(calls) <= 2 * 7 + 1  # 64 instances: 2 log2(64) calls more, at most


def test_a_job_that_reads_no_instance_fails(env, tmp_path):
    (tmp_path / "in.jsonl").write_text("\n  \n\n")
    out = tmp_path / "out"
    done = batch(
        env,
        *EXAMPLE,
        *("--input-paths", str(tmp_path / "in.jsonl"), "--output-path", str(out), *IN_PROCESS),
    )
    assert done.returncode == 1
    assert f"no instance could be read from {tmp_path / 'in.jsonl'}" in done.stderr
    assert json.loads((out / "prediction.summary.json").read_text())["instancesRead"] == 0


def test_the_function_never_imports_beam(env):
    script = (
        "import sys, functions_framework\n"
        "client = functions_framework.create_app('predict', 'main.py').test_client()\n"
        "answer = client.post('/', json={'instances': [[5.1, 3.5, 1.4, 0.2]]})\n"
        "assert answer.status_code == 200, answer.get_json()\n"
        "beam = ('apache_beam', 'cpr_function.batch')\n"
        "print(sorted(m for m in sys.modules if m.startswith(beam)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, env=env
    )
    assert done.stdout.strip() == "[]", done.stderr
