"""Models files: read once at start, and a wrong one names the model, version and field."""

from __future__ import annotations

import pytest

from cpr_function import models_file
from cpr_function.config import Config
from cpr_function.errors import ConfigError, NotFound
from cpr_function.http.app import App, load_catalog

GOOD = """
default_model: churn
models:
  iris:
    description: iris classifier
    default_version: v2
    versions:
      v1:
        origin: gs://b/iris/v1
        package_uris: [gs://b/p-0.1.tar.gz]
        prediction_class: predictor.MyPredictor
      v2: {deploymentUri: gs://b/iris/v2, framework: XGBoost}
  churn:
    versions:
      only: {forward_to: projects/p/locations/us-central1/endpoints/123, batch_size: 50}
"""


def test_a_models_file_in_yaml():
    parsed = models_file.parse(GOOD, "models.yaml")
    assert parsed.default_model == "churn"
    iris = parsed.model("iris")
    assert iris.default_version == "v2" and iris.description == "iris classifier"
    v1 = iris.version("v1")
    assert (v1.origin, v1.package_uris, v1.prediction_class) == (
        "gs://b/iris/v1",
        ("gs://b/p-0.1.tar.gz",),
        "predictor.MyPredictor",
    )
    assert iris.version().framework == "xgboost"
    churn = parsed.model().version()
    assert (churn.name, churn.forward_to, churn.batch_size, churn.in_process) == (
        "only",
        "projects/p/locations/us-central1/endpoints/123",
        50,
        False,
    )


def test_json_is_read_too_and_one_version_is_its_own_default():
    parsed = models_file.parse('{"models": {"m": {"versions": {"a": {"origin": "/x"}}}}}', "m.json")
    assert parsed.model("m").version().name == "a"
    assert parsed.default_model == "m"


def test_a_version_sets_its_own_micro_batching_and_the_others_take_the_deployments():
    text = """
models:
  m:
    default_version: merged
    versions:
      merged: {origin: /x, microbatch: all, microbatch_max_size: 8, microbatch_wait_ms: 0.5}
      apart: {origin: /y, microbatch: false}
      quoted: {origin: /v, microbatch: "off"}
      yaml_true: {origin: /z, microbatch: true, microbatchWaitMs: 0}
      unset: {origin: /w}
"""
    model = models_file.parse(text, "m.yaml").model("m")
    deployment = Config.from_env(
        {"CPR_MICROBATCH": "true", "CPR_MICROBATCH_MAX_SIZE": "32", "CPR_MICROBATCH_WAIT_MS": "3"}
    )
    settings = {v.name: tuple(deployment.microbatch_for(v)) for v in model.versions}
    assert settings == {
        "merged": ("all", 8, 0.0005),
        "apart": ("false", 32, 0.003),
        "quoted": ("false", 32, 0.003),
        "yaml_true": ("true", 32, 0.0),
        "unset": ("true", 32, 0.003),
    }
    assert tuple(Config().microbatch_for(model.version("unset"))) == ("true", 1024, 0.002)


def test_unknown_names_are_404_with_what_exists():
    parsed = models_file.parse(GOOD, "models.yaml")
    with pytest.raises(NotFound) as error:
        parsed.model("nope")
    assert str(error.value) == "no model named 'nope'; the models served here: iris, churn"
    with pytest.raises(NotFound) as error:
        parsed.model("iris").version("v3")
    assert str(error.value) == "model 'iris' has no version 'v3'; its versions: v1, v2"


