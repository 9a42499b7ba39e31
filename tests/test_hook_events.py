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

#: one sample per documented Cursor hook (cursor.com/docs/agent/hooks, the
#: fields of each event's documented input), plus one name we do not know
CURSOR_SAMPLES: list[tuple[str, str, dict[str, Any]]] = [
    ("sessionStart", "session_start",
     {"session_id": CURSOR_BASE["conversation_id"], "is_background_agent": False, "composer_mode": "agent"}),
    ("sessionEnd", "session_end",
     {"session_id": CURSOR_BASE["conversation_id"], "reason": "completed", "duration_ms": 45000,
      "is_background_agent": False, "final_status": "completed"}),
    ("beforeSubmitPrompt", "user_prompt",
     {"prompt": "Fix the bug in main.ts", "attachments": [{"type": "file", "file_path": f"{WS}/main.ts"}]}),
    ("afterAgentResponse", "assistant_response", {"text": "I fixed the off-by-one in main.ts."}),
    ("afterAgentThought", "assistant_thought", {"text": "The loop bound looks wrong.", "duration_ms": 5000}),
    ("beforeShellExecution", "shell_execution", {"command": "npm install express", "cwd": WS, "sandbox": False}),
    ("afterShellExecution", "shell_execution",
     {"command": "npm test", "output": "> shop@1.0.0 test\n12 passing\n", "duration": 1234, "sandbox": False}),
    ("beforeMCPExecution", "mcp_execution",
     {"tool_name": "database_query", "tool_input": "{\"query\": \"SELECT * FROM users\"}",
      "url": "http://localhost:3000"}),
    ("afterMCPExecution", "mcp_execution",
     {"tool_name": "database_query", "tool_input": "{\"query\": \"SELECT * FROM users\"}",
      "result_json": "{\"rows\": [[1, \"ann\"]]}", "duration": 250}),
    ("beforeReadFile", "file_read",
     {"file_path": f"{WS}/.env", "content": "API_KEY=abc123",
      "attachments": [{"type": "rule", "file_path": f"{WS}/.cursorrules"}]}),
    ("afterFileEdit", "file_edit",
     {"file_path": f"{WS}/src/main.ts", "edits": [{"old_string": "const foo = 1", "new_string": "const foo = 2"}]}),
    ("stop", "stop", {"status": "completed", "loop_count": 0}),
    ("preToolUse", "tool_use",
     {"tool_name": "Shell", "tool_input": {"command": "npm install", "working_directory": WS},
      "tool_use_id": "call_1", "cwd": WS, "agent_message": "Installing dependencies..."}),
    ("postToolUse", "tool_result",
     {"tool_name": "Shell", "tool_input": {"command": "npm test"},
      "tool_output": "{\"exitCode\":0,\"stdout\":\"All tests passed\"}", "tool_use_id": "call_2", "cwd": WS,
      "duration": 5432}),
    ("postToolUseFailure", "tool_failure",
     {"tool_name": "Shell", "tool_input": {"command": "npm test"}, "tool_use_id": "call_3", "cwd": WS,
      "error_message": "Command timed out after 30s", "failure_type": "timeout", "duration": 5000,
      "is_interrupt": False}),
    ("subagentStart", "subagent_start",
     {"subagent_id": "abc-123", "subagent_type": "generalPurpose", "task": "Explore the authentication flow",
      "parent_conversation_id": "conv-456", "tool_call_id": "tc-789", "subagent_model": "claude-sonnet-4-20250514",
      "is_parallel_worker": False, "git_branch": "feature/auth"}),
    ("subagentStop", "subagent_stop",
     {"subagent_type": "generalPurpose", "status": "completed", "task": "Explore the authentication flow",
      "description": "Exploring auth flow", "summary": "Auth goes through src/auth.ts", "duration_ms": 45000,
      "message_count": 12, "tool_call_count": 8, "loop_count": 0, "modified_files": [f"{WS}/src/auth.ts"],
      "agent_transcript_path": "/home/dev/.cursor/transcripts/sub-1.txt"}),
    ("preCompact", "context_compact",
     {"trigger": "auto", "context_usage_percent": 85, "context_tokens": 120000, "context_window_size": 128000,
      "message_count": 45, "messages_to_compact": 30, "is_first_compaction": True}),
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
    "prompt_id": "550e8400-e29b-41d4-a716-446655440000",
    "transcript_path": f"/home/dev/.claude/projects/-home-dev-projects-shop/{SID}.jsonl",
    "cwd": WS,
    "permission_mode": "default",
}
TRANSCRIPT = CLAUDE_BASE["transcript_path"]

