"""deploy.sh, run with a stand-in `gcloud` first on PATH that records what it was asked."""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import REPO

GCLOUD = """#!/usr/bin/env bash
# Records each call, one argument per line, calls separated by a blank line.
printf '%s\\n' "$@" >> "$GCLOUD_LOG"
echo >> "$GCLOUD_LOG"
if [[ "$1 $2" == "storage du" ]]; then
  uri="${@: -1}"
  case "$uri" in
    gs://bucket/model) echo "629145600  $uri" ;;
    gs://bucket/unknown) echo "ERROR: not found" >&2; exit 1 ;;
    *) echo "1048576  $uri" ;;
  esac
fi
"""


@pytest.fixture
def deploy(tmp_path):
    """Runs deploy.sh; returns (exit status, stderr, stdout, gcloud calls as argument lists)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gcloud").write_text(GCLOUD)
    (bin_dir / "gcloud").chmod(0o755)
    log = tmp_path / "gcloud.log"

    def run(*args: str):
        log.write_text("")
        base = {k: v for k, v in os.environ.items() if k != "CLOUDSDK_FUNCTIONS_REGION"}
        result = subprocess.run(
            ["bash", str(REPO / "deploy.sh"), *args],
            capture_output=True,
            text=True,
            env={**base, "PATH": f"{bin_dir}:{base['PATH']}", "GCLOUD_LOG": str(log)},
            cwd=tmp_path,
            timeout=60,
        )
        calls = [c.splitlines() for c in log.read_text().split("\n\n") if c.strip()]
        return result.returncode, result.stderr, result.stdout, calls

    return run


def deploys(calls: list[list[str]]) -> list[list[str]]:
    return [c for c in calls if c[:2] == ["functions", "deploy"]]


BASE = ["functions", "deploy", "fn", "--gen2", "--runtime", "python311"]
BASE += ["--region", "us-central1", "--trigger-http", "--entry-point", "predict"]
BASE += ["--source", str(REPO)]


def test_a_custom_prediction_routine(deploy):
    status, err, _, calls = deploy(
        "fn",
        "--region",
        "us-central1",
        "--origin",
        "gs://bucket/model",
        "--package-uris",
        "gs://bucket/staging/a-0.1.tar.gz,gs://bucket/staging/b-1.0-py3-none-any.whl",
        "--prediction-class",
        "predictor.MyPredictor",
    )
    assert status == 0, err
    assert deploys(calls) == [
        BASE
        + [
            "--set-env-vars=^;^CPR_ORIGIN=gs://bucket/model;"
            "CPR_PACKAGE_URIS=gs://bucket/staging/a-0.1.tar.gz,"
            "gs://bucket/staging/b-1.0-py3-none-any.whl;"
            "CPR_PREDICTION_CLASS=predictor.MyPredictor",
            "--memory",
            "2Gi",
            "--no-allow-unauthenticated",
        ]
    ]
    assert "the model and packages are 602 MiB; suggested memory 2Gi" in err
    assert ["storage", "du", "--summarize", "gs://bucket/model"] in calls


@pytest.mark.parametrize("spelled", ["SCIKIT_LEARN", "SCIKIT-LEARN", "Scikit-Learn", "XGBOOST"])
def test_the_framework_in_any_spelling_ai_platform_took(deploy, spelled):
    # Google's sample deploy scripts wrote the v1 API's enum: --framework SCIKIT_LEARN.
    status, err, _, calls = deploy(
        "fn", "--region", "r", "--origin", "gs://bucket/m", "--framework", spelled
    )
    assert status == 0, err
    (call,) = deploys(calls)
    assert f"--set-env-vars=^;^CPR_ORIGIN=gs://bucket/m;CPR_FRAMEWORK={spelled}" in call


def test_the_v1_enum_for_no_framework_goes_with_a_prediction_class(deploy):
    status, err, _, calls = deploy(
        "fn", "--region", "r", "--origin", "gs://bucket/m",
        "--prediction-class", "predictor.P", "--framework", "FRAMEWORK_UNSPECIFIED",
    )  # fmt: skip
    assert status == 0, err
    status, err, _, _ = deploy(
        "fn", "--region", "r", "--origin", "gs://bucket/m",
        "--prediction-class", "predictor.P", "--framework", "SCIKIT_LEARN",
    )  # fmt: skip
    assert status == 2
    assert "give --prediction-class or --framework, not both" in err


def test_every_runtime_option_passes_through(deploy):
    status, err, _, calls = deploy(
        "fn",
        ["--region", "us-central1"][0],
        "us-central1",
        "--project",
        "my-project",
        "--origin",
        "gs://bucket/model",
        "--framework",
        "scikit-learn",
        "--memory",
        "1Gi",
        "--cpu",
        "2",
        "--timeout",
        "300s",
        "--min-instances",
        "1",
        "--max-instances",
        "10",
        "--concurrency",
        "8",
        "--service-account",
        "serving@my-project.iam.gserviceaccount.com",
        "--allow-unauthenticated",
        "--warmup",
        "--model-name",
        "iris",
        "--env",
        "CPR_MAX_REQUEST_BYTES=10MB",
    )
    assert status == 0, err
    assert deploys(calls) == [
        BASE
        + [
            "--set-env-vars=^;^CPR_ORIGIN=gs://bucket/model;CPR_FRAMEWORK=scikit-learn;"
            "CPR_MODEL_NAME=iris;CPR_WARMUP=true;THREADS=8;CPR_MAX_REQUEST_BYTES=10MB",
            "--project",
            "my-project",
            "--memory",
            "1Gi",
            "--cpu",
            "2",
            "--timeout",
            "300s",
            "--min-instances",
            "1",
            "--max-instances",
            "10",
            "--concurrency",
            "8",
            "--service-account",
            "serving@my-project.iam.gserviceaccount.com",
            "--allow-unauthenticated",
        ]
    ]
    assert "warning: --memory 1Gi is below the suggested 2Gi" in err


def test_forwarding_and_models_files_need_no_size(deploy):
    status, err, _, calls = deploy(
        "relay",
        "--region",
        "europe-west1",
        "--forward-to",
        "projects/p/locations/europe-west1/endpoints/123",
        "--batch-size",
        "50",
    )
    assert status == 0, err
    assert calls == deploys(calls), "no size lookup"
    assert calls[0][13] == (
        "--set-env-vars=^;^CPR_FORWARD_TO=projects/p/locations/europe-west1/endpoints/123;"
        "CPR_BATCH_SIZE=50"
    )
    status, err, _, calls = deploy("multi", "--region", "r", "--models", "gs://bucket/m.yaml")
    assert status == 0, err
    assert calls[0][13] == "--set-env-vars=^;^CPR_MODELS=gs://bucket/m.yaml"


def test_an_unmeasurable_model_gets_one_gibibyte(deploy):
    status, err, _, calls = deploy("fn", "--region", "r", "--origin", "gs://bucket/unknown")
    assert status == 0, err
    assert deploys(calls)[0][-3:] == ["--memory", "1Gi", "--no-allow-unauthenticated"]
    assert "could not measure the model's size; using --memory 1Gi" in err


def test_dry_run_prints_the_command_and_deploys_nothing(deploy):
    status, err, out, calls = deploy(
        "fn", "--region", "r", "--origin", "examples/model", "--dry-run"
    )
    assert status == 0, err
    assert deploys(calls) == []
    assert out.startswith("gcloud functions deploy fn --gen2 --runtime python311 --region r ")
    assert "CPR_ORIGIN=examples/model" in out.replace("\\", "")


@pytest.mark.parametrize(
    "args,message",
    [
        ([], "give the function's NAME first"),
        (["fn"], "give --region"),
        (["Fn_1", "--region", "r"], "NAME must be lowercase letters"),
        (["fn", "--region", "r"], "give --origin (a model directory), --forward-to"),
        (
            [
                "fn",
                "--region",
                "r",
                "--origin",
                "gs://bucket/m",
                "--forward-to",
                "projects/p/models/m",
            ],
            "give only one of --origin, --forward-to and --models",
        ),
        (["fn", "--region", "r", "--origin", "gs://B/m"], "--origin must be gs://bucket/path"),
        (["fn", "--region", "r", "--origin", "s3://b/m"], "--origin must be a gs:// URI"),
        (["fn", "--region", "r", "--origin", "/etc"], "is outside this directory"),
        (["fn", "--region", "r", "--origin", "nope"], "--origin 'nope' does not exist"),
        (
            ["fn", "--region", "r", "--origin", "gs://bucket/m", "--framework", "torch"],
            "--framework must be scikit-learn, xgboost, tensorflow or mlflow; got 'torch'",
        ),
        (
            ["fn", "--region", "r", "--origin", "gs://bucket/m", "--prediction-class", "Pred"],
            "--prediction-class must be module.Class",
        ),
        (
            [
                "fn",
                "--region",
                "r",
                "--origin",
                "gs://bucket/m",
                "--package-uris",
                "gs://bucket/p.egg",
            ],
            "--package-uris must list .tar.gz, .zip or .whl packages; got 'gs://bucket/p.egg'",
        ),
        (
            ["fn", "--region", "r", "--forward-to", "projects/p/models/m"],
            "ml.googleapis.com was shut down, so give --api-endpoint",
        ),
        (
            ["fn", "--region", "r", "--forward-to", "models/m"],
            "--forward-to must be projects/P/models/M[/versions/V]",
        ),
        (["fn", "--region", "r", "--prediction-class", "a.B"], "go with --origin"),
        (
            ["fn", "--region", "r", "--origin", "gs://bucket/m", "--memory"],
            "--memory needs a value",
        ),
        (["fn", "--region", "r", "--colour", "red"], "unknown flag --colour"),
        (
            ["fn", "--region", "r", "--models", "gs://bucket/m", "--env", "FOO=1"],
            "--env takes CPR_NAME=value",
        ),
    ],
)
def test_incomplete_or_wrong_input_is_refused_before_gcloud(deploy, args, message):
    status, err, _, calls = deploy(*args)
    assert status == 2
    assert message in err
    assert deploys(calls) == []