@pytest.mark.parametrize(
    "text,message",
    [
        ("models: [1, 2", "models file f.yaml is not valid YAML or JSON"),
        ("- a\n- b", "must be a mapping with a non-empty 'models' mapping"),
        ("models: {}", "must be a mapping with a non-empty 'models' mapping"),
        (
            "models: {m: {versions: {a: {origin: /x}}}}\nextra: 1",
            "models file f.yaml has unknown field 'extra'",
        ),
        ("models: {m: [1]}", "model 'm' must be a mapping with a 'versions' mapping"),
        ("models: {m: {versions: {}}}", "model 'm' has no versions"),
        ("models: {'bad name': {versions: {a: {origin: /x}}}}", "must be letters, digits"),
        (
            "models: {m: {default_version: 'off', versions: {off: {origin: /x}}}}",
            "the name in models file f.yaml, model 'm', version False was read as the YAML "
            "boolean false: a name such as on, off, yes or no must be quoted ('off')",
        ),
        (
            "models: {m: {default_version: on, versions: {'on': {origin: /x}, b: {origin: /y}}}}",
            "the name in models file f.yaml, model 'm', default_version was read as the YAML "
            "boolean true",
        ),
        (
            "default_model: no\nmodels: {'no': {versions: {a: {origin: /x}}}}",
            "the name in models file f.yaml, default_model was read as the YAML boolean false",
        ),
        (
            "models: {m: {versions: {a: {origin: /x}, b: {origin: /y}}}}",
            "model 'm' has several versions (a, b); name the one that serves by default",
        ),
        (
            "models: {m: {default_version: c, versions: {a: {origin: /x}}}}",
            "model 'm': default_version 'c' is not one of its versions: a",
        ),
        (
            "default_model: z\nmodels: {m: {versions: {a: {origin: /x}}}}",
            "default_model 'z' is not one of the models: m",
        ),
        (
            "models: {m: {versions: {a: {origin: /x, prediction_class: Pred}}}}",
            "model 'm', version 'a', prediction_class must be module.Class",
        ),
        (
            "models: {m: {versions: {a: {origin: /x, framework: torch}}}}",
            "model 'm', version 'a', framework must be one of scikit-learn",
        ),
        (
            "models: {m: {versions: {a: {package_uris: [p.tar.gz]}}}}",
            "model 'm', version 'a', origin must name the model directory",
        ),
        (
            "models: {m: {versions: {a: {origin: /x, package_uris: [p.egg]}}}}",
            "model 'm', version 'a', package_uris must list .tar.gz, .zip or .whl packages",
        ),
        (
            "models: {m: {versions: {a: {origin: /x, packages: [p.tar.gz]}}}}",
            "model 'm', version 'a' has unknown field 'packages'; known fields: origin,",
        ),
        (
            "models: {m: {versions: {a: {origin: /x, deploymentUri: /y}}}}",
            "model 'm', version 'a' sets origin twice",
        ),
        (
            "models: {m: {versions: {a: {forward_to: projects/p/models/q, origin: /x}}}}",
            "forward_to forwards to a deployed model, so models file f.yaml, model 'm', "
            "version 'a', origin cannot be set too",
        ),
        (
            "models: {m: {versions: {a: {forward_to: projects/p/locations/l/endpoints/e, "
            "batch_size: -1}}}}",
            "model 'm', version 'a', batch_size must be a positive whole number; got -1",
        ),
        (
            "models: {m: {versions: {a: {origin: 5}}}}",
            "model 'm', version 'a', origin must be a string; got int 5",
        ),
        (
            "models: {m: {versions: {a: {origin: /x, microbatch: sometimes}}}}",
            "model 'm', version 'a', microbatch must be true (merge concurrent requests for "
            "predictors that declare batchable = True), all (for every AI Platform predictor "
            "that does not declare batchable = False) or false; got 'sometimes'",
        ),
        (
            "models: {m: {versions: {a: {origin: /x, microbatch_max_size: 0}}}}",
            "model 'm', version 'a', microbatch_max_size must be a whole number of instances "
            "from 1 to 100000, the most one merged predict call is given; got 0",
        ),
        (
            "models: {m: {versions: {a: {origin: /x, microbatchMaxSize: 2.5}}}}",
            "model 'm', version 'a', microbatchMaxSize must be a whole number of instances",
        ),
        (
            "models: {m: {versions: {a: {origin: /x, microbatch_max_size: true}}}}",
            "model 'm', version 'a', microbatch_max_size must be a whole number of instances",
        ),
        (
            "models: {m: {versions: {a: {origin: /x, microbatch_wait_ms: 1001}}}}",
            "model 'm', version 'a', microbatch_wait_ms must be a number of milliseconds from "
            "0 to 1000, the longest a merged call waits for more requests to join; got 1001",
        ),
        (
            "models: {m: {versions: {a: {deploymentUri: /x, predictionClass: MyPredictor}}}}",
            "model 'm', version 'a', predictionClass must be module.Class, like "
            "predictor.MyPredictor; got 'MyPredictor'",
        ),
        (
            "models: {m: {versions: {a: {origin: /x, microbatchWaitMs: soon}}}}",
            "model 'm', version 'a', microbatchWaitMs must be a number of milliseconds",
        ),
        *(
            (
                f"models: {{m: {{versions: {{a: {{origin: /x, microbatch_wait_ms: {wait}}}}}}}}}",
                f"model 'm', version 'a', microbatch_wait_ms must be a number of milliseconds "
                f"from 0 to 1000, the longest a merged call waits for more requests to join; "
                f"got {shown}",
            )
            for wait, shown in ((".nan", "nan"), (".inf", "inf"), ("true", "True"), ("-1", "-1"))
        ),
        (
            "models: {m: {versions: {a: {origin: /x, microbatch: [true]}}}}",
            "model 'm', version 'a', microbatch must be true (merge concurrent requests",
        ),
        (
            "models: {m: {versions: {a: {forward_to: projects/p/locations/l/endpoints/e, "
            "microbatch: true, microbatch_wait_ms: 1}}}}",
            "model 'm', version 'a', forward_to forwards to a deployed model, so "
            "microbatch=True, microbatch_wait_ms=1 cannot be set too: micro-batching merges "
            "requests for versions served here, and forwarding sends batches of batch_size "
            "already",
        ),
    ],
)
def test_a_wrong_models_file_names_the_model_version_and_field(text, message):
    with pytest.raises(ConfigError) as error:
        models_file.parse(text, "f.yaml")
    assert message in str(error.value)


