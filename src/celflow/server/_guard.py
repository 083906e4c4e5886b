"""The API's front door: the bearer token, the Host header and WebSocket origins.

A pure ASGI middleware (no per-request task or body copy). Every refusal is a JSON error body.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from collections.abc import Iterable
from urllib.parse import urlsplit

import orjson
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from .._files import ensure_private_dir

__all__ = ["Guard", "is_loopback_host", "load_or_create_token"]

TOKEN_FILE = "token"
PUBLIC_PATHS = frozenset({"/health"})


def load_or_create_token(data_dir: str) -> str:
    """The API token in ``data_dir/token``, created (0600, random 256 bits) if missing."""
    ensure_private_dir(data_dir)
    path = os.path.join(data_dir, TOKEN_FILE)
    try:
        with open(path, encoding="ascii") as f:
            token = f.read().strip()
        if token:
            return token
    except FileNotFoundError:
        pass
    token = secrets.token_urlsafe(32)
    temp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(token + "\n")
    os.replace(temp, path)
    return token


def _hostname(host: str) -> str:
    """``host[:port]`` or ``[v6]:port`` without the port, lower-case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        return host.rsplit(":", 1)[0]
    return host


def is_loopback_host(name: str) -> bool:
    """``localhost``, ``*.localhost``, 127.0.0.0/8 or ::1."""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class Guard:
    """Refuse requests without the token (401), for a foreign Host (403) or from a foreign page (403)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        allowed_hosts: Iterable[str] = (),
        allowed_origins: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.allowed_hosts = {h.lower() for h in allowed_hosts}
        self.allowed_origins = {o.lower().rstrip("/") for o in allowed_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self._refusal(scope, headers)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, message, extra = refusal
        body = orjson.dumps({"error": {"status": status, "message": message}})
        response_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        response_headers += extra
        if scope["type"] == "websocket":
            # Refuse the upgrade with an HTTP response (the WebSocket Denial Response extension),
            # or a plain close (uvicorn turns it into 403) where the server lacks it.
            if "websocket.http.response" in scope.get("extensions", {}):
                await send({"type": "websocket.http.response.start", "status": status, "headers": response_headers})
                await send({"type": "websocket.http.response.body", "body": body})
            else:
                await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": body})

    def _refusal(self, scope: Scope, headers: Headers) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
        host = _hostname(headers.get("host", ""))
        if not host:
            return 400, "the request has no Host header", []
        if not (is_loopback_host(host) or host in self.allowed_hosts):
            return (
                403,
                f"Host {host!r} is not allowed (DNS-rebinding defence); add it to http.allowed_hosts",
                [],
            )
        # A web page's requests carry its Origin: only loopback pages (or allowed_origins) may
        # call the API, even when auth is off and the browser would not show them the answer.
        origin = headers.get("origin")
        if origin is not None and not self._origin_allowed(origin):
            return 403, f"requests from pages of the origin {origin!r} are not allowed (http.allowed_origins)", []
        if headers.get("sec-fetch-site") == "cross-site" and origin is None:
            return 403, "cross-site requests from web pages are not allowed", []
        if self.token is None or scope["path"] in PUBLIC_PATHS:
            return None
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token):
            what = "a wrong token" if given else "no token"
            return (
                401,
                f"{what}: send 'Authorization: Bearer <token>' with the token from the data folder's "
                f"'{TOKEN_FILE}' file",
                [(b"www-authenticate", b"Bearer")],
            )
        return None

    def _origin_allowed(self, origin: str) -> bool:
        origin = origin.lower().rstrip("/")
        if origin in self.allowed_origins:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and is_loopback_host(_hostname(parts.netloc))
