"""What operators see: structured logs with the request's trace, and warm-up at worker start."""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import select
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from conftest import IRIS, FunctionProcess, child_pids, fill_pipe, iris_expected

from cpr_function import logs
from cpr_function.http import app


def entries(fn, *, answered: int = 0) -> list[dict]:
    """The function's JSON log lines (gunicorn's own lines are skipped), once the entries of
    `answered` requests are among them."""
    return parsed(fn.wait_for_log(lambda log: len(answers(parsed(log))) >= answered))


def parsed(log: str) -> list[dict]:
    return [json.loads(x) for x in log.splitlines() if x.startswith("{")]


def answers(logged: list[dict]) -> list[dict]:
    """The request entries among log entries."""
    return [e for e in logged if "httpRequest" in e]


def test_json_logs_carry_the_trace_phases_and_one_entry_per_request(function, iris_dir, tmp_path):
    fn = function(
        {
            "CPR_ORIGIN": str(iris_dir),
            "CPR_FRAMEWORK": "scikit-learn",
            "CPR_CACHE_DIR": str(tmp_path / "c"),
            "CPR_MODEL_NAME": "iris",
            "GOOGLE_CLOUD_PROJECT": "my-project",
        }
    )
    trace = {"X-Cloud-Trace-Context": "0af7651916cd43dd8448eb211c80319c/12345;o=1"}
    answer = fn.predict({"instances": IRIS}, headers=trace)
    assert answer.json() == {"predictions": iris_expected(iris_dir, IRIS, centered=False)}
    fn.predict({"instances": "nope"})
    logged = entries(fn, answered=2)
    assert all({"severity", "message", "time"} <= set(e) for e in logged)

    first, second = answers(logged)[:2]
    assert first["logging.googleapis.com/trace"] == (
        "projects/my-project/traces/0af7651916cd43dd8448eb211c80319c"
    )
    assert first["logging.googleapis.com/spanId"] == "12345"
    assert (first["model"], first["version"], first["instances"], first["status"]) == (
        "iris",
        "v1",
        3,
        200,
    )
    assert first["httpRequest"]["requestMethod"] == "POST" and first["latencyMs"] > 0
    assert second["status"] == 400 and "logging.googleapis.com/trace" not in second

    phases = {e["phase"]: e for e in logged if "phase" in e}
    assert set(phases) == {"download", "unpack", "import", "from_path"}
    assert phases["download"]["totalBytes"] > 0 and phases["from_path"]["seconds"] >= 0
    assert all(
        p["logging.googleapis.com/trace"].endswith("0af7651916cd43dd8448eb211c80319c")
        for p in phases.values()
    ), "the cold start is logged under the request that caused it"


@pytest.fixture
def configure():
    """`logs.configure` afresh, for one test (to the sys.stderr of the moment it is called);
    returns the handler it installed. The handlers before are put back afterwards."""
    package = logging.getLogger("cpr_function")
    saved = package.handlers[:]

    def fresh(fmt: str = "json") -> logging.Handler:
        package.handlers.clear()  # pytest's own too, which it adds as the test starts
        logs.configure(fmt)
        return package.handlers[0]

    yield fresh
    package.handlers[:] = saved


def test_a_request_entry_is_the_same_written_directly_or_through_logging(capsys, configure):
    """Only the JSON handler on the way: the entry is queued, and made and written by the
    handler's writer thread. A filter (or any other handler) on the way: it goes through
    logging, and reads the same, its fields in the same order."""
    app_log = logging.getLogger("cpr_function.http.app")
    token = logs.TRACE.set({"logging.googleapis.com/trace": "projects/p/traces/t"})
    note = {"model": "iris", "version": "v1", "instances": 3}
    try:
        handler = configure("json")
        logs.request(app_log, app._entry, "POST", "/predict", 200, 0.0008125, "curl/8", note)
        handler.addFilter(lambda record: True)
        logs.request(app_log, app._entry, "POST", "/predict", 200, 0.0008125, "curl/8", note)
    finally:
        logs.TRACE.reset(token)
    direct, through = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert direct.pop("time") <= through.pop("time")
    expected = {
        "severity": "INFO",
        "message": "POST /predict -> 200 in 0.8 ms",
        "logger": "cpr_function.http.app",
        "pid": os.getpid(),
        "httpRequest": {
            "requestMethod": "POST",
            "requestUrl": "/predict",
            "status": 200,
            "latency": "0.000812s",
            "userAgent": "curl/8",
        },
        "status": 200,
        "latencyMs": 0.812,
        **note,
        "logging.googleapis.com/trace": "projects/p/traces/t",
    }
    assert direct == through == expected
    assert list(direct) == list(through) == list(expected)


