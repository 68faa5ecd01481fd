"""A log handler that writes request entries from a thread of its own, off the request's.

A request's thread only queues what its entry needs (`QueuingHandler.queue`); a writer
thread wakes every `INTERVAL`, makes the queued lines and writes them, many a write. The
lines of one process keep their order: any other record this handler writes first writes
what is queued. Nothing queued is lost when the process ends normally (a gunicorn worker
on SIGTERM included): logging's own exit hook flushes every handler, and this one's
`flush` writes the queue; what is queued when the process is killed (SIGKILL, out of
memory) is lost, at most `INTERVAL` of entries.
"""

from __future__ import annotations

import collections
import logging
import os
import select
import threading
import time
from collections.abc import Callable

# How long a queued line may wait. Long enough that a busy worker writes several lines a
# write: one write a request cost a system call, a wake-up of whoever reads stderr, and a
# hand-over of the interpreter lock to another thread, each time. Short enough that the
# log stays current for someone watching it. Waking this often costs an idle process next
# to nothing (http.server's watchdog wakes every 0.25 s).
INTERVAL = 0.05
# The most lines that may wait: at about 400 bytes an entry, 4 MB, or seconds of a busy
# worker's entries. More wait only when stderr does not drain (its reader stalled); a
# request must not wait for that, so the lines beyond are dropped, counted, and reported.
BOUND = 10_000
# A pipe takes a write of at most PIPE_BUF bytes whole. The workers and gunicorn share
# stderr, so lines go out in writes no larger: another process's line never lands
# inside one of these (a longer line is written alone, as every line was before).
CHUNK = select.PIPE_BUF


class QueuingHandler(logging.StreamHandler):
    """A stream handler that also takes lines to make and write later, on its own thread."""

    def __init__(self, stream=None):
        super().__init__(stream)
        self._hooked = False
        self._forget()

    def queue(self, make: Callable[..., str], *args) -> None:
        """Has `make(*args)` made into a line and written within `INTERVAL`, on the writer
        thread. Never waits, not even for a stderr that does not drain."""
        if self._writer is None:
            self._start()
        if len(self._pending) < BOUND:
            self._pending.append((make, args))
        else:
            with self._guard:
                self._dropped += 1

    def emit(self, record: logging.LogRecord) -> None:
        self._write_queued()  # lines queued before this record come before it
        super().emit(record)

    def flush(self) -> None:
        """Writes the queued lines, then flushes the stream (logging calls this at exit)."""
        with self.lock:
            self._write_queued()
            super().flush()

    def _forget(self) -> None:
        """Nothing queued and no writer: so a process starts, and so a forked child goes on,
        since the parent's writer does not run in it and the parent writes its own lines."""
        self._guard = threading.Lock()  # starting the writer; counting dropped lines
        self._pending: collections.deque[tuple[Callable[..., str], tuple]] = collections.deque()
        self._dropped = 0
        self._writer: threading.Thread | None = None

    def _start(self) -> None:
        with self._guard:
            if self._writer is not None:
                return
            if not self._hooked:
                os.register_at_fork(after_in_child=self._forget)
                self._hooked = True
            writer = threading.Thread(target=self._run, name="cpr-log-writer", daemon=True)
            writer.start()  # if it cannot, the next entry tries again (logs.request falls back)
            self._writer = writer

    def _run(self) -> None:
        while True:
            time.sleep(INTERVAL)
            if self._pending or self._dropped:
                with self.lock:
                    self._write_queued()

    def _write_queued(self) -> None:
        """Makes and writes the queued lines, in writes of at most `CHUNK` bytes of whole
        lines, then a warning if lines were dropped. Called with the lock held."""
        lines, size = [], 0
        for _ in range(len(self._pending)):
            make, args = self._pending.popleft()
            try:
                line = make(*args) + self.terminator
            except Exception:
                self.handleError(_record("a queued log line could not be made: %r", args))
                continue
            length = len(line) if line.isascii() else len(line.encode())
            if lines and size + length > CHUNK:
                self._write(lines)
                lines, size = [], 0
            lines.append(line)
            size += length
        if lines:
            self._write(lines)
        if self._dropped:
            with self._guard:
                dropped, self._dropped = self._dropped, 0
            super().emit(
                _record(
                    "%d request log entries were dropped: stderr took lines more slowly than "
                    "requests were answered, and %d were already waiting to be written",
                    dropped,
                    BOUND,
                    level=logging.WARNING,
                )
            )

    def _write(self, lines: list[str]) -> None:
        try:
            self.stream.write("".join(lines))
            self.stream.flush()
        except Exception:
            self.handleError(_record("%d queued log lines could not be written", len(lines)))


def _record(message: str, *args, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(__name__, level, __file__, 0, message, args, None)
