"""The seed's ``app.system.event_persistence`` module: the same objects as :mod:`celflow`.

The seed's snippets (``from app.system.event_persistence import EventDatabase``) run unchanged
from the project folder. New code should import from ``celflow``.
"""

from celflow import EventDatabase, EventPersistenceManager, create_event_persistence

__all__ = ["EventDatabase", "EventPersistenceManager", "create_event_persistence"]
