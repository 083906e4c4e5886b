"""A real CelFlow service (manager + HTTP API) on an ephemeral 127.0.0.1 port, for the API tests."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import httpx

from celflow import EventPersistenceManager
from celflow._config import HttpConfig
from celflow.server import HttpServer, bind, create_app

TOKEN = "test-token-0123456789"


class Service:
    """A manager and its API on a loop in a background thread, as `celflow run` runs them."""

    def __init__(self, db: Path, *, token: str | None = TOKEN, manager: dict[str, Any] | None = None, **http: Any):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        settings = {"database_path": str(db), "stats_interval": 0, "batch_timeout": 0.05, **(manager or {})}
        self.manager = EventPersistenceManager(settings)
        self.http_settings = HttpConfig(**{"auth": token is not None, "port": 0, **http})
        self.token = token
        self.call(self._start())

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> None:
        await self.manager.start()
        app = create_app(self.manager, self.http_settings, token=self.token)
        self.http = HttpServer(app, bind("127.0.0.1", self.http_settings.port))
        await self.http.start()

    async def _stop(self) -> None:
        await self.http.stop()
        await self.manager.stop()

    def client(self, *, token: str | None = TOKEN) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.http.url, headers=headers, timeout=30)

    def close(self) -> None:
        self.call(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
