"""Every hook event of both assistants, end to end: a realistic stdin sample
(shaped like the assistants' documented examples), the hook run as a real
subprocess exactly as the assistant runs it (the installed command line,
through the shell), then the stream entry in a real Redis checked field by
field, and stdout / exit code checked.

Also holds the helpers the other tests/test_hook_*.py files import.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from conftest import ROOT, RedisProc
from tray_app import config, events
from tray_app.capture import installers
from tray_app.redis_conn import EVENTS_STREAM

HOOK = ROOT / "tray_app" / "capture" / "hook.py"
UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
MAX_ENTRY = config.IngestSettings().max_entry_bytes


# ----------------------------------------------------------------------------- helpers

def hook_env(home: Path, url: str | None = None, **extra: str) -> dict[str, str]:
    """A minimal environment, as an assistant would pass: no TELEMETRY_TRAY_*
    from outside, an isolated app home, optionally the Redis URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_TRAY_")}
    env["TELEMETRY_TRAY_HOME"] = str(home)
    if url is not None:
        env["TELEMETRY_TRAY_REDIS_URL"] = url
    env.update(extra)
    return env


def run_hook(assistant: str, stdin: bytes | str | None, env: dict[str, str], *,
             command: str | None = None, timeout: float = 30) -> tuple[subprocess.CompletedProcess[bytes], float]:
    """Run the hook the way the assistants do: the installed command line
    through the shell, JSON on stdin. Returns (result, seconds)."""
    cmd = command or installers.hook_command(assistant, script=HOOK)
    data = stdin.encode() if isinstance(stdin, str) else stdin
    start = time.monotonic()
    proc = subprocess.run(cmd, shell=True, input=data, capture_output=True, env=env, timeout=timeout,
                          stdin=subprocess.DEVNULL if data is None else None)
    return proc, time.monotonic() - start


def expected_stdout(assistant: str) -> bytes:
    return b"{}\n" if assistant == "cursor" else b""


def assert_clean_exit(assistant: str, proc: subprocess.CompletedProcess[bytes]) -> None:
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == expected_stdout(assistant)
    if assistant == "cursor":
        assert json.loads(proc.stdout) == {}  # a JSON object with no decision in it


def stream_entries(client: redis.Redis) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in fields.items()}
            for _, fields in client.xrange(EVENTS_STREAM)]


def spool_files(home: Path) -> list[Path]:
    d = home / "state" / "spool"
    return sorted(p for p in d.glob("*.json")) if d.exists() else []


# ----------------------------------------------------------------------------- samples

WS = "/home/dev/projects/shop"
CURSOR_BASE = {
    "conversation_id": "668320d2-2fd8-4888-b33c-2a466fec86e7",
    "generation_id": "490b90b7-a2ce-4c2c-bb76-cb77b125df2f",
    "model": "claude-4.5-sonnet",
    "cursor_version": "2.0.77",
    "workspace_roots": [WS],
    "user_email": "dev@example.com",
    "transcript_path": None,
}

