"""For bench/overhead.py: one process answering requests with this function and with the
bare handler in turn, so that both run in the same interpreter, memory and moment.

Two processes of identical code differ by a few percent in speed (where each landed in
memory, what else ran then), as much as the overhead being measured. Here every other
request goes to main.predict, the others to bench/bare_handler.py's predict (and Flask's
make_response, which Flask applies to its tuple after it returns), and the CPU time of
the answering thread in each is added up. `GET /cpu` answers the sums per request and
starts counting anew.
"""

import json
import sys
import threading
import time
from pathlib import Path

import flask

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bare_handler  # noqa: E402

import main  # noqa: E402

_lock = threading.Lock()
_spent = {"ours": [0, 0], "bare": [0, 0]}  # side -> [nanoseconds, requests]
_turns = [0]


def predict(request):
    """Answers with this function or the bare handler, in turn; `GET /cpu` with the sums."""
    if request.method == "GET" and request.path == "/cpu":
        with _lock:
            spent = {side: ns / max(n, 1) / 1000 for side, (ns, n) in _spent.items()}
            for counts in _spent.values():
                counts[:] = [0, 0]
        return json.dumps(spent), 200, {"Content-Type": "application/json"}
    with _lock:
        side = ("ours", "bare")[_turns[0] % 2]
        _turns[0] += 1
    start = time.thread_time_ns()
    if side == "ours":
        answer = main.predict(request)
    else:
        answer = flask.current_app.make_response(bare_handler.predict(request))
    spent = time.thread_time_ns() - start
    with _lock:
        _spent[side][0] += spent
        _spent[side][1] += 1
    return answer
