"""Decode an ingestion request body: size limits, gzip, JSON, sendBeacon's text/plain."""

import json
import math
import zlib
from typing import Any

import orjson
from django.conf import settings
from django.http import HttpRequest

from clickserver.errors import ApplicationError
from events.validation import InvalidJsonEvent


def _gunzip(body: bytes, limit: int) -> bytes:
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = decompressor.decompress(body, limit + 1)
    except zlib.error:
        raise ApplicationError("The gzip body is corrupt.", code="malformed_gzip") from None
    if len(data) > limit or decompressor.unconsumed_tail:
        raise ApplicationError(
            f"The decompressed body is larger than {limit} bytes.",
            code="payload_too_large",
            status=413,
        )
    return data


def _body_read(request: HttpRequest, limit: int) -> bytes:
    """The raw body, also when it came chunked (`Transfer-Encoding: chunked`, no length).

    Django reads exactly CONTENT_LENGTH bytes, so without one it sees an empty body. A server
    that decodes chunked bodies says so with `wsgi.input_terminated` (gunicorn does): then the
    input is read to its end, never more than one byte past the limit.
    """
    if request.META.get("CONTENT_LENGTH") or not request.META.get("wsgi.input_terminated"):
        return request.body
    stream = request.META["wsgi.input"]
    parts: list[bytes] = []
    size = 0
    while size <= limit and (part := stream.read(limit + 1 - size)):
        parts.append(part)
        size += len(part)
    return b"".join(parts)


def payload_decode(request: HttpRequest) -> Any:
    """The request's JSON body, enforcing the byte limits (413) and well-formedness (400)."""
    limit = settings.INGEST_MAX_BODY_BYTES
    length = request.META.get("CONTENT_LENGTH")
    if length and length.isdigit() and int(length) > limit:
        raise ApplicationError(
            f"The body is larger than {limit} bytes.", code="payload_too_large", status=413
        )
    body = _body_read(request, limit)
    if len(body) > limit:
        raise ApplicationError(
            f"The body is larger than {limit} bytes.", code="payload_too_large", status=413
        )
    encoding = request.headers.get("Content-Encoding", "").lower()
    if encoding == "gzip" or body[:2] == b"\x1f\x8b":
        body = _gunzip(body, settings.INGEST_MAX_DECOMPRESSED_BYTES)
    elif encoding not in ("", "identity"):
        raise ApplicationError(
            f"Content-Encoding {encoding!r} is not supported; use gzip.",
            code="unsupported_encoding",
            status=415,
        )
    if not body.strip():
        raise ApplicationError("The body is empty.", code="malformed_json")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        # Only a body orjson refuses pays for the second, tolerant parse.
        payload = _tolerant_loads(body)
        if payload is _MALFORMED:
            raise ApplicationError(f"Malformed JSON: {error}", code="malformed_json") from None
        return payload


_MALFORMED = object()
# orjson, which stores properties, takes integers of 64 bits, signed or unsigned.
_INTEGERS = range(-(2**63), 2**64)


def _has_unrepresentable(value: Any) -> bool:
    """Whether `value` holds what orjson and MariaDB refuse: NaN, ±Infinity (1e309 parses as
    Infinity), an integer beyond 64 bits, or a string with a lone surrogate (not UTF-8)."""
    if isinstance(value, dict):
        return any(
            _has_unrepresentable(key) or _has_unrepresentable(item) for key, item in value.items()
        )
    if isinstance(value, list):
        return any(_has_unrepresentable(item) for item in value)
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, float):
        return not math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool) and value not in _INTEGERS


def _is_unrepresentable(value: Any) -> bool:
    try:
        return _has_unrepresentable(value)
    except RecursionError:  # nested deeper than the walk can follow: not storable either
        return True


def _event_or_marker(event: Any) -> Any:
    return InvalidJsonEvent(event) if _is_unrepresentable(event) else event


def _tolerant_loads(body: bytes) -> Any:
    """Parse a body that orjson refused, putting an `InvalidJsonEvent` in place of each event
    that holds NaN, ±Infinity, 1e309 or a lone surrogate, so that its neighbours still count.

    A body that is not JSON even to the stdlib parser, or whose bad value lies outside the events
    (in `sent_at`, say), gives `_MALFORMED`. A single event is returned as a batch of one.
    """
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return _MALFORMED
    if isinstance(payload, dict) and isinstance(payload.get("batch"), list):
        envelope = {key: value for key, value in payload.items() if key != "batch"}
        if _is_unrepresentable(envelope):
            return _MALFORMED
        return {**envelope, "batch": [_event_or_marker(event) for event in payload["batch"]]}
    if isinstance(payload, dict):
        event = _event_or_marker(payload)
        if event is payload:
            return payload
        write_key = payload.get("write_key")
        envelope = {"write_key": write_key} if isinstance(write_key, str) else {}
        if _is_unrepresentable(envelope):
            return _MALFORMED
        return {**envelope, "batch": [event]}
    return _MALFORMED


def batch_unpack(payload: Any, *, key: str = "batch") -> tuple[list[Any], Any]:
    """Split a body into (events, sent_at): one event object or {"batch": [...], "sent_at"}."""
    if isinstance(payload, dict) and key in payload:
        events = payload[key]
        if not isinstance(events, list):
            raise ApplicationError(f"{key} must be a list of events.", code="invalid")
        sent_at = payload.get("sent_at", payload.get("sentAt"))
    elif isinstance(payload, dict):
        events, sent_at = [payload], None
    else:
        raise ApplicationError("The body must be a JSON object.", code="invalid")
    if not events:
        raise ApplicationError(f"{key} is empty.", code="invalid")
    if len(events) > settings.INGEST_MAX_BATCH_EVENTS:
        raise ApplicationError(
            f"A request holds at most {settings.INGEST_MAX_BATCH_EVENTS} events.",
            code="too_many_events",
            status=413,
        )
    return events, sent_at
