"""Configuration: the seed's defaults, from Python dicts, a TOML file and ``CELFLOW_*`` variables.

Precedence, lowest first: defaults, the TOML file, environment variables, command-line flags.
:func:`load_config` also reports where each value came from (``celflow config show``).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from ._exceptions import ConfigError
from ._location import Location, check_bus_url, parse_location

__all__ = [
    "BusConfig",
    "CaptureConfig",
    "Config",
    "DropRule",
    "HttpConfig",
    "LoggingConfig",
    "PersistenceConfig",
    "PrivacyConfig",
    "default_config_path",
    "load_config",
    "parse_config",
]

PositiveInt = Annotated[int, Meta(ge=1)]
PositiveFloat = Annotated[float, Meta(gt=0)]


class PersistenceConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The seed's ``persistence`` section, and the settings CelFlow adds to it."""

    database_path: str = "data/events.db"
    #: A PostgreSQL database (``postgresql://user@host/db``) to store in instead of the file at
    #: ``database_path`` (whose folder still holds the token, the log and service.json).
    database_url: str = ""
    batch_size: Annotated[int, Meta(ge=1, le=100_000)] = 100
    batch_timeout: Annotated[float, Meta(gt=0, le=3600)] = 5.0
    #: Days to keep events; 0 keeps them forever.
    retention_days: Annotated[float, Meta(ge=0)] = 30
    cleanup_interval_hours: Annotated[float, Meta(gt=0)] = 24
    #: ``normal``: survives a crash of CelFlow; ``full``: also a power loss (fsync per batch).
    durability: Literal["normal", "full"] = "normal"
    #: Events that may wait in memory for the writer.
    max_queue_size: Annotated[int, Meta(ge=1)] = 20_000
    #: Bytes of queued events (their encoded data) that may wait in memory; an empty queue still
    #: takes one call's events, so an event up to max_event_bytes always goes through.
    max_queue_bytes: Annotated[int, Meta(ge=1024 * 1024)] = 64 * 1024 * 1024
    #: What a full queue does to a producer: wait (up to queue_timeout, then raise), drop, raise.
    overflow: Literal["block", "drop", "raise"] = "block"
    queue_timeout: Annotated[float, Meta(ge=0)] = 5.0
    #: Event data larger than this many bytes (as JSON) is stored zstd-compressed.
    compression_threshold: Annotated[int, Meta(ge=0)] = 1024
    max_event_bytes: Annotated[int, Meta(ge=1024)] = 16 * 1024 * 1024
    #: Seconds between system_stats snapshots; 0 switches them off.
    stats_interval: Annotated[float, Meta(ge=0)] = 60.0

    def __post_init__(self) -> None:
        path = parse_location(self.database_path)
        if not path.is_sqlite:
            raise ConfigError(
                f"database_path {path.shown!r} is a server URL: put it in database_url; database_path is a file"
            )
        self.database_path = path.target  # sqlite:///x is the file x
        if self.database_url:
            parse_location(self.database_url)

    @property
    def location(self) -> Location:
        """Where events go: ``database_url`` when set, else the file at ``database_path``."""
        return parse_location(self.database_url or self.database_path)

    @property
    def data_dir(self) -> str:
        """The data folder (token, log, service.json): the database file's, else ``database_path``'s."""
        location = self.location
        return os.path.dirname(os.path.abspath(location.path if location.is_sqlite else self.database_path))


def _default_watch_paths() -> list[str]:
    return ["~/Desktop", "~/Documents", "~/Downloads"]


class CaptureConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What ``celflow run`` captures."""

    filesystem: bool = True
    #: Folders watched recursively; missing ones are skipped. If none exists, the home folder is
    #: watched (not recursively). The data folder is never watched.
    paths: list[str] = msgspec.field(default_factory=_default_watch_paths)
    ignore_hidden: bool = True
    processes: bool = True
    process_interval: PositiveFloat = 2.0
    #: Command lines can hold secrets; they are recorded only when this is on.
    process_cmdline: bool = False


class LoggingConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Console and rotating-file logging of ``celflow run``."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: File name in the data folder; empty switches file logging off.
    file: str = "celflow.log"
    max_bytes: PositiveInt = 5 * 1024 * 1024
    backups: Annotated[int, Meta(ge=0)] = 3


class HttpConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The HTTP and WebSocket API that ``celflow run`` serves."""

    enabled: bool = True
    #: Loopback only by default; another address exposes the API to the network.
    host: str = "127.0.0.1"
    #: 0 picks a free port (the address is written to ``service.json`` in the data folder).
    port: Annotated[int, Meta(ge=0, le=65535)] = 8537
    #: Require ``Authorization: Bearer <token>`` (the token file in the data folder) on all but /health.
    auth: bool = True
    #: Host names accepted besides loopback ones (a defence against DNS rebinding).
    allowed_hosts: list[str] = msgspec.field(default_factory=list)
    #: Origins (``scheme://host[:port]``) whose pages may open a WebSocket; loopback pages always may.
    allowed_origins: list[str] = msgspec.field(default_factory=list)
    max_body_bytes: Annotated[int, Meta(ge=1024)] = 32 * 1024 * 1024
    max_batch_events: Annotated[int, Meta(ge=1)] = 10_000
    #: Seconds a query may run before it is interrupted (answered 503).
    query_timeout: PositiveFloat = 10.0


