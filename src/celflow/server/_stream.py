"""Live streams: the stored events after a cursor, then live ones, read from the database.

Every subscriber reads on from the last id it delivered (``select_after``), a page at a time, and
waits for the writer's next commit when it has caught up (on a store other processes write too, a
PostgreSQL database, it also reads again every second). Ids grow with every commit, so the
switch from stored to live events has no gap and no duplicate, and a reconnect with ``after``
resumes exactly. A slow consumer costs the server one page of memory: it falls behind and reads
on from the database at its own pace (events that retention deletes meanwhile are skipped).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec

from .._types import EventQuery, StoredEvent

__all__ = ["CommitSignal", "follow", "page_query"]

PAGE = 1000


class CommitSignal:
    """Bumped (on the event loop) after each committed batch; subscribers wait for the next bump."""

    def __init__(self) -> None:
        self.version = 0
        self._event = asyncio.Event()
        self.stopping = asyncio.Event()

    def bump(self) -> None:
        self.version += 1
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait_past(self, version: int) -> None:
        """Return once a commit after ``version`` happened."""
        if self.version == version:
            await self._event.wait()


async def follow(
    read: Callable[[int], Awaitable[tuple[list[StoredEvent], int]]],
    after: int,
    signal: CommitSignal,
    closed: asyncio.Event,
    *,
    poll: float | None = None,
) -> AsyncIterator[tuple[list[StoredEvent], int]]:
    """Pages of events after ``after`` forever; ``read(after_id)`` returns a page and where to go on.

    Ends when ``closed`` is set (the client left) or the server stops. ``poll``: also read again
    after that many seconds without a commit here (other processes write the same store).
    """
    while not closed.is_set() and not signal.stopping.is_set():
        version = signal.version  # before the read: a commit during it is not missed
        page, after = await read(after)
        if page:
            yield page, after  # after: where a reconnecting client goes on from
            continue
        waits = [
            asyncio.ensure_future(signal.wait_past(version)),
            asyncio.ensure_future(closed.wait()),
            asyncio.ensure_future(signal.stopping.wait()),
        ]
        try:
            await asyncio.wait(waits, timeout=poll, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()


def page_query(query: EventQuery) -> EventQuery:
    """The query's filters with the stream's page size (order and cursor do not apply)."""
    return msgspec.structs.replace(query, limit=PAGE, cursor=None)
