"""Forwarding to a deployed model: batches, order, retries, timeouts; the client and the CLI.

The upstream is a second real function process of ours, speaking the v1 and Vertex AI
contracts; faults come from a real loopback HTTP server in front of it.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from conftest import REPO, FaultProxy, FunctionProcess, make_tar, ml_v1
from kit_source import kit_files


@pytest.fixture(scope="module")
def upstream(tmp_path_factory, iris_dir):
    """Our function as the deployed model: `iris` (scikit-learn), `echo` and `reprs` (kit)."""
    tmp = tmp_path_factory.mktemp("upstream")
    kit = str(make_tar(tmp / "kit-0.1.tar.gz", kit_files()))

    def routine(cls):
        return {
            "versions": {
                "v1": {"origin": str(iris_dir), "package_uris": [kit], "prediction_class": cls}
            }
        }

    models = {
        "iris": {"versions": {"v1": {"origin": str(iris_dir), "framework": "scikit-learn"}}},
        "echo": routine("kit.Echo"),
        "reprs": routine("kit.Reprs"),
        "raising": routine("kit.Raising"),
    }
    (tmp / "models.json").write_text(json.dumps({"models": models}))
    env = {"CPR_MODELS": str(tmp / "models.json"), "CPR_CACHE_DIR": str(tmp / "cache")}
    fn = FunctionProcess(env, tmp / "upstream.log", threads=16).start()
    yield fn
    fn.stop()


@pytest.fixture
def proxy(upstream):
    made = []

    def make(fault=None, **kwargs) -> FaultProxy:
        made.append(FaultProxy(upstream.url, fault, **kwargs))
        return made[-1]

    yield make
    for p in made:
        p.close()


def forwarding(function, target: str, endpoint: str, **env):
    settings = {"CPR_FORWARD_TO": target, "CPR_API_ENDPOINT": endpoint}
    return function({**settings, **{f"CPR_{k.upper()}": str(v) for k, v in env.items()}})


def rows(count: int, seed: int = 7) -> list[list[float]]:
    rng = random.Random(seed)
    return [
        [round(rng.uniform(4, 8), 1), 3.0, round(rng.uniform(1, 7), 1), 1.0] for _ in range(count)
    ]


def test_ten_thousand_instances_in_a_hundred_calls_keep_their_order(function, upstream, proxy):
    instances = rows(10_000)
    direct = upstream.predict({"instances": instances}, path="/v1/projects/p/models/iris:predict")
    assert direct.status_code == 200
    counting = proxy()
    fn = forwarding(function, "projects/p/models/iris", counting.url, batch_size=100)
    answer = fn.predict({"instances": instances})
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == direct.json()["predictions"]
    assert counting.batches == [100] * 100
    assert len(set(direct.json()["predictions"])) > 1, "the instances span several classes"


def test_integers_and_fields_reach_the_upstream_as_sent(function, proxy):
    passing = proxy()
    fn = forwarding(function, "projects/p/models/reprs/versions/v1", passing.url)
    answer = fn.predict({"instances": [1, 2.5, "x", {"a": 1}, [True, None]]})
    assert answer.json()["predictions"] == ["1", "2.5", "'x'", "{'a': 1}", "[True, None]"]
    echo = forwarding(function, "projects/p/models/echo", passing.url, batch_size=2)
    answer = echo.predict({"instances": [1, 2, 3], "top_k": 2, "b": {"b64": "aGk="}})
    assert answer.json()["predictions"] == [
        {"instance": i, "kwargs": {"top_k": 2, "b": {"b64": "aGk="}}} for i in (1, 2, 3)
    ]


def test_a_vertex_endpoint_gets_the_fields_as_parameters(function, proxy):
    passing = proxy()
    fn = forwarding(function, "projects/p/locations/us-central1/endpoints/echo", passing.url)
    answer = fn.predict({"instances": [{"b64": "aGk="}], "top_k": 3})
    assert answer.json()["predictions"] == [{"instance": {"b64": "aGk="}, "kwargs": {"top_k": 3}}]


def test_transient_faults_are_retried_and_nothing_is_lost_or_reordered(function, upstream, proxy):
    rng = random.Random(3)
    faulty = proxy(lambda body: rng.choice(["503", "429", "drop"]) if rng.random() < 0.3 else None)
    instances = rows(2_000, seed=11)
    direct = upstream.predict({"instances": instances}, path="/v1/projects/p/models/iris:predict")
    fn = forwarding(
        function, "projects/p/models/iris", faulty.url, batch_size=50, forward_retries=8
    )
    answer = fn.predict({"instances": instances})
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == direct.json()["predictions"]
    assert len(faulty.faults) >= 5, "faults were injected"
    assert faulty.calls == 40 + len(faulty.faults), "each fault cost one more call, no more"


def test_under_faults_every_answer_is_whole_and_in_order_or_an_explicit_error(
    function, upstream, proxy
):
    """30% of calls answered 503 or 429, dropped or left hanging, 12 requests at once."""
    rng, lock = random.Random(5), threading.Lock()

    def fault(body):
        with lock:
            return rng.choice(["503", "429", "drop", "hang"]) if rng.random() < 0.3 else None

    faulty = proxy(fault, hang=1.5)
    retries = 3
    fn = forwarding(
        function,
        "projects/p/models/iris",
        faulty.url,
        batch_size=20,
        forward_retries=retries,
        forward_timeout=0.5,
    )
    bodies = [{"instances": rows(200, seed=s)} for s in range(12)]
    path = "/v1/projects/p/models/iris:predict"
    direct = [upstream.predict(b, path=path).json()["predictions"] for b in bodies]
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(fn.predict, bodies))
    whole = 0
    for answer, expected in zip(answers, direct, strict=True):
        if answer.status_code == 200:
            assert answer.json() == {"predictions": expected}
            whole += 1
        else:
            assert answer.status_code in (502, 503, 504)
            assert list(answer.json()) == ["error"]
            assert re.match(r"instances \d+-\d+ of 200: ", answer.json()["error"])
    print(
        f"\nforwarding under faults: {whole} whole answers, {len(answers) - whole} explicit "
        f"errors, {faulty.calls} calls for {12 * 10} batches, {len(faulty.faults)} faults"
    )
    assert faulty.calls <= 12 * 10 * (retries + 1), "the retry budget holds"
    assert len(faulty.faults) >= 20, "faults were injected"


def test_a_batch_that_keeps_failing_fails_the_request_naming_its_range(function, proxy):
    failing = proxy(lambda body: "503" if 150 in body["instances"] else None)
    fn = forwarding(
        function, "projects/p/models/reprs", failing.url, batch_size=100, forward_retries=2
    )
    answer = fn.predict({"instances": list(range(300))})
    assert answer.status_code == 503
    assert answer.json() == {
        "error": f"instances 100-199 of 300: {failing.url}/v1/projects/p/models/reprs:predict "
        "answered 503: injected 503 (after 3 attempts)"
    }
    assert failing.faults == ["503"] * 3, "the retry budget: one call and two retries"
    again = fn.predict({"instances": [1]})
    assert again.json() == {"predictions": ["1"]}, "the function keeps serving"


def test_batches_stay_under_one_and_a_half_megabytes(proxy):
    from cpr_function.remote import client

    counting = proxy()
    instances = [f"{i}" + "x" * 400_000 for i in range(10)]
    predictions = client.predict(
        instances, model="projects/p/models/reprs", api_endpoint=counting.url, batch_size=100
    )
    assert predictions == [repr(i) for i in instances]
    assert sorted(counting.batches) == [1, 3, 3, 3], "three 400 kB instances fit, four do not"


def test_once_a_batch_has_failed_the_others_stop_retrying(function, proxy):
    # Batch 0 fails at once (400); the others keep answering 503 and would retry for long.
    failing = proxy(lambda body: "400" if 0 in body["instances"] else "503")
    fn = forwarding(
        function,
        "projects/p/models/reprs",
        failing.url,
        batch_size=1,
        forward_concurrency=4,
        forward_retries=50,
    )
    answer = fn.predict({"instances": [0, 1, 2, 3]})
    assert answer.status_code == 400
    assert answer.json()["error"].startswith("instances 0-0 of 4:")
    assert failing.calls < 20, f"{failing.calls} calls: the retry budget of the others was spent"


def test_an_upstream_that_does_not_answer_in_time_is_504(function, proxy):
    slow = proxy(lambda body: "hang" if body["instances"] == [2] else None, hang=3)
    fn = forwarding(
        function,
        "projects/p/models/reprs",
        slow.url,
        batch_size=1,
        forward_timeout=0.5,
        forward_retries=1,
    )
    answer = fn.predict({"instances": [1, 2, 3]})
    assert answer.status_code == 504
    assert answer.json()["error"] == (
        f"instances 1-1 of 3: {slow.url}/v1/projects/p/models/reprs:predict did not answer "
        "within 0.5s (after 2 attempts)"
    )


@pytest.mark.parametrize(
    "fault,status,retried",
    [("400", 400, False), ("500", 502, True), ("drop", 503, True)],
)
def test_upstream_errors_are_surfaced_with_whose_fault_it_is(
    function, proxy, fault, status, retried
):
    failing = proxy(lambda body: fault)
    fn = forwarding(function, "projects/p/models/reprs", failing.url, forward_retries=1)
    answer = fn.predict({"instances": [1]})
    assert answer.status_code == status
    message = answer.json()["error"]
    assert message.startswith(f"instances 0-0 of 1: {failing.url}/v1/projects/p/models/reprs")
    if fault != "drop":
        assert f"answered {fault}: injected {fault}" in message
    assert failing.calls == (2 if retried else 1)


def test_the_upstream_error_message_of_a_failing_predictor_is_passed_on(function, upstream):
    fn = forwarding(function, "projects/p/models/raising", upstream.url, forward_retries=0)
    answer = fn.predict({"instances": [[1, 2]]})
    assert answer.status_code == 502
    assert (
        "/v1/projects/p/models/raising:predict answered 500: prediction failed: "
        "ValueError: instance 0 has the wrong shape" in answer.json()["error"]
    )


def test_an_upstream_refusing_the_input_is_a_bad_request_here_too(function, upstream):
    fn = forwarding(function, "projects/p/models/iris", upstream.url, forward_retries=0)
    answer = fn.predict({"instances": [[1, 2]]})
    assert answer.status_code == 400
    assert (
        "/v1/projects/p/models/iris:predict answered 400: the model takes rows of 4 features; "
        "received instances of shape [1, 2]" in answer.json()["error"]
    )


def test_googleapiclient_against_a_forwarding_function(function, upstream):
    fn = forwarding(function, "projects/p/models/reprs", upstream.url, model_name="relay")
    ml = ml_v1(fn.url)
    try:
        answer = ml.projects().predict(name="projects/p/models/relay", body={"instances": [7]})
        assert answer.execute() == {"predictions": ["7"]}
        version = ml.projects().models().versions().get(name="projects/p/models/relay/versions/v1")
        assert version.execute()["forwardTo"] == "projects/p/models/reprs"
    finally:
        ml.close()


def test_the_client_library_batches_in_order(upstream, proxy):
    from cpr_function import client  # as the docs import it

    counting = proxy()
    instances = list(range(95))
    predictions = client.predict(
        instances, model="projects/p/models/reprs", api_endpoint=counting.url, batch_size=10
    )
    assert predictions == [repr(i) for i in instances]
    assert sorted(counting.batches) == [5] + [10] * 9
    by_url = client.predict([[1]], url=f"{upstream.url}/v1/projects/p/models/echo:predict", k=1)
    assert by_url == [{"instance": [1], "kwargs": {"k": 1}}]
    assert client.default_version("projects/p/models/iris", api_endpoint=upstream.url) == (
        "projects/p/models/iris/versions/v1"
    )
    meta = client.model_meta("projects/p/models/iris", api_endpoint=upstream.url)
    assert meta["defaultVersion"]["framework"] == "SCIKIT_LEARN"


def test_the_cli_end_to_end(upstream, tmp_path):
    lines = tmp_path / "instances.jsonl"
    lines.write_text("\n".join(json.dumps(i) for i in range(250)) + "\n\n")
    run = subprocess.run(
        [sys.executable, "-m", "cpr_function", "predict", "--json-instances", str(lines)]
        + ["--model", "projects/p/models/reprs", "--api-endpoint", upstream.url]
        + ["--batch-size", "40"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert [json.loads(x) for x in run.stdout.splitlines()] == [repr(i) for i in range(250)]
    assert "250/250" in run.stderr, "progress goes to stderr"

    output = tmp_path / "out.jsonl"
    run = subprocess.run(
        [sys.executable, "-m", "cpr_function", "predict", "--json-instances", str(lines)]
        + ["--url", f"{upstream.url}/v1/projects/p/models/reprs:predict"]
        + ["--output", str(output), "--no-progress"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == "" and run.stderr == ""
    assert [json.loads(x) for x in output.read_text().splitlines()] == [repr(i) for i in range(250)]


@pytest.mark.parametrize("source", ["-", "/dev/stdin"])
def test_the_cli_sends_stdin_as_it_comes(upstream, proxy, source):
    counting = proxy()
    cli = subprocess.Popen(
        [sys.executable, "-m", "cpr_function", "predict", "--json-instances", source]
        + ["--url", f"{counting.url}/v1/projects/p/models/reprs:predict", "--batch-size", "10"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        # Two full batches, and no line after them: both go before stdin says more.
        cli.stdin.write(b"".join(b"%d\n" % i for i in range(20)))
        cli.stdin.flush()
        deadline = time.monotonic() + 60
        while counting.calls < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert counting.batches == [10, 10], "the full batches went before stdin ended"
        cli.stdin.write(b"".join(b"%d\n" % i for i in range(20, 45)))
        out, err = cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.communicate()
    assert cli.returncode == 0, err
    assert [json.loads(x) for x in out.splitlines()] == [repr(i) for i in range(45)]
    assert sorted(counting.batches) == [5] + [10] * 4
    assert b"45 instances" in err or b"45it" in err, "progress, with no total to show"


def test_a_failed_batch_stops_the_client_reading_more(upstream, proxy):
    from cpr_function import client
    from cpr_function.errors import CprError

    # Instance 0 takes 2 s to answer; instance 1 is refused at once.
    failing = proxy(lambda body: {0: "hang", 1: "400"}.get(body["instances"][0]), hang=2)
    taken = []

    def slowly():  # as a pipe gives lines: one every 50 ms
        for i in range(200):
            taken.append(i)
            time.sleep(0.05)
            yield b"%d" % i

    url = f"{failing.url}/v1/projects/p/models/reprs:predict"
    with pytest.raises(CprError, match="instances 1-1: .* answered 400"):
        for _ in client.predict_json(slowly(), url=url, batch_size=1, concurrency=8):
            pass
    # Without the stop, it went on reading while instance 0 was in flight, up to the
    # window of 16 batches.
    assert len(taken) < 8, taken


def test_a_failed_cli_run_leaves_its_output_file_as_it_was(upstream, proxy, tmp_path):
    refusing = proxy(lambda body: "400" if 150 in body["instances"] else None)
    lines = tmp_path / "instances.jsonl"
    lines.write_text("".join(f"{i}\n" for i in range(300)))
    output = tmp_path / "predictions.jsonl"
    output.write_text("an earlier run's predictions\n")
    run = subprocess.run(
        [sys.executable, "-m", "cpr_function", "predict", "--json-instances", str(lines)]
        + ["--url", f"{refusing.url}/v1/projects/p/models/reprs:predict", "--no-progress"]
        + ["--output", str(output), "--batch-size", "10", "--concurrency", "2"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert run.returncode == 1 and "instances 150-159 of 300" in run.stderr, run.stderr
    assert output.read_text() == "an earlier run's predictions\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["instances.jsonl", "predictions.jsonl"]


def test_the_client_library_sends_nothing_when_an_instance_is_not_json(proxy):
    from cpr_function import client

    counting = proxy()
    with pytest.raises(TypeError):
        client.predict([[1], object()], url=f"{counting.url}/predict", batch_size=1)
    assert counting.calls == 0


def test_the_cli_holds_no_more_memory_for_a_longer_file(upstream, tmp_path):
    # Before, it read, parsed and encoded the whole file before sending any of it: for two
    # million rows of 20 features, 8.6 GB. Only the predictions (a few bytes each) and the
    # batches in flight stay now.
    def peak_kb(count: int) -> int:
        lines = tmp_path / f"rows-{count}.jsonl"
        lines.write_text("".join(json.dumps(r) + "\n" for r in rows(count)))
        cli = subprocess.Popen(
            [sys.executable, "-m", "cpr_function", "predict", "--json-instances", str(lines)]
            + ["--url", f"{upstream.url}/v1/projects/p/models/iris:predict", "--no-progress"]
            + ["--output", str(tmp_path / f"out-{count}.jsonl"), "--batch-size", "500"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=REPO,
        )
        # The process's own high-water mark (wait4's counts what it was before exec, a
        # copy of this one).
        peak = 0
        while cli.poll() is None:
            with contextlib.suppress(OSError):
                status = (Path("/proc") / str(cli.pid) / "status").read_text()
                found = re.search(r"VmHWM:\s+(\d+)", status)  # none once it has exited
                peak = max(peak, int(found[1]) if found else 0)
            time.sleep(0.01)
        _, err = cli.communicate()
        assert cli.returncode == 0, err
        predicted = (tmp_path / f"out-{count}.jsonl").read_text().splitlines()
        assert len(predicted) == count and set(predicted) <= {"0", "1", "2"}
        return peak

    # 40 batches or 400: either way every one of the 16 threads has had calls to make.
    small, large = peak_kb(20_000), peak_kb(200_000)
    file_kb = (tmp_path / "rows-200000.jsonl").stat().st_size // 1024
    assert small > 0 and large - small < 2 * file_kb, (small, large, file_kb)


def test_the_client_and_cli_report_the_status_the_function_answered(upstream, tmp_path):
    from cpr_function.errors import CprError
    from cpr_function.remote import client

    with pytest.raises(CprError) as missing:
        client.predict([[1]], model="projects/p/models/nope", api_endpoint=upstream.url)
    assert missing.value.status_code == 404
    assert "no model named 'nope'" in str(missing.value)
    with pytest.raises(CprError) as wrong_method:
        client.model_meta("projects/p/models/nope", api_endpoint=upstream.url)
    assert wrong_method.value.status_code == 404
    lines = tmp_path / "instances.jsonl"
    lines.write_text("[1]\n")
    run = subprocess.run(
        [sys.executable, "-m", "cpr_function", "predict", "--json-instances", str(lines)]
        + ["--model", "projects/p/models/nope", "--api-endpoint", upstream.url, "--no-progress"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert run.returncode == 1
    assert run.stderr.startswith("error (404): ")


@pytest.mark.parametrize(
    "content,message",
    [
        ('[1, 2]\n{"a": 1\n', "instances.jsonl line 2 is not a JSON instance"),
        ("\n\n", "instances.jsonl holds no instances"),
    ],
)
def test_the_cli_names_a_malformed_line(tmp_path, content, message):
    lines = tmp_path / "instances.jsonl"
    lines.write_text(content)
    run = subprocess.run(
        [sys.executable, "-m", "cpr_function", "predict", "--json-instances", str(lines)]
        + ["--url", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert run.returncode == 2
    assert message in run.stderr


def test_in_process_serving_never_imports_forwarding_nor_forwarding_aiplatform(upstream):
    script = (
        "import os, sys, functions_framework\n"
        "client = functions_framework.create_app('predict', 'main.py').test_client()\n"
        "answer = client.post('/', json={'instances': [[5.1, 3.5, 1.4, 0.2]]})\n"
        "assert answer.status_code == 200, answer.get_json()\n"
        "print(sorted(m for m in ('cpr_function.remote.forward', 'google.cloud.aiplatform', "
        "'cpr_function.serving.process') if m in sys.modules))\n"
    )
    base = {k: v for k, v in __import__("os").environ.items() if not k.startswith("CPR_")}
    plain = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, env=base
    )
    assert plain.stdout.strip() == "[]", plain.stderr
    forward = {
        **base,
        "CPR_FORWARD_TO": "projects/p/models/iris",
        "CPR_API_ENDPOINT": upstream.url,
    }
    relayed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, env=forward
    )
    assert relayed.stdout.strip() == "['cpr_function.remote.forward']", relayed.stderr


def test_a_password_in_the_endpoint_never_shows(function, proxy):
    dropping = proxy(lambda body: "drop")
    endpoint = dropping.url.replace("http://", "http://svc:hunter2@")
    fn = forwarding(function, "projects/p/models/iris", endpoint, forward_retries=0)
    answer = fn.predict({"instances": [[1, 2, 3, 4]]})
    assert answer.status_code == 503
    masked = dropping.url.replace("http://", "http://***@")
    assert answer.json()["error"].startswith(f"instances 0-0 of 1: {masked}/v1/projects/p/")
    status = requests.get(fn.url + "/", timeout=30).text
    assert masked in status
    assert "hunter2" not in status + answer.text
