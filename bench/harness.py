"""What every benchmark here needs: function processes, a storage emulator, a load generator."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import http.client
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG

REPO = Path(__file__).resolve().parent.parent


def add_source_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    """`--source NAME=FILE`, as often as given: another entry point for a benchmark to run."""
    parser.add_argument(
        "--source",
        action="append",
        default=[],
        type=named_source,
        metavar="NAME=FILE",
        help=help_text,
    )


def named_source(text: str) -> tuple[str, str]:
    """`NAME=FILE` from the command line, as (name, file)."""
    name, equals, file = text.partition("=")
    if not (name and equals and file):
        raise argparse.ArgumentTypeError(f"expected NAME=FILE, received {text!r}")
    return name, file


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The emulator's own code, served the way Cloud Storage answers: many requests at once (the
# emulator's server takes one at a time and queues 5 connections), each after a delay.
_SHAPED_EMULATOR = """
import http.server, sys, time
from gcp_storage_emulator import server

delay = float(sys.argv[2])

class Concurrent(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

class Delayed(server.RequestHandler):
    def do_GET(self):
        time.sleep(delay)
        super().do_GET()

server.server.HTTPServer = Concurrent
server.RequestHandler = Delayed
emulator = server.create_server("127.0.0.1", int(sys.argv[1]), True)
emulator.run()
"""


@contextlib.contextmanager
def emulator(*, delay: float | None = None):
    """A gcp-storage-emulator server (in memory) on loopback, with google-cloud-storage pointed
    at it through this process's environment, which function processes started inside inherit.

    Args:
        delay: None runs the emulator as the tests do; seconds serve its code on a threaded
            server that waits that long before answering each GET, as a remote store would.

    Yields:
        A google-cloud-storage client with anonymous credentials.
    """
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    port = free_port()
    if delay is None:
        command = ["-m", "gcp_storage_emulator", "start", "--port", str(port), "--in-memory"]
    else:
        command = ["-c", _SHAPED_EMULATOR, str(port), str(delay)]
    proc = subprocess.Popen(
        [sys.executable, *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    saved = {k: os.environ.get(k) for k in ("STORAGE_EMULATOR_HOST", "NO_GCE_CHECK")}
    try:
        _wait_for_port(port, proc)
        os.environ.update(STORAGE_EMULATOR_HOST=f"http://127.0.0.1:{port}", NO_GCE_CHECK="true")
        yield storage.Client(project="bench", credentials=AnonymousCredentials())
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        proc.terminate()
        proc.wait(10)


def _wait_for_port(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listened on port {port} within 60s")


# Every Function started and not yet stopped: stopped at exit, so a script that fails
# between starting one and the `try` that stops it leaves no server running.
_RUNNING: set[Function] = set()


@atexit.register
def _stop_running() -> None:
    for function in list(_RUNNING):
        function.stop()


def venv(folder: Path, packages: list[str]) -> Path:
    """A virtualenv in `folder` with `packages` (pip's arguments), made there unless it is
    already; returns its python."""
    python = folder / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
            + packages,
            check=True,
        )
    return python


class Function:
    """A `functions-framework --target predict` process of this repository on loopback, run
    by `python` (this interpreter unless told).

    Its stderr goes to /dev/null, or with `log_reader` to a pipe read by a process of its
    own, as a log agent reads a deployed function's (what it reads is thrown away).
    """

    def __init__(
        self,
        env: dict[str, str],
        *,
        source: Path = REPO / "main.py",
        python: Path | str = sys.executable,
        threads: int | None = 8,
        workers: int | None = 1,
        log_reader: bool = False,
    ):
        self.port = free_port()
        base = {k: v for k, v in os.environ.items() if k not in ("WORKERS", "THREADS")}
        base = {k: v for k, v in base.items() if not k.startswith("CPR_")}
        # One process of 8 threads unless told, as every benchmark before issue 26 measured;
        # None leaves the setting to the function's own default.
        shape = {k: str(v) for k, v in (("THREADS", threads), ("WORKERS", workers)) if v}
        self.logs = None
        if log_reader:
            self.logs = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        try:
            self.proc = subprocess.Popen(
                [str(python), "-m", "functions_framework", "--target", "predict"]
                + ["--source", str(source), "--host", "127.0.0.1", "--port", str(self.port)],
                env={**base, **shape, **env},
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL if self.logs is None else self.logs.stdin,
            )
        finally:
            if self.logs is not None:
                self.logs.stdin.close()  # the function holds the pipe now, or failed to start
        _RUNNING.add(self)
        try:
            _wait_for_port(self.port, self.proc)
        except BaseException:
            self.stop()
            raise

    def call(self, path: str = "/", body: dict | None = None) -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            if body is None:
                conn.request("GET", path)
            else:
                conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            answer = conn.getresponse()
            data = json.loads(answer.read())
            if answer.status != 200:
                raise RuntimeError(f"{answer.status}: {data}")
            return data
        finally:
            conn.close()

    def stop(self) -> None:
        _RUNNING.discard(self)
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.logs is not None:
            try:
                self.logs.wait(10)  # its pipe closed with the function
            except subprocess.TimeoutExpired:  # a child of the function still holds it
                self.logs.kill()
                self.logs.wait()


def post(port: int, path: str, body: dict, *, timeout: float = 60) -> dict:
    """One request to a server on loopback; its JSON answer.

    Raises:
        RuntimeError: the answer's status was not 200.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        answer = conn.getresponse()
        data = answer.read()
        if answer.status != 200:
            raise RuntimeError(f"POST {path} on port {port}: {answer.status}: {data[:500]!r}")
        return json.loads(data)
    finally:
        conn.close()


@dataclass
class Load:
    """Latencies of the requests completed in one run."""

    latencies: list[float]
    seconds: float

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies)

    @property
    def p99(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def load(port: int, path: str, body: dict, *, connections: int, seconds: float) -> Load:
    """Sends `body` over `connections` keep-alive connections for `seconds`."""
    payload = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def run() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        while time.perf_counter() < stop:
            start = time.perf_counter()
            conn.request("POST", path, payload, headers)
            answer = conn.getresponse()
            answer.read()
            if answer.status != 200:
                raise RuntimeError(f"status {answer.status}")
            mine.append(time.perf_counter() - start)
        conn.close()
        with lock:
            latencies.extend(mine)

    began = time.perf_counter()
    threads = [threading.Thread(target=run) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return Load(latencies, time.perf_counter() - began)


@dataclass
class Summary:
    """What wrk reports of one run: it keeps no per-request latencies."""

    requests: int
    throughput: float
    p50: float
    p99: float


def load_wrk(port: int, path: str, body: dict, *, connections: int, seconds: float) -> Summary:
    """The same load as `load`, generated by wrk (Debian's package `wrk`), a C program.

    `load` runs one Python thread per connection, and on a 2-core machine those threads
    take CPU from the server they measure; wrk, on one thread, takes a fraction of it.
    """
    if shutil.which("wrk") is None:
        raise SystemExit("--generator wrk needs wrk on PATH (Debian: apt-get install wrk)")
    if seconds < 1 or seconds != int(seconds):
        raise SystemExit(f"wrk runs for whole seconds (1 or more); got --seconds {seconds:g}")
    script = (
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        lua.write(script)
        lua.flush()
        out = subprocess.run(
            ["wrk", "-t", "1", "-c", str(connections), "-d", f"{int(seconds)}s", "--latency"]
            + ["-s", lua.name, f"http://127.0.0.1:{port}{path}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw failed requests:\n{out}")
    units = {"us": 1e-6, "ms": 1e-3, "s": 1.0}

    def percentile(name: str) -> float:
        value, unit = re.search(rf"^\s*{name}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * units[unit]

    total = int(re.search(r"(\d+) requests in", out).group(1))
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return Summary(total, rate, percentile("50"), percentile("99"))


GENERATORS = {"python": load, "wrk": load_wrk}


def rss(pid: int, field: str = "VmRSS") -> int:
    """Resident memory of a process in bytes (Linux); `field="VmHWM"` for its peak."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return 0


def dir_bytes(folder: Path) -> int:
    """Bytes of the files under `folder`, each hard-linked file once."""
    sizes: dict[tuple[int, int], int] = {}
    for parent, _, names in os.walk(folder):  # skips what is renamed or removed meanwhile
        for name in names:
            with contextlib.suppress(OSError):
                info = os.lstat(os.path.join(parent, name))
                if S_ISREG(info.st_mode):
                    sizes[(info.st_dev, info.st_ino)] = info.st_size
    return sum(sizes.values())


def pss(pid: int) -> int:
    """Proportional memory of a process in bytes (Linux): each page shared with other
    processes (a forked worker's copy of its master's) counted in part, as a cgroup's
    limit counts it once."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def tree_rss(pid: int, field: str = "VmRSS") -> int:
    """Resident memory of a process and all its descendants (gunicorn workers, model workers);
    `field="VmHWM"` sums their peaks."""
    return _tree_sum(pid, lambda current: rss(current, field))


def tree_pss(pid: int) -> int:
    """Proportional memory of a process and all its descendants: what they hold together."""
    return _tree_sum(pid, pss)


def _tree_sum(pid: int, measure) -> int:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError):
            total += measure(current)
        todo.extend(children.get(current, []))
    return total
