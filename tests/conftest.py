"""Real parts for the tests: a Cloud Storage emulator, package archives, function processes."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


# Google's libraries look for credentials by probing the metadata server, whose address is
# not loopback: every test, and every process a test starts, finds a closed local port
# there instead, and is told not to probe at all.
os.environ.update(NO_GCE_CHECK="True", GCE_METADATA_HOST=_closed_port())
os.environ["GCE_METADATA_IP"] = os.environ["GCE_METADATA_HOST"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_pids(pid: int) -> set[int]:
    """The processes whose parent is `pid` (a function's gunicorn workers)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(stat.parent.name))
        except (OSError, ValueError):
            pass  # ended meanwhile
    return found


def descendant_pids(pid: int) -> set[int]:
    """Every process below `pid`: its children, theirs, and so on."""
    found, todo = set(), [pid]
    while todo:
        children = child_pids(todo.pop()) - found
        found |= children
        todo += children
    return found


def running(pid: int) -> bool:
    """Whether `pid` is a process that has not ended (a zombie has)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cmdline(pid: int) -> str:
    """The command line `pid` runs, its arguments joined by spaces; "" once it has ended."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def fill_pipe(fd: int) -> None:
    """Writes empty lines to a pipe till not one more byte fits: a reader that stalled."""
    os.set_blocking(fd, False)
    for size in (4096, 1):
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(fd, b"\n" * size)
    os.set_blocking(fd, True)


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listened on port {port} within {timeout}s")


@pytest.fixture(autouse=True)
def _thawed():
    """Objects a test's in-process load froze (serving/gcpause.py) are the collector's again
    after it: a serving process keeps what it loaded, this one moves on to other tests."""
    yield
    import gc

    gc.unfreeze()


@pytest.fixture(scope="session")
def emulator(tmp_path_factory):
    """A gcp-storage-emulator server on loopback; yields its URL."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("emulator") / "log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gcp_storage_emulator", "start", "--port", str(port), "--in-memory"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_for_port(port, proc)
    url = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("STORAGE_EMULATOR_HOST", "NO_GCE_CHECK")}
    os.environ.update(STORAGE_EMULATOR_HOST=url, NO_GCE_CHECK="true")
    yield url
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    proc.terminate()
    proc.wait(10)
    log.close()


def _client():
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(project="test", credentials=AnonymousCredentials())


@pytest.fixture
def gcs(emulator):
    return _client()


@pytest.fixture
def bucket(gcs):
    """A fresh bucket in the emulator."""
    return gcs.create_bucket(f"b-{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="module")
def module_bucket(emulator):
    """A fresh bucket in the emulator shared by one test module's tests."""
    return _client().create_bucket(f"m-{uuid.uuid4().hex[:12]}")


def upload_dir(bucket, local: Path, prefix: str) -> str:
    for path in sorted(local.rglob("*")):
        if path.is_file():
            bucket.blob(f"{prefix}/{path.relative_to(local).as_posix()}").upload_from_filename(path)
    return f"gs://{bucket.name}/{prefix}"


def upload_file(bucket, local: Path, name: str) -> str:
    bucket.blob(name).upload_from_filename(local)
    return f"gs://{bucket.name}/{name}"


# Archives


def counting_env(bucket, iris_dir: Path, tmp_path: Path) -> dict[str, str]:
    """Settings serving the test kit's Counting predictor over the iris model, both in the
    bucket; each from_path call is logged to KIT_LOG."""
    from kit_source import kit_files

    return {
        "CPR_ORIGIN": upload_dir(bucket, iris_dir, "iris"),
        "CPR_PACKAGE_URIS": upload_file(
            bucket, make_tar(tmp_path / "kit.tar.gz", kit_files()), "kit-0.1.tar.gz"
        ),
        "CPR_PREDICTION_CLASS": "kit.Counting",
        "CPR_CACHE_DIR": str(tmp_path / "cache"),
        "KIT_LOG": str(tmp_path / "from_path.log"),
    }


def models_env(tmp_path: Path, models: dict, **settings: str) -> dict[str, str]:
    """Settings serving `models` (a models file's content) from a file written in
    `tmp_path`, with the cache there too, and `settings` besides."""
    (tmp_path / "models.json").write_text(json.dumps(models))
    return {
        "CPR_MODELS": str(tmp_path / "models.json"),
        "CPR_CACHE_DIR": str(tmp_path / "cache"),
        **settings,
    }


def make_tar(path: Path, files: dict[str, str | bytes], *, extra=()) -> Path:
    """Writes a .tar.gz holding `files` plus any hand-made TarInfo members in `extra`."""
    with tarfile.open(path, "w:gz") as tar:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return path


def make_zip(path: Path, files: dict[str, str | bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    return path


# Models


def train_iris(model_dir: Path) -> Path:
    """Trains the example's model (a centered iris classifier) into `model_dir`, in a subprocess.

    The preprocessor pickle names the example's `preprocess` module, so it is made
    where that module is importable, not in the test process.
    """
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]);"
        "from make_example import train; train(Path(sys.argv[2]))"
    )
    subprocess.run([sys.executable, "-c", code, str(EXAMPLES), str(model_dir)], check=True)
    return model_dir


