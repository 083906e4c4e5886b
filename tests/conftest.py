"""Shared fixtures: real database files in tmp_path, and a small event factory."""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from celflow import EventDatabase

_counter = itertools.count()


def make_event(**overrides: Any) -> dict[str, Any]:
    """A valid event with a unique payload; keyword arguments replace its fields."""
    n = next(_counter)
    event: dict[str, Any] = {
        "event_type": "file_op",
        "source": "filesystem",
        "action": "created",
        "timestamp": time.time() - 60 + n * 1e-3,
        "data": {"path": f"/home/user/file-{n}.txt", "size": n},
    }
    event.update(overrides)
    return event


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A database path in a folder that does not exist yet."""
    return tmp_path / "data" / "events.db"


@pytest.fixture
def db(db_path: Path) -> Iterator[EventDatabase]:
    """An EventDatabase on a new file, closed after the test."""
    database = EventDatabase(db_path)
    yield database
    database.close()


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Callable[..., None]:
    """The reliability suite's row for `make torture`'s table: with CELFLOW_TORTURE_REPORT set,
    ``record(trials=N, failures=F, worst_loss="...")`` appends it to that file (JSON Lines)."""

    def write(*, trials: int, failures: int, worst_loss: str = "-") -> None:
        path = os.environ.get("CELFLOW_TORTURE_REPORT")
        if path:
            row = {"test": request.node.name, "trials": trials, "failures": failures, "worst_loss": worst_loss}
            with open(path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")

    return write
