"""Events out and back in: JSON, JSON Lines, CSV, Parquet, and ActivityWatch's bucket export.

Exports stream page by page into a private (0600) temporary file that is renamed into place only
when complete. Imports stream too, store in batches (each batch is one transaction: all of it or
nothing), are idempotent through dedup, and report every rejected record with its line or index.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

import orjson

from ._database import EventDatabase
from ._encoding import encode_data, prepare_each
from ._exceptions import ExportError, ValidationError
from ._files import writable_target
from ._types import StoredEvent

__all__ = [
    "EXPORT_FORMATS",
    "IMPORT_FORMATS",
    "ImportReport",
    "export_events",
    "export_json",
    "import_events",
    "private_output",
]

ExportFormat = Literal["json", "jsonl", "csv", "parquet"]
ImportFormat = Literal["json", "jsonl", "csv", "parquet", "activitywatch"]
EXPORT_FORMATS: tuple[str, ...] = ("json", "jsonl", "csv", "parquet")
IMPORT_FORMATS: tuple[str, ...] = ("json", "jsonl", "csv", "parquet", "activitywatch")
CSV_COLUMNS = ("id", "timestamp", "event_type", "action", "source", "data", "hash", "processed", "created_at")
BATCH = 5000
PARQUET_ROWS = 16_384  # events per Parquet row group: what an export holds in memory at once
MAX_REJECTS_LISTED = 1000
Progress = Callable[[int], None]


def _dumps(value: Any) -> bytes:
    """JSON of an exported event; data with integers past 64 bits (which orjson refuses) exactly too."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


@contextlib.contextmanager
def private_output(
    output: str | os.PathLike[str], *, force: bool = False, source: str | os.PathLike[str] | None = None
) -> Iterator[BinaryIO]:
    """A binary file that appears at ``output`` (mode 0600) only once the block ends without error.

    ``-`` means standard output. An existing file is replaced only with ``force``.
    """
    if os.fspath(output) == "-":
        yield sys.stdout.buffer
        sys.stdout.flush()
        return
    target = Path(output)
    folder = writable_target(target, force=force, source=source)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=folder)  # created 0600
    except OSError as exc:
        raise ExportError(f"cannot write in {folder}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def format_of(
    path: str | os.PathLike[str], given: str | None, choices: tuple[str, ...], default: str | None = None
) -> str:
    """The format: as given, else from the file name's extension, else ``default``."""
    if given is not None:
        if given not in choices:
            raise ValidationError(f"format must be one of {', '.join(choices)}, got {given!r}", field="format")
        return given
    suffix = Path(path).suffix.lower().lstrip(".")
    guessed = {"ndjson": "jsonl", "jsonlines": "jsonl", "pq": "parquet"}.get(suffix, suffix)
    if guessed not in choices and default is not None:
        return default
    if guessed not in choices:
        raise ValidationError(
            f"cannot tell the format of {os.fspath(path)!r} from its name; pass --format ({', '.join(choices)})",
            field="format",
        )
    return guessed


def _pyarrow() -> Any:
    try:
        import pyarrow as pa  # type: ignore[import-untyped]
        import pyarrow.parquet as pq  # type: ignore[import-untyped]
    except ImportError:
        raise ExportError("Parquet needs pyarrow: pip install 'celflow[parquet]' (or pip install pyarrow)") from None
    return pa, pq


# -- export ------------------------------------------------------------------------------------


def _events(database: EventDatabase, filters: dict[str, Any]) -> Iterator[StoredEvent]:
    return database.iter_events(order=filters.pop("order", "asc"), **filters)


def export_events(
    database: EventDatabase,
    output: str | os.PathLike[str],
    fmt: str | None = None,
    *,
    force: bool = False,
    progress: Progress | None = None,
    **filters: Any,
) -> int:
    """Write matching events, oldest first, as json / jsonl / csv / parquet; return the count.

    Takes the filters of :meth:`EventDatabase.get_events`. Memory stays flat: events are read
    and written a page at a time.
    """
    fmt = format_of(output, fmt, EXPORT_FORMATS, default="json")  # the seed's format
    if fmt == "parquet":
        if os.fspath(output) == "-":
            raise ExportError("Parquet cannot go to standard output; give a file name")
        pa, pq = _pyarrow()
    events = _events(database, dict(filters))
    count = 0
    with private_output(output, force=force, source=database.store.path) as f:
        if fmt == "json":
            f.write(b"[")
            for event in events:
                f.write(b"\n" if count == 0 else b",\n")
                f.write(_dumps(event.to_dict()))
                count += 1
                if progress and count % 1000 == 0:
                    progress(1000)
            f.write(b"\n]\n" if count else b"]\n")
        elif fmt == "jsonl":
            for event in events:
                f.write(_dumps(event.to_dict()) + b"\n")
                count += 1
                if progress and count % 1000 == 0:
                    progress(1000)
        elif fmt == "csv":
            text = io.TextIOWrapper(f, encoding="utf-8", newline="", write_through=True)
            writer = csv.writer(text, lineterminator="\r\n")
            writer.writerow(CSV_COLUMNS)
            for event in events:
                writer.writerow(_csv_row(event))
                count += 1
                if progress and count % 1000 == 0:
                    progress(1000)
            text.detach()
        else:
            count = _write_parquet(f, events, pa, pq, progress)
        if progress:
            progress(count % 1000 if fmt != "parquet" else 0)
    return count