CURSOR_SAMPLES: list[tuple[str, str, dict[str, Any]]] = [
    ("sessionStart", "session_start",
     {"session_id": CURSOR_BASE["conversation_id"], "is_background_agent": False, "composer_mode": "agent"}),
    ("sessionEnd", "session_end",
     {"session_id": CURSOR_BASE["conversation_id"], "reason": "completed", "duration_ms": 45000,
      "is_background_agent": False, "final_status": "completed"}),
    ("beforeSubmitPrompt", "user_prompt",
     {"prompt": "Fix the bug in main.ts", "attachments": [{"type": "file", "filePath": f"{WS}/main.ts"}]}),
    ("afterAgentResponse", "assistant_response", {"text": "I fixed the off-by-one in main.ts."}),
    ("afterAgentThought", "assistant_thought", {"text": "The loop bound looks wrong.", "duration_ms": 5000}),
    ("beforeShellExecution", "shell_execution", {"command": "npm install express", "cwd": WS}),
    ("afterShellExecution", "shell_execution",
     {"command": "npm test", "output": "> shop@1.0.0 test\n12 passing\n", "duration": 1234}),
    ("beforeMCPExecution", "mcp_execution",
     {"tool_name": "database_query", "tool_input": "{\"query\": \"SELECT * FROM users\"}",
      "url": "http://localhost:3000"}),
    ("afterMCPExecution", "mcp_execution",
     {"tool_name": "database_query", "tool_input": "{\"query\": \"SELECT * FROM users\"}",
      "result_json": "{\"rows\": [[1, \"ann\"]]}", "duration": 250}),
    ("beforeReadFile", "file_read",
     {"file_path": f"{WS}/.env", "content": "API_KEY=abc123",
      "attachments": [{"type": "rule", "filePath": f"{WS}/.cursorrules"}]}),
    ("afterFileEdit", "file_edit",
     {"file_path": f"{WS}/src/main.ts", "edits": [{"old_string": "const foo = 1", "new_string": "const foo = 2"}]}),
    ("stop", "stop", {"status": "completed", "loop_count": 0}),
    ("preToolUse", "tool_use",
     {"tool_name": "Shell", "tool_input": {"command": "ls -la"}, "tool_use_id": "call_1", "cwd": WS}),
    ("postToolUse", "tool_result",
     {"tool_name": "Read", "tool_input": {"file_path": f"{WS}/a.py"}, "tool_output": "print(1)",
      "tool_use_id": "call_2", "duration": 12}),
    ("postToolUseFailure", "tool_result",
     {"tool_name": "Shell", "tool_input": {"command": "false"}, "error": "exit status 1", "tool_use_id": "call_3"}),
    ("subagentStart", "subagent_start", {"subagent_type": "explore", "prompt": "find usages"}),
    ("subagentStop", "subagent_stop", {"subagent_type": "explore", "status": "completed"}),
    ("preCompact", "context_compact", {"trigger": "auto", "context_usage_percent": 91}),
    ("beforeTabFileRead", "file_read", {"file_path": f"{WS}/b.ts", "content": "let x = 1"}),
    ("afterTabFileEdit", "file_edit",
     {"file_path": f"{WS}/b.ts", "edits": [{"old_string": "x", "new_string": "y",
                                             "range": {"start_line_number": 1, "start_column": 5,
                                                       "end_line_number": 1, "end_column": 6},
                                             "old_line": "let x = 1", "new_line": "let y = 1"}]}),
    ("aHookFromTheFuture", "hook_event", {"anything": {"nested": [1, 2, 3]}}),
]

SID = "eb5b0174-0555-4601-804e-672d68069c89"
CLAUDE_BASE = {
    "session_id": SID,
    "transcript_path": f"/home/dev/.claude/projects/-home-dev-projects-shop/{SID}.jsonl",
    "cwd": WS,
    "permission_mode": "default",
}

CLAUDE_SAMPLES: list[tuple[str, str, dict[str, Any]]] = [
    ("SessionStart", "session_start", {"source": "startup", "model": "claude-sonnet-4-5"}),
    ("SessionEnd", "session_end", {"reason": "prompt_input_exit"}),
    ("UserPromptSubmit", "user_prompt", {"prompt": "Write a function to calculate the factorial of a number"}),
    ("PreToolUse", "tool_use",
     {"tool_name": "Bash", "tool_input": {"command": "npm test", "description": "Run the tests"},
      "tool_use_id": "toolu_01ABC123"}),
    ("PostToolUse", "tool_result",
     {"tool_name": "Write", "tool_input": {"file_path": f"{WS}/file.txt", "content": "file content"},
      "tool_response": {"filePath": f"{WS}/file.txt", "success": True}, "tool_use_id": "toolu_01ABC124"}),
    ("Stop", "stop", {"stop_hook_active": False}),
    ("SubagentStop", "subagent_stop",
     {"stop_hook_active": False, "agent_id": "agent-7", "agent_type": "Explore",
      "agent_transcript_path": "/home/dev/.claude/projects/x/subagents/agent-7.jsonl"}),
    ("PreCompact", "context_compact", {"trigger": "manual", "custom_instructions": "keep the API notes"}),
    ("Notification", "notification",
     {"message": "Claude needs your permission to use Bash", "notification_type": "permission_prompt"}),
    ("PostToolUseFailure", "tool_result",
     {"tool_name": "Bash", "tool_input": {"command": "false"}, "error": "Exit code 1", "tool_use_id": "toolu_9"}),
    ("SomeFutureEvent", "hook_event", {"detail": "unknown to us"}),
]

