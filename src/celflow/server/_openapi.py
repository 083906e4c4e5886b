"""The API's OpenAPI 3.1 description, served at ``/api/v1/openapi.json``.

Written out here, next to the handlers it describes; the API tests run schemathesis against it,
so an answer the description does not allow (a status, a field) fails the suite.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .. import __version__
from .._types import Pattern, StoredEvent, SystemStats

__all__ = ["openapi"]

_ERROR_STATUSES = {
    "400": "A malformed request: bad JSON, a bad parameter (named in `field`)",
    "401": "No token, or a wrong one",
    "403": "A Host header that is not loopback (or in http.allowed_hosts)",
    "413": "The body or the batch is over its limit",
    "415": "An unsupported Content-Type or Content-Encoding",
    "422": "Events that fail validation: every one with its index; nothing was stored",
    "503": (
        "The queue is full (Retry-After), a query ran past its time limit, the database server or the bus "
        "is away (Retry-After), or the service is stopping"
    ),
}


def _param(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


_TIME = {"type": "number", "minimum": 0, "exclusiveMaximum": 7258118400}
_NUMBER = {"type": "number", "minimum": -9.2e18, "maximum": 9.2e18}  # SQLite's 64-bit integers
_FILTERS = [
    _param(
        "start_time", "Only events at or after this time (seconds since the epoch, or ISO 8601 with an offset)", _TIME
    ),
    _param("end_time", "Only events before this time", _TIME),
    _param("event_type", "Only this event_type"),
    _param("source", "Only this source"),
    _param("action", "Only this action"),
    _param(
        "search", "Case-insensitive substring of type, source, action or data", {"type": "string", "maxLength": 1000}
    ),
]
_PAGE = [
    _param("order", "desc (newest first, default) or asc", {"type": "string", "enum": ["desc", "asc"]}),
    _param("limit", "Events per page (default 100)", {"type": "integer", "minimum": 1, "maximum": 10000}),
    _param(
        "cursor",
        "The next_cursor of the previous page",
        {"type": "string", "pattern": "^[0-9]{1,10}(\\.[0-9]{1,7})?:[0-9]{1,18}$"},
    ),
]
_STREAM = [
    _param("event_type", "Only this event_type"),
    _param("source", "Only this source"),
    _param("action", "Only this action"),
    _param(
        "after",
        "Start after this event id: stored events first, then live ones (default: now)",
        {"type": "integer", "minimum": 0},
    ),
]


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _operation(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    errors = {code: {"$ref": "#/components/responses/Error"} for code in _ERROR_STATUSES}
    return {"summary": summary, "responses": {**errors, **responses}, **extra}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def openapi() -> dict[str, Any]:
    """The OpenAPI document of ``create_app``'s routes."""
    schemas, components = msgspec.json.schema_components(
        [StoredEvent, Pattern, SystemStats], ref_template="#/components/schemas/{name}"
    )
    del schemas
    event_in = {
        "type": "object",
        "required": ["event_type", "source"],
        "properties": {
            "event_type": {"type": "string", "minLength": 1, "maxLength": 256},
            "source": {"type": "string", "minLength": 1, "maxLength": 256},
            "action": {"type": ["string", "null"], "maxLength": 256},
            "timestamp": {
                "description": "Seconds since the epoch (ISO 8601 text with an offset is accepted too); default: now",
                "oneOf": [{"type": "number", "minimum": 0, "exclusiveMaximum": 7258118400}, {"type": "null"}],
            },
            "data": {"description": "Any JSON value (an object, usually)"},
            "idempotency_key": {"type": "string", "minLength": 1, "maxLength": 256},
        },
        "additionalProperties": False,
    }
    error = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["status", "message"],
                "properties": {
                    "status": {"type": "integer"},
                    "message": {"type": "string"},
                    "field": {"type": ["string", "null"]},
                    "errors": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "index": {"type": ["integer", "null"]},
                                "field": {"type": ["string", "null"]},
                                "message": {"type": "string"},
                            },
                        },
                    },
                },
            }
        },
    }
    components.update({"EventIn": event_in, "Error": error})
    events_page = {
        "type": "object",
        "required": ["events", "next_cursor"],
        "properties": {
            "events": {"type": "array", "items": _ref("StoredEvent")},
            "next_cursor": {"type": ["string", "null"]},
        },
    }
    ingest_body = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        _ref("EventIn"),
                        {"type": "array", "items": _ref("EventIn"), "minItems": 1, "maxItems": 10000},
                    ]
                }
            },
            "application/x-ndjson": {"schema": {"type": "string", "description": "One event per line"}},
        },
    }
    json_object: dict[str, Any] = {"type": "object"}
    paths: dict[str, Any] = {
        "/health": {
            "get": {
                "summary": "Liveness, and whether the writer is healthy (no token needed)",
                "security": [],
                "responses": {
                    "200": _json(json_object, "Running and the writer is healthy"),
                    "503": _json(json_object, "The writer failed its last batch"),
                    "403": {"$ref": "#/components/responses/Error"},
                },
            }
        },
        "/metrics": {
            "get": _operation(
                "Prometheus metrics (text format)",
                {"200": {"description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}},
            )
        },
        "/api/v1/events": {
            "post": _operation(
                "Store one event or a batch (JSON or JSON Lines, gzip allowed)",
                {
                    "202": _json({"type": "object", "properties": {"accepted": {"type": "integer"}}}, "Queued"),
                    "201": _json(
                        {
                            "type": "object",
                            "properties": {
                                "accepted": {"type": "integer"},
                                "ids": {"type": "array", "items": {"type": "integer"}},
                            },
                        },
                        "Committed (?wait=true): the ids, in input order (a duplicate gets the stored id)",
                    ),
                },
                parameters=[_param("wait", "true: answer after the commit, with the ids", {"type": "boolean"})],
                requestBody=ingest_body,
            ),
            "get": _operation(
                "Query events (the filters of get_events), a page at a time",
                {"200": _json(events_page, "A page and the cursor of the next one")},
                parameters=_FILTERS + _PAGE,
            ),
        },
        "/api/v1/events/count": {
            "get": _operation(
                "Count events, or counts per event_type, source or action",
                {"200": _json(json_object, "{total} or {group_by, counts}")},
                parameters=[
                    *_FILTERS,
                    _param(
                        "group_by",
                        "event_type, source or action",
                        {"type": "string", "enum": ["event_type", "source", "action"]},
                    ),
                ],
            )
        },
        "/api/v1/events/histogram": {
            "get": _operation(
                "Events per time bucket",
                {"200": _json(json_object, "{bucket, buckets: [{start, count}]}")},
                parameters=[
                    *_FILTERS,
                    _param(
                        "bucket",
                        "Bucket width in seconds (default 60)",
                        {"type": "number", "minimum": 1, "maximum": 1e15},
                    ),
                ],
            )
        },
        "/api/v1/export": {
            "get": _operation(
                "Every matching event, oldest first, streamed as JSON Lines or CSV",
                {
                    "200": {
                        "description": "The events",
                        "content": {
                            "application/x-ndjson": {"schema": {"type": "string"}},
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    }
                },
                parameters=[
                    *_FILTERS,
                    _param("format", "jsonl (default) or csv", {"type": "string", "enum": ["jsonl", "csv"]}),
                ],
            )
        },
        "/api/v1/stream/sse": {
            "get": _operation(
                "Live events as Server-Sent Events (id: the event id; Last-Event-ID resumes)",
                {
                    "200": {
                        "description": "An endless event stream",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    }
                },
                parameters=_STREAM,
            )
        },
        "/api/v1/stream": {
            "get": _operation(
                "Live events over a WebSocket: first {last_id}, then {events, last_id} messages",
                {"101": {"description": "Switching to the WebSocket protocol"}},
                parameters=_STREAM,
            )
        },
        "/api/v1/flush": {
            "post": _operation(
                "Answer once everything queued before is committed",
                {"200": _json({"type": "object", "properties": {"flushed": {"type": "boolean"}}}, "Committed")},
            )
        },
        "/api/v1/stats": {
            "get": _operation("The manager's get_stats()", {"200": _json(json_object, "Counters and sizes")})
        },
        "/api/v1/patterns": {
            "get": _operation(
                "Patterns, newest first",
                {
                    "200": _json(
                        {"type": "object", "properties": {"patterns": {"type": "array", "items": _ref("Pattern")}}},
                        "Patterns",
                    )
                },
                parameters=[
                    _param("pattern_type", "Only this type"),
                    _param("event_id", "Only this event's", {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}),
                    _param("embryo_id", "Only this embryo's"),
                    _param("min_confidence", "Confidence at least", _NUMBER),
                    _param("limit", "At most (default 100)", {"type": "integer", "minimum": 1, "maximum": 10000}),
                ],
            ),
            "post": _operation(
                "Store a pattern the host AI found",
                {"201": _json({"type": "object", "properties": {"id": {"type": "integer"}}}, "Stored")},
                requestBody={
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["pattern_type", "confidence", "pattern_data"],
                                "properties": {
                                    "pattern_type": {"type": "string", "minLength": 1},
                                    "confidence": _NUMBER,
                                    "pattern_data": {},
                                    "event_id": {
                                        "oneOf": [
                                            {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
                                            {"type": "null"},
                                        ]
                                    },
                                    "embryo_id": {"type": ["string", "null"]},
                                },
                                "additionalProperties": False,
                            }
                        }
                    },
                },
            ),
        },
        "/api/v1/system-stats": {
            "get": _operation(
                "System stats snapshots, newest first",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {"system_stats": {"type": "array", "items": _ref("SystemStats")}},
                        },
                        "Snapshots",
                    )
                },
                parameters=[
                    _param("start_time", "From (seconds since the epoch)", _TIME),
                    _param("end_time", "Before", _TIME),
                    _param("limit", "At most (default 100)", {"type": "integer", "minimum": 1, "maximum": 10000}),
                ],
            ),
            "post": _operation(
                "Record a system stats snapshot",
                {"201": _json({"type": "object", "properties": {"id": {"type": "integer"}}}, "Recorded")},
                requestBody={
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "timestamp": {"oneOf": [_TIME, {"type": "null"}]},
                                    **{
                                        k: {"oneOf": [_NUMBER, {"type": "null"}]}
                                        for k in (
                                            "total_events",
                                            "events_per_second",
                                            "active_embryos",
                                            "avg_fitness",
                                            "storage_mb",
                                        )
                                    },
                                },
                                "additionalProperties": False,
                            }
                        }
                    },
                },
            ),
        },
        "/api/v1/openapi.json": {"get": _operation("This document", {"200": _json(json_object, "OpenAPI 3.1")})},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "CelFlow",
            "version": __version__,
            "description": "CelFlow's event store over HTTP. All but /health need `Authorization: Bearer <token>`.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {"Error": _json(_ref("Error"), "An error; `message` says what to change")},
        },
    }
