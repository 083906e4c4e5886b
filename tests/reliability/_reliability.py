"""Counts of the reliability suite: CI counts by default, full counts with CELFLOW_TORTURE=1."""

from __future__ import annotations

import os
from collections.abc import Callable

FULL = os.environ.get("CELFLOW_TORTURE") == "1"

Record = Callable[..., None]


def trials(ci: int, full: int) -> int:
    """How many trials a test runs: ``ci`` in `make test`, ``full`` in `make torture`."""
    return full if FULL else ci
