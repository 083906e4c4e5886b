"""Pure functions on plain values: validate an event, encode it canonically, hash and compress it.

Everything here runs in the producer's thread, at the call, so a bad event is refused before
anything is queued, and the writer thread only binds ready-made rows.
"""

from __future__ import annotations

import gzip
import json
import math
import struct
import threading
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import msgspec
import orjson
import xxhash
import zstandard

from ._exceptions import CorruptDatabaseError, ValidationError
from ._privacy import PrivacyRules

__all__ = [
    "EncodingOptions",
    "Row",
    "decode_data",
    "encode_data",
    "parse_timestamp",
    "prepare_batch",
    "prepare_each",
    "prepare_event",
]

#: Earliest and latest accepted timestamps: the epoch, and 2200-01-01T00:00:00Z.
MIN_TIMESTAMP = 0.0
MAX_TIMESTAMP = 7_258_118_400.0
MAX_NAME_LENGTH = 256
MAX_SEARCH_LENGTH = 1000  # characters of a search; longer LIKE patterns can pass SQLite's own limit
MAX_KEY_LENGTH = 256

EVENT_FIELDS = frozenset({"event_type", "source", "action", "timestamp", "data", "idempotency_key"})
#: Fields that get_events returns; accepted on input (so a read event can be stored again) and ignored.
OUTPUT_ONLY_FIELDS = frozenset({"id", "hash", "processed", "created_at"})

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_GZIP_MAGIC = b"\x1f\x8b"
_ORJSON_OPTS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
_local = threading.local()
_json_decode = msgspec.json.Decoder().decode  # a reused decoder is a little faster than msgspec.json.decode


class Row(NamedTuple):
    """An event ready for the events table (the column order of the INSERT)."""

    timestamp: float
    event_type: str
    action: str | None
    source: str
    data_json: str | None
    data_compressed: bytes | None
    hash: str


class EncodingOptions(NamedTuple):
    """Limits and thresholds applied when an event is prepared."""

    compression_threshold: int = 1024
    max_event_bytes: int = 16 * 1024 * 1024
    compression_level: int = 3
    #: Applied to each event first (drop, redact); ``None``: no rules, nothing to do.
    privacy: PrivacyRules | None = None


DEFAULT_OPTIONS = EncodingOptions()


def parse_timestamp(value: object, *, field: str = "timestamp") -> float:
    """Return seconds since the epoch for a float/int, an ISO-8601 string or an aware datetime."""
    if isinstance(value, bool):
        raise ValidationError(f"{field} must be a number of seconds, not a bool", field=field)
    if isinstance(value, (int, float)):
        try:
            ts = float(value)
        except OverflowError:  # an int past float's range (~1.8e308)
            raise ValidationError(
                f"{field} is outside 1970-01-01..2200-01-01 (a number too large for a float)", field=field
            ) from None
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValidationError(
                # the text itself is not repeated: it could be anything, a secret too
                f"{field} is not an ISO-8601 date-time (e.g. 2024-05-01T12:00:00Z); "
                f"got a string of {len(value)} characters",
                field=field,
            ) from None
        ts = _aware_timestamp(parsed, field, repr(value[:64]))
    elif isinstance(value, datetime):
        ts = _aware_timestamp(value, field, value.isoformat())
    else:
        raise ValidationError(
            f"{field} must be seconds since the epoch (float), an ISO-8601 string or an aware "
            f"datetime, not {type(value).__name__}",
            field=field,
        )
    if not math.isfinite(ts):
        raise ValidationError(f"{field} must be finite, got {ts}", field=field)
    if not MIN_TIMESTAMP <= ts < MAX_TIMESTAMP:
        hint = " (was it in milliseconds?)" if ts >= MAX_TIMESTAMP else ""
        raise ValidationError(f"{field} {value!r} is outside 1970-01-01..2200-01-01{hint}", field=field)
    return ts


def _aware_timestamp(value: datetime, field: str, shown: str) -> float:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(f"{field} {shown} has no UTC offset; add one (e.g. 'Z' or '+02:00')", field=field)
    return value.timestamp()


