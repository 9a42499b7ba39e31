"""OTLP/HTTP on the wire: request bodies -> the official protobuf messages, and
the replies, in the request's own encoding (OTLP specification, "OTLP/HTTP").

Pure functions of bytes and headers; every refusal is a :class:`Refused`
carrying the HTTP status and a one-line reason. ``tray_app/otlp/receiver.py``
does the socket work.

* ``application/x-protobuf``: the binary ``Export*ServiceRequest``.
* ``application/json``: the OTLP JSON encoding (camelCase names, hex trace
  ids, 64-bit integers as strings), read by protobuf's ``json_format`` into the
  same message types (the hex ids turned into the base64 it expects first), so
  both encodings map to the same events (and ids).
* ``Content-Encoding: gzip`` is decompressed with the same size cap as a
  plain body: a small bomb cannot expand into memory.
"""

from __future__ import annotations

import base64
import zlib
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest, ExportLogsServiceResponse)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest, ExportMetricsServiceResponse)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

LOGS_PATH = "/v1/logs"
METRICS_PATH = "/v1/metrics"
#: path -> (request type, response type)
SIGNALS: dict[str, tuple[type[Message], type[Message]]] = {
    LOGS_PATH: (ExportLogsServiceRequest, ExportLogsServiceResponse),
    METRICS_PATH: (ExportMetricsServiceRequest, ExportMetricsServiceResponse),
}

#: google.rpc.Code values used in error replies
CODE_INVALID_ARGUMENT = 3
CODE_UNAVAILABLE = 14


class Refused(Exception):
    """A request the receiver answers with an error status."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


def media_type(content_type: str | None) -> str | None:
    """``application/json; charset=utf-8`` -> ``application/json``; None when
    it is neither of the two OTLP encodings."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    return kind if kind in (PROTOBUF, JSON) else None


def decompress(body: bytes, encoding: str | None, max_bytes: int) -> bytes:
    """The body after ``Content-Encoding`` (none/identity or gzip), at most ``max_bytes``."""
    enc = (encoding or "identity").strip().lower()
    if enc in ("", "identity"):
        return body
    if enc != "gzip":
        raise Refused(415, f"Content-Encoding {enc[:40]!r} is not supported (gzip or none)")
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise Refused(400, f"the gzip body does not decompress: {exc}") from None
    if len(out) > max_bytes:
        raise Refused(413, f"the body decompresses to more than {max_bytes} bytes")
    if not inflater.eof:
        raise Refused(400, "the gzip body is truncated")
    return out


def parse(path: str, kind: str, body: bytes) -> Message:
    """The request message for ``path`` from ``body`` in ``kind`` (PROTOBUF or JSON)."""
    request = SIGNALS[path][0]()
    if kind == PROTOBUF:
        try:
            request.ParseFromString(body)
        except (DecodeError, ValueError, RuntimeError) as exc:
            raise Refused(400, f"not an OTLP protobuf {request.DESCRIPTOR.name}: {exc or 'decode error'}") from None
        return request
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Refused(400, f"not OTLP JSON: {str(exc)[:200]}") from None
    if not isinstance(obj, dict):
        raise Refused(400, f"not OTLP JSON for {request.DESCRIPTOR.name}: expected an object")
    try:
        # unknown fields are ignored, as the OTLP specification asks of JSON receivers
        json_format.ParseDict(_hex_ids(obj), request, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise Refused(400, f"not OTLP JSON for {request.DESCRIPTOR.name}: {str(exc)[:200]}") from None
    return request


#: OTLP JSON writes these bytes fields as hex, where protobuf's JSON mapping expects base64
HEX_ID_FIELDS = {"traceId": 32, "spanId": 16, "parentSpanId": 16}


def _hex_ids(value: Any) -> Any:
    """``value`` (parsed OTLP JSON) with hex trace / span ids as base64, in place."""
    if isinstance(value, dict):
        for key, item in value.items():
            size = HEX_ID_FIELDS.get(key)
            if size is not None and isinstance(item, str) and len(item) == size:
                try:
                    value[key] = base64.b64encode(bytes.fromhex(item)).decode()
                except ValueError:
                    pass  # not hex: left for the parser to judge
            elif isinstance(item, (dict, list)):
                _hex_ids(item)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (dict, list)):
                _hex_ids(item)
    return value


def encode(message: Message, kind: str) -> bytes:
    """``message`` in ``kind``; JSON as OTLP writes it (hex ids, compact)."""
    if kind == JSON:
        obj = json_format.MessageToDict(message, use_integers_for_enums=True)
        return orjson.dumps(_base64_to_hex(obj))
    return bytes(message.SerializeToString())


def _base64_to_hex(value: Any) -> Any:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in HEX_ID_FIELDS and isinstance(item, str):
                value[key] = base64.b64decode(item).hex()
            elif isinstance(item, (dict, list)):
                _base64_to_hex(item)
    elif isinstance(value, list):
        for item in value:
            _base64_to_hex(item)
    return value


def success(path: str, kind: str, rejected: int, message: str) -> bytes:
    """An ``Export*ServiceResponse``; ``partial_success`` when ``rejected`` records were not kept."""
    response: Any = SIGNALS[path][1]()
    if rejected:
        partial = response.partial_success
        if path == LOGS_PATH:
            partial.rejected_log_records = rejected
        else:
            partial.rejected_data_points = rejected
        partial.error_message = message
    return encode(response, kind)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def status(code: int, message: str, kind: str | None) -> tuple[bytes, str]:
    """(body, content type) of a ``google.rpc.Status`` error reply (fields 1 code,
    2 message; encoded here: it is the only message of googleapis we need)."""
    if kind == PROTOBUF:
        text = message.encode("utf-8", "replace")
        body = b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text
        return body, PROTOBUF
    return orjson.dumps({"code": code, "message": message}), JSON


__all__ = ["JSON", "LOGS_PATH", "METRICS_PATH", "PROTOBUF", "Refused", "SIGNALS", "decompress",
           "encode", "media_type", "parse", "status", "success"]
