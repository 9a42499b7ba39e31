"""Claude Code's OpenTelemetry logs and metrics -> events of our contract.

Pure: the capture settings and the size cap are passed in; nothing here does
I/O. The rules, with the table of every Claude Code event, are in
docs/events.md ("Claude Code's OpenTelemetry events").

* A log record is one event: ``event_type`` is Claude's event name without
  ``claude_code.`` (``claude_code.api_request`` -> ``api_request``); a name
  we do not know yet becomes ``otel_event``. ``hook_type`` keeps the full name.
* Every record attribute goes into ``payload`` under Claude's own name; the
  seven numbers of ``api_request`` are given exact types (``API_REQUEST_TYPES``).
* A metric data point is one ``otel_metric`` event (metrics.py; why: docs/events.md).
* ``event_id`` is derived from the record (or data point) and its resource,
  so an exporter that resends a request makes no second row.
* Content follows ``[capture]`` with the hooks' own rules (capture/mapping.py).
* A record that cannot be mapped becomes an ``error`` event; the others of
  the request are mapped as usual. Records of other programs are not kept.
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson

from tray_app import events
from tray_app.capture import mapping as hook_mapping
from tray_app.config import CaptureSettings

PLATFORM = "claude_code"
SOURCE = "otlp"
PREFIX = "claude_code."
SERVICE = "claude-code"
UNKNOWN_SESSION = "unknown"

#: Claude Code's documented events (code.claude.com/docs/en/monitoring-usage,
#: read 2026-12-02): short name -> our event_type (the same word throughout)
CLAUDE_EVENTS = {name: name for name in (
    "user_prompt", "assistant_response", "tool_result", "tool_decision", "api_request",
    "api_error", "api_refusal", "api_retries_exhausted", "api_request_body", "api_response_body",
    "permission_mode_changed", "auth", "mcp_server_connection", "internal_error",
    "plugin_installed", "plugin_loaded", "skill_activated", "at_mention", "hook_registered",
    "hook_execution_start", "hook_execution_complete", "hook_plugin_metrics", "compaction",
    "subagent_completed", "feedback_survey", "retention_sweep")}
GENERIC_TYPE = "otel_event"
METRIC_TYPE = "otel_metric"
ERROR_TYPE = "error"

#: api_request: the keys the usage report reads, with their exact types
API_REQUEST_TYPES: dict[str, type] = {
    "model": str, "cost_usd": float, "input_tokens": int, "output_tokens": int,
    "cache_read_tokens": int, "cache_creation_tokens": int, "duration_ms": int,
}
#: attributes that become fields of the event rather than payload keys
FIELD_ATTRS = ("event.name", "event.timestamp", "session.id")
#: attributes also copied into metadata (as the hooks do) for joins with hook events
META_ATTRS = {"prompt.id": "prompt_id", "tool_use_id": "tool_use_id", "tool_name": "tool_name",
              "model": "model", "request_id": "request_id"}
RESOURCE_META = {"service.name": "service_name", "service.version": "service_version"}

#: (event short name, attribute) -> the [capture] setting that governs it
CONTENT_ATTRS = {
    ("user_prompt", "prompt"): "prompts",
    ("assistant_response", "response"): "responses",
    ("api_request_body", "body"): "prompts",        # the system prompt, messages and tools sent
    ("api_response_body", "body"): "responses",
}
#: tool events: JSON-string attributes holding the tool's arguments, read as the
#: hooks' ``tool_input`` (file text under file_contents, a subagent's prompt under prompts)
TOOL_EVENTS = ("tool_result", "tool_decision")
TOOL_JSON_ATTRS = ("tool_input", "tool_parameters")

Settings = Mapping[str, Any]


@dataclass
class Mapped:
    """What one request became."""

    events: list[dict[str, Any]] = field(default_factory=list)
    #: records / data points not kept as their own event (error events, other programs)
    rejected: int = 0
    problems: list[str] = field(default_factory=list)

    def reject(self, problem: str) -> None:
        self.rejected += 1
        if problem not in self.problems and len(self.problems) < 5:
            self.problems.append(problem)

    @property
    def message(self) -> str:
        return "; ".join(self.problems)


def capture_settings(capture: CaptureSettings, max_payload_bytes: int) -> dict[str, Any]:
    """The hook mapping's settings dict from ``[capture]`` and the payload cap."""
    return {"prompts": capture.prompts, "responses": capture.responses,
            "file_contents": capture.file_contents, "shell_output": capture.shell_output,
            "max_input_bytes": max_payload_bytes}


# ----------------------------------------------------------------------------- values

def value_of(any_value: Any) -> Any:
    """An OTLP ``AnyValue`` as plain JSON-able data (bytes as base64)."""
    kind = any_value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value_of(v) for v in any_value.array_value.values]
    if kind == "kvlist_value":
        return attributes(any_value.kvlist_value.values)
    if kind == "bytes_value":
        return base64.b64encode(any_value.bytes_value).decode()
    value = getattr(any_value, kind)
    if kind == "double_value" and not math.isfinite(value):
        return repr(value)  # JSON has no NaN / Infinity
    return value