def encode_data(data: object) -> bytes:
    """Encode ``data`` as canonical JSON (sorted keys, compact); refuse anything JSON can't hold."""
    try:
        out = orjson.dumps(data, option=_ORJSON_OPTS)
    except TypeError as exc:
        message = str(exc)
        if "64-bit" in message:
            return _encode_stdlib(data)
        if "Recursion" in message:
            raise ValidationError("data is nested more than 254 levels deep", field="data") from None
        raise ValidationError(_describe(data) or message, field="data") from None
    # orjson writes NaN and infinities as null; null is rare enough to check only then, with the
    # standard library's C encoder, which refuses them.
    if b"null" in out and not _all_finite_fast(data):
        raise ValidationError(
            f"{_find_non_finite(data, 'data')} is not a finite number (JSON has no NaN/Infinity)",
            field="data",
        )
    return out


def _encode_stdlib(data: object) -> bytes:
    """Integers beyond 64 bits: the standard library encodes them exactly.

    It also writes what orjson refuses (a key that is not text becomes one: ``True`` -> ``"true"``),
    which would not come back as given: the same values are refused first, with the same message.
    """
    problem = _describe(data)
    if problem is not None:
        raise ValidationError(problem, field="data")
    try:
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except RecursionError:  # deep nesting around a big integer; the walks below would recurse as deep
        raise ValidationError("data is nested too deeply to encode", field="data") from None
    except ValueError as exc:
        if "digits" in str(exc):  # Python converts integers of up to 4,300 digits to text
            raise ValidationError(f"data holds an integer too large to write as text ({exc})", field="data") from None
        try:
            where = _find_non_finite(data, "data")
        except RecursionError:
            where = "data"
        raise ValidationError(f"{where} is not a finite number (JSON has no NaN/Infinity)", field="data") from None
    except TypeError as exc:
        raise ValidationError(_describe(data) or str(exc), field="data") from None
    try:
        return text.encode()
    except UnicodeEncodeError as exc:  # the standard library writes lone surrogates; orjson refuses them
        raise ValidationError(
            f"data holds text that is not valid Unicode (a lone surrogate): {exc}", field="data"
        ) from None


def _describe(data: object) -> str | None:
    """:func:`_describe_non_json` of ``data``, or None if it is nested too deeply to walk."""
    try:
        return _describe_non_json(data, "data")
    except RecursionError:
        return "data is nested too deeply, or holds a value that is not JSON"


def _all_finite_fast(value: object) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return False
    return True


def _all_finite(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_all_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_all_finite(v) for v in value)
    return True


