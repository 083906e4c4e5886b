"""Where a database lives, parsed once: a SQLite file or a PostgreSQL database.

What a user gives (a path, ``sqlite:///path``, ``postgresql://...``) becomes a :class:`Location`
at the edge (the CLI, the config, the library's constructors); every inner layer takes that value
and never looks at the string again. A scheme CelFlow does not know is refused in one line that
names the accepted forms, before anything is created. The URL helpers live here too: masking a
password for messages, CelFlow's ``?schema=`` parameter, the bus URL's check.

A leaf module: it imports nothing of CelFlow's but the exceptions.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import SplitResult, parse_qsl, quote, urlencode, urlsplit, urlunsplit

from ._exceptions import ConfigError

__all__ = [
    "ACCEPTED_FORMS",
    "Backend",
    "Location",
    "check_bus_url",
    "mask_url",
    "parse_location",
    "split_schema",
]

Backend = Literal["sqlite", "postgresql"]

#: What a database location may look like, for messages.
ACCEPTED_FORMS = "a file path, sqlite:///relative/path, sqlite:////absolute/path or postgresql://user@host/db"

#: A URL's scheme: two characters or more (``C:`` stays a path) before a colon.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")
_POSTGRES_SCHEMES = ("postgresql", "postgres")
_BUS_SCHEMES = ("nats", "tls", "ws", "wss")


@dataclass(frozen=True, slots=True)
class Location:
    """A database: ``backend`` and ``target`` (the file's path, or the PostgreSQL URL without
    CelFlow's ``schema=`` parameter, password included) and, for PostgreSQL, the ``schema``."""

    backend: Backend
    target: str
    schema: str | None = None

    @property
    def is_sqlite(self) -> bool:
        """Whether this is a SQLite file."""
        return self.backend == "sqlite"

    @property
    def path(self) -> str:
        """The SQLite file's path (``ValueError`` for a server database: it has no file)."""
        if self.backend != "sqlite":
            raise ValueError(f"{self.shown} is a PostgreSQL database, not a file")
        return self.target

    @property
    def url(self) -> str:
        """The location as a string that parses back to it (password included: not for messages)."""
        if self.backend == "sqlite":
            return self.target
        return _with_schema(self.target, self.schema)

    @property
    def shown(self) -> str:
        """For messages and logs: the path, or the URL with its password masked."""
        return mask_url(self.url)

    def __str__(self) -> str:
        return self.shown

    def __repr__(self) -> str:
        return f"Location({self.backend!r}, {self.shown!r})"


def parse_location(value: str | os.PathLike[str] | Location) -> Location:
    """Turn a path, ``sqlite:///path`` or ``postgresql://`` URL into a :class:`Location`.

    Raises :class:`~celflow.ConfigError` for an empty value or an unknown scheme (``mysql://``...),
    naming the accepted forms; nothing is created or opened.
    """
    if isinstance(value, Location):
        return value
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigError(f"a database location must be a path or a URL string, not {type(value).__name__}")
    text = os.fspath(value)
    if not isinstance(text, str):  # a bytes path
        raise ConfigError("a database location must be a text path or URL, not bytes")
    if not text or "\x00" in text:
        raise ConfigError(f"database location {text!r} is not usable: give {ACCEPTED_FORMS}")
    match = _SCHEME.match(text)
    if match is None:
        return Location("sqlite", text)
    scheme = match.group(1).lower()
    rest = text[match.end() :]
    if scheme == "sqlite":
        if not rest.startswith("///") or rest == "///":
            raise ConfigError(
                f"database location {text!r}: a SQLite URL has three slashes and a path "
                "(sqlite:///relative/path or sqlite:////absolute/path)"
            )
        return Location("sqlite", rest[3:])
    if scheme in _POSTGRES_SCHEMES and rest.startswith("//"):
        url, schema = split_schema(text)
        return Location("postgresql", url, schema)
    if scheme in _POSTGRES_SCHEMES:
        raise ConfigError(f"database location {mask_url(text)!r}: a PostgreSQL URL starts with {scheme}://")
    raise ConfigError(
        f"database location {mask_url(text)!r}: CelFlow does not know the scheme {scheme!r}; give {ACCEPTED_FORMS} "
        "(a file whose name holds a colon: ./name)"
    )


def split_schema(url: str) -> tuple[str, str | None]:
    """The URL without CelFlow's own ``schema=`` query parameter, and that schema (a URL without one
    is returned as it is)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if not any(k == "schema" for k, _ in query):
        return url, None
    schema = next(v for k, v in query if k == "schema")
    # quote, not urlencode's default quote_plus: libpq reads "+" as a plus sign, not a space
    rest = urlencode([(k, v) for k, v in query if k != "schema"], quote_via=quote)
    return _unsplit(parts._replace(query=rest)), schema


def _with_schema(url: str, schema: str | None) -> str:
    if schema is None:
        return url
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query, keep_blank_values=True), ("schema", schema)]
    return _unsplit(parts._replace(query=urlencode(query, quote_via=quote)))


def _unsplit(parts: SplitResult) -> str:
    """``urlunsplit``, keeping the ``//`` of a URL without a host (``postgresql:///db``: a local socket)."""
    text = urlunsplit(parts)
    if not parts.netloc and not text.startswith(f"{parts.scheme}://"):
        text = f"{parts.scheme}://" + text[len(parts.scheme) + 1 :]
    return text


def mask_url(url: str) -> str:
    """The URL with any password masked (and a NATS token, a user name alone, too), for messages and logs."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    userinfo, host = parts.netloc.rsplit("@", 1)
    if ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    elif parts.scheme in _BUS_SCHEMES:
        userinfo = "***"
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{host}"))


def check_bus_url(url: str) -> None:
    """Refuse a bus URL that is not ``nats://``, ``tls://``, ``ws://`` or ``wss://`` (:class:`ConfigError`)."""
    if urlsplit(url).scheme not in _BUS_SCHEMES:
        raise ConfigError(f"bus URL {mask_url(url)!r} must start with nats://, tls://, ws:// or wss://")