def attributes(kvs: Iterable[Any]) -> dict[str, Any]:
    return {kv.key: value_of(kv.value) for kv in kvs}


def iso_from_nanos(nanos: int) -> str | None:
    if nanos <= 0:
        return None
    secs, ns = divmod(nanos, 1_000_000_000)
    dt = datetime.fromtimestamp(secs, timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ns // 1000:06d}Z"


def iso_or_none(value: Any) -> str | None:
    """An ISO-8601 attribute value as our UTC form, or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = events.parse_timestamp(value)
    except ValueError:
        return None
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            try:
                f = float(text)
            except ValueError:
                return None
            return int(f) if f.is_integer() else None
    return None


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        f = float(value)
    elif isinstance(value, str):
        try:
            f = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return f if math.isfinite(f) else None


def _as_str(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    return None if value is None or isinstance(value, (dict, list)) else str(value)


CONVERT: dict[type, Callable[[Any], Any]] = {int: _as_int, float: _as_float, str: _as_str}


def typed_api_request(payload: dict[str, Any]) -> dict[str, Any]:
    """Give the API_REQUEST_TYPES keys their exact types (Claude Code may send
    numbers as strings). Returns {key: original} for values that did not
    convert; those keys are taken out of the payload (kept in metadata)."""
    unparsed: dict[str, Any] = {}
    for key, typ in API_REQUEST_TYPES.items():
        if key not in payload:
            continue
        converted = CONVERT[typ](payload[key])
        if converted is None:
            unparsed[key] = payload.pop(key)
        else:
            payload[key] = converted
    return unparsed


# ----------------------------------------------------------------------------- privacy

def _tool_json_privacy(payload: dict[str, Any], settings: Settings, redacted: dict[str, str]) -> None:
    """tool_input / tool_parameters (JSON strings): the hooks' tool_input rules."""
    tool = payload.get("tool_name")
    for key in TOOL_JSON_ATTRS:
        raw = payload.get(key)
        if not isinstance(raw, str) or not raw:
            continue
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            # cut short by Claude (~4 K) or not an object: the whole text is file content
            hook_mapping.apply_mode(payload, key, settings["file_contents"], key, redacted)
            continue
        found = hook_mapping.apply_privacy({"tool_name": tool, "tool_input": parsed}, settings)
        if found:
            payload[key] = orjson.dumps(parsed).decode()
            for path, mode in found.items():
                redacted[key + path.removeprefix("tool_input")] = mode
    if tool in hook_mapping.SHELL_TOOLS:  # a failed command's error text carries its output
        hook_mapping.apply_mode(payload, "error", settings["shell_output"], "error", redacted)


def apply_privacy(short: str, payload: dict[str, Any], settings: Settings) -> dict[str, str]:
    """Apply ``[capture]`` to one event's payload in place; {path: mode} of what changed."""
    redacted: dict[str, str] = {}
    for (event, key), setting in CONTENT_ATTRS.items():
        if event == short:
            hook_mapping.apply_mode(payload, key, settings[setting], key, redacted)
    if short in TOOL_EVENTS:
        _tool_json_privacy(payload, settings, redacted)
    return redacted


# ----------------------------------------------------------------------------- logs

def event_name(record: Any, attrs: Mapping[str, Any], resource: Mapping[str, Any]) -> str | None:
    """The record's full event name: the LogRecord ``event_name`` field, the
    ``event.name`` attribute, or a string body (Claude Code sends the full name
    as the body and the short one as ``event.name``)."""
    candidates = [record.event_name, attrs.get("event.name")]
    if record.body.WhichOneof("value") == "string_value":
        candidates.append(record.body.string_value)
    names = [c for c in candidates if isinstance(c, str) and c]
    for name in names:
        if name.startswith(PREFIX):
            return name
    if not names:
        return None
    return PREFIX + names[0] if resource.get("service.name") == SERVICE else names[0]


def is_claude(name: str | None, resource: Mapping[str, Any]) -> bool:
    return (name or "").startswith(PREFIX) or resource.get("service.name") == SERVICE


def session_of(attrs: Mapping[str, Any], resource: Mapping[str, Any]) -> str:
    for source in (attrs, resource):
        value = source.get("session.id")
        if isinstance(value, str) and value:
            return value[:events.MAX_ID_LEN]
    return UNKNOWN_SESSION


def resource_meta(resource: Mapping[str, Any]) -> dict[str, Any]:
    return {meta: resource[attr] for attr, meta in RESOURCE_META.items()
            if isinstance(resource.get(attr), (str, int, float))}


def fit(payload: dict[str, Any], metadata: dict[str, Any], settings: Settings) -> dict[str, Any]:
    payload, _, truncated = hook_mapping.fit(payload, settings["max_input_bytes"])
    if truncated:
        metadata["truncated"] = True
    return payload


def digest(*messages: Any) -> bytes:
    h = hashlib.sha256()
    for m in messages:
        h.update(m.SerializeToString(deterministic=True))
        h.update(b"\x1f")
    return h.digest()


def log_event(record: Any, resource_msg: Any, resource: Mapping[str, Any], scope: Any,
              settings: Settings) -> dict[str, Any] | None:
    """One Claude Code log record -> one event; None when it is not Claude Code's.
    Raises ValueError (or another exception) when it cannot be mapped."""
    attrs = attributes(record.attributes)
    name = event_name(record, attrs, resource)
    if not is_claude(name, resource):
        return None
    if name is None:
        raise ValueError("the log record has no event name (no event_name, event.name or body)")
    short = name.removeprefix(PREFIX)
    event_type = CLAUDE_EVENTS.get(short, GENERIC_TYPE)
    timestamp = (iso_or_none(attrs.get("event.timestamp")) or iso_from_nanos(record.time_unix_nano)
                 or iso_from_nanos(record.observed_time_unix_nano) or events.utc_now_iso())
    session = session_of(attrs, resource)
    payload = {k: v for k, v in attrs.items() if k not in FIELD_ATTRS}
    metadata: dict[str, Any] = {"source": SOURCE, "otel_event_name": name, **resource_meta(resource)}
    if scope.name:
        metadata["otel_scope"] = scope.name
    if any(record.trace_id):  # with Claude Code's (beta) tracing on: joins the event to its span
        metadata["trace_id"] = record.trace_id.hex()
        metadata["span_id"] = record.span_id.hex()
    if event_type == "api_request":
        unparsed = typed_api_request(payload)
        if unparsed:
            metadata["otel_unparsed"] = unparsed
    for attr, meta in META_ATTRS.items():
        value = payload.get(attr)
        if isinstance(value, (str, int, float)):
            metadata[meta] = value[:hook_mapping.META_MAX_CHARS] if isinstance(value, str) else value
    body = value_of(record.body)
    if body is not None and body != name and body != short:
        payload["otel_body"] = body  # Claude Code's body is the event name; anything else is kept
    redacted = apply_privacy(short, payload, settings)
    if redacted:
        metadata["redacted"] = redacted
    payload = fit(payload, metadata, settings)
    return {
        "event_id": events.deterministic_event_id("otlp-log", digest(resource_msg, record)),
        "platform": PLATFORM,
        "event_type": event_type,
        "timestamp": timestamp,
        "session_id": session,
        "external_session_id": session if session != UNKNOWN_SESSION else None,
        "hook_type": name,
        "payload": payload,
        "metadata": metadata,
        "schema_version": events.SCHEMA_VERSION,
    }


def error_event(kind: str, record_digest: bytes, problem: str, session: str, timestamp: str | None,
                name: str | None) -> dict[str, Any]:
    """The ``error`` event kept in place of a record that could not be mapped."""
    payload: dict[str, Any] = {"error": problem[:500], "record_sha256": record_digest.hex()}
    if name:
        payload["otel_event_name"] = name[:200]
    return {
        "event_id": events.deterministic_event_id("otlp-error", kind, record_digest),
        "platform": PLATFORM,
        "event_type": ERROR_TYPE,
        "timestamp": timestamp or events.utc_now_iso(),
        "session_id": session,
        "hook_type": "invalid_otlp_record",
        "payload": payload,
        "metadata": {"source": SOURCE, "invalid_input": f"unmappable_{kind}"},
        "schema_version": events.SCHEMA_VERSION,
    }


def checked(event: dict[str, Any]) -> dict[str, Any]:
    reason = events.validate(event)
    if reason is not None:
        raise ValueError(f"{reason[0]}: {reason[1]}")
    return event


def map_logs(request: Any, settings: Settings) -> Mapped:
    out = Mapped()
    others = 0
    for rl in request.resource_logs:
        resource = attributes(rl.resource.attributes)
        for sl in rl.scope_logs:
            for record in sl.log_records:
                try:
                    event = log_event(record, rl.resource, resource, sl.scope, settings)
                    if event is None:
                        others += 1
                        continue
                    out.events.append(checked(event))
                except Exception as exc:  # noqa: BLE001 - this record's problem, not the request's
                    problem = f"{type(exc).__name__}: {exc}"
                    attrs = safe_attrs(record)
                    out.events.append(error_event(
                        "log_record", digest(rl.resource, record), problem, session_of(attrs, resource),
                        iso_from_nanos(record.time_unix_nano), _safe_name(record, attrs, resource)))
                    out.reject(f"log record not mapped ({problem[:200]}): kept as an error event")
    if others:
        out.rejected += others
        out.problems.append(f"{others} log record(s) are not Claude Code events: not kept")
    return out


def safe_attrs(record: Any) -> dict[str, Any]:
    try:
        return attributes(record.attributes)
    except Exception:  # noqa: BLE001 - only for the error event's session
        return {}


def _safe_name(record: Any, attrs: Mapping[str, Any], resource: Mapping[str, Any]) -> str | None:
    try:
        return event_name(record, attrs, resource)
    except Exception:  # noqa: BLE001
        return None


__all__ = ["API_REQUEST_TYPES", "CLAUDE_EVENTS", "Mapped", "attributes", "capture_settings", "checked",
           "digest", "error_event", "fit", "is_claude", "iso_from_nanos", "log_event", "map_logs",
           "resource_meta", "safe_attrs", "session_of", "typed_api_request"]