def _find_non_finite(value: object, path: str) -> str:
    if isinstance(value, dict):
        for key, item in value.items():
            if not _all_finite(item):
                return _find_non_finite(item, f"{path}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            if not _all_finite(item):
                return _find_non_finite(item, f"{path}[{i}]")
    return path


def _describe_non_json(value: object, path: str) -> str | None:
    """Name the first value under ``path`` that JSON cannot hold (only runs on the error path)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                # the key itself is not repeated: a tuple key could hold anything, a secret too
                return f"{path} has a key of type {type(key).__name__}; JSON object keys must be str"
            found = _describe_non_json(item, f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = _describe_non_json(item, f"{path}[{i}]")
            if found:
                return found
        return None
    return f"{path} is a {type(value).__name__}, which is not a JSON value (use str, number, bool, None, list or dict)"


def _zstd_compressor(level: int) -> zstandard.ZstdCompressor:
    compressors: dict[int, zstandard.ZstdCompressor] | None = getattr(_local, "compressors", None)
    if compressors is None:
        compressors = _local.compressors = {}
    comp = compressors.get(level)
    if comp is None:
        comp = compressors[level] = zstandard.ZstdCompressor(level=level)
    return comp


def _zstd_decompressor() -> zstandard.ZstdDecompressor:
    dec: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if dec is None:
        dec = _local.decompressor = zstandard.ZstdDecompressor()
    return dec


def _check_text(value: str, field: str) -> None:
    """Refuse text that UTF-8 cannot hold (a lone surrogate, e.g. from ``"\\ud800"`` or bad decoding)."""
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        raise ValidationError(
            f"{field} is not valid Unicode text: it holds a lone surrogate (U+{ord(value[exc.start]):04X}) "
            f"at position {exc.start}",
            field=field,
        ) from None


def _check_name(event: Mapping[str, Any], field: str, *, required: bool) -> str | None:
    value = event.get(field)
    if value is None:
        if required:
            raise ValidationError(f"{field} is required (a non-empty string)", field=field)
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{field} must be a string, not {type(value).__name__}", field=field)
    if required and not value:
        raise ValidationError(f"{field} must not be empty", field=field)
    if len(value) > MAX_NAME_LENGTH:
        raise ValidationError(f"{field} is {len(value)} characters long; the limit is {MAX_NAME_LENGTH}", field=field)
    return value


_ALLOWED_FIELDS = EVENT_FIELDS | OUTPUT_ONLY_FIELDS
_pack_double = struct.Struct("<d").pack  # the timestamp's exact bits, for the hash
_new_row = tuple.__new__  # builds a Row without NamedTuple's Python-level __new__ (hot path)


def prepare_event(
    event: Mapping[str, Any], options: EncodingOptions = DEFAULT_OPTIONS, *, now: float | None = None
) -> Row | None:
    """Validate one event dict and return its row; raise :class:`ValidationError` naming the field.

    With privacy rules in ``options``, they apply first: ``None`` means a drop rule discarded the event.
    """
    if options.privacy is not None:
        event = options.privacy.apply(event)
        if event is None:
            return None
    return _row(event, options, now)


def _row(event: Mapping[str, Any], options: EncodingOptions, now: float | None) -> Row:
    """:func:`prepare_event` after the privacy rules (the batch loops apply them themselves: no call per event)."""
    if type(event) is not dict and not isinstance(event, Mapping):  # the ABC check is slow; skip it for dicts
        raise ValidationError(f"an event must be a dict, not {type(event).__name__}")
    if not _ALLOWED_FIELDS.issuperset(event):
        unknown = sorted(map(str, event.keys() - _ALLOWED_FIELDS))
        raise ValidationError(
            f"unknown field(s) {', '.join(unknown)}; an event has "
            f"{', '.join(sorted(EVENT_FIELDS))} (put anything else inside 'data')",
            field=unknown[0],
        )
    # Inline fast checks; the slow ones, with the messages, only run on bad input.
    event_type = event.get("event_type")
    if type(event_type) is not str or not 0 < len(event_type) <= MAX_NAME_LENGTH:
        event_type = _check_name(event, "event_type", required=True)
    source = event.get("source")
    if type(source) is not str or not 0 < len(source) <= MAX_NAME_LENGTH:
        source = _check_name(event, "source", required=True)
    action = event.get("action")
    if action is not None and (type(action) is not str or len(action) > MAX_NAME_LENGTH):
        action = _check_name(event, "action", required=False)
    assert event_type is not None and source is not None
    if not (event_type.isascii() and source.isascii() and (action is None or action.isascii())):
        for field, text in (("event_type", event_type), ("source", source), ("action", action)):
            if text is not None:
                _check_text(text, field)
    ts = event.get("timestamp")
    if ts is None:
        ts = time.time() if now is None else now
    elif type(ts) is not float or not MIN_TIMESTAMP <= ts < MAX_TIMESTAMP:  # NaN fails the range too
        ts = parse_timestamp(ts)
    encoded = encode_data(event.get("data", {}))
    size = len(encoded) + len(event_type) + len(source) + (len(action) if action else 0)
    if size > options.max_event_bytes:
        raise ValidationError(
            f"event is {size:,} bytes encoded; the limit is {options.max_event_bytes:,} bytes (max_event_bytes)",
            field="data",
        )
    key = event.get("idempotency_key")
    if key is not None:
        if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
            raise ValidationError(
                f"idempotency_key must be a non-empty string of at most {MAX_KEY_LENGTH} characters",
                field="idempotency_key",
            )
        if not key.isascii():
            _check_text(key, "idempotency_key")
        digest = xxhash.xxh3_64_hexdigest(b"key\x00" + key.encode())
    else:
        head = f"{event_type}\x00{source}\x00{action if action is not None else chr(1)}\x00"
        digest = xxhash.xxh3_64_hexdigest(head.encode() + _pack_double(ts) + encoded)
    if len(encoded) > options.compression_threshold:
        packed = _zstd_compressor(options.compression_level).compress(encoded)
        if len(packed) < len(encoded):
            # compress() allocates compressBound(input) and returns the object at its full
            # allocation: a queued row would hold about its uncompressed size. A copy is its size.
            packed = bytes(memoryview(packed))
            return _new_row(Row, (ts, event_type, action, source, None, packed, digest))
    return _new_row(Row, (ts, event_type, action, source, encoded.decode(), None, digest))


def prepare_batch(events: Iterable[Mapping[str, Any]], options: EncodingOptions = DEFAULT_OPTIONS) -> list[Row]:
    """Prepare every event or none: a bad one raises :class:`ValidationError` with its index.

    Events a privacy drop rule discards have no row: the rows are those of the others, in order.
    """
    _check_batch(events)
    now = time.time()
    privacy = options.privacy
    rows = []
    for index, event in enumerate(events):
        try:
            if privacy is not None:
                event = privacy.apply(event)
                if event is None:
                    continue
            rows.append(_row(event, options, now))
        except ValidationError as exc:
            raise ValidationError(str(exc), field=exc.field, index=index) from None
    return rows


def _check_batch(events: object) -> None:
    if isinstance(events, (Mapping, str, bytes)):
        raise ValidationError("a batch must be a list of event dicts, not a single " + type(events).__name__)
    if not isinstance(events, Iterable):
        raise ValidationError(f"a batch must be a list of event dicts, not {type(events).__name__}")


def prepare_each(
    events: Sequence[object], options: EncodingOptions = DEFAULT_OPTIONS, *, kept: list[int] | None = None
) -> tuple[list[Row], list[ValidationError]]:
    """Prepare every event, collecting all the errors (each with its index) instead of the first.

    Events a privacy drop rule discards have neither a row nor an error (``kept``, when given,
    receives the index of each event that has a row).
    """
    _check_batch(events)
    now = time.time()
    privacy = options.privacy
    rows: list[Row] = []
    errors: list[ValidationError] = []
    for index, event in enumerate(events):
        try:
            if privacy is not None:
                event = privacy.apply(event)
                if event is None:
                    continue
            rows.append(_row(event, options, now))  # type: ignore[arg-type]
        except ValidationError as exc:
            errors.append(ValidationError(str(exc), field=exc.field, index=index))
            continue
        if kept is not None:
            kept.append(index)
    return rows, errors


def _decompress(blob: bytes) -> bytes:
    """The bytes of a compressed row, whichever codec wrote it (recognised by its magic number)."""
    head = bytes(blob[:4])
    if head == _ZSTD_MAGIC:
        return bytes(_zstd_decompressor().decompress(blob))
    if head[:2] == _GZIP_MAGIC:
        return gzip.decompress(blob)
    raise ValueError(f"compressed data starts with {head.hex()}: neither zstd nor gzip")


def decode_data(data_json: str | None, data_compressed: bytes | None) -> Any:
    """Decode a stored event's data, whichever codec (none, zstd, gzip) wrote it.

    Stored data that no longer decodes (a damaged page) raises :class:`CorruptDatabaseError`.
    """
    try:
        if data_compressed is not None:
            return _json_decode(_decompress(data_compressed))
        if data_json is None:
            return None
        return _json_decode(data_json)
    except (msgspec.DecodeError, ValueError, zstandard.ZstdError, EOFError, OSError, zlib.error) as exc:
        raise CorruptDatabaseError(
            f"an event's stored data cannot be decoded ({exc}): the database is damaged; stop CelFlow and run "
            "`celflow db recover` (it saves what can be read and keeps the damaged file aside)"
        ) from None


def data_text(data_json: str | None, data_compressed: bytes | None) -> str:
    """The JSON text of a stored event's data (decompressing when needed)."""
    if data_compressed is None:
        return data_json or ""
    return _decompress(data_compressed).decode()
