"""Event replay (the seed's roadmap): stored events again, in time order, at a chosen speed."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ._database import EventDatabase
from ._exceptions import ValidationError
from ._types import StoredEvent

__all__ = ["replay"]


def replay(
    database: EventDatabase,
    sink: Callable[[StoredEvent], Any],
    *,
    speed: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    **filters: Any,
) -> int:
    """Call ``sink`` with every matching event, oldest first; return how many.

    ``speed`` None replays as fast as the sink takes them; 1.0 keeps the original gaps between
    events, 10.0 plays them ten times faster. Takes the filters of :meth:`EventDatabase.get_events`.
    """
    if speed is not None and not speed > 0:
        raise ValidationError(f"speed must be a number > 0 (1 = real time), got {speed!r}", field="speed")
    filters.pop("order", None)
    count = 0
    first: float | None = None
    started = clock()
    for event in database.iter_events(order="asc", **filters):
        if speed is not None:
            if first is None:
                first = event.timestamp
            due = started + (event.timestamp - first) / speed
            wait = due - clock()
            if wait > 0:
                sleep(wait)
        sink(event)
        count += 1
    return count
