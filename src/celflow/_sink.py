"""Where the service's events go: one protocol for the local manager and the bus forwarder.

The HTTP API, ``celflow run`` and the metrics take a :class:`Sink` and never ask which one it is:
events are prepared (validated, encoded) by the sink, offered (queued now) or committed (answered
once durable), and its figures are a typed :class:`SinkStats` that never touches the database
when read: database figures come from a cache that a background refresh keeps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ._database import EventDatabase
from ._encoding import EncodingOptions, Row
from ._exceptions import ValidationError
from ._storage import EventStore
from ._types import EventQuery

__all__ = ["DatabaseFigures", "Prepared", "Sink", "SinkStats", "read_figures"]


@dataclass(frozen=True)
class DatabaseFigures:
    """What a sink knows of the database it stores into (or reads from), as last read."""

    database_path: str | None
    total_events: int = 0
    database_size_mb: float = 0.0
    wal_size_mb: float = 0.0
    #: The newest event's id: a follower that starts here misses nothing committed later.
    last_event_id: int = 0


def read_figures(store: EventStore) -> DatabaseFigures:
    """Read the figures of ``store`` now (database queries: call it off the event loop)."""
    sizes = store.sizes()
    return DatabaseFigures(
        store.path,
        total_events=store.count_events(EventQuery(limit=None)),
        database_size_mb=sizes.get("database_size_mb", 0.0),
        wal_size_mb=sizes.get("wal_size_mb", 0.0),
        last_event_id=store.last_id(),
    )


@dataclass(frozen=True)
class SinkStats:
    """A sink's counters of this run and its database figures (the seed's ``get_stats()``, typed)."""

    state: str
    #: ``store`` (the local manager) or ``publish`` (the bus forwarder)
    mode: Literal["store", "publish"]
    healthy: bool
    #: Committed to the database (``store``), or acknowledged by JetStream (``publish``).
    total_stored: int
    duplicates: int
    dropped: int
    lost: int
    queue_size: int
    max_queue_size: int
    batches: int
    errors: int
    last_error: str | None
    database: DatabaseFigures
    last_flush: float | None = None
    avg_batch_ms: float = 0.0
    last_batch_ms: float = 0.0
    events_per_second: float = 0.0
    avg_events_per_second: float = 0.0
    uptime_seconds: float = 0.0
    removed_by_retention: int = 0
    privacy_dropped: int = 0
    last_cleanup: float | None = None
    bus: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The seed's dict: the database figures under ``database_stats`` (``bus`` only when publishing)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("database", "bus")}
        out["database_stats"] = dataclasses.asdict(self.database)
        if self.bus is not None:
            out["bus"] = dict(self.bus)
        return out

    def summary(self) -> str:
        """One line for the service's log."""
        if self.mode == "publish":
            return (
                f"{self.total_stored:,} events published this run, {self.queue_size:,} buffered, "
                f"dropped {self.dropped:,}, last error: {self.last_error or 'none'}"
            )
        return (
            f"{self.total_stored:,} events stored this run ({self.events_per_second:.1f}/s now), "
            f"{self.database.total_events:,} in the database, queue {self.queue_size:,}, dropped {self.dropped:,}"
        )


@dataclass
class Prepared:
    """Events a sink validated and encoded, ready to offer or commit."""

    #: How many events were received.
    received: int
    rows: list[Row]
    #: Every invalid event (each names its index and field); nothing is offered while there is one.
    errors: list[ValidationError] = field(default_factory=list)
    #: The idempotency key of each row's event (the bus carries keys, not hashes); None if not needed.
    keys: list[str | None] | None = None


class Sink(Protocol):
    """What the service stores its events through."""

    #: How events are validated and encoded (size limits, compression, privacy rules).
    options: EncodingOptions

    async def start(self) -> None:
        """Open what the sink needs (the database, the bus connection)."""

    async def stop(self) -> None:
        """Write or send everything accepted, then close."""

    def queue_event(self, event: Mapping[str, Any]) -> bool:
        """Validate and queue one event from any thread (a capture source); ``False``: dropped by overflow."""

    def prepare(self, events: Sequence[Any]) -> Prepared:
        """Validate and encode a batch received from outside; safe on any thread."""

    def offer(self, prepared: Prepared) -> None:
        """Queue prepared events now, or raise :class:`~celflow.QueueFullError` (call on the event loop)."""

    async def commit(self, prepared: Prepared) -> list[int] | None:
        """Queue prepared events and return once they are durable: their ids, or ``None`` when the
        bus acknowledged them and the store gives ids later. A full queue raises, never drops."""

    async def flush(self) -> None:
        """Return once everything accepted before the call is durable."""

    def add_batch_observer(self, observer: Callable[[float, int], None]) -> None:
        """Call ``observer(seconds, inserted)`` after each batch this process commits."""

    def reader(self) -> EventDatabase:
        """Where reads come from; :class:`~celflow.ManagerStateError` when there is nothing to read."""

    def stats(self) -> SinkStats:
        """Counters and cached database figures; never runs a database query."""

    def get_stats(self) -> dict[str, Any]:
        """:meth:`stats` as the seed's dict."""
