"""End to end: a real functions-framework process loading from the Cloud Storage emulator."""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys

import pytest
import requests
from conftest import (
    EXAMPLES,
    IRIS,
    REPO,
    counting_env,
    iris_expected,
    upload_dir,
    upload_file,
    version_status,
)

EXAMPLE_SDIST = EXAMPLES / "dist" / "my_custom_code-0.1.tar.gz"


@pytest.fixture
def example_in_gcs(bucket, iris_dir):
    """The seed sample as a user had it on AI Platform: a model directory and a staged sdist."""
    return {
        "CPR_ORIGIN": upload_dir(bucket, iris_dir, "models/iris"),
        "CPR_PACKAGE_URIS": upload_file(bucket, EXAMPLE_SDIST, "staging/my_custom_code-0.1.tar.gz"),
        "CPR_PREDICTION_CLASS": "predictor.MyPredictor",
    }


def test_seed_sample_from_cloud_storage_answers_as_the_model_does(
    function, example_in_gcs, iris_dir, tmp_path
):
    fn = function({**example_in_gcs, "CPR_CACHE_DIR": str(tmp_path / "cache")})
    answer = fn.predict({"instances": IRIS})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"predictions": iris_expected(iris_dir, IRIS)}
    status = fn.version_status()
    assert status["loaded"] is True
    assert status["cache"]["downloaded"] == 3, "model.joblib, preprocessor.pkl and the sdist"
    assert set(status["coldStartSeconds"]) >= {"download", "unpack", "import", "from_path"}
    assert "cold start phase from_path took" in fn.log()


def test_restart_reuses_the_cache_and_a_new_generation_is_fetched(
    function, example_in_gcs, bucket, tmp_path
):
    env = {**example_in_gcs, "CPR_CACHE_DIR": str(tmp_path / "cache")}
    first = function(env)
    before = first.predict({"instances": IRIS}).json()["predictions"]
    first.stop()

    again = function(env)
    assert again.predict({"instances": IRIS}).json()["predictions"] == before
    assert again.version_status()["cache"] == {
        **again.version_status()["cache"],
        "downloaded": 0,
        "unpacked": 0,
    }
    again.stop()

    constant = tmp_path / "constant"
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import joblib; from sklearn.dummy import DummyClassifier;"
            "m = DummyClassifier(strategy='constant', constant=2).fit([[0]*4]*2, [2, 1]);"
            f"joblib.dump(m, {str(constant)!r})",
        ],
        check=True,
    )
    bucket.blob("models/iris/model.joblib").upload_from_filename(constant)
    updated = function(env)
    assert updated.predict({"instances": IRIS}).json()["predictions"] == [2, 2, 2]
    assert updated.version_status()["cache"]["downloaded"] == 1, "only the rewritten object"


@pytest.mark.parametrize("isolation", ["none", "process"])
def test_delete_after_load_empties_the_cache_and_a_restart_downloads_again(
    function, example_in_gcs, iris_dir, tmp_path, isolation
):
    cache = tmp_path / "cache"
    env = {
        **example_in_gcs,
        "CPR_CACHE_DIR": str(cache),
        "CPR_DELETE_AFTER_LOAD": "true",
        "CPR_ISOLATION": isolation,
    }
    expected = {"predictions": iris_expected(iris_dir, IRIS)}
    first = function(env)
    assert first.predict({"instances": IRIS}).json() == expected
    assert _downloaded_files(cache) == [], "the model's files and the package archive are gone"
    assert list((cache / "packages").rglob("predictor.py")), "the unpacked package stays"
    assert first.predict({"instances": IRIS}).json() == expected
    status = first.status()
    assert status["config"]["deleteAfterLoad"] is True
    assert version_status(status)["cache"]["downloaded"] == 3
    first.stop()

    again = function(env)
    assert again.predict({"instances": IRIS}).json() == expected
    cache_status = again.version_status()["cache"]
    assert cache_status["downloaded"] == 3, "a restart downloads the model again"
    assert cache_status["unpacked"] == 0, "and uses the package unpacked before"
    assert _downloaded_files(cache) == []


def _downloaded_files(cache) -> list[str]:
    """What the object store and the model folders hold, partial entries included."""
    return [
        p.relative_to(cache).as_posix()
        for folder in ("objects", "models")
        for p in (cache / folder).rglob("*")
        if ".locks" not in p.relative_to(cache).parts
    ]


@pytest.fixture
def counting_in_gcs(bucket, iris_dir, tmp_path):
    """The test kit's Counting predictor over the iris model, both in Cloud Storage."""
    return counting_env(bucket, iris_dir, tmp_path)


def _predict_many(fn, count: int, threads: int) -> list:
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda _: fn.predict({"instances": IRIS}), range(count)))