#: Where a drop rule's ``field`` may point: a top-level field, or a dotted path inside ``data``.
DROP_FIELD_ROOTS = ("event_type", "source", "action", "data")


def _check_pattern(name: str, pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"{name} {pattern!r} is not a valid regular expression ({exc})") from None


class DropRule(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """One ``[[privacy.drop]]`` table: events matching every key given are discarded, never stored."""

    event_type: str | None = None
    source: str | None = None
    action: str | None = None
    #: ``data.url`` (a dotted path inside data), ``action``...; alone: the event has that field.
    field: str | None = None
    #: A regular expression searched in every string of ``field`` (default: in all of ``data``).
    pattern: str | None = None

    def __post_init__(self) -> None:
        if all(getattr(self, key) is None for key in self.__struct_fields__):
            raise ConfigError(
                "a drop rule needs at least one of event_type, source, action, field, pattern "
                "(an empty rule would drop every event)"
            )
        if self.field is not None:
            root, *inside = self.field.split(".")
            if root not in DROP_FIELD_ROOTS or (inside and (root != "data" or not all(inside))):
                raise ConfigError(
                    f"field {self.field!r} is not one of {', '.join(DROP_FIELD_ROOTS)} "
                    "or a dotted path inside data (e.g. 'data.url')"
                )
        if self.pattern is not None:
            _check_pattern("pattern", self.pattern)


class PrivacyConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Privacy rules, applied to every event before it is validated, hashed or written."""

    #: Events to discard (file: ``[[privacy.drop]]`` tables; env: a JSON array of objects).
    drop: list[DropRule] = msgspec.field(default_factory=list)
    #: Names of fields inside data, at any depth, case-insensitive, whose values are replaced.
    redact_fields: list[str] = msgspec.field(default_factory=list)
    #: Regular expressions; their matches in action and in every string of data are replaced.
    redact_patterns: list[str] = msgspec.field(default_factory=list)
    replacement: str = "[REDACTED]"

    def __post_init__(self) -> None:
        for index, name in enumerate(self.redact_fields):
            if not name:
                raise ConfigError(f"privacy.redact_fields[{index}] is empty; give a field name")
        for index, pattern in enumerate(self.redact_patterns):
            _check_pattern(f"privacy.redact_patterns[{index}]", pattern)


class BusConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The NATS JetStream ingest bus: where ``celflow run --publish`` sends events and
    ``celflow ingest-worker`` takes them from."""

    #: The NATS server (``nats://host:port``; ``tls://`` for TLS).
    url: str = "nats://127.0.0.1:4222"
    #: The JetStream stream (created if missing) and the subject producers publish on.
    stream: str = "CELFLOW"
    subject: str = "celflow.events"
    #: The durable consumer ingest workers share (they split the work).
    durable: str = "celflow-ingest"
    #: ``celflow run`` publishes what it captures and receives to the bus instead of storing it.
    publish: bool = False
    #: Events per bus message.
    batch_size: Annotated[int, Meta(ge=1, le=100_000)] = 1000
    #: Events (and their bytes) a publisher keeps while the broker is away; past it ``overflow`` applies.
    max_buffer: PositiveInt = 100_000
    max_buffer_bytes: Annotated[int, Meta(ge=1024 * 1024)] = 64 * 1024 * 1024
    #: Seconds to wait for JetStream's acknowledgement of a message before sending it again.
    ack_timeout: PositiveFloat = 5.0

    def __post_init__(self) -> None:
        check_bus_url(self.url)
        for key in ("stream", "durable"):  # JetStream's rules for stream and consumer names
            name = getattr(self, key)
            if not name or re.search(r"[\s.*>/\\]", name):
                raise ConfigError(
                    f"bus.{key} {name!r} must be a non-empty name without spaces, '.', '*', '>', '/' or '\\'"
                )
        if not self.subject or re.search(r"\s", self.subject):
            raise ConfigError(f"bus.subject {self.subject!r} must be a non-empty subject without spaces")


class Config(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The whole configuration (the seed's top-level dict)."""

    enable_persistence: bool = True
    persistence: PersistenceConfig = msgspec.field(default_factory=PersistenceConfig)
    capture: CaptureConfig = msgspec.field(default_factory=CaptureConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    http: HttpConfig = msgspec.field(default_factory=HttpConfig)
    privacy: PrivacyConfig = msgspec.field(default_factory=PrivacyConfig)
    bus: BusConfig = msgspec.field(default_factory=BusConfig)


_SECTIONS: dict[str, type[msgspec.Struct]] = {
    "persistence": PersistenceConfig,
    "capture": CaptureConfig,
    "logging": LoggingConfig,
    "http": HttpConfig,
    "privacy": PrivacyConfig,
    "bus": BusConfig,
}
#: Settings whose environment variable holds a JSON array (regular expressions may contain ':').
_JSON_ENV = frozenset({("privacy", "drop"), ("privacy", "redact_patterns")})


def _convert(data: Any, kind: type[Any], where: str, *, strict: bool = True) -> Any:
    try:
        return msgspec.convert(data, kind, strict=strict)
    except msgspec.ValidationError as exc:
        message = str(exc).replace("`$.", "`").replace("- at `$`", "")
        raise ConfigError(f"invalid configuration ({where}): {message}") from None


def parse_config(data: Mapping[str, Any] | Config | PersistenceConfig | None, *, where: str = "dict") -> Config:
    """Accept the seed's shapes: the whole dict, or just the ``persistence`` dict."""
    if data is None:
        return Config()
    if isinstance(data, Config):
        return data
    if isinstance(data, PersistenceConfig):
        return Config(persistence=data)
    if not isinstance(data, Mapping):
        raise ConfigError(f"a configuration must be a dict, not {type(data).__name__}")
    whole = any(key in data for key in ("enable_persistence", *_SECTIONS))
    config: Config = _convert(dict(data) if whole else {"persistence": dict(data)}, Config, where)
    return config


def default_config_path(env: Mapping[str, str] | None = None) -> Path | None:
    """``$CELFLOW_CONFIG``, else ``./celflow.toml``, else ``~/.config/celflow/config.toml``, if any exists."""
    env = os.environ if env is None else env
    if env.get("CELFLOW_CONFIG"):
        return Path(env["CELFLOW_CONFIG"])
    xdg = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    for candidate in (Path("celflow.toml"), xdg / "celflow" / "config.toml"):
        if candidate.is_file():
            return candidate
    return None


def env_name(section: str, key: str) -> str:
    """The variable that sets ``section.key``: ``CELFLOW_BATCH_SIZE``, ``CELFLOW_CAPTURE_PATHS``..."""
    if section == "persistence":
        return f"CELFLOW_{key.upper()}"
    return f"CELFLOW_{section.upper()}_{key.upper()}"


def _env_value(raw: str, current: Any) -> Any:
    if isinstance(current, list):
        return [p for p in raw.split(os.pathsep) if p]
    return raw


_JSON_ENV_EXAMPLES = {"drop": '[{"event_type": "clipboard"}]', "redact_patterns": '["sk-[A-Za-z0-9]{20,}"]'}


def _env_json(name: str, key: str, raw: str) -> Any:
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        value = None
    if not isinstance(value, list):
        raise ConfigError(
            f"invalid configuration (environment variable {name}): expected a JSON array, "
            f"e.g. {name}='{_JSON_ENV_EXAMPLES[key]}'"
        )
    return value


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[Config, dict[str, str]]:
    """Build the effective configuration; return it with the origin of every value.

    ``overrides`` maps ``"section.key"`` to a value (command-line flags).
    """
    env = os.environ if env is None else env
    merged: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    top: dict[str, Any] = {}
    origin: dict[str, str] = {}
    config_path = Path(path) if path is not None else default_config_path(env)
    if config_path is not None:
        try:
            with open(config_path, "rb") as f:
                loaded = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"config file {config_path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_path} is not valid TOML: {exc}") from None
        parsed = parse_config(loaded, where=str(config_path))  # validates keys and values
        del parsed
        for key, value in loaded.items():
            if key in _SECTIONS:
                merged[key].update(value)
                origin.update({f"{key}.{k}": f"file {config_path}" for k in value})
            else:
                top[key] = value
                origin[key] = f"file {config_path}"
    defaults = Config()
    for section, kind in _SECTIONS.items():
        for key in kind.__struct_fields__:
            name = env_name(section, key)
            if name in env:
                if (section, key) in _JSON_ENV:
                    value = _env_json(name, key, env[name])
                else:
                    value = _env_value(env[name], getattr(getattr(defaults, section), key))
                _convert({section: {key: value}}, Config, f"environment variable {name}", strict=False)
                merged[section][key] = value
                origin[f"{section}.{key}"] = f"env {name}"
    if "CELFLOW_ENABLE_PERSISTENCE" in env:
        top["enable_persistence"] = env["CELFLOW_ENABLE_PERSISTENCE"]
        origin["enable_persistence"] = "env CELFLOW_ENABLE_PERSISTENCE"
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        _convert({section: {key: value}}, Config, f"command-line option for {dotted}", strict=False)
        merged[section][key] = value
        origin[dotted] = "command line"
    config = _convert({**top, **merged}, Config, "effective settings", strict=False)
    return config, origin


def config_items(config: Config, origin: Mapping[str, str]) -> list[tuple[str, Any, str]]:
    """Every setting as ``(dotted name, value, origin)``, for display."""
    items: list[tuple[str, Any, str]] = [
        ("enable_persistence", config.enable_persistence, origin.get("enable_persistence", "default"))
    ]
    for section in _SECTIONS:
        values = getattr(config, section)
        for key in values.__struct_fields__:
            dotted = f"{section}.{key}"
            items.append((dotted, getattr(values, key), origin.get(dotted, "default")))
    return items
