"""What a client sends before the app has what it needs: slow heads and bodies, huge request
lines and headers. Each against a real function process over raw sockets."""

from __future__ import annotations

import http.client
import json
import select
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from conftest import EXAMPLES, IRIS, iris_expected, make_tar, models_env
from kit_source import kit_files

EXPECTED = {"predictions": iris_expected(EXAMPLES / "model", IRIS)}


def _raw(port: int, data: bytes, *, timeout: float = 30) -> tuple[int, dict, bytes]:
    """Sends `data` on a new connection; the status, headers and body answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(1 << 16):
            answer += chunk
    return _parsed(answer)


def _parsed(answer: bytes) -> tuple[int, dict, bytes]:
    """The status, headers and body of an HTTP answer."""
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


def _send_body(
    port: int,
    path: str,
    parts: list[bytes],
    *,
    length: int,
    pause: float,
    method: str = "POST",
    held: list[socket.socket] | None = None,
):
    """Sends a head announcing `length` bytes of body, then `parts` with `pause` seconds
    between them; the status, headers and body answered, and the seconds until the answer
    began and until the function ended the connection. With `held`, the connection is not
    closed once the function has ended it, as a stalled client would not: it is added to
    `held`."""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    try:
        started = time.monotonic()
        sock.sendall(head + parts[0])
        for part in parts[1:]:
            if select.select([sock], [], [], pause)[0]:
                break  # answered already
            sock.sendall(part)
        select.select([sock], [], [], 60)
        waited = time.monotonic() - started
        answer = b""
        while chunk := sock.recv(1 << 16):
            answer += chunk
        ended = time.monotonic() - started
    finally:
        if held is None:
            sock.close()
        else:
            held.append(sock)
    return *_parsed(answer), waited, ended


def test_stalled_bodies_cannot_hold_every_thread(served):
    """As many connections as the worker has threads send their heads and the start of a
    body, then nothing, and would hold their threads for good; 40 ordinary requests
    meanwhile are all answered. The stalled ones are answered once the body is 5 s late,
    whatever their route (408 where the function reads the body), and their connections
    ended right after: the stalled clients never close theirs, and gunicorn's graceful
    close waited 2 s for each, one after the other, on the thread that accepts and
    finishes every request."""
    body = json.dumps({"instances": IRIS}).encode()
    # The last is answered by functions-framework's routing, before the function is called.
    routes = [
        ("POST", "/predict"),
        ("POST", "/predict"),
        ("POST", "/v1/projects/p/models/default:predict"),
        ("GET", "/favicon.ico"),
    ]
    held: list[socket.socket] = []

    def stall(method: str, path: str):
        parts = [body[:10]]
        return _send_body(
            served.port, path, parts, length=len(body), pause=0, method=method, held=held
        )

    def ordinary(_) -> requests.Response:
        return requests.post(served.url + "/predict", json={"instances": IRIS}, timeout=30)

    try:
        with ThreadPoolExecutor(len(routes)) as stalled:
            refusals = [stalled.submit(stall, *route) for route in routes]
            time.sleep(1.5)  # every thread of the worker now waits for a body
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(ordinary, range(40)))
            refused = [future.result() for future in refusals]
    finally:
        for sock in held:
            sock.close()
    assert [a.status_code for a in answers] == [200] * 40
    assert all(a.json() == EXPECTED for a in answers)
    answered = [waited for *_, waited, _ in refused]
    ended = [ended for *_, ended in refused]
    assert max(ended) - min(answered) < 1.5, f"answered at {answered} s, ended at {ended} s"
    for (_, path), (status, headers, answer, waited, _) in zip(routes, refused, strict=True):
        assert headers["Connection"] == "close" and waited >= 5
        error = json.loads(answer)["error"]
        if path == "/favicon.ico":
            assert status == 404  # the answer stands; the late body only ends the connection
            continue
        assert status == 408
        if path.startswith("/v1/"):  # Google's shape on Google's routes
            assert (error["code"], error["status"]) == (408, "DEADLINE_EXCEEDED")
            error = error["message"]
        assert error.startswith(
            "the request's body did not arrive in time: a body must come within 5 s of the "
            "request's headers, plus a second for every 16 KiB of it, and this one had not "
            "after 5.0 s"
        )
    assert served.wait_for_log(lambda log: log.count("-> 408 in") == 3)
    assert served.wait_for_log("GET /favicon.ico -> 404 refused by the host")


def test_a_body_sent_steadily_gets_more_time(served):
    """A body is given 5 s and a second more for every 16 KiB that arrived: 160 KB and then,
    7 s later, the last bytes are answered; 1 KB and then the last bytes 8 s later are not."""
    instances = json.dumps({"instances": IRIS}).encode()
    for _ in range(4):  # both workers warm: the time counts from when one reads the head
        requests.post(served.url + "/predict", data=instances, timeout=60).raise_for_status()

    def send(size: int, pause: float):
        body = instances[:-1] + b" " * (size - len(instances)) + b"}"  # JSON's own spaces
        parts = [body[:-10], body[-10:]]
        return _send_body(served.port, "/predict", parts, length=len(body), pause=pause)

    with ThreadPoolExecutor(2) as pool:
        large, small = pool.map(send, (160_000, 1_000), (7, 8))
    assert large[0] == 200 and json.loads(large[2]) == EXPECTED
    assert small[0] == 408 and small[1]["Connection"] == "close"


def test_clients_that_never_read_their_answers_cannot_hold_every_thread(
    function, iris_dir, tmp_path
):
    """Both threads of a worker send 6 MB answers, echoed instances, to clients that take
    none of them: each connection is closed once a send has waited 10 s, and an ordinary
    request sent meanwhile is answered, where it waited as long as those clients kept their
    connections open."""
    package = make_tar(tmp_path / "kit-0.1.tar.gz", kit_files())
    echo = {"origin": str(iris_dir), "package_uris": [str(package)], "prediction_class": "kit.Echo"}
    models = {"models": {"kit": {"versions": {"echo": echo}}}}
    served = function(models_env(tmp_path, models), workers=1, threads=2)
    assert served.predict({"instances": ["a"]}).status_code == 200
    body = json.dumps({"instances": ["x" * 6000] * 1000}).encode()
    head = (
        "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    readers = []
    try:
        for _ in range(2):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window
            sock.connect(("127.0.0.1", served.port))
            sock.sendall(head + body)
            readers.append(sock)
        served.wait_for_log(lambda log: log.count("-> 200 in") == 3)  # both now send
        ordinary = served.predict({"instances": ["a"]})
        assert ordinary.json() == {"predictions": [{"instance": "a", "kwargs": {}}]}
        for sock in readers:  # each was sent part of its answer, then closed
            sock.settimeout(60)
            received = 0
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
            assert 0 < received < len(body)
    finally:
        for sock in readers:
            sock.close()
    warning = "a client took none of its answer for 10s; the connection is closed"
    assert served.log().count(warning) == 2


def _peak_rss_mb(pid: int) -> int:
    """The most memory the process ever held (its VmHWM), in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) // 1024


