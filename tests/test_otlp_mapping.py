"""The pure mapping rules (tray_app/otlp/mapping.py), on the official OTLP
message types: names, types, privacy, the size cap, ids, unmappable records."""

from __future__ import annotations

import json
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from tray_app import events
from tray_app.config import CaptureSettings
from tray_app.otlp import mapping, wire


def any_value(v: Any) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, bytes):
        return AnyValue(bytes_value=v)
    if isinstance(v, list):
        out = AnyValue()
        out.array_value.values.extend(any_value(x) for x in v)
        return out
    if isinstance(v, dict):
        out = AnyValue()
        out.kvlist_value.values.extend(KeyValue(key=k, value=any_value(x)) for k, x in v.items())
        return out
    return AnyValue(string_value=v)


def request(*records: dict[str, Any], service: str = "claude-code") -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.add(key="service.name", value=any_value(service))
    sl = rl.scope_logs.add()
    sl.scope.name = "com.anthropic.claude_code.events"
    for spec in records:
        rec = sl.log_records.add(time_unix_nano=spec.get("time", 1_764_662_400_000_000_000))
        if "body" in spec:
            rec.body.CopyFrom(any_value(spec["body"]))
        if "event_name" in spec:
            rec.event_name = spec["event_name"]
        for k, v in spec.get("attrs", {}).items():
            rec.attributes.add(key=k, value=any_value(v))
    return req


def settings(**modes: str) -> dict[str, Any]:
    return mapping.capture_settings(CaptureSettings(**modes), 64 * 1024)  # type: ignore[arg-type]


def one(spec: dict[str, Any], **modes: str) -> dict[str, Any]:
    out = mapping.map_logs(request(spec), settings(**modes))
    assert len(out.events) == 1 and out.rejected == 0, out
    return out.events[0]


def test_every_documented_event_has_a_contract_type() -> None:
    for short, event_type in mapping.CLAUDE_EVENTS.items():
        assert short == event_type and event_type in events.EVENT_TYPES
        ev = one({"body": f"claude_code.{short}", "attrs": {"event.name": short, "session.id": "s"}})
        assert ev["event_type"] == event_type and ev["hook_type"] == f"claude_code.{short}"
    assert {mapping.GENERIC_TYPE, mapping.METRIC_TYPE} <= events.EVENT_TYPES


@pytest.mark.parametrize("spec", [
    {"event_name": "claude_code.api_error"},                      # the LogRecord field (OTLP >= 1.5)
    {"attrs": {"event.name": "api_error"}},                       # the attribute only, from claude-code
    {"body": "claude_code.api_error"},                            # the body only
    {"body": "claude_code.api_error", "attrs": {"event.name": "api_error"}},   # what Claude sends
])
def test_the_event_name_is_found_wherever_it_is(spec: dict[str, Any]) -> None:
    assert one(spec)["event_type"] == "api_error"


def test_records_of_other_programs_are_not_kept_but_counted() -> None:
    out = mapping.map_logs(request({"body": "GET / 200"}, service="nginx"), settings())
    assert out.events == [] and out.rejected == 1 and "not Claude Code events" in out.message


def test_api_request_numbers_get_exact_types() -> None:
    ev = one({"body": "claude_code.api_request", "attrs": {
        "model": "claude-opus-4-1", "cost_usd": "0.5", "input_tokens": "12", "output_tokens": 7.0,
        "cache_read_tokens": 3, "cache_creation_tokens": "4.0", "duration_ms": "x1", "speed": "fast"}})
    p = ev["payload"]
    assert p == {"model": "claude-opus-4-1", "cost_usd": 0.5, "input_tokens": 12, "output_tokens": 7,
                 "cache_read_tokens": 3, "cache_creation_tokens": 4, "speed": "fast"}
    assert [type(p[k]) for k in ("cost_usd", "input_tokens", "output_tokens")] == [float, int, int]
    assert ev["metadata"]["otel_unparsed"] == {"duration_ms": "x1"}
    assert mapping.typed_api_request({"input_tokens": True, "cost_usd": "nan"}) == \
        {"input_tokens": True, "cost_usd": "nan"}


def test_attribute_values_of_every_kind() -> None:
    ev = one({"body": "claude_code.hook_plugin_metrics", "attrs": {
        "list": [1, "a", 2.5], "map": {"k": [True]}, "raw": b"\x00\xff", "nan": float("nan"),
        "workspace.host_paths": ["/a", "/b"]}})
    p = ev["payload"]
    assert p["list"] == [1, "a", 2.5] and p["map"] == {"k": [True]} and p["raw"] == "AP8="
    assert p["nan"] == "nan" and p["workspace.host_paths"] == ["/a", "/b"]