def iris_expected(model_dir: Path, instances, *, centered: bool = True) -> list:
    """What the example model computes on `instances`, called directly.

    `centered` subtracts the training means first, as the example's predictor does.
    """
    import joblib
    import numpy as np
    from sklearn.datasets import load_iris

    features, _ = load_iris(return_X_y=True)
    model = joblib.load(model_dir / "model.joblib")
    shift = features.mean(axis=0) if centered else 0
    return model.predict(np.asarray(instances) - shift).tolist()


@pytest.fixture(scope="session")
def releases(tmp_path_factory):
    """Two releases of a routine shipping same-named modules: see routine_source."""
    from routine_source import build_releases

    return build_releases(tmp_path_factory.mktemp)


@pytest.fixture(scope="session")
def iris_dir(tmp_path_factory) -> Path:
    return train_iris(tmp_path_factory.mktemp("iris") / "model")


IRIS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]


def version_status(status: dict, model: str | None = None, version: str | None = None) -> dict:
    """One version's entry in a `GET /` body; the default model and version when unnamed."""
    found = next(m for m in status["models"] if m["name"] == (model or status["defaultModel"]))
    wanted = version or found["defaultVersion"]
    return next(v for v in found["versions"] if v["name"] == wanted)


# Function processes


class FunctionProcess:
    """A real `functions-framework --target predict` process on loopback."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        *,
        workers: int | None = 1,
        threads: int | None = None,
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        base = {k: v for k, v in os.environ.items() if not k.startswith("CPR_")}
        full = {**base, "NO_GCE_CHECK": "true", **env}
        if workers:
            full["WORKERS"] = str(workers)
        if threads:
            full["THREADS"] = str(threads)
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "functions_framework", "--target", "predict"]
            + ["--source", str(REPO / "main.py"), "--host", "127.0.0.1", "--port", str(self.port)],
            env=full,
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def start(self) -> FunctionProcess:
        wait_for_port(self.port, self.proc)
        return self

    def predict(self, body, path="/", **kwargs) -> requests.Response:
        return requests.post(self.url + path, json=body, timeout=120, **kwargs)

    def status(self) -> dict:
        return requests.get(self.url + "/", timeout=30).json()

    def version_status(self, model: str | None = None, version: str | None = None) -> dict:
        return version_status(self.status(), model, version)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, found: str | Callable[[str], bool], timeout: float = 10) -> str:
        """The log, up to its last whole line, once it holds the text `found` or `found(log)`
        is true: a request's entry is written shortly after its answer, not before it."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log()
            text = text[: text.rfind("\n") + 1]
            if (found in text) if isinstance(found, str) else found(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"no {found!r} in the log within {timeout}s:\n{text[-4000:]}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            stop_process(self.proc, 15)
        self._log.close()


@pytest.fixture
def function(tmp_path):
    """Starts function processes with given CPR_* settings; stops them after the test."""
    started: list[FunctionProcess] = []

    def start(env: dict[str, str], **kwargs) -> FunctionProcess:
        proc = FunctionProcess(env, tmp_path / f"function-{len(started)}.log", **kwargs)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()


class LyingProxy:
    """A loopback HTTP proxy in front of the emulator that can corrupt object downloads,
    and shape them like a store that answers one at a time or one that takes time.

    Listings pass through untouched, so they carry the true checksums; while `lie`
    is set, the bytes of every media download have their last byte flipped. Each media
    download waits `delay` seconds first; with `serial` set, they are answered one at a
    time. `most_at_once` is the most media downloads that were in the proxy at once, and
    `served` how many bytes of media it has sent. With `own_links` set, the links in the
    emulator's answers (an object's `mediaLink`) name the proxy, so that downloads made
    from them pass through it too.
    """

    def __init__(self, upstream: str):
        import http.server
        import threading

        proxy = self
        self.lie = True
        self.delay = 0.0
        self.serial = False
        self.most_at_once = 0
        self.served = 0
        self.own_links = False
        at_once = [0]
        counting, one_at_a_time = threading.Lock(), threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self):
                media = "alt=media" in self.path
                if not media:
                    return self._answer()
                with counting:
                    at_once[0] += 1
                    proxy.most_at_once = max(proxy.most_at_once, at_once[0])
                try:
                    time.sleep(proxy.delay)
                    if not proxy.serial:
                        return self._answer()
                    with one_at_a_time:
                        return self._answer()
                finally:
                    with counting:
                        at_once[0] -= 1

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                answer = requests.request(
                    self.command, upstream + self.path, data=body, headers=headers, timeout=30
                )
                data = answer.content
                if proxy.lie and "alt=media" in self.path and data:
                    data = data[:-1] + bytes([data[-1] ^ 0xFF])
                if "alt=media" in self.path:
                    with counting:
                        proxy.served += len(data)
                elif proxy.own_links:
                    data = data.replace(upstream.encode(), proxy.url.encode())
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in (
                        "content-length",
                        "transfer-encoding",
                        "connection",
                        "content-encoding",
                    ):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _forward

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            request_queue_size = 64  # every connection is taken, even when answered serially

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def lying_proxy(emulator):
    proxy = LyingProxy(emulator)
    yield proxy
    proxy.close()