#: one sample per documented Claude Code hook event (code.claude.com/docs/en/hooks,
#: the fields of each event's documented input), plus one name we do not know
CLAUDE_SAMPLES: list[tuple[str, str, dict[str, Any]]] = [
    ("SessionStart", "session_start", {"source": "startup", "model": "claude-sonnet-4-5"}),
    ("Setup", "setup", {"trigger": "init"}),
    ("SessionEnd", "session_end", {"reason": "prompt_input_exit"}),
    ("UserPromptSubmit", "user_prompt", {"prompt": "Write a function to calculate the factorial of a number"}),
    ("UserPromptExpansion", "prompt_expansion",
     {"expansion_type": "slash_command", "command_name": "example-skill", "command_args": "arg1 arg2",
      "command_source": "plugin", "prompt": "/example-skill arg1 arg2"}),
    ("PreToolUse", "tool_use",
     {"tool_name": "Bash", "tool_input": {"command": "npm test", "description": "Run the tests"},
      "tool_use_id": "toolu_01ABC123", "effort": {"level": "high"}}),
    ("PermissionRequest", "permission_request",
     {"tool_name": "Bash", "tool_input": {"command": "rm -rf node_modules", "description": "Remove node_modules"},
      "permission_suggestions": [{"type": "addRules", "rules": [{"toolName": "Bash",
                                                                  "ruleContent": "rm -rf node_modules"}],
                                  "behavior": "allow", "destination": "localSettings"}]}),
    ("PermissionDenied", "permission_denied",
     {"tool_name": "Bash", "tool_input": {"command": "rm -rf /tmp/build", "description": "Clean build directory"},
      "tool_use_id": "toolu_01ABC125", "reason": "[Irreversible Local Destruction]"}),
    ("PostToolUse", "tool_result",
     {"tool_name": "Write", "tool_input": {"file_path": f"{WS}/file.txt", "content": "file content"},
      "tool_response": {"filePath": f"{WS}/file.txt", "type": "create"}, "tool_use_id": "toolu_01ABC124",
      "duration_ms": 12}),
    ("PostToolUseFailure", "tool_failure",
     {"tool_name": "Bash", "tool_input": {"command": "npm test", "description": "Run test suite"},
      "tool_use_id": "toolu_9", "error": "Exit code 1\nError: Cannot find module 'express'",
      "is_interrupt": False, "duration_ms": 4187}),
    ("PostToolBatch", "tool_batch",
     {"tool_calls": [{"tool_name": "Read", "tool_input": {"file_path": f"{WS}/ledger/accounts.py"},
                      "tool_use_id": "toolu_01", "tool_response": "     1\tfrom __future__ import annotations\n"},
                     {"tool_name": "Read", "tool_input": {"file_path": f"{WS}/ledger/transactions.py"},
                      "tool_use_id": "toolu_02", "tool_response": "     1\timport decimal\n"}]}),
    ("Notification", "notification",
     {"message": "Claude needs your permission to use Bash", "title": "Permission needed",
      "notification_type": "permission_prompt"}),
    ("MessageDisplay", "message_display",
     {"turn_id": "0c9e6a2f-7d41-4f4e-9a15-3f4f7c2b8d10", "message_id": "5b2a9c8e-1f63-4d8a-b7c4-9e0d2a6f1c3b",
      "index": 0, "final": False, "delta": "Here is the plan:\n"}),
    ("SubagentStart", "subagent_start", {"agent_id": "agent-abc123", "agent_type": "Explore"}),
    ("SubagentStop", "subagent_stop",
     {"stop_hook_active": False, "agent_id": "agent-7", "agent_type": "Explore",
      "agent_transcript_path": "/home/dev/.claude/projects/x/subagents/agent-7.jsonl",
      "last_assistant_message": "Analysis complete. Found 3 potential issues...",
      "background_tasks": [], "session_crons": []}),
    ("TaskCreated", "task_created",
     {"task_id": "task-001", "task_subject": "Implement user authentication",
      "task_description": "Add login and signup endpoints", "teammate_name": "implementer",
      "team_name": "session-a1b2c3d4"}),
    ("TaskCompleted", "task_completed",
     {"task_id": "task-001", "task_subject": "Implement user authentication",
      "task_description": "Add login and signup endpoints", "teammate_name": "implementer"}),
    ("Stop", "stop",
     {"stop_hook_active": False, "last_assistant_message": "I've completed the refactoring.",
      "background_tasks": [{"id": "task-001", "type": "shell", "status": "running", "description": "tail logs",
                            "command": "tail -f /var/log/syslog"}],
      "session_crons": [{"id": "cron-001", "schedule": "0 9 * * 1-5", "recurring": True,
                         "prompt": "check the build"}]}),
    ("StopFailure", "stop_failure",
     {"error": "rate_limit", "error_details": "429 Too Many Requests",
      "last_assistant_message": "API Error: Rate limit reached"}),
    ("TeammateIdle", "teammate_idle", {"teammate_name": "researcher", "team_name": "session-a1b2c3d4"}),
    ("InstructionsLoaded", "instructions_loaded",
     {"file_path": f"{WS}/CLAUDE.md", "memory_type": "Project", "load_reason": "session_start"}),
    ("ConfigChange", "config_change",
     {"source": "project_settings", "file_path": f"{WS}/.claude/settings.json"}),
    ("CwdChanged", "cwd_changed", {"old_cwd": WS, "new_cwd": f"{WS}/src"}),
    ("DirectoryAdded", "directory_added", {"directory": "/home/dev/projects/other", "source": "slash_command"}),
    ("FileChanged", "file_changed", {"file_path": f"{WS}/.envrc", "event": "change"}),
    ("WorktreeCreate", "worktree_create", {"name": "feature-auth"}),
    ("WorktreeRemove", "worktree_remove", {"worktree_path": f"{WS}/.claude/worktrees/feature-auth"}),
    ("PreCompact", "context_compact", {"trigger": "manual", "custom_instructions": "keep the API notes"}),
    ("PostCompact", "context_compacted",
     {"trigger": "manual", "compact_summary": "Summary of the compacted conversation..."}),
    ("PreModelSwitch", "model_switch_request",
     {"from_model": "claude-sonnet-5", "to_model": "claude-opus-5", "requested_model": "opus",
      "source": "command", "context_tokens": 182340, "prompt_cache_warm": True, "cache_ttl": "5m",
      "estimated_cache_write_usd": 1.1396, "pricing": "catalog"}),
    ("PostModelSwitch", "model_switch",
     {"from_model": "claude-opus-5", "to_model": "claude-sonnet-5", "requested_model": None, "source": "auto",
      "context_tokens": 1000, "prompt_cache_warm": False, "cache_ttl": "5m", "estimated_cache_write_usd": 0.01,
      "pricing": "catalog"}),
    ("Elicitation", "elicitation",
     {"mcp_server_name": "my-mcp-server", "message": "Please provide your credentials", "mode": "form",
      "requested_schema": {"type": "object", "properties": {"username": {"type": "string",
                                                                          "title": "Username"}}}}),
    ("ElicitationResult", "elicitation_result",
     {"mcp_server_name": "my-mcp-server", "action": "accept", "content": {"username": "alice"}, "mode": "form",
      "elicitation_id": "elicit-123"}),
    ("SomeFutureEvent", "hook_event", {"detail": "unknown to us"}),
]

