"""The log writer: lines queued by request threads, made and written by a thread of its own."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading
import time

from conftest import REPO, fill_pipe

from cpr_function.log_writer import BOUND, CHUNK, QueuingHandler


def test_a_stream_that_does_not_drain_holds_up_no_queue_and_what_overflows_is_counted():
    """Past BOUND lines waiting, a line is dropped rather than waited for; once the stream
    drains, the lines kept come out in order, then one warning that counts the rest."""
    read_end, write_end = os.pipe()
    fill_pipe(write_end)
    stream = open(write_end, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
    handler = QueuingHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    queued = BOUND + 500
    started = time.monotonic()
    # Held here, the handler's lock keeps its writer thread from taking lines off the queue,
    # as a writer stuck in a write to the stalled stream would; `queue` never takes it.
    # Without it, a writer that woke during the loop took lines off and none overflowed.
    with handler.lock:
        for i in range(queued):
            handler.queue(str, i)
    assert time.monotonic() - started < 5, "queued without waiting for the stream"
    read = bytearray()
    reader = threading.Thread(target=lambda: read.extend(_read_all(read_end)))
    reader.start()
    handler.flush()
    stream.close()
    reader.join(30)
    lines = [line for line in read.decode().splitlines() if line]
    kept = [int(line) for line in lines[:-1]]
    assert kept == list(range(len(kept))) and len(kept) >= BOUND
    assert lines[-1] == (
        f"WARNING {queued - len(kept)} request log entries were dropped: stderr took lines "
        f"more slowly than requests were answered, and {BOUND} were already waiting to be "
        "written"
    )


def _read_all(fd: int) -> bytes:
    with open(fd, "rb") as pipe:
        return pipe.read()


class _Writes(io.StringIO):
    """A stream that keeps each write apart."""

    def __init__(self):
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def test_lines_go_out_whole_in_writes_a_pipe_takes_whole():
    """Several lines a write, but no write over PIPE_BUF bytes unless it is one line: the
    workers share stderr, and a pipe may cut into a longer write with another's."""
    stream = _Writes()
    handler = QueuingHandler(stream)
    lines = [str(i) * 1000 for i in range(1, 10)] + ["x" * 5000, "é" * 1500, "é" * 1500, "y"]
    for line in lines:
        handler.queue(str, line)
    handler.flush()
    assert stream.getvalue() == "".join(line + "\n" for line in lines)
    assert len(stream.writes) < len(lines)
    for write in stream.writes:
        assert write.endswith("\n")
        assert len(write.encode()) <= CHUNK or write.count("\n") == 1


def test_a_line_that_cannot_be_made_is_reported_and_the_others_written(capsys):
    stream = io.StringIO()
    handler = QueuingHandler(stream)
    handler.queue(str, "before")
    handler.queue(lambda: str(1 / 0))
    handler.queue(str, "after")
    handler.flush()
    assert stream.getvalue() == "before\nafter\n"
    reported = capsys.readouterr().err
    assert "--- Logging error ---" in reported and "ZeroDivisionError" in reported
    assert "a queued log line could not be made" in reported


FORKS = """
import json, logging, os, sys
from cpr_function import logs

logs.configure("json")
log = logging.getLogger("cpr_function.http.app")
said = lambda message: (message, {})
logs.request(log, said, "the parent, before the fork")
child = os.fork()
if child == 0:
    logs.request(log, said, "the child")
    sys.exit(0)
os.waitpid(child, 0)
logs.request(log, said, "the parent, after the fork")
print(json.dumps({"parent": os.getpid(), "child": child}))
"""


def test_a_forked_child_writes_its_own_lines_and_not_its_parents():
    """gunicorn forks its workers from a process that imported the function; a line still
    queued in a parent at the fork is the parent's to write, once."""
    run = subprocess.run(
        [sys.executable, "-c", FORKS], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    pids = json.loads(run.stdout)
    written = sorted((e["message"], e["pid"]) for e in map(json.loads, run.stderr.splitlines()))
    assert written == [
        ("the child", pids["child"]),
        ("the parent, after the fork", pids["parent"]),
        ("the parent, before the fork", pids["parent"]),
    ]
