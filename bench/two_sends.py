"""This function as it answered before cpr_function/http/one_send.py: gunicorn's own two
sends a response, the head and then the body. For `bench/overhead.py --source
two-sends=bench/two_sends.py`, which measures the one send against the two."""

from cpr_function.http import one_send


class _AsGunicornSends:
    """The connection's socket, passed through: every `sendall` is a send of its own."""

    def __init__(self, sock):
        self._sock = sock

    def finish(self) -> None:
        pass

    def __getattr__(self, name: str):
        return getattr(self._sock, name)


one_send.Joined = _AsGunicornSends

from cpr_function import predict  # noqa: E402, F401
