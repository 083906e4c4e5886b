"""CelFlow: the durable, fast local event store of an AI operating system.

The seed's API: :class:`EventDatabase` (synchronous) and :class:`EventPersistenceManager`
(asynchronous, batching), built with :func:`create_event_persistence`.
"""

from importlib.metadata import PackageNotFoundError, version

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
from ._manager import EventPersistenceManager, ManagerState, create_event_persistence
from ._storage import EventStore
from ._types import EventPage, EventQuery, InsertResult, Pattern, StoredEvent, SystemStats

try:
    __version__ = version("celflow")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

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
