"""The reliability suite's ``record`` fixture: with CELFLOW_TORTURE_REPORT set, each test appends
``(test, trials, failures, worst loss)`` to that file (JSON Lines) for `make torture`'s table."""

from __future__ import annotations

import json
import os

import pytest

from _reliability import Record


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Record:
    """``record(trials=N, failures=F, worst_loss="...")``."""

    def write(*, trials: int, failures: int, worst_loss: str = "-") -> None:
        path = os.environ.get("CELFLOW_TORTURE_REPORT")
        if path:
            row = {"test": request.node.name, "trials": trials, "failures": failures, "worst_loss": worst_loss}
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")

    return write
