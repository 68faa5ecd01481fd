"""The command Beam's local runner starts for each worker when the workers are forked.

Run as `python -I -S worker_relay.py NAME`, NAME the forks' socket in the abstract
namespace: it starts in milliseconds, hands the worker's endpoints (the environment Beam
gives it) to a process `forked_workers` made from the command, waits for that worker to end
and exits with its status (1 when no fork is left to take it, or the fork ended without
one). Standard library only.
"""

import json
import os
import socket
import struct
import sys

# What Beam's SubprocessSdkWorker puts in a worker's environment.
_KEYS = (
    "CONTROL_API_SERVICE_DESCRIPTOR",
    "LOGGING_API_SERVICE_DESCRIPTOR",
    "PIPELINE_OPTIONS",
    "WORKER_ID",
)


_UCRED = struct.Struct("iII")  # Linux's struct ucred: pid, uid, gid (uid_t is unsigned)


def peer(connection: socket.socket) -> tuple[int, int, int]:
    """The pid, uid and gid of the process at the other end of a Unix socket. (The forks
    check their relays with it too: `forked_workers`.)"""
    credentials = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    return _UCRED.unpack(credentials)


def main(name: str) -> int:
    relay = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        relay.connect(b"\0" + name.encode())
    except OSError as exc:
        print(f"batch-predict: no forked worker is left at {name} ({exc})", file=sys.stderr)
        return 1
    # Anyone may bind the name once the forks have let it go: hand the endpoints (what a
    # worker is told to run) to no process but one of this user's.
    if peer(relay)[1] != os.getuid():
        print(f"batch-predict: {name} is held by another user's process", file=sys.stderr)
        return 1
    endpoints = {key: os.environ[key] for key in _KEYS if key in os.environ}
    relay.sendall(json.dumps(endpoints).encode() + b"\n")
    status = b""
    while chunk := relay.recv(16):
        status += chunk
    return int(status) if status.strip().isdigit() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
