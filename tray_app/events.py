"""The event contract between producers (hooks, monitors) and the engine.

A stream entry is a flat hash of strings. ``encode`` turns an event (a dict)
into such a hash; ``decode`` turns a hash read from Redis back into an event,
raising :class:`InvalidEntry` with a machine-readable ``reason`` when it
cannot. ``validate`` returns the reason an event is invalid, or None.

See docs/events.md for every field and type.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import orjson

from tray_app import jsonutil

SCHEMA_VERSION = "1"

PLATFORMS = frozenset({"cursor", "claude_code"})

EVENT_TYPES = frozenset({
    "session_start", "session_end", "user_prompt", "assistant_response",
    "assistant_thought", "tool_use", "tool_result", "mcp_execution",
    "shell_execution", "file_read", "file_edit", "context_compact",
    "notification", "stop", "subagent_start", "subagent_stop", "database_trace",
    "transcript_trace", "error", "hook_event",
    # hook events (docs/hooks.md has the catalogue of both assistants)
    "setup", "prompt_expansion", "permission_request", "permission_denied",
    "tool_failure", "tool_batch", "message_display", "task_created", "task_completed",
    "stop_failure", "teammate_idle", "instructions_loaded", "config_change",
    "cwd_changed", "directory_added", "file_changed", "worktree_create",
    "worktree_remove", "context_compacted", "model_switch_request", "model_switch",
    "elicitation", "elicitation_result",
    # Claude Code's own OpenTelemetry events and metrics (tray_app/otlp, docs/events.md)
    "api_request", "api_error", "api_refusal", "api_retries_exhausted", "api_request_body",
    "api_response_body", "tool_decision", "permission_mode_changed", "auth",
    "mcp_server_connection", "internal_error", "plugin_installed", "plugin_loaded",
    "skill_activated", "at_mention", "hook_registered", "hook_execution_start",
    "hook_execution_complete", "hook_plugin_metrics", "compaction", "subagent_completed",
    "feedback_survey", "retention_sweep", "otel_event", "otel_metric",
})

REQUIRED_FIELDS = ("event_id", "platform", "event_type", "timestamp", "session_id")
OPTIONAL_FIELDS = ("external_session_id", "hook_type", "workspace_hash", "payload",
                   "metadata", "schema_version")
JSON_FIELDS = ("payload", "metadata")
#: columns of raw_traces taken straight from the event
INDEXED_FIELDS = ("event_id", "platform", "event_type", "timestamp", "session_id",
                  "external_session_id", "hook_type", "workspace_hash")

MAX_ID_LEN = 200

# Reasons an entry is poison. Stable strings: they are stored with dead letters.
R_MISSING = "missing_field"
R_UTF8 = "invalid_utf8"
R_JSON = "invalid_json"
R_TYPE = "wrong_type"
R_PLATFORM = "invalid_platform"
R_EVENT_TYPE = "invalid_event_type"
R_TIMESTAMP = "invalid_timestamp"
R_OVERSIZED = "oversized"
R_RETRIES = "retries_exhausted"


class InvalidEntry(ValueError):
    """A stream entry that can never become a row (a poison message)."""

    def __init__(self, reason: str, error: str) -> None:
        super().__init__(f"{reason}: {error}")
        self.reason = reason
        self.error = error


# ----------------------------------------------------------------------------- ids / time

_uuid_lock = threading.Lock()
_last_ms = 0
_seq = 0


def new_event_id() -> str:
    """A UUIDv7: 48-bit unix milliseconds, then random bits, so ids sort by
    creation time and inserts into the unique index stay append-mostly."""
    global _last_ms, _seq
    with _uuid_lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            ms = _last_ms
            _seq = (_seq + 1) & 0xFFF
            if _seq == 0:
                ms += 1
        else:
            _seq = int.from_bytes(os.urandom(2), "big") & 0x7FF
        _last_ms = ms
        seq = _seq
    rand = int.from_bytes(os.urandom(8), "big") & 0x3FFF_FFFF_FFFF_FFFF
    value = (ms << 80) | (0x7 << 76) | (seq << 64) | (0b10 << 62) | rand
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def deterministic_event_id(*parts: str | bytes) -> str:
    """A stable id for monitor events (same input, same id, so re-reads dedup)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8", "surrogatepass") if isinstance(p, str) else p)
        h.update(b"\x1f")
    d = h.hexdigest()
    return f"{d[:8]}-{d[8:12]}-5{d[13:16]}-{d[16:20]}-{d[20:32]}"


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def workspace_hash(path: str) -> str:
    """First 16 hex of sha256 of the workspace root path."""
    return hashlib.sha256(path.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def parse_timestamp(value: str) -> datetime:
    """Parse an ISO-8601 timestamp; naive times are taken as UTC."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt


# ----------------------------------------------------------------------------- encode / decode

def encode(event: Mapping[str, Any]) -> dict[str, str]:
    """Event -> flat stream fields. JSON fields are compact JSON strings;
    None values are omitted; non-string extras are JSON-encoded."""
    out: dict[str, str] = {}
    for key, value in event.items():
        if value is None:
            continue
        if key in JSON_FIELDS:
            out[key] = value if isinstance(value, str) else jsonutil.dumps(value).decode()
        elif isinstance(value, str):
            out[key] = value
        elif isinstance(value, (bytes, bytearray)):
            out[key] = bytes(value).decode("utf-8", "replace")
        else:
            out[key] = jsonutil.dumps(value).decode()
    if "schema_version" not in out:
        out["schema_version"] = SCHEMA_VERSION
    return out


def entry_size(fields: Mapping[Any, Any]) -> int:
    return sum(map(len, fields)) + sum(map(len, fields.values()))


#: known field names as bytes -> str, so decoding an entry decodes no key twice
_KEYS: dict[bytes | str, str] = {name.encode(): name for name in REQUIRED_FIELDS + OPTIONAL_FIELDS}
_KEYS.update({name: name for name in REQUIRED_FIELDS + OPTIONAL_FIELDS})


def check_size(size: int, max_bytes: int) -> None:
    """Raise InvalidEntry (oversized) for an entry of ``size`` bytes over the limit."""
    if size > max_bytes:
        raise InvalidEntry(R_OVERSIZED, f"entry is {size} bytes, the limit is {max_bytes}")


def decode(fields: Mapping[bytes | str, bytes | str], max_bytes: int | None = None) -> dict[str, Any]:
    """Stream fields -> event dict. Raises InvalidEntry (never anything else).

    This is the consumer's per-event hot path (bench/ingest_bench.py): keys are
    looked up, not decoded; JSON fields are parsed from bytes by orjson (which
    rejects invalid UTF-8 itself); the checks after decoding skip the type
    tests that decoding already guarantees."""
    if max_bytes is not None:
        check_size(entry_size(fields), max_bytes)
    event: dict[str, Any] = {}
    try:
        for k, v in fields.items():
            key = _KEYS.get(k)
            if key is None:
                key = k.decode() if isinstance(k, bytes) else k
            if key == "payload" or key == "metadata":
                if not v:
                    continue
                try:
                    parsed = orjson.loads(v)
                except orjson.JSONDecodeError as exc:
                    if isinstance(v, bytes):
                        v.decode("utf-8")  # name invalid UTF-8 as such, not as bad JSON
                    raise InvalidEntry(R_JSON, f"field {key!r}: {exc}") from None
                if type(parsed) is not dict:
                    raise InvalidEntry(R_TYPE, f"field {key!r}: expected a JSON object, "
                                               f"found {type(parsed).__name__}")
                event[key] = parsed
            else:
                event[key] = v.decode() if isinstance(v, bytes) else v
    except UnicodeDecodeError as exc:
        raise InvalidEntry(R_UTF8, f"field {k!r}: {exc.reason} at byte {exc.start}") from None
    reason = _check_values(event)
    if reason is not None:
        raise InvalidEntry(*reason)
    return event


def iso_or_none(value: Any) -> str | None:
    """``value`` when it is an ISO-8601 timestamp string the contract accepts, else None."""
    if isinstance(value, str) and value:
        try:
            parse_timestamp(value)
            return value
        except ValueError:
            return None
    return None


def validate(event: Mapping[str, Any]) -> tuple[str, str] | None:
    """(reason, detail) why ``event`` is invalid, or None when it is valid."""
    for key in REQUIRED_FIELDS:
        value = event.get(key)
        if value is None or value == "":
            return R_MISSING, f"required field {key!r} is missing or empty"
    for key in INDEXED_FIELDS + ("schema_version",):
        value = event.get(key)
        if value is not None and not isinstance(value, str):
            return R_TYPE, f"field {key!r}: expected a string, found {type(value).__name__}"
    for key in JSON_FIELDS:
        value = event.get(key)
        if value is not None and not isinstance(value, dict):
            return R_TYPE, f"field {key!r}: expected an object, found {type(value).__name__}"
    return _check_values(event)


def _check_values(event: Mapping[str, Any]) -> tuple[str, str] | None:
    """The value checks of ``validate``, for an event whose types are known right."""
    for key in REQUIRED_FIELDS:
        if not event.get(key):
            return R_MISSING, f"required field {key!r} is missing or empty"
    if len(event["event_id"]) > MAX_ID_LEN:
        return R_TYPE, f"field 'event_id' is longer than {MAX_ID_LEN} characters"
    if event["platform"] not in PLATFORMS:
        return R_PLATFORM, f"platform {str(event['platform'])[:40]!r} is not one of {sorted(PLATFORMS)}"
    if event["event_type"] not in EVENT_TYPES:
        return R_EVENT_TYPE, f"event_type {str(event['event_type'])[:40]!r} is not a known type"
    try:
        parse_timestamp(event["timestamp"])
    except ValueError:
        return R_TIMESTAMP, f"timestamp {str(event['timestamp'])[:40]!r} is not ISO-8601"
    return None


def source_of(event: Mapping[str, Any]) -> str | None:
    meta = event.get("metadata")
    if isinstance(meta, dict):
        src = meta.get("source")
        return src if isinstance(src, str) else None
    return None


def dumps_compact(event: Mapping[str, Any]) -> bytes:
    """The whole event as compact JSON bytes, re-serialised from its parsed
    fields (for events built in memory; stream entries go through event_json)."""
    return jsonutil.dumps(event)


def event_json(event: Mapping[str, Any], fields: Mapping[bytes | str, bytes | str]) -> bytes:
    """What raw_traces.event_data stores for a decoded stream entry: the event as
    a JSON object whose ``payload`` and ``metadata`` are the entry's own JSON text,
    byte for byte, never a re-serialisation of the parsed values. So an integer
    beyond 64 bits stays exact (orjson would have read it as a float) and a
    payload nested deeper than orjson's serialiser allows (254) is stored as it
    came (the parser allows 1024). ``decode`` has already checked that both are
    JSON objects, so the result is valid JSON."""
    rest = {k: v for k, v in event.items() if k != "payload" and k != "metadata"}
    out = orjson.dumps(rest)
    tail = []
    for key in JSON_FIELDS:
        if key not in event:
            continue
        raw = fields.get(key.encode())
        if raw is None:
            raw = fields.get(key)
        if raw is None:  # not from these fields: serialise the parsed value
            raw = jsonutil.dumps(event[key])
        elif isinstance(raw, str):
            raw = raw.encode()
        tail.append(b',"' + key.encode() + b'":' + raw.strip())
    if not tail:
        return out
    return out[:-1] + b"".join(tail) + b"}"
