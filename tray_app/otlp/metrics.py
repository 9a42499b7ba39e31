"""Claude Code's OpenTelemetry metrics -> ``otel_metric`` events of our contract.

One event per data point, nothing added up: docs/events.md says why, and what
each payload holds. Only ``claude_code.*`` metrics (or any metric of a
``claude-code`` resource) are kept; the shared rules (sessions, ids, the size
cap, error events) are mapping.py's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format

from tray_app import events
from tray_app.otlp import mapping as m

TEMPORALITY = {0: "unspecified", 1: "delta", 2: "cumulative"}


def _number(point: Any) -> int | float | str | None:
    kind = point.WhichOneof("value")
    if kind is None:
        return None
    value = getattr(point, kind)
    return repr(value) if isinstance(value, float) and not math.isfinite(value) else value


def _points(metric: Any) -> tuple[str, list[tuple[Any, dict[str, Any]]]]:
    """(kind, [(data point, fields of its payload)]) of one metric."""
    kind = metric.WhichOneof("data") or "none"
    if kind in ("sum", "gauge"):
        data = getattr(metric, kind)
        common: dict[str, Any] = {}
        if kind == "sum":
            common = {"temporality": TEMPORALITY.get(data.aggregation_temporality, "unspecified"),
                      "monotonic": data.is_monotonic}
        return kind, [(p, {"value": _number(p), **common}) for p in data.data_points]
    if kind in ("histogram", "exponential_histogram", "summary"):
        data = getattr(metric, kind)
        common = {}
        if hasattr(data, "aggregation_temporality"):
            common["temporality"] = TEMPORALITY.get(data.aggregation_temporality, "unspecified")
        out = []
        for p in data.data_points:
            point = json_format.MessageToDict(p)
            for key in ("attributes", "startTimeUnixNano", "timeUnixNano"):
                point.pop(key, None)
            out.append((p, {"point": point, **common}))
        return kind, out
    return kind, []


def metric_event(metric: Any, kind: str, point: Any, values: dict[str, Any], resource_msg: Any,
                 resource: Mapping[str, Any], settings: m.Settings) -> dict[str, Any]:
    attrs = m.attributes(point.attributes)
    session = m.session_of(attrs, resource)
    payload = {"metric": metric.name, "unit": metric.unit, "kind": kind, **values,
               "start_time": m.iso_from_nanos(point.start_time_unix_nano),
               "time": m.iso_from_nanos(point.time_unix_nano), "attributes": attrs}
    metadata: dict[str, Any] = {"source": m.SOURCE, "otel_metric": metric.name, **m.resource_meta(resource)}
    payload = m.fit(payload, metadata, settings)
    return {
        "event_id": events.deterministic_event_id("otlp-metric", metric.name, m.digest(resource_msg, point)),
        "platform": m.PLATFORM,
        "event_type": m.METRIC_TYPE,
        "timestamp": m.iso_from_nanos(point.time_unix_nano) or events.utc_now_iso(),
        "session_id": session,
        "external_session_id": session if session != m.UNKNOWN_SESSION else None,
        "hook_type": metric.name,
        "payload": payload,
        "metadata": metadata,
        "schema_version": events.SCHEMA_VERSION,
    }


def map_metrics(request: Any, settings: m.Settings) -> m.Mapped:
    out = m.Mapped()
    others = 0
    for rm in request.resource_metrics:
        resource = m.attributes(rm.resource.attributes)
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind, points = _points(metric)
                if not m.is_claude(metric.name, resource):
                    others += len(points)
                    continue
                for point, values in points:
                    try:
                        out.events.append(m.checked(
                            metric_event(metric, kind, point, values, rm.resource, resource, settings)))
                    except Exception as exc:  # noqa: BLE001 - this data point's problem
                        problem = f"{type(exc).__name__}: {exc}"
                        out.events.append(m.error_event(
                            "data_point", m.digest(rm.resource, point), problem,
                            m.session_of(m.safe_attrs(point), resource), m.iso_from_nanos(point.time_unix_nano),
                            metric.name))
                        out.reject(f"data point not mapped ({problem[:200]}): kept as an error event")
    if others:
        out.rejected += others
        out.problems.append(f"{others} data point(s) are not Claude Code metrics: not kept")
    return out


__all__ = ["TEMPORALITY", "map_metrics", "metric_event"]
