"""Hostile HTTP input against a real function process: thousands of generated bodies, slow
and abandoned bodies; never a 5xx from our code, never a trace, path or secret in a body."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from conftest import REPO, FunctionProcess, make_tar
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kit_source import kit_files

SOAK = os.environ.get("CPR_SOAK") == "1"
SECRET = "s3cr3t-value-that-must-never-leave"
LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def echo(tmp_path_factory, iris_dir):
    """The kit's Echo predictor, which never raises: any 5xx would be ours."""
    tmp = tmp_path_factory.mktemp("hostile")
    package = make_tar(tmp / "kit-0.1.tar.gz", kit_files())
    env = {
        "CPR_ORIGIN": str(iris_dir),
        "CPR_PACKAGE_URIS": str(package),
        "CPR_PREDICTION_CLASS": "kit.Echo",
        "CPR_CACHE_DIR": str(tmp / "cache"),
        "CPR_MAX_REQUEST_BYTES": str(LIMIT),
        "DATABASE_PASSWORD": SECRET,
    }
    fn = FunctionProcess(env, tmp / "function.log", threads=8).start()
    fn.counts = {}
    yield fn
    counts = dict(sorted(fn.counts.items()))
    print(f"\nhostile requests sent: {sum(counts.values())}, by status: {counts}")
    fn.stop()


LEAKS = ("Traceback", 'File "', SECRET, str(REPO), sys.prefix)


def _clean(fn: FunctionProcess, answer: requests.Response) -> None:
    """The rules for every answer: no 5xx, JSON, nothing internal in it."""
    fn.counts[answer.status_code] = fn.counts.get(answer.status_code, 0) + 1
    sent = f"{answer.request.method} {answer.request.path_url}"
    assert answer.status_code < 500, f"{sent}: {answer.text[:500]}"
    assert answer.headers["Content-Type"] == "application/json", f"{sent}: {answer.text[:500]}"
    answer.json()
    for leak in LEAKS:
        assert leak not in answer.text, answer.text[:500]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)
b64 = st.dictionaries(st.just("b64"), st.text(max_size=12) | st.integers() | st.none(), min_size=1)


def _json(value) -> bytes:
    return json.dumps(value).encode()


bodies = st.one_of(
    # Plausible bodies, any values.
    st.builds(
        lambda i, extra: _json({"instances": i, **extra}),
        json_values,
        st.dictionaries(st.text(max_size=8), json_values, max_size=3),
    ),
    st.builds(
        lambda i: _json({"instances": i}), st.lists(json_values | b64, min_size=1, max_size=5)
    ),
    # Any JSON at all, and bytes that are not JSON or not UTF-8.
    json_values.map(_json),
    st.binary(max_size=300),
    st.text(max_size=100).map(lambda t: t.encode("utf-16")),
    # Deep nesting, numbers JSON allows but machines do not, JavaScript's NaN.
    st.integers(1, 3000).map(lambda n: b'{"instances": ' + b"[" * n + b"]" * n + b"}"),
    st.integers(64, 400).map(lambda n: b'{"instances": [' + b"9" * n + b"]}"),
    st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999"]).map(
        lambda n: b'{"instances": [' + n + b"]}"
    ),
    # Bodies over the limit.
    st.integers(LIMIT + 1, 2 * LIMIT).map(lambda n: b'{"instances": ["' + b"x" * n + b'"]}'),
)
paths = st.sampled_from(
    [
        "/",
        "/predict",
        "/fn/predict",
        "/v1/projects/p/models/default:predict",
        "/v1/projects/p/models/default/versions/v1:predict",
        "/v1/projects/p/locations/l/endpoints/default:predict",
        "/v1/projects/p/locations/l/endpoints/default:rawPredict",
    ]
)
segments = st.text(st.characters(codec="utf-8", exclude_characters="/?#"), min_size=1, max_size=12)


@settings(
    max_examples=20000 if SOAK else 2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    body=bodies, path=paths, content_type=st.sampled_from(["application/json", "text/plain", ""])
)
def test_generated_bodies_never_get_a_server_error(echo, body, path, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    _clean(echo, requests.post(echo.url + path, data=body, headers=headers, timeout=30))


@settings(max_examples=3000 if SOAK else 300, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
    parts=st.lists(segments, min_size=1, max_size=6),
    suffix=st.sampled_from(["", ":predict", ":rawPredict", "/openapi.json"]),
)
def test_generated_paths_and_methods_never_get_a_server_error(echo, method, parts, suffix):
    path = "/" + "/".join(requests.utils.quote(p, safe="") for p in parts) + suffix
    _clean(echo, requests.request(method, echo.url + path, data=b"{}", timeout=30))


def _slow_client(port: int, body: bytes, pause: float, stop_after: int | None = None) -> bytes:
    """Sends the body a few bytes at a time; optionally goes away after `stop_after` bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        )
        for start in range(0, len(body), 4):
            if stop_after is not None and start >= stop_after:
                return b""
            sock.sendall(body[start : start + 4])
            time.sleep(pause)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def test_slow_and_abandoned_bodies_do_not_stop_the_others(echo):
    body = b'{"instances": [1, 2, 3], "note": "slowly"}'
    with ThreadPoolExecutor(6) as pool:
        slow = [pool.submit(_slow_client, echo.port, body, 0.1) for _ in range(3)]
        gone = [pool.submit(_slow_client, echo.port, body, 0.05, 12) for _ in range(2)]
        time.sleep(0.3)
        quick = [echo.predict({"instances": [i]}) for i in range(20)]
        answers = [f.result() for f in slow]
        for f in gone:
            f.result()
    assert [q.json()["predictions"][0]["instance"] for q in quick] == list(range(20))
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 200")
        assert b'"note":"slowly"' in answer
    assert echo.predict({"instances": [1]}).status_code == 200


def test_the_status_shows_settings_but_no_secret_or_unrelated_environment(echo):
    status = requests.get(echo.url + "/", timeout=30)
    _clean(echo, status)
    assert "DATABASE_PASSWORD" not in status.text
    assert status.json()["config"]["maxRequestBytes"] == LIMIT