CURSOR_META = ("generation_id", "model", "cursor_version", "transcript_path", "tool_name", "tool_use_id")
CLAUDE_META = ("tool_use_id", "transcript_path", "cwd", "permission_mode", "tool_name", "agent_id",
               "agent_type", "model")


def check_entry(entry: dict[str, str], platform: str, hook: str, event_type: str, sample: dict[str, Any],
                before: float, after: float) -> None:
    """One stream entry, field by field."""
    assert set(entry) == {"event_id", "platform", "event_type", "timestamp", "session_id",
                          "external_session_id", "hook_type", "workspace_hash", "payload", "metadata",
                          "schema_version"}
    ev = events.decode(entry, max_bytes=MAX_ENTRY)  # what the engine does: must not be poison
    assert UUID7.match(ev["event_id"])
    assert ev["platform"] == platform
    assert ev["event_type"] == event_type
    assert ev["hook_type"] == hook
    ts = events.parse_timestamp(ev["timestamp"]).timestamp()
    assert before - 0.001 <= ts <= after + 0.001
    assert ev["timestamp"].endswith("Z")
    assert ev["workspace_hash"] == events.workspace_hash(WS)
    assert ev["schema_version"] == "1"
    assert ev["payload"] == sample  # full capture by default: the input, unchanged
    meta = ev["metadata"]
    if platform == "cursor":
        session = sample.get("conversation_id") or sample.get("session_id")
        assert meta["source"] == "cursor_hook"
        keys = CURSOR_META
    else:
        session = sample["session_id"]
        assert meta["source"] == "claude_hook"
        keys = CLAUDE_META
    assert ev["session_id"] == ev["external_session_id"] == session
    expected_meta = {"source": meta["source"], "capture_version": 1}
    expected_meta.update({k: sample[k] for k in keys if isinstance(sample.get(k), (str, int, float, bool))})
    assert meta == expected_meta


# ----------------------------------------------------------------------------- tests

@pytest.mark.parametrize("hook,event_type,extra", CURSOR_SAMPLES, ids=[s[0] for s in CURSOR_SAMPLES])
def test_cursor_hook_event(hook: str, event_type: str, extra: dict[str, Any], app_home: Path,
                           redis_server: RedisProc) -> None:
    sample = {**CURSOR_BASE, "hook_event_name": hook, **extra}
    client = redis_server.client()
    before = time.time()
    proc, _ = run_hook("cursor", json.dumps(sample), hook_env(app_home, redis_server.url))
    after = time.time()
    assert_clean_exit("cursor", proc)
    assert proc.stderr == b""
    entries = stream_entries(client)
    assert len(entries) == 1
    check_entry(entries[0], "cursor", hook, event_type, sample, before, after)
    assert spool_files(app_home) == []


@pytest.mark.parametrize("hook,event_type,extra", CLAUDE_SAMPLES, ids=[s[0] for s in CLAUDE_SAMPLES])
def test_claude_hook_event(hook: str, event_type: str, extra: dict[str, Any], app_home: Path,
                           redis_server: RedisProc) -> None:
    sample = {**CLAUDE_BASE, "hook_event_name": hook, **extra}
    client = redis_server.client()
    before = time.time()
    proc, _ = run_hook("claude", json.dumps(sample), hook_env(app_home, redis_server.url))
    after = time.time()
    assert_clean_exit("claude", proc)
    assert proc.stderr == b""
    entries = stream_entries(client)
    assert len(entries) == 1
    check_entry(entries[0], "claude_code", hook, event_type, sample, before, after)


def test_ids_are_unique_and_time_ordered(app_home: Path, redis_server: RedisProc) -> None:
    env = hook_env(app_home, redis_server.url)
    for i in range(5):
        sample = {**CLAUDE_BASE, "hook_event_name": "UserPromptSubmit", "prompt": f"prompt {i}"}
        assert_clean_exit("claude", run_hook("claude", json.dumps(sample), env)[0])
    entries = stream_entries(redis_server.client())
    ids = [e["event_id"] for e in entries]
    assert len(set(ids)) == 5 and ids == sorted(ids)
    assert [json.loads(e["payload"])["prompt"] for e in entries] == [f"prompt {i}" for i in range(5)]


