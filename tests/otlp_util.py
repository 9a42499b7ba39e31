"""Helpers for the OTLP receiver tests: Claude Code shaped telemetry built with
the real OpenTelemetry Python SDK, and sent by its OTLP/HTTP exporters."""

from __future__ import annotations

import base64
import json
import sqlite3
import urllib.error
import urllib.request
import zlib
from contextlib import closing
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.resources import Resource

SESSION = "9f0c7c1e-2b7d-4d5e-9a53-6f3f0d0b2c11"
RESOURCE = {"service.name": "claude-code", "service.version": "2.1.250", "os.type": "linux"}
T0 = 1_764_662_400_000_000_000  # 2025-12-02T08:00:00Z in ns


def standard(**extra: Any) -> dict[str, Any]:
    """The standard attributes Claude Code puts on every event."""
    attrs = {"session.id": SESSION, "user.id": "a" * 64, "organization.id": "org-1",
             "terminal.type": "tmux", "prompt.id": "p-1"}
    attrs.update(extra)
    return attrs


def claude_event(short: str, n: int = 0, **attrs: Any) -> dict[str, Any]:
    """One event as Claude Code logs it: body = the full name, event.name = the
    short one, event.timestamp ISO-8601, event.sequence."""
    return {"body": f"claude_code.{short}", "timestamp": T0 + n * 1_000_000,
            "attributes": standard(**{"event.name": short, "event.timestamp":
                                      f"2025-12-02T08:00:0{n}.{n:03d}Z", "event.sequence": n, **attrs})}


def log_records(specs: list[dict[str, Any]], resource: dict[str, Any] | None = None) -> list[Any]:
    """The SDK's readable log records for ``specs`` (Logger.emit keyword arguments)."""
    captured = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=Resource.create(resource or RESOURCE))
    provider.add_log_record_processor(SimpleLogRecordProcessor(captured))
    logger = provider.get_logger("com.anthropic.claude_code.events", "2.1.250")
    for spec in specs:
        logger.emit(**spec)
    provider.shutdown()
    return list(captured.get_finished_logs())


def metrics_data(record: Any, resource: dict[str, Any] | None = None) -> Any:
    """Metrics recorded by ``record(meter)`` with delta temporality, as Claude Code
    exports them by default; returns the SDK's MetricsData."""
    reader = InMemoryMetricReader(preferred_temporality={Counter: AggregationTemporality.DELTA})
    provider = MeterProvider(resource=Resource.create(resource or RESOURCE), metric_readers=[reader])
    record(provider.get_meter("com.anthropic.claude_code", "2.1.250"))
    data = reader.get_metrics_data()
    provider.shutdown()
    return data


def otlp_json(message: Any) -> bytes:
    """The OTLP JSON encoding of a request (OTLP specification, "JSON Protobuf
    Encoding"): protobuf's JSON mapping, except that trace and span ids are hex,
    not base64, and enums are integers."""
    obj = json_format.MessageToDict(message, use_integers_for_enums=True)

    def hexify(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key in ("traceId", "spanId", "parentSpanId") and isinstance(item, str):
                    value[key] = base64.b64decode(item).hex()
                else:
                    hexify(item)
        elif isinstance(value, list):
            for item in value:
                hexify(item)

    hexify(obj)
    return json.dumps(obj, indent=1).encode()


def logs_json(records: list[Any]) -> bytes:
    """The OTLP JSON encoding of the request the SDK's exporter would send."""
    return otlp_json(encode_logs(records))


def metrics_json(data: Any) -> bytes:
    return otlp_json(encode_metrics(data))


def post(url: str, body: bytes, content_type: str = "application/x-protobuf", *,
         method: str = "POST", headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    """(status, body, headers) of one plain HTTP request."""
    req = urllib.request.Request(url, data=body if method != "GET" else None, method=method,
                                 headers={"Content-Type": content_type, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def otlp_rows(db: Path) -> list[dict[str, Any]]:
    """Every stored event whose metadata.source is otlp, with its columns."""
    if not db.exists():
        return []
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as c:
        try:
            rows = c.execute("SELECT event_id, event_type, session_id, hook_type, source, timestamp, "
                             "event_data FROM raw_traces WHERE source='otlp' ORDER BY sequence").fetchall()
        except sqlite3.OperationalError:
            return []
    out = []
    for eid, et, sid, ht, src, ts, blob in rows:
        data = json.loads(zlib.decompress(blob))
        out.append({"event_id": eid, "event_type": et, "session_id": sid, "hook_type": ht,
                    "source": src, "timestamp": ts, "payload": data.get("payload"),
                    "metadata": data.get("metadata")})
    return out
