"""A response's head and body leave in one send (cpr_function/http/one_send.py).

The socket tests use a SOCK_SEQPACKET pair, which keeps every send a message of its own,
so that what the other end receives shows how many sends there were. The last test reads
answers with a body, without one (HEAD) and after a 100 Continue, in order, on one kept
connection to a real function process."""

from __future__ import annotations

import json
import socket

import pytest
from conftest import EXAMPLES, IRIS, iris_expected

from cpr_function.http.one_send import JOIN_BYTES, Joined


@pytest.fixture
def pair():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.settimeout(5)
    yield ours, theirs
    ours.close()
    theirs.close()


def _messages(sock: socket.socket) -> list[bytes]:
    """Every message waiting on `sock`, one per send at the other end."""
    found = []
    sock.setblocking(False)
    try:
        while True:
            found.append(sock.recv(1 << 20))
    except BlockingIOError:
        return found
    finally:
        sock.settimeout(5)


def test_a_head_and_its_body_arrive_as_one_message(pair):
    ours, theirs = pair
    joined = Joined(ours)
    joined.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
    assert _messages(theirs) == [], "the head waits for the body"
    joined.sendall(b"hello")
    joined.sendall(b" more")
    joined.finish()
    assert _messages(theirs) == [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", b" more"]


def test_a_large_body_is_sent_after_its_head_not_copied_behind_it(pair):
    ours, theirs = pair
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    body = b"x" * (JOIN_BYTES + 1)
    joined = Joined(ours)
    joined.sendall(b"HEAD\r\n\r\n")
    joined.sendall(body)
    assert _messages(theirs) == [b"HEAD\r\n\r\n", body]


def test_a_head_with_no_body_is_sent_when_the_response_ends(pair):
    ours, theirs = pair
    joined = Joined(ours)
    joined.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
    joined.finish()
    joined.finish()
    assert _messages(theirs) == [b"HTTP/1.1 204 No Content\r\n\r\n"]


def test_the_head_goes_before_anything_else_done_with_the_socket(pair):
    """gunicorn sends a file's body with the socket's `sendfile`, and a 100 Continue with
    `send`: the waiting head must not be overtaken."""
    ours, theirs = pair
    joined = Joined(ours)
    joined.send(b"100 Continue")
    joined.sendall(b"the head")
    joined.send(b"the file")
    joined.finish()
    assert _messages(theirs) == [b"100 Continue", b"the head", b"the file"]


def _answers(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    """`count` HTTP answers read off one connection: status and body, in order."""
    data, found = b"", []
    while len(found) < count:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(1 << 16)
            assert chunk, f"the connection ended after {len(found)} answers"
            data += chunk
        head, _, data = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
        status = int(lines[0].split()[1])
        length = int(headers["content-length"])
        while len(data) < length:
            chunk = sock.recv(1 << 16)
            assert chunk, f"the connection ended inside answer {len(found) + 1}'s body"
            data += chunk
        found.append((status, data[:length]))
        data = data[length:]
    return found


def test_answers_arrive_whole_and_in_order_on_one_connection(function, tmp_path):
    """A prediction, a HEAD (a head with no body: sent when the response ends), a 404, and
    a prediction whose client waits for 100 Continue before its body, as curl does for
    bodies over 1 KiB; each answer must be whole for the next one to parse."""
    served = function({"CPR_CACHE_DIR": str(tmp_path / "cache")}, threads=4)
    body = json.dumps({"instances": IRIS}).encode()
    head = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n" % len(body)
    )
    expected = {"predictions": iris_expected(EXAMPLES / "model", IRIS)}
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
        sock.sendall(head + b"\r\n" + body)
        [(status, answer)] = _answers(sock, 1)
        assert status == 200 and json.loads(answer) == expected

        sock.sendall(b"HEAD /predict HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _head(sock).startswith(b"HTTP/1.1 405 ")

        sock.sendall(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
        [(status, error)] = _answers(sock, 1)
        assert status == 404 and "no route for /nowhere;" in json.loads(error)["error"]

        sock.sendall(head + b"Expect: 100-continue\r\n\r\n")
        assert _head(sock) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        [(status, answer)] = _answers(sock, 1)
        assert status == 200 and json.loads(answer) == expected


def _head(sock: socket.socket) -> bytes:
    """One answer's head, read a byte at a time so that nothing after it is taken."""
    data = b""
    while not data.endswith(b"\r\n\r\n"):
        chunk = sock.recv(1)
        assert chunk, f"the connection ended inside a head: {data!r}"
        data += chunk
    return data