def test_the_app_reads_the_models_file_at_start(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text(GOOD)
    app = App(Config.from_env({"CPR_MODELS": str(path), "CPR_CACHE_DIR": str(tmp_path)}))
    assert [m.name for m in app.catalog.models] == ["iris", "churn"]
    with pytest.raises(ConfigError) as error:
        App(Config.from_env({"CPR_MODELS": str(tmp_path / "missing.yaml")}))
    assert str(error.value) == f"CPR_MODELS: models file {tmp_path / 'missing.yaml'} does not exist"


@pytest.mark.parametrize(
    "spelled,framework,noted",
    [
        ("scikit-learn", "scikit-learn", False),
        ("SCIKIT_LEARN", "scikit-learn", True),  # the v1 API's enum, as deploy scripts wrote it
        ("SCIKIT-LEARN", "scikit-learn", True),  # older scripts
        ("scikit_learn", "scikit-learn", True),
        ("XGBOOST", "xgboost", True),
        ("TensorFlow", "tensorflow", True),
        ("MLFLOW", "mlflow", True),
        ("FRAMEWORK_UNSPECIFIED", None, True),  # the enum's unset value: detected
    ],
)
def test_every_framework_spelling_ai_platform_took_is_read(spelled, framework, noted):
    text = f"models: {{m: {{versions: {{a: {{origin: /x, framework: {spelled}}}}}}}}}"
    spec = models_file.parse(text, "models.yaml").model().version()
    assert spec.framework == framework
    assert [kind for kind, _ in spec.shims] == (["framework spelling"] if noted else [])
    single = Config.from_env({"CPR_ORIGIN": "/x", "CPR_FRAMEWORK": spelled})
    assert load_catalog(single).model().version().framework == framework


@pytest.mark.parametrize("spelled", ["SCIKIT LEARN", "sklearn", "TORCH", "XG_BOOST"])
def test_a_framework_ai_platform_never_took_is_refused_with_the_spellings(spelled):
    with pytest.raises(ConfigError) as refused:
        load_catalog(Config.from_env({"CPR_ORIGIN": "/x", "CPR_FRAMEWORK": spelled}))
    assert str(refused.value) == (
        "CPR_FRAMEWORK must be one of scikit-learn, xgboost, tensorflow, mlflow; got "
        f"{spelled!r} (any case is taken, and '_' for '-' as in the v1 API's SCIKIT_LEARN)"
    )
