"""Settings: parsed once, and a wrong one named with what it accepts."""

from __future__ import annotations

import pytest

from cpr_function.config import Config
from cpr_function.errors import ConfigError


def test_nothing_set_serves_the_example():
    config = Config.from_env({"PATH": "/bin"})
    assert config.is_example
    spec = config.catalog.model().version()
    assert spec.prediction_class == "predictor.MyPredictor"
    assert (spec.model, spec.name) == ("default", "v1")


def test_a_full_configuration():
    config = Config.from_env(
        {
            "CPR_ORIGIN": "gs://b/model",
            "CPR_PACKAGE_URIS": "gs://b/a-0.1.tar.gz, gs://b/b-0.2-py3-none-any.whl",
            "CPR_PREDICTION_CLASS": "predictor.MyPredictor",
            "CPR_MAX_MODEL_BYTES": "1.5GiB",
            "CPR_MAX_REQUEST_BYTES": "10MB",
            "CPR_INSTALL_DEPENDENCIES": "yes",
            "CPR_MODEL_NAME": "iris",
            "CPR_VERSION_NAME": "v2",
        }
    )
    spec = config.catalog.model("iris").version("v2")
    assert spec.package_uris == ("gs://b/a-0.1.tar.gz", "gs://b/b-0.2-py3-none-any.whl")
    assert config.max_model_bytes == int(1.5 * 1024**3)
    assert config.max_request_bytes == 10_000_000
    assert config.install_dependencies and not config.is_example
    assert config.catalog.default_model == "iris"


def test_a_models_file_replaces_the_single_model_settings():
    config = Config.from_env({"CPR_MODELS": "gs://b/models.yaml", "CPR_ISOLATION": "Process"})
    assert (config.models_file, config.catalog, config.isolation) == (
        "gs://b/models.yaml",
        None,
        "process",
    )
    with pytest.raises(ConfigError) as error:
        Config.from_env({"CPR_MODELS": "m.yaml", "CPR_ORIGIN": "gs://b/m"})
    assert "CPR_MODELS lists the models, so CPR_ORIGIN cannot be set too" in str(error.value)


