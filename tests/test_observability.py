"""What operators see: structured logs with the request's trace, and warm-up at worker start."""

from __future__ import annotations

import json
import logging
import os
import sys
import time

import pytest
from conftest import IRIS, iris_expected

from cpr_function import logs


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
    """Only the JSON handler on the way: the entry is written to it directly. A filter
    (or any other handler) on the way: it goes through logging, and reads the same."""
    token = logs.TRACE.set({"logging.googleapis.com/trace": "projects/p/traces/t"})
    values = {"httpRequest": {"requestUrl": "/predict", "status": 200}, "status": 200}
    try:
        handler = configure("json")
        logs.request(logging.getLogger("cpr_function.http.app"), "POST /predict -> 200", values)
        handler.addFilter(lambda record: True)
        logs.request(logging.getLogger("cpr_function.http.app"), "POST /predict -> 200", values)
    finally:
        logs.TRACE.reset(token)
    direct, through = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert direct.pop("time") <= through.pop("time")
    expected = {
        "severity": "INFO",
        "message": "POST /predict -> 200",
        "logger": "cpr_function.http.app",
        "pid": os.getpid(),
        **values,
        "logging.googleapis.com/trace": "projects/p/traces/t",
    }
    assert direct == through == expected


def test_a_request_entry_written_directly_keeps_its_place_among_other_lines(monkeypatch, configure):
    """Written straight to the handler's stream (a pipe here, as on Cloud Functions), the
    entry lands between the lines logged before and after it, and names this process."""
    read_end, write_end = os.pipe()
    stream = open(write_end, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
    monkeypatch.setattr(sys, "stderr", stream)
    app_log = logging.getLogger("cpr_function.http.app")
    try:
        handler = configure("json")
        assert logs._direct_handler(app_log) is handler
        app_log.info("through logging, first")
        logs.request(app_log, "written directly", {"status": 200})
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
