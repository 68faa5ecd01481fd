"""Argument types the commands share."""

from __future__ import annotations

import argparse


def positive(text: str) -> int:
    """A whole number above zero, for argparse's `type=`."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number; got {text}")
    return value