CURSOR_META = ("generation_id", "model", "cursor_version", "transcript_path", "tool_name", "tool_use_id")
CLAUDE_META = ("tool_use_id", "transcript_path", "cwd", "permission_mode", "tool_name", "agent_id",
               "agent_type", "model", "prompt_id")
#: per event, the documented classifier fields the metadata also carries (input key -> metadata key)
EVENT_META: dict[str, dict[str, str]] = {
    "sessionEnd": {"reason": "reason"}, "postToolUseFailure": {"failure_type": "failure_type",
                                                               "is_interrupt": "is_interrupt"},
    "subagentStart": {"subagent_type": "subagent_type", "subagent_id": "subagent_id"},
    "subagentStop": {"subagent_type": "subagent_type", "status": "status"}, "preCompact": {"trigger": "trigger"},
    "stop": {"status": "status"},
    "SessionStart": {"source": "session_source"}, "Setup": {"trigger": "trigger"}, "SessionEnd": {"reason": "reason"},
    "UserPromptExpansion": {"expansion_type": "expansion_type", "command_name": "command_name"},
    "PostToolUseFailure": {"is_interrupt": "is_interrupt"}, "Notification": {"notification_type": "notification_type"},
    "TaskCreated": {"task_id": "task_id"}, "TaskCompleted": {"task_id": "task_id"}, "StopFailure": {"error": "error"},
    "TeammateIdle": {"teammate_name": "teammate_name"},
    "InstructionsLoaded": {"load_reason": "load_reason", "memory_type": "memory_type"},
    "ConfigChange": {"source": "config_source"}, "DirectoryAdded": {"source": "directory_source"},
    "FileChanged": {"event": "file_event"}, "PreCompact": {"trigger": "trigger"}, "PostCompact": {"trigger": "trigger"},
    "PreModelSwitch": {"from_model": "from_model", "to_model": "to_model", "source": "switch_source"},
    "PostModelSwitch": {"from_model": "from_model", "to_model": "to_model", "source": "switch_source"},
    "Elicitation": {"mcp_server_name": "mcp_server_name", "mode": "mode"},
    "ElicitationResult": {"mcp_server_name": "mcp_server_name", "action": "action"},
}


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
    expected_meta.update({m: sample[k] for k, m in EVENT_META.get(hook, {}).items() if k in sample})
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