def test_timestamp_from_event_timestamp_else_the_record_time() -> None:
    ev = one({"body": "claude_code.auth", "attrs": {"event.timestamp": "2026-01-02T03:04:05.678+01:00"}})
    assert ev["timestamp"] == "2026-01-02T02:04:05.678000Z"
    ev = one({"body": "claude_code.auth", "attrs": {"event.timestamp": "yesterday"}, "time": 1_500_000_000})
    assert ev["timestamp"] == "1970-01-01T00:00:01.500000Z"
    assert ev["session_id"] == "unknown" and ev.get("external_session_id") is None


def test_ids_are_deterministic_per_record() -> None:
    spec = {"body": "claude_code.user_prompt", "attrs": {"prompt": "x", "event.sequence": 1}}
    a, b = one(spec), one(spec)
    assert a["event_id"] == b["event_id"]
    other = one({"body": "claude_code.user_prompt", "attrs": {"prompt": "x", "event.sequence": 2}})
    assert other["event_id"] != a["event_id"]
    # protobuf and JSON of the same request: the same ids
    req = request(spec)
    again = wire.parse(wire.LOGS_PATH, wire.JSON, wire.encode(req, wire.JSON))
    assert mapping.map_logs(again, settings()).events[0]["event_id"] == a["event_id"]


@pytest.mark.parametrize(("short", "key", "setting"), [
    ("user_prompt", "prompt", "prompts"),
    ("assistant_response", "response", "responses"),
    ("api_request_body", "body", "prompts"),
    ("api_response_body", "body", "responses"),
])
def test_content_attributes_follow_their_capture_setting(short: str, key: str, setting: str) -> None:
    spec = {"body": f"claude_code.{short}", "attrs": {key: "the content", "model": "m"}}
    assert one(spec)["payload"][key] == "the content"
    hashed = one(spec, **{setting: "hash"})
    assert hashed["payload"][key].startswith("sha256:") and hashed["metadata"]["redacted"] == {key: "hash"}
    gone = one(spec, **{setting: "none"})
    assert key not in gone["payload"] and gone["payload"]["model"] == "m"
    others = [s for s in ("prompts", "responses", "file_contents", "shell_output") if s != setting]
    assert one(spec, **{s: "none" for s in others})["payload"][key] == "the content"


def test_tool_arguments_follow_the_hooks_rules() -> None:
    task = {"body": "claude_code.tool_decision", "attrs": {
        "tool_name": "Task", "decision": "reject",
        "tool_input": json.dumps({"description": "d", "prompt": "do the secret thing"}),
        "tool_parameters": '{"subagent_type": "general", "cut": "aaaa'}}   # cut short: not JSON
    ev = one(task, prompts="none", file_contents="hash")
    assert json.loads(ev["payload"]["tool_input"]) == {"description": "d"}
    assert ev["payload"]["tool_parameters"].startswith("sha256:")
    assert ev["metadata"]["redacted"] == {"tool_input.prompt": "none", "tool_parameters": "hash"}
    bash = {"body": "claude_code.tool_result", "attrs": {
        "tool_name": "Bash", "success": "true",
        "tool_parameters": json.dumps({"bash_command": "ls", "full_command": "ls -la"})}}
    kept = one(bash, shell_output="none", file_contents="none")     # a command is not output: kept
    assert json.loads(kept["payload"]["tool_parameters"])["full_command"] == "ls -la"


def test_a_huge_payload_is_cut_to_the_cap() -> None:
    out = mapping.map_logs(request({"body": "claude_code.user_prompt", "attrs": {"prompt": "x" * 200_000}}),
                           settings())
    ev = out.events[0]
    assert ev["metadata"]["truncated"] is True and "[truncated" in ev["payload"]["prompt"]
    assert len(json.dumps(ev["payload"])) <= 64 * 1024
    assert events.validate(ev) is None


def test_an_unmappable_record_becomes_an_error_and_the_others_are_mapped() -> None:
    req = request({"body": "claude_code.user_prompt", "attrs": {"prompt": "a", "session.id": "s"}},
                  {"attrs": {"session.id": "s", "n": 1}},
                  {"body": "claude_code.auth", "attrs": {"action": "login"}})
    out = mapping.map_logs(req, settings())
    assert [e["event_type"] for e in out.events] == ["user_prompt", "error", "auth"]
    err = out.events[1]
    assert err["session_id"] == "s" and err["metadata"] == {"source": "otlp",
                                                           "invalid_input": "unmappable_log_record"}
    assert "no event name" in err["payload"]["error"] and len(err["payload"]["record_sha256"]) == 64
    assert out.rejected == 1 and all(events.validate(e) is None for e in out.events)
