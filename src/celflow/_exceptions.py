"""CelFlow's exceptions: one root, a short tree, and messages that say what to do.

Tree::

    CelflowError
    ├── ConfigError              a configuration key or value is wrong
    ├── ValidationError          an event (or a batch) is malformed; nothing of the call was kept
    ├── QueueFullError           the manager's queue is full and the overflow policy said raise
    ├── ManagerStateError        the manager was used before start() or after stop()
    ├── ExportError              an export could not be written (file exists, no such folder)
    ├── ServiceError             the HTTP service answered an error or could not be reached
    ├── BusError                 the NATS bus cannot be used (publisher stopped, unacknowledged, stream mismatch)
    └── PersistenceError         anything the storage layer reports (PEP 249 style)
        ├── DatabaseNotFoundError    no database at the path (read-only opens never create one)
        ├── NotACelflowDatabaseError the file is not SQLite, or not CelFlow's; it was not modified
        ├── SchemaVersionError       the file was written by a newer CelFlow
        ├── WriterBusyError          the file is held alone (a recovery), or a step that needs it alone finds writers
        ├── DatabaseClosedError      the EventDatabase was used after close()
        ├── CorruptDatabaseError     the file is damaged: `celflow db recover` saves what can be read
        ├── OperationalError         the database engine failed (I/O, disk full, locked too long)
        └── QueryTimeoutError        a read ran past its time limit and was interrupted

Driver errors are translated in one place per backend (``translate`` in ``celflow._sqlite._store`` and
``celflow._postgres``).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BusError",
    "CelflowError",
    "ConfigError",
    "CorruptDatabaseError",
    "DatabaseClosedError",
    "DatabaseNotFoundError",
    "ExportError",
    "ManagerStateError",
    "NotACelflowDatabaseError",
    "OperationalError",
    "PersistenceError",
    "QueryTimeoutError",
    "QueueFullError",
    "SchemaVersionError",
    "ServiceError",
    "ValidationError",
    "WriterBusyError",
]


class CelflowError(Exception):
    """Root of every error CelFlow raises on purpose."""


class ConfigError(CelflowError, ValueError):
    """A configuration key is unknown or its value is out of range."""


class ValidationError(CelflowError, ValueError):
    """An event is malformed; ``index`` and ``field`` say where, when known."""

    def __init__(self, message: str, *, field: str | None = None, index: int | None = None) -> None:
        self.field = field
        self.index = index
        prefix = f"event {index}: " if index is not None else ""
        super().__init__(prefix + message)


class QueueFullError(CelflowError):
    """The write queue is at ``max_queue_size`` and the overflow policy is ``raise``/timed out."""


class ManagerStateError(CelflowError, RuntimeError):
    """The persistence manager is not running (call ``await start()`` first)."""


class ExportError(CelflowError):
    """An export could not be written; the target file was not touched."""


class PersistenceError(CelflowError):
    """Something the storage layer reports."""


class DatabaseNotFoundError(PersistenceError, FileNotFoundError):
    """There is no database at the given path."""


class NotACelflowDatabaseError(PersistenceError):
    """The file is not an SQLite database written by CelFlow; it was left untouched."""


class SchemaVersionError(PersistenceError):
    """The database's schema is newer than this CelFlow understands."""


class WriterBusyError(PersistenceError):
    """A SQLite file is held alone by a step of another process (a start check, a recovery), or a step
    that needs it alone (``celflow db recover``) finds writers at work."""


class DatabaseClosedError(PersistenceError):
    """The database object was used after ``close()``."""


class OperationalError(PersistenceError):
    """The database engine failed (I/O error, disk full, busy for too long)."""


class QueryTimeoutError(PersistenceError):
    """A read ran past its time limit and was interrupted."""


class BusError(CelflowError):
    """The bus cannot be used: the publisher is not running, events stay unacknowledged, or a
    stream does not fit the settings."""


class ServiceError(CelflowError):
    """The CelFlow service answered with an error, or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status  # None: no answer (connection refused, timed out)
        self.details = details or {}


class CorruptDatabaseError(PersistenceError):
    """The database file is damaged; ``celflow db recover`` saves what can be read."""
