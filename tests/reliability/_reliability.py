"""Counts of the reliability suite (CI counts by default, full counts with CELFLOW_TORTURE=1), and
the helper scripts its tests run."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

HELPERS = Path(__file__).parents[1] / "helpers"

FULL = os.environ.get("CELFLOW_TORTURE") == "1"

Record = Callable[..., None]


def trials(ci: int, full: int) -> int:
    """How many trials a test runs: ``ci`` in `make test`, ``full`` in `make torture`."""
    return full if FULL else ci


def load_helper(name: str) -> ModuleType:
    """A helper script as a module, for the constants both processes share."""
    spec = importlib.util.spec_from_file_location(name, HELPERS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
