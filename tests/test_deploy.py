"""deploy.sh, run with a stand-in `gcloud` first on PATH that records what it was asked."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import requests
from conftest import REPO

GCLOUD = """#!/usr/bin/env bash
# Records each call, one argument per line, calls separated by a blank line.
printf '%s\\n' "$@" >> "$GCLOUD_LOG"
echo >> "$GCLOUD_LOG"
if [[ "$2" == "describe" ]]; then
  echo "https://$3-test.a.run.app"
fi
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
def deploy(tmp_path, wheel):
    """Runs deploy.sh with the package's wheel built already; returns (exit status, stderr,
    stdout, gcloud calls as argument lists, the folder staged last)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gcloud").write_text(GCLOUD)
    (bin_dir / "gcloud").chmod(0o755)
    log = tmp_path / "gcloud.log"

    def run(*args: str, built: bool = True):
        log.write_text("")
        base = {k: v for k, v in os.environ.items() if k != "CLOUDSDK_FUNCTIONS_REGION"}
        result = subprocess.run(
            ["bash", str(REPO / "deploy.sh"), *args, *(["--wheel", str(wheel)] if built else [])],
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
    """The deploy calls, the staged folder (a new temporary one each time) named <staged>."""
    found = [list(c) for c in calls if c[:2] in (["functions", "deploy"], ["run", "deploy"])]
    for call in found:
        call[call.index("--source") + 1] = "<staged>"
    return found


BASE = ["functions", "deploy", "fn", "--gen2", "--runtime", "python311"]
BASE += ["--region", "us-central1", "--trigger-http", "--entry-point", "predict"]
BASE += ["--source", "<staged>"]


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
    # 600 MiB in /tmp, and loaded in each of the 2 worker processes --cpu 2 runs.
    assert "warning: --memory 1Gi is below the suggested 4Gi" in err
    assert "in each of 2 worker process(es)" in err


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
    assert [c[:2] for c in calls] == [["functions", "deploy"], ["functions", "describe"]]
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


# The bundled example, deployed from this directory.
EXAMPLE = ["fn", "--region", "r", "--origin", "examples/model", "--prediction-class"]
EXAMPLE += ["predictor.MyPredictor", "--package-uris", "examples/dist/my_custom_code-0.1.tar.gz"]


def _staged_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_the_source_is_staged_apart_from_the_repository(deploy, tmp_path, wheel):
    stage = tmp_path / "stage"
    status, err, out, calls = deploy(*EXAMPLE, "--stage", str(stage), "--dry-run")
    assert status == 0, err
    assert calls == [] or deploys(calls) == []
    assert f"--source {stage} " in out
    files = [
        wheel.name,
        "examples/dist/my_custom_code-0.1.tar.gz",
        "examples/model/model.joblib",
        "examples/model/preprocessor.pkl",
        "main.py",
        "requirements.txt",
    ]
    assert _staged_files(stage) == sorted(files)  # no tests, benchmarks or repository files
    assert (stage / "requirements.txt").read_text() == f"./{wheel.name}\n"
    assert "from cpr_function import predict" in (stage / "main.py").read_text()
    for name in files:  # the dry run lists what it staged
        assert f"  {name}\n" in err


def _settings(command: str) -> dict[str, str]:
    """The CPR_* settings a printed gcloud command sets."""
    import shlex

    (flag,) = [a for a in shlex.split(command) if a.startswith("--set-env-vars=")]
    pairs = flag.removeprefix("--set-env-vars=^;^").split(";")
    return dict(pair.split("=", 1) for pair in pairs)


def _serve_staged(stage: Path, settings: dict[str, str], tmp_path: Path, extra: dict):
    """Installs the staged folder as Cloud Functions' build does (pip in the folder, from
    its requirements.txt) and serves it; returns the predictions for IRIS."""
    from conftest import IRIS, listening, venv_with

    venv = venv_with(tmp_path, ["-r", "requirements.txt"], cwd=stage)
    base = {k: v for k, v in os.environ.items() if not k.startswith("CPR_")}
    env = {**base, **settings, **extra, "CPR_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("PYTHONPATH", None)
    framework = [str(venv / "bin" / "python"), "-m", "functions_framework", "--target", "predict"]
    with listening(
        [*framework, "--source", "main.py", "--port", "{port}"], cwd=stage, env=env
    ) as url:
        answer = requests.post(f"{url}/predict", json={"instances": IRIS})
    assert answer.status_code == 200, answer.text
    return answer.json()["predictions"]


def test_the_staged_source_installs_and_serves_the_example(deploy, tmp_path):
    from conftest import EXAMPLES, IRIS, iris_expected

    stage = tmp_path / "stage"
    status, err, out, _ = deploy(*EXAMPLE, "--stage", str(stage), "--dry-run")
    assert status == 0, err
    predictions = _serve_staged(stage, _settings(out), tmp_path, {})
    assert predictions == iris_expected(EXAMPLES / "model", IRIS)


def test_the_staged_source_serves_a_model_from_cloud_storage(
    deploy, tmp_path, bucket, iris_dir, emulator
):
    from conftest import EXAMPLES, IRIS, iris_expected, upload_dir, upload_file

    origin = upload_dir(bucket, iris_dir, "models/iris")
    sdist = upload_file(bucket, EXAMPLES / "dist" / "my_custom_code-0.1.tar.gz", "staging/c.tar.gz")
    stage = tmp_path / "stage"
    status, err, out, _ = deploy(
        "fn", "--region", "r", "--origin", origin, "--package-uris", sdist,
        "--prediction-class", "predictor.MyPredictor", "--stage", str(stage), "--dry-run",
    )  # fmt: skip
    assert status == 0, err
    staged = [next(stage.glob("*.whl")).name, "main.py", "requirements.txt"]
    assert _staged_files(stage) == sorted(staged)  # nothing local to copy
    extra = {"STORAGE_EMULATOR_HOST": emulator, "NO_GCE_CHECK": "true"}
    predictions = _serve_staged(stage, _settings(out), tmp_path, extra)
    assert predictions == iris_expected(iris_dir, IRIS)


@pytest.mark.parametrize(
    "framework,extras", [("XGBOOST", "[xgboost]"), ("mlflow", "[mlflow]"), ("SCIKIT_LEARN", "")]
)
def test_the_framework_brings_its_extra(deploy, tmp_path, wheel, framework, extras):
    stage = tmp_path / "stage"
    args = ["fn", "--region", "r", "--origin", "gs://bucket/m", "--framework", framework]
    status, err, _, _ = deploy(*args, "--stage", str(stage), "--dry-run")
    assert status == 0, err
    assert (stage / "requirements.txt").read_text() == f"./{wheel.name}{extras}\n"


def test_extras_given_win(deploy, tmp_path, wheel):
    stage = tmp_path / "stage"
    args = ["fn", "--region", "r", "--origin", "gs://bucket/m", "--prediction-class", "p.P"]
    status, err, _, _ = deploy(*args, "--extras", "tensorflow,mlflow", "--stage", str(stage))
    assert status == 0, err
    assert (stage / "requirements.txt").read_text() == f"./{wheel.name}[tensorflow,mlflow]\n"


def test_cloud_run_deploys_the_same_source_as_a_function(deploy):
    status, err, _, calls = deploy(
        "fn", "--region", "r", "--origin", "gs://bucket/m", "--prediction-class", "p.P",
        "--target", "run", "--memory", "2Gi", "--concurrency", "8", "--min-instances", "1",
    )  # fmt: skip
    assert status == 0, err
    (call,) = deploys(calls)
    assert call[:9] == ["run", "deploy", "fn", "--source", "<staged>", "--function", "predict",
                        "--base-image", "python311"]  # fmt: skip
    assert call[9:11] == ["--region", "r"]
    settings = call[11]
    assert settings.startswith("--set-env-vars=^;^CPR_ORIGIN=gs://bucket/m;")
    assert "THREADS=8" in settings
    assert call[12:] == ["--memory", "2Gi", "--min-instances", "1", "--concurrency", "8",
                         "--no-allow-unauthenticated"]  # fmt: skip


def test_the_wheel_is_built_from_this_checkout_when_not_given(deploy, tmp_path, monkeypatch):
    import sys

    stage = tmp_path / "stage"
    # pip's own settings, as a user may have them: build offline with the setuptools here.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_NO_BUILD_ISOLATION", "0")
    monkeypatch.setenv("PYTHON", sys.executable)
    status, err, _, _ = deploy(
        "fn", "--region", "r", "--origin", "gs://bucket/m", "--prediction-class", "p.P",
        "--stage", str(stage), "--dry-run", built=False,
    )  # fmt: skip
    assert status == 0, err
    (built,) = stage.glob("cpr_function-*.whl")
    assert (stage / "requirements.txt").read_text() == f"./{built.name}\n"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--target", "lambda"], "--target must be functions (Cloud Functions) or run"),
        (["--wheel", "README.md"], "--wheel must be a built .whl file; got 'README.md'"),
    ],
)
def test_staging_flags_are_checked(deploy, args, message):
    args = ["fn", "--region", "r", "--origin", "gs://bucket/m", *args]
    status, err, _, calls = deploy(*args, built=False)
    assert status == 2
    assert message in err
    assert deploys(calls) == []


def test_a_stage_folder_in_use_is_refused(deploy, tmp_path):
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "mine.txt").write_text("keep me")
    status, err, _, _ = deploy(
        "fn", "--region", "r", "--origin", "gs://bucket/m", "--stage", str(stage)
    )
    assert status == 2
    assert f"--stage {stage} is not empty" in err
    assert (stage / "mine.txt").read_text() == "keep me"


SA = "caller@my-project.iam.gserviceaccount.com"


def test_iam_mode_grants_each_invoker_and_prints_the_url(deploy):
    status, err, out, calls = deploy(
        "fn", "--region", "r", "--project", "p", "--origin", "gs://bucket/m", "--framework",
        "xgboost", "--invoker", "user:ana@example.com", "--invoker", SA,
    )  # fmt: skip
    assert status == 0, err
    assert deploys(calls)[0][-1] == "--no-allow-unauthenticated"
    assert calls[2:] == [
        ["functions", "add-invoker-policy-binding", "fn", "--member=user:ana@example.com"]
        + ["--region", "r", "--project", "p"],
        ["functions", "add-invoker-policy-binding", "fn", f"--member=serviceAccount:{SA}"]
        + ["--region", "r", "--project", "p"],
        [
            "functions",
            "describe",
            "fn",
            "--region",
            "r",
            "--project",
            "p",
            "--format",
            "value(url)",
        ],
    ]
    assert out.strip() == "https://fn-test.a.run.app"
    status, err, _, calls = deploy(
        "fn", "--region", "r", "--origin", "gs://bucket/m", "--framework", "xgboost",
        "--target", "run", "--invoker", "group:team@example.com",
    )  # fmt: skip
    assert status == 0, err
    assert calls[2:] == [
        ["run", "services", "add-iam-policy-binding", "fn", "--member=group:team@example.com"]
        + ["--role=roles/run.invoker", "--region", "r"],
        ["run", "services", "describe", "fn", "--region", "r", "--format", "value(status.url)"],
    ]


def test_google_mode_sets_the_allow_list_and_deploys_open_saying_so(deploy):
    status, err, _, calls = deploy(
        "fn", "--region", "r", "--origin", "gs://bucket/m", "--framework", "xgboost",
        "--auth", "google", "--allow", "ana@example.com", "--allow", "domain:example.org",
        "--allow", SA,
    )  # fmt: skip
    assert status == 0, err
    (call,) = deploys(calls)
    assert call[-1] == "--allow-unauthenticated"
    assert call[13].endswith(
        ";CPR_AUTH=google;CPR_ALLOWED_PRINCIPALS="
        f"user:ana@example.com,domain:example.org,serviceAccount:{SA}"
    )
    assert "deploying open at the IAM layer (--allow-unauthenticated)" in err
    assert [c[:2] for c in calls[2:]] == [["functions", "describe"]]


def test_the_dry_run_shows_every_gcloud_command(deploy):
    status, err, out, calls = deploy(
        "fn", "--region", "r", "--origin", "examples/model", "--invoker", SA, "--dry-run",
    )  # fmt: skip
    assert status == 0, err
    assert [c[:2] for c in calls] == []
    lines = out.splitlines()
    assert lines[0].startswith("gcloud functions deploy fn ")
    assert lines[1:] == [
        f"gcloud functions add-invoker-policy-binding fn --member=serviceAccount:{SA} --region r",
        "gcloud functions describe fn --region r --format value\\(url\\)",
    ]


def test_version_create_flags_map_to_the_function(deploy):
    status, err, _, calls = deploy(
        "fn", "--region", "r", "--origin", "gs://bucket/model", "--framework", "scikit-learn",
        "--model", "iris", "--version", "v3", "--description", "iris from 2019",
        "--labels", "team=ml,stage=prod", "--machine-type", "n1-standard-4",
        "--runtime-version", "1.15", "--python-version", "3.7",
    )  # fmt: skip
    assert status == 0, err
    (call,) = deploys(calls)
    assert call[13] == (
        "--set-env-vars=^;^CPR_ORIGIN=gs://bucket/model;CPR_FRAMEWORK=scikit-learn;"
        "CPR_MODEL_NAME=iris;CPR_VERSION_NAME=v3;CPR_DESCRIPTION=iris from 2019"
    )
    assert call[14:] == [
        *("--memory", "16Gi", "--cpu", "4", "--update-labels", "team=ml,stage=prod"),
        "--no-allow-unauthenticated",
    ]
    assert "--machine-type n1-standard-4 is --cpu 4 --memory 16Gi here" in err
    assert "--runtime-version 1.15 had TensorFlow 1.15, scikit-learn 0.19 to 0.20" in err
    assert "--python-version 3.7: the function runs python311" in err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--auth", "google"], "--auth google needs --allow PRINCIPAL"),
        (["--auth", "open"], "--auth must be iam (Cloud Run's IAM layer checks ID tokens)"),
        (["--allow", "ana@example.com"], "--allow goes with --auth google"),
        (
            ["--auth", "google", "--allow", "a@b.co", "--invoker", "a@b.co"],
            "--invoker goes with --auth iam",
        ),
        (
            ["--invoker", "a@b.co", "--allow-unauthenticated"],
            "--invoker and --allow-unauthenticated contradict each other",
        ),
        (["--invoker", "someone"], "--invoker takes user:EMAIL, serviceAccount:EMAIL"),
        (
            ["--auth", "google", "--allow", "group:team@example.com"],
            "a token does not show group membership",
        ),
        (["--machine-type", "n1-highmem-8"], "larger than any function (8 vCPU, 32Gi)"),
        (["--machine-type", "a2-highgpu-1g"], "--machine-type must be one of AI Platform's"),
        (["--runtime-version", "3.0"], "--runtime-version must be one of AI Platform's"),
        (["--python-version", "2.7"], "Python 2 code needs porting to Python 3 first"),
        (["--labels", "Team=ML"], "--labels takes KEY=VALUE,..."),
        (["--staging-bucket", "gs://b"], "--staging-bucket is not needed: deploy.sh stages"),
        (["--config", "v.yaml"], "--config (a version's YAML) is not read"),
        (["--accelerator", "type=nvidia-tesla-t4"], "Cloud Functions have no GPUs"),
        (["--explanation-method", "sampled-shapley"], "explanations are not served"),
        (["--async"], "--async is not taken"),
    ],
)
def test_version_create_and_auth_flags_are_checked(deploy, args, message):
    status, err, _, calls = deploy("fn", "--region", "r", "--origin", "gs://bucket/m", *args)
    assert status == 2, err
    assert message in err
    assert deploys(calls) == []


def test_the_service_account_is_granted_read_access_to_each_bucket(deploy):
    account = "serving@my-project.iam.gserviceaccount.com"
    status, err, out, calls = deploy(
        "fn", "--region", "r", "--project", "p", "--origin", "gs://bucket/model",
        "--package-uris", "gs://bucket/a-0.1.tar.gz,gs://other/b-0.1.tar.gz",
        "--prediction-class", "p.P", "--service-account", account,
    )  # fmt: skip
    assert status == 0, err
    grants = [c for c in calls if c[:3] == ["storage", "buckets", "add-iam-policy-binding"]]
    assert grants == [
        ["storage", "buckets", "add-iam-policy-binding", f"gs://{bucket}"]
        + [f"--member=serviceAccount:{account}", "--role=roles/storage.objectViewer"]
        + ["--project", "p"]
        for bucket in ("bucket", "other")
    ]
    order = [c[:2] for c in calls if c[0] != "storage" or c[1] == "buckets"]
    assert order.index(["functions", "deploy"]) > order.index(["storage", "buckets"])
    status, err, out, _ = deploy(
        "fn", "--region", "r", "--origin", "examples/model", "--service-account", account,
        "--dry-run",
    )  # fmt: skip
    assert status == 0, err
    assert not out.startswith("gcloud storage"), "a local model directory needs no grant"


def test_a_rollback_sends_all_traffic_to_an_earlier_revision_and_deploys_nothing(deploy):
    status, err, _, calls = deploy(
        "fn", "--region", "r", "--project", "p", "--rollback-to", "fn-00003-abc"
    )
    assert status == 0, err
    assert calls == [
        ["run", "services", "update-traffic", "fn", "--region", "r"]
        + ["--to-revisions", "fn-00003-abc=100", "--project", "p"]
    ]
    status, err, _, calls = deploy("fn", "--region", "r", "--rollback-to", "Bad Name")
    assert status == 2 and "--rollback-to takes a revision name" in err and calls == []
