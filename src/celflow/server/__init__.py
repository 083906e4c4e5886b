"""CelFlow's HTTP API: ``create_app`` over a running manager, and the uvicorn server it runs in."""

from __future__ import annotations

from ._app import create_app
from ._guard import load_or_create_token
from ._serve import HttpServer, bind

__all__ = ["HttpServer", "bind", "create_app", "load_or_create_token"]