PRIVATE = {
    "prompt": "my secret prompt 7f3a",
    "response": "my secret answer 7f3a",
    "file": "SECRET_FILE_CONTENT_7f3a",
    "shell": "secret shell output 7f3a",
}


def _private_samples() -> list[tuple[str, dict[str, Any]]]:
    return [
        ("cursor", {**CURSOR_BASE, "hook_event_name": "beforeSubmitPrompt", "prompt": PRIVATE["prompt"]}),
        ("cursor", {**CURSOR_BASE, "hook_event_name": "afterAgentResponse", "text": PRIVATE["response"]}),
        ("cursor", {**CURSOR_BASE, "hook_event_name": "afterFileEdit", "file_path": f"{WS}/x",
                    "edits": [{"old_string": "a", "new_string": PRIVATE["file"]}]}),
        ("cursor", {**CURSOR_BASE, "hook_event_name": "afterShellExecution", "command": "make",
                    "output": PRIVATE["shell"], "duration": 3}),
        ("claude", {**CLAUDE_BASE, "hook_event_name": "UserPromptSubmit", "prompt": PRIVATE["prompt"]}),
        ("claude", {**CLAUDE_BASE, "hook_event_name": "PostToolUse", "tool_name": "Bash",
                    "tool_input": {"command": "make"}, "tool_response": {"stdout": PRIVATE["shell"]},
                    "tool_use_id": "t1"}),
        ("claude", {**CLAUDE_BASE, "hook_event_name": "PreToolUse", "tool_name": "Write",
                    "tool_input": {"file_path": f"{WS}/x", "content": PRIVATE["file"]}, "tool_use_id": "t2"}),
    ]


@pytest.mark.parametrize("mode", ["hash", "none"])
def test_privacy_modes_apply_before_anything_leaves_the_hook(mode: str, app_home: Path,
                                                             redis_server: RedisProc) -> None:
    env = hook_env(app_home, redis_server.url, **{f"TELEMETRY_TRAY_CAPTURE_{k}": mode for k in
                                                 ("PROMPTS", "RESPONSES", "FILE_CONTENTS", "SHELL_OUTPUT")})
    samples = _private_samples()
    for assistant, sample in samples:
        assert_clean_exit(assistant, run_hook(assistant, json.dumps(sample), env)[0])
    raw = redis_server.client().xrange(EVENTS_STREAM)
    assert len(raw) == len(samples)
    blob = repr(raw)
    for secret in PRIVATE.values():
        assert secret not in blob
    for _, fields in raw:
        ev = events.decode(fields)
        assert set(ev["metadata"]["redacted"].values()) == {mode}
    if mode == "hash":
        import hashlib
        digest = "sha256:" + hashlib.sha256(PRIVATE["prompt"].encode()).hexdigest()
        prompts = [events.decode(f)["payload"].get("prompt") for _, f in raw]
        assert prompts.count(digest) == 2


def test_hook_finds_the_apps_managed_redis(app_home: Path, server_binary) -> None:  # type: ignore[no-untyped-def]
    """No URL anywhere: the app starts its private server (unix socket, random
    password) and writes the endpoint file; the hook finds it there."""
    from tray_app.config import load_config
    from tray_app.redis_conn import RedisProvider

    provider = RedisProvider(load_config())
    ep = provider.start()
    try:
        assert ep.url.startswith("unix://") and ep.password
        for assistant, sample in (("cursor", {**CURSOR_BASE, "hook_event_name": "stop", "status": "completed",
                                               "loop_count": 1}),
                                  ("claude", {**CLAUDE_BASE, "hook_event_name": "Stop", "stop_hook_active": True})):
            proc, _ = run_hook(assistant, json.dumps(sample), hook_env(app_home))
            assert_clean_exit(assistant, proc)
        entries = stream_entries(ep.client())
        assert [(e["platform"], e["hook_type"]) for e in entries] == [("cursor", "stop"), ("claude_code", "Stop")]
        assert spool_files(app_home) == []
    finally:
        provider.stop()