def ml_v1(url: str):
    """googleapiclient's AI Platform `ml` v1 client pointed at `url`, as users build it."""
    from google.auth.credentials import AnonymousCredentials
    from googleapiclient import discovery

    return discovery.build(
        "ml",
        "v1",
        client_options={"api_endpoint": url},
        credentials=AnonymousCredentials(),
        cache_discovery=False,
    )


class FaultProxy:
    """A real loopback HTTP server in front of an upstream that injects faults into POSTs.

    `fault(body)` is asked for each POST, given its parsed JSON body, and names what to
    do: None (pass it on), "503", "429", "500", "400" (answer that status), "drop"
    (close the connection without answering) or "hang" (wait `hang` seconds first).
    Every POST's instance count is recorded in `batches`.
    """

    def __init__(self, upstream: str, fault=None, *, hang: float = 0.0):
        import http.server
        import json
        import threading
        import time

        proxy = self
        self.fault = fault or (lambda body: None)
        self.batches: list[int] = []
        self.faults: list[str] = []
        self._lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _send(self, status: int, data: bytes, headers=()):
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _pass(self, body: bytes | None):
                answer = requests.request(
                    self.command,
                    upstream + self.path,
                    data=body,
                    headers={"Content-Type": "application/json"},
                    timeout=60,
                )
                self._send(answer.status_code, answer.content)

            def do_GET(self):
                self._pass(None)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parsed = json.loads(body)
                action = proxy.fault(parsed)
                with proxy._lock:
                    proxy.batches.append(len(parsed.get("instances", [])))
                    if action:
                        proxy.faults.append(action)
                if action in ("503", "429", "500", "400"):
                    error = {"error": {"code": int(action), "message": f"injected {action}"}}
                    retry = [("Retry-After", "0")] if action == "429" else []
                    self._send(int(action), json.dumps(error).encode(), retry)
                elif action == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                else:
                    if action == "hang":
                        time.sleep(hang)
                    self._pass(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def calls(self) -> int:
        return len(self.batches)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def assert_schemathesis_finds_nothing(
    document_url: str, base_url: str, workdir: Path, *, also: tuple[str, ...] = ()
) -> None:
    """A short property-based run of schemathesis: bodies generated from the OpenAPI
    document, every answer checked against it (no 5xx, documented statuses, response
    schemas and content types, and the checks named in `also`)."""
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            document_url,
            "--url",
            base_url,
            "--max-examples",
            "60",
            "--checks",
            ",".join(
                (
                    "not_a_server_error",
                    "status_code_conformance",
                    "response_schema_conformance",
                    "content_type_conformance",
                    *also,
                )
            ),
            "--seed",
            "7",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=workdir,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """The package's wheel, built once from a copy of this checkout's sources (no index, no
    build isolation: the build backend is this run's own setuptools)."""
    import shutil

    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    source.mkdir()
    for folder in ["cpr_function", "examples"]:
        shutil.copytree(REPO / folder, source / folder)
    for file in ["pyproject.toml", "README.md", *(p.name for p in REPO.glob("requirements*.txt"))]:
        shutil.copy2(REPO / file, source / file)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "wheel"]
    build = [*pip, "--no-build-isolation", "--no-deps", "--no-index", "-w", str(tmp / "dist")]
    done = subprocess.run([*build, str(source)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (built,) = (tmp / "dist").glob("cpr_function-*.whl")
    return built


def venv_with(tmp: Path, install: list[str], *, cwd: Path | None = None) -> Path:
    """A fresh virtualenv in `tmp` with `pip install --no-deps --no-index *install` run in
    `cwd`; the dependencies are this test run's own, seen through a .pth file (tests reach
    loopback only: what is checked is what pip installs from the files given)."""
    import sysconfig

    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
    done = subprocess.run(
        [*pip, "--no-deps", "--no-index", *install], cwd=cwd, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (purelib,) = (venv / "lib").glob("python3.*/site-packages")
    (purelib / "test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def stop_process(proc: subprocess.Popen, seconds: float) -> str | None:
    """Stops `proc` as a host stops a server (SIGTERM), and kills it if it has not exited
    `seconds` later. None when it stopped in time; otherwise where it hung: the Python
    stacks of it and its children just before the kill."""
    proc.terminate()
    try:
        proc.wait(seconds)
    except subprocess.TimeoutExpired:
        stacks = python_stacks(proc.pid)
        proc.kill()
        proc.wait()
        return stacks
    return None


def python_stacks(pid: int) -> str:
    """Every thread's Python stack in process `pid` and its children, read by py-spy (a
    development requirement), or why they could not be read."""
    command = [str(Path(sys.executable).with_name("py-spy")), "dump", "--subprocesses"]
    try:
        done = subprocess.run(
            [*command, "--pid", str(pid)], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"(no stacks: {exc})"
    return done.stdout + done.stderr


@contextlib.contextmanager
def listening(command: list[str], *, cwd: Path, env: dict[str, str]):
    """Runs `command`, `{port}` in it replaced by a free port; yields the URL it listens on,
    and ends it afterwards."""
    port = free_port()
    with tempfile.TemporaryFile() as output:
        proc = subprocess.Popen(
            [arg.replace("{port}", str(port)) for arg in command],
            cwd=cwd,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(port, proc)
            yield f"http://127.0.0.1:{port}"
        finally:
            # The test fails on a server that will not stop; it is killed first, so that the
            # failure does not spill into the next test as a process still running.
            stacks = stop_process(proc, 30)
            if stacks is not None:
                output.seek(0)
                printed = output.read().decode(errors="replace")[-4000:]
                raise AssertionError(
                    f"{command[0]} had not stopped 30 s after SIGTERM; its stacks then:\n"
                    f"{stacks}\nwhat it printed, the end:\n{printed}"
                )