def export_json(database: EventDatabase, output: str | os.PathLike[str], *, force: bool = False, **filters: Any) -> int:
    """The seed's export: matching events, oldest first, as a JSON array; return the count."""
    return export_events(database, output, "json", force=force, **filters)


def _csv_row(event: StoredEvent) -> list[Any]:
    data = encode_data(event.data).decode()
    return [
        event.id,
        repr(event.timestamp),
        event.event_type,
        "" if event.action is None else event.action,
        event.source,
        data,
        event.hash,
        int(event.processed),
        event.created_at,
    ]


def _parquet_schema(pa: Any) -> Any:
    return pa.schema(
        [
            ("id", pa.int64()),
            ("timestamp", pa.float64()),
            ("event_type", pa.string()),
            ("action", pa.string()),
            ("source", pa.string()),
            ("data", pa.string()),  # JSON text: any shape of data fits one column
            ("hash", pa.string()),
            ("processed", pa.bool_()),
            ("created_at", pa.string()),
        ]
    )


def _write_parquet(f: BinaryIO, events: Iterable[StoredEvent], pa: Any, pq: Any, progress: Progress | None) -> int:
    schema = _parquet_schema(pa)
    count = 0
    with pq.ParquetWriter(f, schema, compression="zstd") as writer:
        columns: dict[str, list[Any]] = {name: [] for name in schema.names}

        def flush() -> None:
            writer.write_table(pa.table(columns, schema=schema))
            for values in columns.values():
                values.clear()

        for event in events:
            columns["id"].append(event.id)
            columns["timestamp"].append(event.timestamp)
            columns["event_type"].append(event.event_type)
            columns["action"].append(event.action)
            columns["source"].append(event.source)
            columns["data"].append(encode_data(event.data).decode())
            columns["hash"].append(event.hash)
            columns["processed"].append(event.processed)
            columns["created_at"].append(event.created_at)
            count += 1
            if len(columns["id"]) == PARQUET_ROWS:
                flush()
                if progress:
                    progress(PARQUET_ROWS)
        if columns["id"]:
            if progress:
                progress(len(columns["id"]))
            flush()
    return count


# -- import ------------------------------------------------------------------------------------


@dataclass
class ImportReport:
    """What an import did: counts, and each rejected record's place (line or index) and reason."""

    imported: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejects: list[tuple[str, str]] = field(default_factory=list)

    def reject(self, where: str, message: str) -> None:
        self.rejected += 1
        if len(self.rejects) < MAX_REJECTS_LISTED:
            self.rejects.append((where, message))

    def to_dict(self) -> dict[str, Any]:
        return {
            "imported": self.imported,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "rejects": [{"where": w, "message": m} for w, m in self.rejects],
        }


Record = tuple[str, Any]  # (where, the event dict or an error message for a record that did not parse)


class _Unreadable(str):
    """A record that could not be parsed: the message."""


def _jsonl_records(path: Path) -> Iterator[Record]:
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield f"line {number}", orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield f"line {number}", _Unreadable(f"not valid JSON: {exc}")


def _json_records(path: Path) -> Iterator[Record]:
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ValidationError(f"{path} is not valid JSON ({exc}); nothing was imported") from None
    if not isinstance(data, list):
        raise ValidationError(f"{path} must hold a JSON array of events (CelFlow's JSON export); nothing was imported")
    for index, record in enumerate(data):
        yield f"index {index}", record


def _csv_records(path: Path) -> Iterator[Record]:
    csv.field_size_limit(64 * 1024 * 1024)
    try:
        yield from _csv_rows(path)
    except UnicodeDecodeError as exc:
        raise ValidationError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _csv_rows(path: Path) -> Iterator[Record]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        missing = {"timestamp", "event_type", "source"} - set(header or ())
        if header is None or missing:
            raise ValidationError(
                f"{path} has no CSV header with {', '.join(sorted(missing)) or 'the columns'} "
                f"(expected {','.join(CSV_COLUMNS)}); nothing was imported"
            )
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield f"line {reader.line_num}", _Unreadable(f"not valid CSV: {exc}")
                continue
            where = f"line {reader.line_num}"
            if len(row) != len(header):
                yield where, _Unreadable(f"has {len(row)} fields; the header has {len(header)}")
                continue
            record = dict(zip(header, row, strict=True))
            yield where, _from_text_columns(record)


def _from_text_columns(record: dict[str, Any]) -> Any:
    """A CSV/Parquet row as an event dict (data is JSON text; action '' is none)."""
    event: dict[str, Any] = {
        "event_type": record.get("event_type"),
        "source": record.get("source"),
        "action": record.get("action") or None,
    }
    if record.get("hash"):
        event["hash"] = record["hash"]
    ts = record.get("timestamp")
    if isinstance(ts, str):
        with contextlib.suppress(ValueError):  # else an ISO text: validation parses it or names it
            ts = float(ts)
    event["timestamp"] = ts
    data = record.get("data")
    if data not in (None, ""):
        try:
            event["data"] = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            return _Unreadable(f"data is not valid JSON: {exc}")
    return event


