"""The public namespace is deliberate: exactly these names, sorted, each documented."""

from __future__ import annotations

import celflow

EXPECTED = {
    "CaptureConfig",
    "BusError",
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
}


def test_exported_names() -> None:
    """__all__ is exactly the intended names, sorted."""
    assert set(celflow.__all__) == EXPECTED
    assert list(celflow.__all__) == sorted(celflow.__all__)


def test_every_public_name_is_documented() -> None:
    """Every exported class and function has a docstring."""
    for name in celflow.__all__:
        if name == "__version__":
            continue
        assert getattr(celflow, name).__doc__, name


def test_one_exception_root() -> None:
    """Every exception CelFlow exports derives from CelflowError."""
    errors = [getattr(celflow, n) for n in celflow.__all__ if n.endswith("Error")]
    assert all(issubclass(e, celflow.CelflowError) for e in errors)