# ----------------------------------------------------------------------------- Cursor running Claude hooks

#: Cursor runs the hooks in ~/.claude/settings.json as "third-party hooks"
#: (cursor.com/docs/reference/third-party-hooks), mapping Claude's event names
#: to its own: our Claude hook then gets Cursor's input (the common schema of
#: cursor.com/docs/agent/hooks), which our Cursor hook records already.
THIRD_PARTY = [
    ("preToolUse", {"tool_name": "Shell", "tool_input": {"command": "npm test"}, "tool_use_id": "abc123",
                    "cwd": WS}),
    ("postToolUse", {"tool_name": "Shell", "tool_input": {"command": "npm test"}, "tool_use_id": "abc123",
                     "tool_output": "{\"exitCode\":0}", "cwd": WS, "duration": 5432}),
    ("beforeSubmitPrompt", {"prompt": "Fix the bug", "attachments": []}),
    ("stop", {"status": "completed", "loop_count": 0}),
    ("subagentStop", {"subagent_type": "explore", "status": "completed", "task": "look around"}),
    ("sessionStart", {"session_id": CURSOR_BASE["conversation_id"], "is_background_agent": False,
                      "composer_mode": "agent"}),
    ("sessionEnd", {"session_id": CURSOR_BASE["conversation_id"], "reason": "completed", "duration_ms": 1}),
    ("preCompact", {"trigger": "auto", "context_usage_percent": 85}),
    ("PreToolUse", {"tool_name": "Shell", "tool_input": {"command": "ls"}}),  # were the name translated back
]


@pytest.mark.parametrize("hook,extra", THIRD_PARTY, ids=[h for h, _ in THIRD_PARTY])
def test_cursor_running_the_claude_hook_stores_no_second_copy(hook: str, extra: dict[str, Any], app_home: Path,
                                                               redis_server: RedisProc) -> None:
    sample = {**CURSOR_BASE, "hook_event_name": hook, **extra}
    env = hook_env(app_home, redis_server.url)
    proc, _ = run_hook("claude", json.dumps(sample), env)
    assert_clean_exit("claude", proc)  # exit 0, nothing on stdout: the same as any Claude call
    assert proc.stderr == b""
    assert stream_entries(redis_server.client()) == []
    assert spool_files(app_home) == []
    # the Cursor hook Cursor runs for the same call stores it, once, labelled as Cursor's
    proc, _ = run_hook("cursor", json.dumps(sample), env)
    assert_clean_exit("cursor", proc)
    [entry] = stream_entries(redis_server.client())
    assert (entry["platform"], entry["session_id"]) == ("cursor", CURSOR_BASE["conversation_id"])


def test_cursor_running_the_claude_hook_spools_nothing_when_redis_is_down(app_home: Path) -> None:
    sample = {**CURSOR_BASE, "hook_event_name": "preToolUse", "tool_name": "Shell",
              "tool_input": {"command": "ls"}}
    proc, _ = run_hook("claude", json.dumps(sample), hook_env(app_home, "redis://127.0.0.1:1/0"))
    assert_clean_exit("claude", proc)
    assert proc.stderr == b""
    assert spool_files(app_home) == []


def test_claude_input_with_a_conversation_id_alone_is_still_stored(app_home: Path, redis_server: RedisProc) -> None:
    """Only Cursor's shape is skipped: a Claude input that happens to carry a
    conversation_id (an MCP tool's input, a future field) is Claude's."""
    sample = {**CLAUDE_BASE, "hook_event_name": "Stop", "stop_hook_active": False, "conversation_id": "x"}
    proc, _ = run_hook("claude", json.dumps(sample), hook_env(app_home, redis_server.url))
    assert_clean_exit("claude", proc)
    [entry] = stream_entries(redis_server.client())
    assert (entry["platform"], entry["session_id"], entry["event_type"]) == ("claude_code", SID, "stop")
