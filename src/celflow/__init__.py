"""CelFlow: the durable, fast local event store of an AI operating system.

The seed's API: :class:`EventDatabase` (synchronous) and :class:`EventPersistenceManager`
(asynchronous, batching), built with :func:`create_event_persistence`.

The manager (it brings asyncio) and ``__version__`` (package metadata) load when first used, so
``import celflow`` and the command line start fast.
"""

from typing import TYPE_CHECKING, Any

from ._backends import open_store
from ._config import CaptureConfig, Config, LoggingConfig, PersistenceConfig, load_config, parse_config
from ._database import EventDatabase
from ._encoding import decode_data, prepare_event
from ._exceptions import (
    BusError,
    CelflowError,
    ConfigError,
    CorruptDatabaseError,
    DatabaseClosedError,
    DatabaseNotFoundError,
    ExportError,
    ManagerStateError,
    NotACelflowDatabaseError,
    OperationalError,
    PersistenceError,
    QueryTimeoutError,
    QueueFullError,
    SchemaVersionError,
    ServiceError,
    ValidationError,
    WriterBusyError,
)
from ._storage import EventStore
from ._types import EventPage, EventQuery, InsertResult, Pattern, StoredEvent, SystemStats

if TYPE_CHECKING:
    from ._manager import EventPersistenceManager, ManagerState, create_event_persistence

    __version__: str

_LAZY = {"EventPersistenceManager", "ManagerState", "create_event_persistence"}


def __getattr__(name: str) -> Any:
    """The names that load on first use: the manager's, and ``__version__``."""
    if name in _LAZY:
        from . import _manager

        value = getattr(_manager, name)
    elif name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("celflow")
        except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
            value = "0.0.0"
    else:
        raise AttributeError(f"module 'celflow' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "BusError",
    "CaptureConfig",
    "CelflowError",
    "Config",
    "ConfigError",
    "CorruptDatabaseError",
    "DatabaseClosedError",
    "DatabaseNotFoundError",
    "EventDatabase",
    "EventPage",
    "EventPersistenceManager",
    "EventQuery",
    "EventStore",
    "ExportError",
    "InsertResult",
    "LoggingConfig",
    "ManagerState",
    "ManagerStateError",
    "NotACelflowDatabaseError",
    "OperationalError",
    "Pattern",
    "PersistenceConfig",
    "PersistenceError",
    "QueryTimeoutError",
    "QueueFullError",
    "SchemaVersionError",
    "ServiceError",
    "StoredEvent",
    "SystemStats",
    "ValidationError",
    "WriterBusyError",
    "__version__",
    "create_event_persistence",
    "decode_data",
    "load_config",
    "open_store",
    "parse_config",
    "prepare_event",
]