def _parquet_records(path: Path) -> Iterator[Record]:
    _, pq = _pyarrow()
    try:
        source = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise ValidationError(f"{path} is not a readable Parquet file ({exc}); nothing was imported") from None
    row = 0
    try:
        for batch in source.iter_batches(batch_size=BATCH):
            for record in batch.to_pylist():
                yield f"row {row}", _from_text_columns(record)
                row += 1
    except Exception as exc:  # noqa: BLE001
        raise ValidationError(f"{path} is damaged after row {row} ({exc})") from None


def _activitywatch_records(path: Path) -> Iterator[Record]:
    """aw-server's export: ``{"buckets": {id: {"type", "hostname", "events": [{timestamp, duration, data}]}}}``."""
    try:
        export = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ValidationError(f"{path} is not valid JSON ({exc}); nothing was imported") from None
    buckets = export.get("buckets") if isinstance(export, dict) else None
    if not isinstance(buckets, dict):
        raise ValidationError(f"{path} is not an ActivityWatch export (no 'buckets' object); nothing was imported")
    for bucket_id, bucket in buckets.items():  # every bucket first: a bad one stops the import before it starts
        if not isinstance(bucket, dict) or not isinstance(bucket.get("events"), list):
            raise ValidationError(f"bucket {bucket_id!r} has no 'events' list; nothing was imported")
    for bucket_id, bucket in buckets.items():
        events = bucket["events"]
        for index, event in enumerate(events):
            where = f"bucket {bucket_id} event {index}"
            if not isinstance(event, dict):
                yield where, _Unreadable("an event must be an object")
                continue
            data = event.get("data")
            aw_id = event.get("id")
            yield (
                where,
                {
                    # ActivityWatch's own id, when it has one: a later export of the same event
                    # (its duration grown) is the same event, not a new one
                    **({"idempotency_key": f"aw:{bucket_id}:{aw_id}"} if isinstance(aw_id, int) else {}),
                    "event_type": bucket.get("type") or "activitywatch",
                    "source": str(bucket_id),
                    "timestamp": event.get("timestamp"),
                    "data": {
                        "duration": event.get("duration", 0),
                        **(data if isinstance(data, dict) else {"value": data}),
                        "hostname": bucket.get("hostname"),
                    },
                },
            )


_READERS: dict[str, Callable[[Path], Iterator[Record]]] = {
    "json": _json_records,
    "jsonl": _jsonl_records,
    "csv": _csv_records,
    "parquet": _parquet_records,
    "activitywatch": _activitywatch_records,
}


def _is_hash(value: object) -> bool:
    return isinstance(value, str) and len(value) == 16 and all(c in "0123456789abcdef" for c in value)


def import_events(
    database: EventDatabase,
    path: str | os.PathLike[str],
    fmt: str | None = None,
    *,
    progress: Progress | None = None,
) -> ImportReport:
    """Store the events of a file (a CelFlow export, or ActivityWatch's); report what happened.

    Stored in batches of 5,000, each one transaction; an event already stored (same timestamp
    and content, or idempotency key) counts as a duplicate, so importing a file twice stores
    nothing new. A file whose structure is broken raises :class:`ValidationError`; bad records
    are rejected one by one, with their line or index.
    """
    source = Path(path)
    if not source.is_file():
        raise ValidationError(f"{source} is not a file", field="path")
    fmt = format_of(source, fmt, IMPORT_FORMATS)
    report = ImportReport()
    store = database.store
    pending: list[Any] = []
    places: list[str] = []

    def flush() -> None:
        kept: list[int] = []  # the records with a row: not rejected, not dropped by a privacy rule
        rows, errors = prepare_each(pending, database.options, kept=kept)
        # A CelFlow export carries each event's hash: keep it, so an event stored with an
        # idempotency key (whose hash is the key's) is still the same event on import. Not under
        # privacy rules: the hash of the original content could be guessed back from a redacted event.
        keep_hash = database.options.privacy is None
        rows = [
            row._replace(hash=pending[i]["hash"]) if keep_hash and _is_hash(pending[i].get("hash")) else row
            for row, i in zip(rows, kept, strict=True)
        ]
        for error in errors:
            report.reject(places[error.index or 0], str(error).removeprefix(f"event {error.index}: "))
        if rows:
            result = store.insert_events(rows, want_ids=False)
            report.imported += result.inserted
            report.duplicates += result.duplicates
        if progress:
            progress(len(pending))
        pending.clear()
        places.clear()

    for where, record in _READERS[fmt](source):
        if isinstance(record, _Unreadable):
            report.reject(where, str(record))
            continue
        pending.append(record)
        places.append(where)
        if len(pending) >= BATCH:
            flush()
    flush()
    return report
