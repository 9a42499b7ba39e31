"""Pure rules of the hook (no subprocess): ids, time, JSON, privacy, the size
cap, URL parsing, and that the hook's copies of shared constants agree with
the app's."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import fields as dc_fields
from datetime import datetime, timezone

import pytest

from tray_app import config, events
from tray_app.capture import fastjson, hookconfig, mapping, resp, runner
from tray_app.redis_conn import EVENTS_STREAM

UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
FULL = dict(hookconfig.DEFAULTS)


def settings(**over: object) -> dict:
    s = dict(FULL)
    s.update(over)
    return s


# ----------------------------------------------------------------------------- shared constants

def test_hook_constants_match_the_app() -> None:
    assert runner.EVENTS_STREAM == EVENTS_STREAM
    assert mapping.SCHEMA_VERSION == events.SCHEMA_VERSION
    cap = config.CaptureSettings()
    for f in dc_fields(cap):
        assert hookconfig.DEFAULTS[f.name] == getattr(cap, f.name), f.name
    for key, rng in hookconfig.RANGES.items():
        assert tuple(config.RANGES[f"capture.{key}"]) == rng
    assert set(hookconfig.MODES) == {"full", "hash", "none"}
    types = set(mapping.CURSOR_EVENTS.values()) | set(mapping.CLAUDE_EVENTS.values())
    assert types | {mapping.GENERIC_TYPE, mapping.ERROR_TYPE} <= events.EVENT_TYPES
    assert set(mapping.PLATFORMS.values()) == events.PLATFORMS


# ----------------------------------------------------------------------------- ids and time

def test_uuid7_layout_and_order() -> None:
    base = 1_790_000_000_123_456_789
    ids = [mapping.uuid7(base + i * 300_000, bytes([i]) * 8) for i in range(20)]
    for i in ids:
        assert UUID7.match(i), i
    assert ids == sorted(ids)  # sub-millisecond fraction keeps ids time-ordered
    assert int(ids[0].replace("-", "")[:12], 16) == base // 1_000_000
    assert len({mapping.uuid7(base, __import__("os").urandom(8)) for _ in range(1000)}) == 1000


def test_iso_utc_is_what_the_contract_parses() -> None:
    ns = 1_790_000_000_123_456_789
    text = mapping.iso_utc(ns)
    expected = datetime.fromtimestamp(ns // 1000 / 1e6, timezone.utc).isoformat(timespec="microseconds")
    assert text == expected.replace("+00:00", "Z") == "2026-09-21T14:13:20.123456Z"
    assert events.parse_timestamp(text).timestamp() == pytest.approx(ns / 1e9, abs=1e-6)


def test_workspace_hash_matches_events() -> None:
    for path in ("/home/dev/project", "C:\\Users\\dev\\proj", "/tmp/ünïcode dir", ""):
        assert mapping.workspace_hash(path) == events.workspace_hash(path)


# ----------------------------------------------------------------------------- fastjson

@pytest.mark.parametrize("doc", [
    {"a": 1, "b": [True, False, None, 1.5, -2], "c": {"d": "é\u2603\n\"\\"}},
    [], {}, "x", 0, {"emoji": "\U0001F600", "ctrl": "\x01"},
])
def test_fastjson_roundtrip_matches_json(doc: object) -> None:
    text = fastjson.dumps(doc)
    assert json.loads(text) == doc
    assert fastjson.loads(json.dumps(doc)) == doc
    assert fastjson.loads("  \n" + json.dumps(doc, indent=2) + "\n ") == doc


@pytest.mark.parametrize("bad", ["", "   ", "{", '{"a" 1}', '"abc', "[1,]", "{} x", "nul", "[" * 100_000])
def test_fastjson_rejects_bad_text(bad: str) -> None:
    with pytest.raises(fastjson.JSONError):
        fastjson.loads(bad)


def test_fastjson_non_standard_constants_become_strings() -> None:
    assert fastjson.loads('{"a": NaN, "b": [Infinity, -Infinity]}') == {"a": "NaN", "b": ["Infinity", "-Infinity"]}


# ----------------------------------------------------------------------------- build

def _decode(entry: dict[str, str]) -> dict:
    return events.decode(entry, max_bytes=config.IngestSettings().max_entry_bytes)


def test_build_cursor_event_fields() -> None:
    obj = {"hook_event_name": "beforeSubmitPrompt", "conversation_id": "conv-1", "generation_id": "gen-1",
           "model": "gpt-5", "cursor_version": "2.0.77", "workspace_roots": ["/w/one", "/w/two"],
           "user_email": None, "prompt": "fix it", "attachments": []}
    entry = mapping.build("cursor", json.dumps(obj).encode(), settings(), now_ns=1_790_000_000_000_000_000,
                          rand=b"\x01" * 8)
    ev = _decode(entry)
    assert ev["platform"] == "cursor" and ev["event_type"] == "user_prompt"
    assert ev["hook_type"] == "beforeSubmitPrompt"
    assert ev["session_id"] == ev["external_session_id"] == "conv-1"
    assert ev["workspace_hash"] == events.workspace_hash("/w/one")
    assert ev["timestamp"] == "2026-09-21T14:13:20.000000Z"
    assert ev["payload"] == obj
    assert ev["metadata"] == {"source": "cursor_hook", "capture_version": 1, "generation_id": "gen-1",
                              "model": "gpt-5", "cursor_version": "2.0.77"}
    assert ev["schema_version"] == "1"


def test_build_claude_event_fields() -> None:
    obj = {"session_id": "s-1", "transcript_path": "/h/.claude/projects/p/s-1.jsonl", "cwd": "/repo",
           "permission_mode": "default", "hook_event_name": "PreToolUse", "tool_name": "Bash",
           "tool_input": {"command": "ls"}, "tool_use_id": "toolu_1"}
    ev = _decode(mapping.build("claude", json.dumps(obj).encode(), settings()))
    assert (ev["platform"], ev["event_type"], ev["hook_type"]) == ("claude_code", "tool_use", "PreToolUse")
    assert ev["session_id"] == "s-1" and ev["workspace_hash"] == events.workspace_hash("/repo")
    assert ev["metadata"] == {"source": "claude_hook", "capture_version": 1, "tool_use_id": "toolu_1",
                              "transcript_path": obj["transcript_path"], "cwd": "/repo",
                              "permission_mode": "default", "tool_name": "Bash"}


@pytest.mark.parametrize("raw,reason", [
    (b"", "empty_input"), (b" \n", "empty_input"), (b"{not json", "invalid_json"),
    (b"[1, 2]", "not_an_object"), (b"\xff\xfe garbage \x00", "invalid_json"), (b'"text"', "not_an_object"),
])
def test_bad_input_is_an_error_event(raw: bytes, reason: str) -> None:
    for arg, platform in (("cursor", "cursor"), ("claude", "claude_code")):
        ev = _decode(mapping.build(arg, raw, settings()))
        assert ev["event_type"] == "error" and ev["platform"] == platform
        assert ev["hook_type"] == "invalid_input" and ev["session_id"] == "unknown"
        assert ev["metadata"]["invalid_input"] == reason
        assert ev["payload"]["error"] == reason and ev["payload"]["input_bytes"] == len(raw)
        assert "not json" not in json.dumps(ev)  # content of bad input is never kept


def test_unknown_hook_name_is_kept_generically() -> None:
    obj = {"hook_event_name": "somethingNew", "conversation_id": "c", "weird": {"nested": [1, 2]}}
    ev = _decode(mapping.build("cursor", json.dumps(obj).encode(), settings()))
    assert ev["event_type"] == "hook_event" and ev["hook_type"] == "somethingNew"
    assert ev["payload"] == obj


def test_bom_and_missing_session() -> None:
    raw = "\ufeff".encode() + b'{"hook_event_name": "Stop"}'
    ev = _decode(mapping.build("claude", raw, settings()))
    assert ev["event_type"] == "stop" and ev["session_id"] == "unknown"
    assert "external_session_id" not in ev and "workspace_hash" not in ev


def test_unknown_argument_guesses_platform_from_input() -> None:
    ev = _decode(mapping.build("", b'{"hook_event_name": "stop", "conversation_id": "c"}', settings()))
    assert ev["platform"] == "cursor" and ev["event_type"] == "stop"
    ev = _decode(mapping.build("bogus", b'{"hook_event_name": "Stop", "session_id": "s"}', settings()))
    assert ev["platform"] == "claude_code"


def test_out_of_range_float_does_not_lose_the_event() -> None:
    ev = _decode(mapping.build("claude", b'{"hook_event_name": "Stop", "session_id": "s", "x": 1e999}',
                               settings()))
    assert ev["event_type"] == "stop" and ev["payload"]["x"] == "inf"


# ----------------------------------------------------------------------------- privacy

def sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


PRIVACY_CASES = [
    # (hook input, setting, path into the payload, original value)
    ({"hook_event_name": "beforeSubmitPrompt", "prompt": "secret prompt"}, "prompts", ("prompt",), "secret prompt"),
    ({"hook_event_name": "UserPromptSubmit", "prompt": "secret prompt"}, "prompts", ("prompt",), "secret prompt"),
    ({"hook_event_name": "PreCompact", "custom_instructions": "keep x"}, "prompts", ("custom_instructions",), "keep x"),
    ({"hook_event_name": "afterAgentResponse", "text": "the answer"}, "responses", ("text",), "the answer"),
    ({"hook_event_name": "afterAgentThought", "text": "thinking", "duration_ms": 5}, "responses", ("text",), "thinking"),
    ({"hook_event_name": "Stop", "last_assistant_message": "done!"}, "responses", ("last_assistant_message",), "done!"),
    ({"hook_event_name": "beforeReadFile", "file_path": "/a", "content": "API_KEY=1"}, "file_contents",
     ("content",), "API_KEY=1"),
    ({"hook_event_name": "afterFileEdit", "edits": [{"old_string": "a = 1", "new_string": "a = 2"}]},
     "file_contents", ("edits", 0, "new_string"), "a = 2"),
    ({"hook_event_name": "afterShellExecution", "command": "ls", "output": "file1\nfile2"}, "shell_output",
     ("output",), "file1\nfile2"),
    ({"hook_event_name": "afterMCPExecution", "tool_name": "db", "result_json": "{\"rows\": 3}"},
     "file_contents", ("result_json",), "{\"rows\": 3}"),
    ({"hook_event_name": "PreToolUse", "tool_name": "Write", "tool_input": {"file_path": "/f", "content": "body"}},
     "file_contents", ("tool_input", "content"), "body"),
    ({"hook_event_name": "PreToolUse", "tool_name": "Edit",
      "tool_input": {"file_path": "/f", "old_string": "old text", "new_string": "new text"}},
     "file_contents", ("tool_input", "new_string"), "new text"),
    ({"hook_event_name": "PreToolUse", "tool_name": "Task", "tool_input": {"prompt": "sub prompt"}},
     "prompts", ("tool_input", "prompt"), "sub prompt"),
    ({"hook_event_name": "PostToolUse", "tool_name": "Bash", "tool_input": {"command": "ls"},
      "tool_response": "listing output"}, "shell_output", ("tool_response",), "listing output"),
    ({"hook_event_name": "PostToolUse", "tool_name": "Read", "tool_input": {"file_path": "/f"},
      "tool_response": "contents"}, "file_contents", ("tool_response",), "contents"),
    ({"hook_event_name": "postToolUse", "tool_name": "Shell", "tool_output": "stdout text"}, "shell_output",
     ("tool_output",), "stdout text"),
    ({"hook_event_name": "PostToolUse", "tool_name": "Task", "tool_response": "sub answer"}, "responses",
     ("tool_response",), "sub answer"),
]


def _get(obj: object, path: tuple) -> object:
    for p in path:
        obj = obj[p]  # type: ignore[index]
    return obj


@pytest.mark.parametrize("obj,setting,path,value", PRIVACY_CASES)
def test_privacy_modes(obj: dict, setting: str, path: tuple, value: str) -> None:
    raw = json.dumps({"session_id": "s", "conversation_id": "c", **obj}).encode()
    arg = "claude" if obj["hook_event_name"][0].isupper() else "cursor"
    # full: untouched
    ev = _decode(mapping.build(arg, raw, settings()))
    assert _get(ev["payload"], path) == value and "redacted" not in ev["metadata"]
    # hash: sha256 of the UTF-8 text, nothing else of it anywhere
    ev = _decode(mapping.build(arg, raw, settings(**{setting: "hash"})))
    assert _get(ev["payload"], path) == sha(value)
    assert value not in json.dumps(ev)
    assert set(ev["metadata"]["redacted"].values()) == {"hash"}
    # none: removed
    entry = mapping.build(arg, raw, settings(**{setting: "none"}))
    ev = _decode(entry)
    with pytest.raises((KeyError, IndexError)):
        _get(ev["payload"], path)
    assert value not in json.dumps(entry)
    # the other three settings do not touch it
    others = {k: "none" for k in ("prompts", "responses", "file_contents", "shell_output") if k != setting}
    ev = _decode(mapping.build(arg, raw, settings(**others)))
    assert _get(ev["payload"], path) == value


def test_hash_of_non_string_content() -> None:
    obj = {"hook_event_name": "PostToolUse", "tool_name": "Write", "session_id": "s",
           "tool_response": {"filePath": "/f", "content": "x"}}
    ev = _decode(mapping.build("claude", json.dumps(obj).encode(), settings(file_contents="hash")))
    assert ev["payload"]["tool_response"].startswith("sha256:") and len(ev["payload"]["tool_response"]) == 71


# ----------------------------------------------------------------------------- size cap

def test_oversized_input_is_cut_with_a_marker() -> None:
    cap = 4096
    obj = {"hook_event_name": "beforeSubmitPrompt", "conversation_id": "c", "prompt": "p" * 50_000,
           "attachments": [{"type": "file", "filePath": "/x"}]}
    raw = json.dumps(obj).encode()
    entry = mapping.build("cursor", raw, settings(max_input_bytes=cap))
    assert len(entry["payload"].encode()) <= cap
    ev = _decode(entry)
    assert ev["payload"]["prompt"].startswith("ppp") and "[truncated " in ev["payload"]["prompt"]
    assert ev["payload"]["attachments"] == obj["attachments"]  # short values survive
    assert ev["metadata"]["truncated"] is True and ev["metadata"]["input_bytes"] == len(raw)
    assert ev["session_id"] == "c"


def test_many_small_values_still_fit() -> None:
    obj = {"hook_event_name": "x", **{f"k{i}": i for i in range(5000)}}
    entry = mapping.build("claude", json.dumps(obj).encode(), settings(max_input_bytes=2048))
    ev = _decode(entry)
    assert len(entry["payload"]) <= 2048 and ev["payload"]["truncated"] is True


def test_input_over_the_read_limit_is_an_error_event() -> None:
    ev = _decode(mapping.build("cursor", b"{" * 100, settings(), total_bytes=10**9))
    assert ev["event_type"] == "error" and ev["metadata"]["invalid_input"] == "input_too_large"
    assert ev["payload"]["input_bytes"] == 10**9


# ----------------------------------------------------------------------------- RESP

@pytest.mark.parametrize("url,expected", [
    ("redis://127.0.0.1:6380/2", ("tcp", ("127.0.0.1", 6380), None, None, 2)),
    ("redis://:p%40ss@localhost", ("tcp", ("localhost", 6379), None, "p@ss", 0)),
    ("redis://user:pw@h:1/0", ("tcp", ("h", 1), "user", "pw", 0)),
    ("redis://[::1]:7000", ("tcp", ("::1", 7000), None, None, 0)),
    ("unix:///run/x/redis.sock", ("unix", "/run/x/redis.sock", None, None, 0)),
    ("unix:///run/x/redis.sock?db=3&password=s%20t", ("unix", "/run/x/redis.sock", None, "s t", 3)),
])
def test_parse_url(url: str, expected: tuple) -> None:
    assert resp.parse_url(url) == expected


@pytest.mark.parametrize("url", ["rediss://h:6379", "http://h", "nonsense", "unix://"])
def test_parse_url_refuses(url: str) -> None:
    with pytest.raises(resp.RespError):
        resp.parse_url(url)


def test_resp_command_encoding() -> None:
    assert resp.command("XADD", "s", "*", b"k", "v\u00e9") == (
        b"*5\r\n$4\r\nXADD\r\n$1\r\ns\r\n$1\r\n*\r\n$1\r\nk\r\n$3\r\nv\xc3\xa9\r\n")


# ----------------------------------------------------------------------------- the wider catalogue

def test_claude_hook_with_cursors_input_builds_nothing() -> None:
    cursor_input = {"conversation_id": "c", "generation_id": "g", "cursor_version": "2.4.0",
                    "workspace_roots": ["/w"], "hook_event_name": "preToolUse", "tool_name": "Shell"}
    assert mapping.build("claude", json.dumps(cursor_input).encode(), settings()) is None
    for key in ("generation_id", "cursor_version", "workspace_roots"):  # any one of them with conversation_id
        assert mapping.build("claude", json.dumps({"conversation_id": "c", key: "x",
                                                    "hook_event_name": "stop"}).encode(), settings()) is None
    # the Cursor hook records it; Claude's own input (even with a stray conversation_id) is recorded
    assert _decode(mapping.build("cursor", json.dumps(cursor_input).encode(), settings()))["platform"] == "cursor"
    ev = _decode(mapping.build("claude", b'{"hook_event_name": "Stop", "session_id": "s", "conversation_id": "c"}',
                               settings()))
    assert (ev["platform"], ev["session_id"]) == ("claude_code", "s")


@pytest.mark.parametrize("arg,obj,path,setting", [
    ("claude", {"hook_event_name": "MessageDisplay", "delta": "SECRET"}, "delta", "responses"),
    ("claude", {"hook_event_name": "PostCompact", "compact_summary": "SECRET"}, "compact_summary", "responses"),
    ("cursor", {"hook_event_name": "subagentStart", "task": "SECRET"}, "task", "prompts"),
    ("cursor", {"hook_event_name": "preToolUse", "agent_message": "SECRET"}, "agent_message", "responses"),
    ("cursor", {"hook_event_name": "postToolUseFailure", "tool_name": "Shell", "error_message": "SECRET"},
     "error_message", "shell_output"),
    ("claude", {"hook_event_name": "PostToolBatch", "tool_calls": [
        {"tool_name": "Read", "tool_input": {"file_path": "/a"}, "tool_response": "SECRET"}]},
     "tool_calls[].tool_response", "file_contents"),
    ("claude", {"hook_event_name": "PostToolBatch", "tool_calls": [
        {"tool_name": "Bash", "tool_input": {"command": "ls"}, "tool_response": "SECRET"}]},
     "tool_calls[].tool_response", "shell_output"),
])
def test_new_content_fields_follow_the_privacy_settings(arg: str, obj: dict, path: str, setting: str) -> None:
    entry = mapping.build(arg, json.dumps(obj).encode(), settings(**{setting: "none"}))
    assert "SECRET" not in json.dumps(entry)
    assert _decode(entry)["metadata"]["redacted"] == {path: "none"}
    others = {k: "none" for k in ("prompts", "responses", "file_contents", "shell_output") if k != setting}
    assert "SECRET" in json.dumps(mapping.build(arg, json.dumps(obj).encode(), settings(**others)))


def test_event_classifiers_go_to_metadata_without_clobbering_the_source() -> None:
    ev = _decode(mapping.build("claude", json.dumps({"hook_event_name": "ConfigChange", "session_id": "s",
                                                      "source": "project_settings"}).encode(), settings()))
    assert ev["metadata"]["source"] == "claude_hook" and ev["metadata"]["config_source"] == "project_settings"
    ev = _decode(mapping.build("claude", json.dumps({"hook_event_name": "StopFailure", "session_id": "s",
                                                      "error": "rate_limit"}).encode(), settings()))
    assert (ev["event_type"], ev["metadata"]["error"]) == ("stop_failure", "rate_limit")
    # a tool failure's error text is content, not a classifier: it stays in the payload only
    ev = _decode(mapping.build("claude", json.dumps({"hook_event_name": "PostToolUseFailure", "session_id": "s",
                                                      "tool_name": "Bash", "error": "Exit code 1"}).encode(),
                               settings()))
    assert ev["event_type"] == "tool_failure" and "error" not in ev["metadata"]