def test_concurrent_first_requests_load_once(function, counting_in_gcs, iris_dir, tmp_path):
    log = tmp_path / "from_path.log"
    fn = function({**counting_in_gcs, "KIT_SLOW": "0.5"})
    expected = iris_expected(iris_dir, IRIS, centered=False)
    answers = _predict_many(fn, 16, 16)
    assert [a.status_code for a in answers] == [200] * 16
    assert all(a.json()["predictions"] == expected for a in answers)
    assert len(log.read_text().splitlines()) == 1, "one from_path"
    cache = fn.version_status()["cache"]
    assert cache["downloaded"] == cache["objects"] == 3


def test_workers_sharing_one_cache_download_and_unpack_once(
    function, counting_in_gcs, iris_dir, tmp_path
):
    log = tmp_path / "from_path.log"
    fn = function({**counting_in_gcs, "THREADS": "4"}, workers=4)
    expected = iris_expected(iris_dir, IRIS, centered=False)
    answers = _predict_many(fn, 64, 32)
    assert [a.json()["predictions"] for a in answers] == [expected] * 64
    pids = log.read_text().split()
    assert len(pids) == len(set(pids)), "from_path runs once per process"
    assert fn.log().count("downloading gs://") == 3, "each object once across the workers"
    assert fn.log().count("unpacking gs://") == 1, "the package once across the workers"


def test_missing_model_directory_and_package_are_clear_and_serving_goes_on(
    function, bucket, tmp_path
):
    fn = function(
        {
            "CPR_ORIGIN": f"gs://{bucket.name}/nothing-here",
            "CPR_PREDICTION_CLASS": "kit.Echo",
            "CPR_CACHE_DIR": str(tmp_path / "cache"),
        }
    )
    answer = fn.predict({"instances": [1]})
    assert answer.status_code == 500
    assert answer.json() == {
        "error": f"model directory gs://{bucket.name}/nothing-here holds no objects"
    }
    assert fn.version_status()["loaded"] is False

    bucket.blob("m/model.joblib").upload_from_string(b"x")
    fn2 = function(
        {
            "CPR_ORIGIN": f"gs://{bucket.name}/m",
            "CPR_PACKAGE_URIS": f"gs://{bucket.name}/staging/gone-0.1.tar.gz",
            "CPR_PREDICTION_CLASS": "kit.Echo",
            "CPR_CACHE_DIR": str(tmp_path / "cache"),
        }
    )
    answer = fn2.predict({"instances": [1]})
    assert answer.status_code == 500
    assert (
        answer.json()["error"]
        == f"package gs://{bucket.name}/staging/gone-0.1.tar.gz does not exist"
    )


def test_model_over_the_size_quota_is_refused_before_downloading(
    function, example_in_gcs, tmp_path
):
    fn = function(
        {
            **example_in_gcs,
            "CPR_CACHE_DIR": str(tmp_path / "cache"),
            "CPR_MAX_MODEL_BYTES": "1KB",
        }
    )
    answer = fn.predict({"instances": IRIS})
    assert answer.status_code == 500
    assert "more than the 1000 that CPR_MAX_MODEL_BYTES allows" in answer.json()["error"]
    assert not (tmp_path / "cache" / "objects").exists(), "nothing may be downloaded"


def test_chunked_body_over_the_limit_is_413(function, tmp_path):
    fn = function({"CPR_MAX_REQUEST_BYTES": "1KB", "CPR_CACHE_DIR": str(tmp_path / "c")})

    def body():
        yield b'{"instances": ["'
        for _ in range(50):
            yield b"x" * 100
        yield b'"]}'

    answer = requests.post(
        fn.url, data=body(), timeout=30, headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 413
    assert "at most 1000 bytes" in answer.json()["error"]
    assert fn.predict({"instances": [[5.1, 3.5, 1.4, 0.2]]}).status_code == 200


@pytest.mark.parametrize(
    "env,message",
    [
        ({"CPR_MAX_MODEL_BYTES": "lots"}, "CPR_MAX_MODEL_BYTES must be a size in bytes"),
        ({"CPR_FRAMEWORK": "caffe"}, "CPR_FRAMEWORK must be one of scikit-learn, xgboost"),
        ({"CPR_ORIGN": "gs://b/m"}, "unknown setting CPR_ORIGN"),
        ({"CPR_AUTH": "google"}, "CPR_AUTH=google needs CPR_ALLOWED_PRINCIPALS"),
        # A cache folder under a file, or where nothing may be created: said at the start,
        # not as a 500 on every request.
        (
            {"CPR_CACHE_DIR": str(REPO / "README.md" / "cache")},
            f"CPR_CACHE_DIR {REPO / 'README.md' / 'cache'} cannot hold the cache: creating the "
            "folder failed: Not a directory; give a folder this process can create and write",
        ),
        (
            {"CPR_CACHE_DIR": "/proc/cpr-cache"},
            "CPR_CACHE_DIR /proc/cpr-cache cannot hold the cache: creating the folder failed: ",
        ),
    ],
)
def test_bad_configuration_stops_the_start_with_the_variable_named(env, message):
    done = subprocess.run(
        [sys.executable, "-c", "import main"],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert message in done.stderr