@pytest.mark.parametrize(
    "env,message",
    [
        ({"CPR_PACKAGE_URIS": "gs://b/p.tar.gz"}, "CPR_ORIGIN must name the model directory"),
        (
            {"CPR_ORIGIN": "gs://b/m", "CPR_PACKAGE_URIS": "gs://b/p.egg"},
            "CPR_PACKAGE_URIS must list .tar.gz, .zip or .whl packages; got 'gs://b/p.egg'",
        ),
        (
            {"CPR_ORIGIN": "gs://b/m", "CPR_PREDICTION_CLASS": "MyPredictor"},
            "CPR_PREDICTION_CLASS must be module.Class, like predictor.MyPredictor; "
            "got 'MyPredictor'",
        ),
        (
            {"CPR_ORIGIN": "gs://b/m", "CPR_PREDICTION_CLASS": "a.B", "CPR_FRAMEWORK": "xgboost"},
            "not both",
        ),
        (
            {"CPR_FRAMEWORK": "torch"},
            "CPR_FRAMEWORK must be one of scikit-learn, xgboost, tensorflow, mlflow; got 'torch'",
        ),
        ({"CPR_MAX_REQUEST_BYTES": "-5"}, "CPR_MAX_REQUEST_BYTES must be a size in bytes"),
        ({"CPR_MAX_REQUEST_BYTES": "0"}, "CPR_MAX_REQUEST_BYTES must be a positive size"),
        (
            {"CPR_INSTALL_DEPENDENCIES": "maybe"},
            "CPR_INSTALL_DEPENDENCIES must be true or false; got 'maybe'",
        ),
        ({"CPR_MODEL_NAME": "my model"}, "CPR_MODEL_NAME must be letters, digits"),
        (
            {"CPR_STORAGE_RETRY_SECONDS": "0"},
            "CPR_STORAGE_RETRY_SECONDS must be a positive number of seconds such as 30 or 2.5; "
            "got '0'",
        ),
        ({"CPR_ORIGN": "x"}, "unknown setting CPR_ORIGN; known settings are CPR_ORIGIN,"),
        (
            {"CPR_FORWARD_TO": "projects/p/models/m"},
            "CPR_FORWARD_TO names an AI Platform v1 model, and ml.googleapis.com was shut down: "
            "set CPR_API_ENDPOINT",
        ),
        (
            {"CPR_FORWARD_TO": "projects/p/locations/l/endpoints/1", "CPR_FORWARD_AUTH": "x"},
            "CPR_FORWARD_AUTH must be one of auto, access-token, id-token, none; got 'x'",
        ),
        (
            {"CPR_FORWARD_TO": "projects/p/locations/l/endpoints/1", "CPR_FORWARD_TIMEOUT": "0"},
            "CPR_FORWARD_TIMEOUT must be a positive number of seconds",
        ),
        ({"CPR_LOG_FORMAT": "xml"}, "CPR_LOG_FORMAT must be one of auto, json, text; got 'xml'"),
        (
            {"CPR_REQUEST_LOG": "some"},
            "CPR_REQUEST_LOG must be one of all, errors, none; got 'some'",
        ),
        ({"CPR_WARMUP": "soon"}, "CPR_WARMUP must be true (load the default model's default"),
        ({"CPR_AUTH": "open"}, "CPR_AUTH must be one of iam, google; got 'open'"),
        (
            {"CPR_AUTH": "google"},
            "CPR_AUTH=google needs CPR_ALLOWED_PRINCIPALS: the user:EMAIL, serviceAccount:EMAIL "
            "or domain:DOMAIN entries to admit; it is empty",
        ),
        (
            {"CPR_AUTH": "google", "CPR_ALLOWED_PRINCIPALS": "alice"},
            "CPR_ALLOWED_PRINCIPALS takes user:EMAIL, serviceAccount:EMAIL, domain:DOMAIN or an "
            "email, separated by commas; got 'alice'",
        ),
        (
            {"CPR_AUTH": "google", "CPR_ALLOWED_PRINCIPALS": "group:team@example.com"},
            "'group:team@example.com' is a group, which a token does not show membership of",
        ),
        ({"CPR_ALLOWED_PRINCIPALS": "a@b.com"}, "is only checked with CPR_AUTH=google"),
        (
            {
                "CPR_AUTH": "google",
                "CPR_ALLOWED_PRINCIPALS": "a@b.com",
                "CPR_AUTH_CERTS_URL": "http://keys.example/certs",
            },
            "CPR_AUTH_CERTS_URL must be an https:// URL; got 'http://keys.example/certs'",
        ),
        ({"CPR_ISOLATION": "thread"}, "CPR_ISOLATION must be one of auto, process, none"),
        ({"CPR_MEMORY_BUDGET": "lots"}, "CPR_MEMORY_BUDGET must be a size in bytes"),
        (
            {"CPR_FORWARD_TO": "projects/p/models"},
            "CPR_FORWARD_TO must be projects/P/models/M[/versions/V] or "
            "projects/P/locations/L/endpoints/E; got 'projects/p/models'",
        ),
        (
            {"CPR_FORWARD_TO": "projects/p/models/m", "CPR_ORIGIN": "gs://b/m"},
            "CPR_FORWARD_TO forwards to a deployed model, so CPR_ORIGIN cannot be set too",
        ),
        (
            {"CPR_FORWARD_TO": "projects/p/models/m", "CPR_API_ENDPOINT": "localhost:8080"},
            "CPR_API_ENDPOINT must be an http:// or https:// base URL",
        ),
        (
            {
                "CPR_FORWARD_TO": "projects/p/locations/l/endpoints/1",
                "CPR_BATCH_SIZE": "0",
            },
            "CPR_BATCH_SIZE must be a positive whole number; got '0'",
        ),
        ({"CPR_MICROBATCH": "maybe"}, "CPR_MICROBATCH must be true (merge concurrent requests"),
        (
            {"CPR_MICROBATCH_MAX_SIZE": "0"},
            "CPR_MICROBATCH_MAX_SIZE must be a whole number of instances from 1 to 100000, the "
            "most one merged predict call is given; got '0'",
        ),
        ({"CPR_MICROBATCH_MAX_SIZE": "8.5"}, "CPR_MICROBATCH_MAX_SIZE must be a whole number"),
        (
            {"CPR_MICROBATCH_WAIT_MS": "-1"},
            "CPR_MICROBATCH_WAIT_MS must be a number of milliseconds from 0 to 1000, the longest "
            "a merged call waits for more requests to join; got '-1'",
        ),
        ({"CPR_MICROBATCH_WAIT_MS": "soon"}, "CPR_MICROBATCH_WAIT_MS must be a number"),
        ({"CPR_MICROBATCH_WAIT_MS": "nan"}, "CPR_MICROBATCH_WAIT_MS must be a number"),
    ],
)
def test_wrong_settings_name_the_variable_and_what_it_accepts(env, message):
    with pytest.raises(ConfigError) as error:
        Config.from_env(env)
    assert message in str(error.value)


def test_micro_batching_settings():
    default = Config.from_env({})
    assert (default.microbatch, default.microbatch_max_size) == ("true", 1024)
    config = Config.from_env(
        {"CPR_MICROBATCH": "All", "CPR_MICROBATCH_MAX_SIZE": "16", "CPR_MICROBATCH_WAIT_MS": "0.5"}
    )
    assert (config.microbatch, config.microbatch_max_size, config.microbatch_wait) == (
        "all",
        16,
        0.0005,
    )
    described = config.describe()
    assert (described["microbatch"], described["microbatchMaxSize"]) == ("all", 16)
    assert described["microbatchWaitMs"] == 0.5
    assert Config.from_env({"CPR_MICROBATCH": "yes"}).microbatch == "true"
    assert Config.from_env({"CPR_MICROBATCH": "off"}).microbatch == "false"


def test_the_description_deploy_sh_passes_is_the_versions():
    from cpr_function.http import resources

    config = Config.from_env(
        {"CPR_ORIGIN": "gs://b/m", "CPR_FRAMEWORK": "xgboost", "CPR_DESCRIPTION": "iris, 2019"}
    )
    model = config.catalog.model()
    body = resources.version("p", model, model.version(), ("READY", None))
    assert body["description"] == "iris, 2019"