def test_a_body_over_the_limit_is_never_held(function, tmp_path):
    """A 200 MB body sent to a function that takes at most 1 MB is answered 413 and read to
    its end without being held: functions-framework reads the rest of every body after
    the answer is made, into memory, and the worker's memory grew by the body's size."""
    served = function(
        {"CPR_CACHE_DIR": str(tmp_path / "cache"), "CPR_MAX_REQUEST_BYTES": "1000000"},
        workers=1,
        threads=4,
    )
    assert served.predict({"instances": IRIS}).json() == EXPECTED
    worker = int(Path(f"/proc/{served.proc.pid}/task/{served.proc.pid}/children").read_text())
    before = _peak_rss_mb(worker)
    size, piece = 200 * 2**20, b" " * 2**20
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=60)
    try:
        headers = {"Content-Type": "application/json", "Content-Length": str(size)}
        pieces = (piece for _ in range(size // len(piece)))
        connection.request("POST", "/predict", pieces, headers)
        answer = connection.getresponse()
        assert answer.status == 413
        message = json.loads(answer.read())["error"]
    finally:
        connection.close()
    assert message.startswith(f"request body is {size} bytes; at most 1000000 bytes")
    assert _peak_rss_mb(worker) - before < 50
    assert served.predict({"instances": IRIS}).json() == EXPECTED


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


def test_functions_framework_deadline_while_a_body_arrives_is_answered_504(function, tmp_path):
    """functions-framework's deadline passing while the request's body still arrives lands
    in the read of the body: the client is answered 504, naming the deadline, where it was
    answered nothing at all, and the process serves on."""
    served = function(
        {
            "CPR_CACHE_DIR": str(tmp_path / "cache"),
            "THREADED_TIMEOUT_ENABLED": "true",
            "CLOUD_RUN_TIMEOUT_SECONDS": "1",
        },
        threads=4,
    )
    body = json.dumps({"instances": IRIS}).encode()
    for _ in range(10):  # loaded, and answered within the deadline
        if served.predict({"instances": IRIS}).status_code == 200:
            break
    status, headers, answer, *_ = _send_body(
        served.port, "/predict", [body[:10], body[10:]], length=len(body), pause=2
    )
    assert (status, headers["Connection"]) == (504, "close")
    assert json.loads(answer) == {
        "error": "the request ran past functions-framework's 1 s deadline "
        "(CLOUD_RUN_TIMEOUT_SECONDS, with THREADED_TIMEOUT_ENABLED=true)"
    }
    assert served.predict({"instances": IRIS}).json() == EXPECTED
