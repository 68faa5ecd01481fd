"""The package as a user installs it: a wheel built from this checkout, installed in a fresh
virtualenv outside it, its `cpr-function` command run from another folder."""

from __future__ import annotations

import os
import subprocess
import tomllib

import pytest
import requests
from conftest import EXAMPLES, IRIS, REPO, iris_expected, listening, venv_with


def test_the_wheel_lists_every_folder_of_the_package():
    listed = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    folders = {
        ".".join(p.parent.relative_to(REPO).parts)
        for p in (REPO / "cpr_function").rglob("__init__.py")
    }
    assert listed == folders | {"cpr_function.example"}


def test_init_takes_the_extras_the_wheel_declares():
    from cpr_function.cli import init

    dynamic = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["dynamic"]
    assert set(init.EXTRAS) | set(init.NOT_SERVED) == set(dynamic["optional-dependencies"])


@pytest.fixture(scope="module")
def installed(tmp_path_factory, wheel):
    """A fresh virtualenv outside the checkout with the wheel installed, and a folder to
    run commands in that is not the checkout."""
    tmp = tmp_path_factory.mktemp("package")
    venv = venv_with(tmp, [str(wheel)])
    (purelib,) = (venv / "lib").glob("python3.*/site-packages")
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CPR_") and k != "PYTHONPATH"}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return {"bin": venv / "bin", "purelib": purelib, "cwd": elsewhere, "env": env, "wheel": wheel}


def run(installed, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(installed["bin"] / "cpr-function"), *args],
        cwd=installed["cwd"],
        env=installed["env"],
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_the_command_is_on_the_path_with_every_command(installed):
    done = run(installed, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: cpr-function ")
    for command in ("predict", "local-predict", "check", "serve", "init"):
        assert command in done.stdout


def test_local_predict_runs_the_example_the_wheel_ships(installed, tmp_path):
    example = installed["purelib"] / "cpr_function" / "example"
    lines = tmp_path / "instances.jsonl"
    lines.write_text("\n".join(map(str, IRIS)))
    done = run(
        installed,
        "local-predict",
        "--model-dir",
        str(example / "model"),
        "--package-uris",
        str(example / "dist" / "my_custom_code-0.1.tar.gz"),
        "--prediction-class",
        "predictor.MyPredictor",
        "--json-instances",
        str(lines),
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answers = [int(line) for line in done.stdout.split()]
    assert answers == iris_expected(EXAMPLES / "model", IRIS)


def test_serve_answers_from_the_installed_package_with_no_main_py(installed, tmp_path):
    env = {**installed["env"], "CPR_CACHE_DIR": str(tmp_path / "cache")}
    command = [str(installed["bin"] / "cpr-function"), "serve", "--port", "{port}"]
    with listening(command, cwd=installed["cwd"], env=env) as url:
        answer = requests.post(f"{url}/predict", json={"instances": IRIS})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"predictions": iris_expected(EXAMPLES / "model", IRIS)}
        (version,) = requests.get(f"{url}/").json()["models"][0]["versions"]
    # The example served is the one the wheel installed, not this checkout's.
    assert version["origin"] == str(installed["purelib"] / "cpr_function" / "example" / "model")


def test_init_writes_a_two_file_source_that_installs_and_serves(installed, tmp_path):
    source = tmp_path / "fn"
    done = run(
        installed, "init", str(source), "--extras", "xgboost", "--wheel", str(installed["wheel"])
    )
    assert done.returncode == 0, done.stderr
    assert (source / "main.py").read_text().count("from cpr_function import predict") == 1
    wheel = installed["wheel"].name
    assert (source / "requirements.txt").read_text() == f"./{wheel}[xgboost]\n"
    # As Cloud Functions' build does: pip in the uploaded folder, from its requirements.txt.
    venv = venv_with(tmp_path, ["-r", "requirements.txt"], cwd=source)
    env = {**installed["env"], "CPR_CACHE_DIR": str(tmp_path / "cache")}
    framework = [str(venv / "bin" / "python"), "-m", "functions_framework", "--target", "predict"]
    with listening(
        [*framework, "--source", "main.py", "--port", "{port}"], cwd=source, env=env
    ) as url:
        answer = requests.post(f"{url}/predict", json={"instances": IRIS})
    assert answer.json() == {"predictions": iris_expected(EXAMPLES / "model", IRIS)}


@pytest.mark.parametrize(
    "args,message",
    [
        (["--extras", "torch"], "unknown extra torch; the extras are xgboost, tensorflow, mlflow"),
        (["--wheel", "README.md"], "--wheel takes a built .whl file; README.md is not one"),
        (["--extras", "batch"], "a function does not need [batch]: it is batch-predict's"),
    ],
)
def test_init_refuses_what_it_cannot_write(installed, tmp_path, args, message):
    (installed["cwd"] / "README.md").write_text("not a wheel")
    done = run(installed, "init", str(tmp_path / "fn"), *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert not (tmp_path / "fn").exists()


def test_init_never_overwrites_a_source(installed, tmp_path):
    (tmp_path / "main.py").write_text("# mine\n")
    done = run(installed, "init", str(tmp_path))
    assert done.returncode == 2
    assert f"{tmp_path} already has main.py; nothing was written" in done.stderr
    assert (tmp_path / "main.py").read_text() == "# mine\n"
    assert not (tmp_path / "requirements.txt").exists()
