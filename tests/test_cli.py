"""`python -m cpr_function local-predict`, `check` and `serve`, run as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import requests
from conftest import (
    EXAMPLES,
    IRIS,
    REPO,
    free_port,
    iris_expected,
    upload_dir,
    upload_file,
    wait_for_port,
)

SDIST = EXAMPLES / "dist" / "my_custom_code-0.1.tar.gz"


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CPR_")}
    return subprocess.run(
        [sys.executable, "-m", "cpr_function", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**base, **(env or {})},
        timeout=180,
    )


@pytest.fixture
def example_gcs(bucket, iris_dir):
    return {
        "--model-dir": upload_dir(bucket, iris_dir, "models/iris"),
        "--package-uris": upload_file(bucket, SDIST, "staging/my_custom_code-0.1.tar.gz"),
    }


def flags(values: dict) -> list[str]:
    return [x for pair in values.items() for x in pair]


def test_local_predict_loads_from_cloud_storage_as_the_function_does(
    example_gcs, iris_dir, tmp_path
):
    lines = tmp_path / "instances.jsonl"
    lines.write_text("\n".join(json.dumps(row) for row in IRIS))
    run = cli(
        "local-predict",
        *flags(example_gcs),
        "--prediction-class",
        "predictor.MyPredictor",
        "--json-instances",
        str(lines),
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    assert run.returncode == 0, run.stderr
    assert [json.loads(x) for x in run.stdout.splitlines()] == iris_expected(iris_dir, IRIS)
    assert "cold start phase from_path took" in run.stderr


def test_check_reports_each_step_and_the_prediction(example_gcs, tmp_path):
    run = cli(
        "check",
        *flags(example_gcs),
        "--prediction-class",
        "predictor.MyPredictor",
        "--instance",
        json.dumps(IRIS[0]),
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()[1:]
    steps = [line.split()[:2] for line in lines if not line.startswith("  shim ")]
    assert steps == [
        ["ok", "download"],
        ["ok", "unpack"],
        ["ok", "import"],
        ["ok", "from_path"],
        ["ok", "predict"],
    ]
    # The guide's predictor imports sklearn.externals.joblib: check says what stood in.
    assert (
        "  shim legacy import: sklearn.externals.joblib (gone from today's libraries) is joblib"
        in lines
    )
    assert "3 objects, 3 downloaded" in run.stdout


def test_check_points_at_the_failing_step(example_gcs, tmp_path):
    run = cli(
        "check",
        *flags(example_gcs),
        "--prediction-class",
        "predictors.MyPredictor",
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    assert run.returncode == 1
    lines = run.stdout.splitlines()
    assert [line.split()[:2] for line in lines[1:]] == [
        ["ok", "download"],
        ["ok", "unpack"],
        ["FAIL", "import"],
    ]
    assert "no module named 'predictors'; the packages provide the top-level modules" in lines[-1]


def test_check_reads_the_environment_and_reports_every_version(bucket, iris_dir, tmp_path):
    origin = upload_dir(bucket, iris_dir, "models/iris")
    models = {
        "iris": {
            "default_version": "good",
            "versions": {
                "good": {"origin": origin, "framework": "scikit-learn"},
                "gone": {"origin": f"gs://{bucket.name}/nothing", "framework": "scikit-learn"},
            },
        }
    }
    (tmp_path / "models.json").write_text(json.dumps({"models": models}))
    env = {"CPR_MODELS": str(tmp_path / "models.json"), "CPR_CACHE_DIR": str(tmp_path / "c")}
    run = cli("check", env=env)
    assert run.returncode == 1
    assert run.stdout.splitlines()[0].startswith("ok   configuration: 2 version(s) from")
    assert "model iris version good\n  ok   download" in run.stdout
    assert "FAIL download" in run.stdout and f"gs://{bucket.name}/nothing holds no objects" in (
        run.stdout
    )
    bad = cli("check", env={"CPR_ORIGN": "x"})
    assert bad.returncode == 1
    assert bad.stdout.startswith("FAIL configuration: unknown setting CPR_ORIGN")


def test_local_predict_refuses_incomplete_flags(tmp_path):
    lines = tmp_path / "i.jsonl"
    lines.write_text("[1]\n")
    run = cli(
        "local-predict",
        "--model-dir",
        str(tmp_path),
        "--framework",
        "torch",
        "--json-instances",
        str(lines),
    )
    assert run.returncode == 2
    assert "--framework must be one of scikit-learn, xgboost, tensorflow, mlflow" in run.stderr


def test_serve_starts_the_function(tmp_path):
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("CPR_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cpr_function", "serve", "--port", str(port), "--threads", "2"],
        cwd=REPO,
        env={**base, "CPR_CACHE_DIR": str(tmp_path / "c")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc)
        answer = requests.post(f"http://127.0.0.1:{port}/", json={"instances": IRIS}, timeout=60)
        assert answer.json() == {"predictions": iris_expected(EXAMPLES / "model", IRIS)}
    finally:
        proc.terminate()
        proc.wait(15)


def test_a_cache_folder_that_cannot_be_written_is_named_not_a_traceback(tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    said = f"{blocked / 'cache'} cannot hold the cache: creating the folder failed: Not a directory"
    checked = cli("check", env={"CPR_CACHE_DIR": str(blocked / "cache")})
    assert checked.returncode == 1
    assert checked.stdout.startswith(f"FAIL configuration: CPR_CACHE_DIR {said}")
    assert "Traceback" not in checked.stdout + checked.stderr
    lines = tmp_path / "i.jsonl"
    lines.write_text("[1]\n")
    flags = ["--model-dir", str(EXAMPLES / "model"), "--framework", "scikit-learn"]
    local = cli(
        "local-predict",
        *flags,
        "--json-instances",
        str(lines),
        "--cache-dir",
        str(blocked / "cache"),
    )
    assert local.returncode == 2
    assert local.stderr.startswith(f"error: --cache-dir {said}")
    assert "Traceback" not in local.stderr
