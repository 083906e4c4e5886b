"""The real-time terminal dashboard (``celflow dashboard``)."""

from __future__ import annotations

from ._app import DashboardApp, run_dashboard
from ._data import DashboardSource, Filters, Snapshot

__all__ = ["DashboardApp", "DashboardSource", "Filters", "Snapshot", "run_dashboard"]
