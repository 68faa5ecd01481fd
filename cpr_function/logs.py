"""Where the service's log lines go."""

from __future__ import annotations

import logging
import sys


def configure(level: int = logging.INFO) -> None:
    """Sends this package's log records to stderr, once."""
    logger = logging.getLogger("cpr_function")
    if logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