def test_a_request_entry_written_directly_keeps_its_place_among_other_lines(monkeypatch, configure):
    """Written by the handler's writer thread to its stream (a pipe here, as on Cloud
    Functions), the entry still lands between the lines logged before and after it, and
    names this process."""
    read_end, write_end = os.pipe()
    stream = open(write_end, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
    monkeypatch.setattr(sys, "stderr", stream)
    app_log = logging.getLogger("cpr_function.http.app")
    try:
        handler = configure("json")
        assert logs._direct_handler(app_log) is handler
        app_log.info("through logging, first")
        logs.request(app_log, lambda: ("written directly", {"status": 200}))
        app_log.info("through logging, last")
    finally:
        stream.close()
    with open(read_end, "rb") as pipe:
        lines = [json.loads(line) for line in pipe.read().splitlines()]
    assert [e["message"] for e in lines] == [
        "through logging, first",
        "written directly",
        "through logging, last",
    ]
    assert lines[1]["status"] == 200
    assert all(e["pid"] == os.getpid() for e in lines)


def test_a_request_entry_is_written_directly_past_loggers_gunicorn_makes(configure):
    """A gunicorn server, as it starts, makes a logger of every name logging only holds a
    place for: `cpr_function.http` then stands between the app's logger and the package's,
    with no handler of its own. The JSON handler is still the only one on the way."""
    from gunicorn import glogging

    app_log = logging.getLogger("cpr_function.http.app")
    handler = configure("json")
    glogging.loggers()
    assert isinstance(app_log.parent.manager.loggerDict["cpr_function.http"], logging.Logger)
    assert logs._direct_handler(app_log) is handler
    another = logging.NullHandler()
    app_log.parent.addHandler(another)
    try:
        assert logs._direct_handler(app_log) is None, "a second handler on the way"
    finally:
        app_log.parent.removeHandler(another)


@pytest.mark.parametrize(
    ("setting", "statuses_logged"),
    [("errors", [400, 404]), ("none", []), ("ALL", [200, 400, 404, 200])],
)
def test_request_entries_as_chosen(function, iris_dir, tmp_path, setting, statuses_logged):
    """CPR_REQUEST_LOG chooses which answers get an entry; the cold start is logged always.
    Read once the function has stopped: every entry it wrote is then in the log."""
    fn = function(
        {
            "CPR_ORIGIN": str(iris_dir),
            "CPR_FRAMEWORK": "scikit-learn",
            "CPR_CACHE_DIR": str(tmp_path / "c"),
            "CPR_LOG_FORMAT": "json",
            "CPR_REQUEST_LOG": setting,
        }
    )
    assert fn.predict({"instances": IRIS}).status_code == 200
    assert fn.predict({"instances": "nope"}).status_code == 400
    assert fn.predict({"instances": IRIS}, path="/no/such/route").status_code == 404
    assert fn.status()["config"]["requestLog"] == setting.lower()
    fn.stop()
    logged = entries(fn)
    assert [e["status"] for e in answers(logged)] == statuses_logged
    assert {e["phase"] for e in logged if "phase" in e} == {
        "download",
        "unpack",
        "import",
        "from_path",
    }


# A request entry's fields, in their order, as they always were.
ENTRY_FIELDS = ["severity", "message", "time", "logger", "pid", "httpRequest", "status"]
ENTRY_FIELDS += ["latencyMs", "model", "version", "instances"]
HTTP_REQUEST_FIELDS = ["requestMethod", "requestUrl", "status", "latency", "userAgent"]


def burst(fn, count: int, *, timeout: float = 60) -> dict[str, float]:
    """`count` predictions from 8 threads at once, each sent with a User-Agent of its own;
    that name -> when its answer arrived (time.time())."""

    def one(i: int) -> tuple[str, float]:
        name = f"client {i}"
        answer = requests.post(
            fn.url + "/predict",
            json={"instances": IRIS},
            headers={"User-Agent": name},
            timeout=timeout,
        )
        assert answer.status_code == 200, answer.text
        return name, time.time()

    with ThreadPoolExecutor(8) as pool:
        return dict(pool.map(one, range(count)))


def clients(logged: list[dict]) -> list[str]:
    """The User-Agent of each request entry, sorted: a name twice is an entry written twice."""
    return sorted(e["httpRequest"]["userAgent"] for e in answers(logged))


def test_each_of_many_requests_at_once_gets_one_entry_as_it_always_read(function, tmp_path):
    """Made and written by each worker's log writer thread after the answers, the entries
    read as they did when the request's thread wrote them: one a request, the same fields
    in the same order, compact JSON, and the time of the answer, not of the writing."""
    fn = function({"CPR_CACHE_DIR": str(tmp_path / "c"), "CPR_LOG_FORMAT": "json"}, workers=2)
    answered = burst(fn, 60)
    log = fn.wait_for_log(lambda log: len(answers(parsed(log))) >= 60)
    assert clients(parsed(log)) == sorted(answered)
    workers = child_pids(fn.proc.pid)
    for line in (line for line in log.splitlines() if line.startswith("{")):
        entry = json.loads(line)
        if "httpRequest" not in entry:
            continue
        assert line == json.dumps(entry, separators=(",", ":"), ensure_ascii=False)
        assert list(entry) == ENTRY_FIELDS
        assert list(entry["httpRequest"]) == HTTP_REQUEST_FIELDS
        assert (entry["severity"], entry["logger"]) == ("INFO", "cpr_function.http.app")
        assert entry["pid"] in workers
        assert (entry["model"], entry["version"], entry["instances"], entry["status"]) == (
            "default",
            "v1",
            3,
            200,
        )
        ms = entry["latencyMs"]
        shown = re.fullmatch(r"POST /predict -> 200 in (\d+\.\d) ms", entry["message"])
        assert shown and abs(float(shown[1]) - ms) <= 0.05 + 1e-9
        latency = entry["httpRequest"].pop("latency")
        assert re.fullmatch(r"\d+\.\d{6}s", latency) and abs(float(latency[:-1]) * 1000 - ms) < 2e-3
        assert entry["httpRequest"] == {
            "requestMethod": "POST",
            "requestUrl": "/predict",
            "status": 200,
            "userAgent": entry["httpRequest"]["userAgent"],
        }
        at = datetime.datetime.strptime(entry["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
        at = at.replace(tzinfo=datetime.UTC).timestamp()
        assert at <= answered[entry["httpRequest"]["userAgent"]], "the time of the answer"


def test_a_graceful_stop_right_after_a_burst_loses_no_entry(function, tmp_path):
    """Entries still waiting for the log writer when the function is stopped (SIGTERM, as
    Cloud Run stops an instance) are written as each worker exits, once each."""
    fn = function({"CPR_CACHE_DIR": str(tmp_path / "c"), "CPR_LOG_FORMAT": "json"}, workers=2)
    answered = burst(fn, 100)
    fn.stop()
    assert fn.proc.returncode == 0
    assert clients(entries(fn)) == sorted(answered)


def test_a_log_reader_that_stalls_holds_up_no_request(tmp_path):
    """The function's stderr a pipe that is full and that nobody reads: requests are
    answered all the same, and once the pipe is read again every entry arrives, once."""
    fifo = tmp_path / "stderr"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    env = {"CPR_CACHE_DIR": str(tmp_path / "c"), "CPR_LOG_FORMAT": "json"}
    fn = FunctionProcess(env, fifo, threads=4)
    read, reading = bytearray(), threading.Event()

    def drain() -> None:
        reading.wait()
        while True:
            select.select([reader], [], [], 0.1)
            try:
                chunk = os.read(reader, 1 << 16)
            except BlockingIOError:
                continue
            if not chunk:
                return  # every writer closed it: the function has ended
            read.extend(chunk)

    draining = threading.Thread(target=drain, daemon=True)
    draining.start()
    filler = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        fn.start()
        first = fn.predict({"instances": IRIS}, headers={"User-Agent": "first"})
        assert first.status_code == 200  # the model loaded, and its load logged
        fill_pipe(filler)
        started = time.monotonic()
        answered = burst(fn, 200, timeout=10)
        assert time.monotonic() - started < 30
        reading.set()
        deadline = time.monotonic() + 20
        while len(logged := answers(parsed(whole_lines(read)))) < 201:
            assert time.monotonic() < deadline, f"{len(logged)} entries of 201 arrived"
            time.sleep(0.05)
    finally:
        reading.set()
        fn.stop()
        os.close(filler)
        draining.join(15)
        os.close(reader)
    text = read.decode()
    assert clients(parsed(text)) == sorted([*answered, "first"])
    # Besides the filler's empty lines, gunicorn's own and the JSON ones, whole.
    assert all(line[:1] in ("", "[", "{") for line in text.splitlines()), "no line cut into"
    assert "were dropped" not in text


def whole_lines(data: bytearray) -> str:
    """What a reader has read so far, up to the last whole line."""
    data = bytes(data)
    return data[: data.rfind(b"\n") + 1].decode()


def test_text_logs_when_asked(function, iris_dir, tmp_path):
    fn = function(
        {
            "CPR_ORIGIN": str(iris_dir),
            "CPR_FRAMEWORK": "scikit-learn",
            "CPR_CACHE_DIR": str(tmp_path / "c"),
            "CPR_LOG_FORMAT": "text",
        }
    )
    fn.predict({"instances": IRIS})
    assert entries(fn) == []
    assert " INFO cpr_function.http.app: POST / -> 200 in " in fn.log()


def test_warm_up_loads_in_the_worker_before_any_request(function, iris_dir, tmp_path):
    fn = function(
        {
            "CPR_ORIGIN": str(iris_dir),
            "CPR_FRAMEWORK": "scikit-learn",
            "CPR_CACHE_DIR": str(tmp_path / "c"),
            "CPR_WARMUP": "true",
        }
    )
    deadline = time.monotonic() + 60
    while not fn.version_status()["loaded"]:
        assert time.monotonic() < deadline, "warm-up did not load the model"
        time.sleep(0.1)
    warm = [e for e in entries(fn) if e["message"].startswith("warm-up: loading")]
    assert len(warm) == 1
    assert warm[0]["pid"] != fn.proc.pid, "loaded in the forked worker, not the master"
    assert fn.predict({"instances": IRIS}).status_code == 200
