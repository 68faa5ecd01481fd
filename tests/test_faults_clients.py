"""What a client sends before the app sees a request: slow heads, huge request lines and
headers. Each against a real function process over raw sockets."""

from __future__ import annotations

import http.client
import json
import select
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from conftest import EXAMPLES, IRIS, iris_expected

EXPECTED = {"predictions": iris_expected(EXAMPLES / "model", IRIS)}


def _raw(port: int, data: bytes, *, timeout: float = 30) -> tuple[int, dict, bytes]:
    """Sends `data` on a new connection; the status, headers and body answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(1 << 16):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


@pytest.fixture
def served(function, tmp_path):
    """The bundled example, one worker of 4 threads: a 1 vCPU instance's shape."""
    return function({"CPR_CACHE_DIR": str(tmp_path / "cache")}, threads=4)


def test_a_huge_request_line_is_a_short_json_414(served):
    before = len(served.log())
    line = b"GET /" + b"a" * 16_000_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    try:
        status, headers, body = _raw(served.port, line)
    except (BrokenPipeError, ConnectionResetError):
        # Refused before all 16 MB were sent: the answer is lost, so ask with a shorter one.
        status, headers, body = _raw(served.port, line[:20_000] + b" HTTP/1.1\r\n\r\n")
    assert status == 414 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["error"].startswith("the request line is longer than 8190 bytes")
    assert len(body) < 300
    assert len(served.log()) - before < 2_000, "the log does not repeat the line"
    assert served.predict({"instances": IRIS}).json() == EXPECTED


def test_a_huge_header_is_a_json_431(served):
    header = b"X-Big: " + b"b" * 1_000_000
    status, headers, body = _raw(
        served.port, b"GET / HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n\r\n"
    )
    assert status == 431 and headers["Content-Type"] == "application/json"
    assert "at most 100 headers of 8190 bytes each are accepted" in json.loads(body)["error"]


def test_what_a_client_sent_is_echoed_only_in_part(served):
    path = "/v1/projects/p/models/" + "m" * 7_000 + ":predict"
    before = len(served.log())
    answer = requests.post(served.url + path, json={"instances": IRIS}, timeout=30)
    assert answer.status_code == 404
    assert "... (7000 characters)" in answer.json()["error"]["message"]
    assert len(answer.content) < 1_000
    assert len(served.wait_for_log("-> 404 in")) - before < 2_000
    long_route = requests.get(served.url + "/" + "x" * 7_000, timeout=30)
    assert long_route.status_code == 404 and len(long_route.content) < 1_000


def test_slow_heads_cannot_hold_every_thread(served):
    """As many connections as the worker has threads send their heads a byte a second and
    would for a minute; 40 ordinary requests meanwhile are all answered, and the slow ones
    are ended with 408 a few seconds after their first bytes."""
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" * 3
    stop = threading.Event()
    refused: list[int] = []

    def trickle() -> None:
        with socket.create_connection(("127.0.0.1", served.port), timeout=90) as sock:
            for byte in head:
                try:
                    if select.select([sock], [], [], 0)[0]:
                        if sock.recv(1 << 16).startswith(b"HTTP/1.1 408"):
                            refused.append(408)
                        return
                    if stop.is_set():
                        return
                    sock.sendall(bytes([byte]))
                except OSError:
                    return
                time.sleep(1)

    slow = [threading.Thread(target=trickle) for _ in range(4)]
    for thread in slow:
        thread.start()
    time.sleep(1.5)  # every thread of the worker now holds a slow head

    def ordinary(_) -> int:
        return requests.post(served.url + "/predict", json={"instances": IRIS}, timeout=30)

    try:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(ordinary, range(40)))
        for thread in slow:
            thread.join(30)
    finally:
        stop.set()
    assert [a.status_code for a in answers] == [200] * 40
    assert all(a.json() == EXPECTED for a in answers)
    assert refused == [408] * 4


def test_functions_framework_request_timeouts_keep_connections_alive(function, tmp_path):
    """functions-framework's timeout worker closed every connection after one response that
    announced keep-alive; a client sending its next request on it found it closed."""
    served = function(
        {
            "CPR_CACHE_DIR": str(tmp_path / "cache"),
            "THREADED_TIMEOUT_ENABLED": "true",
            "CLOUD_RUN_TIMEOUT_SECONDS": "30",
        },
        threads=4,
    )
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)
    body = json.dumps({"instances": IRIS})
    try:
        for _ in range(3):
            connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
            answer = connection.getresponse()
            assert answer.status == 200 and json.loads(answer.read()) == EXPECTED
            assert answer.getheader("Connection") == "keep-alive"
    finally:
        connection.close()
