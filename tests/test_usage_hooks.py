"""Hook events in the usage tables: a hook-only session counts its hook
prompts and tool calls; a session whose transcript is recorded counts the
transcript's, so a prompt seen by both counts once. Today's line for the tray."""

from __future__ import annotations

import json
import sqlite3

from conftest import run_cli, wait_for
from engine_util import push, running_engine
from tray_app import events
from tray_app.usage import query


def hook(kind: str, session: str, ts: str, **meta: str) -> dict:
    payload = {"prompt": "fix the flaky test"} if kind == "user_prompt" else {"tool_input": {"command": "ls"}}
    return {"event_id": events.new_event_id(), "platform": "claude_code", "event_type": kind, "timestamp": ts,
            "session_id": session, "hook_type": {"user_prompt": "UserPromptSubmit"}.get(kind, "PreToolUse"),
            "workspace_hash": "00000000000000aa", "payload": payload,
            "metadata": {"source": "claude_hook", **meta}}


def transcript_prompt(session: str, ts: str) -> dict:
    line = {"type": "user", "uuid": "u-1", "sessionId": session, "timestamp": ts,
            "message": {"role": "user", "content": "fix the flaky test"}}
    return {"event_id": events.deterministic_event_id("claude_code", session, "u-1"), "platform": "claude_code",
            "event_type": "transcript_trace", "timestamp": ts, "session_id": session, "hook_type": "user",
            "workspace_hash": "00000000000000aa", "payload": line,
            "metadata": {"source": "transcript_monitor", "uuid": "u-1"}}


def otlp_prompt(session: str, ts: str) -> dict:
    """The same prompt as Claude Code's own telemetry reports it (our OTLP receiver's event)."""
    return {"event_id": events.new_event_id(), "platform": "claude_code", "event_type": "user_prompt",
            "timestamp": ts, "session_id": session, "hook_type": "claude_code.user_prompt",
            "payload": {"prompt_length": 18, "prompt": "fix the flaky test"},
            "metadata": {"source": "otlp", "otel_event_name": "claude_code.user_prompt"}}


def test_hook_and_transcript_prompts_count_once_and_hook_only_sessions_count(app_env, redis_server):
    now = events.utc_now_iso()
    evs = [hook("user_prompt", "hook-only", now), hook("user_prompt", "hook-only", now), otlp_prompt("hook-only", now),
           hook("tool_use", "hook-only", now, tool_name="Bash"), hook("tool_use", "hook-only", now, tool_name="Read"),
           hook("user_prompt", "both", now), transcript_prompt("both", now)]
    with running_engine(redis_server.url) as eng:
        push(redis_server.client(), evs)
        db = eng.cfg.paths.database

        def applied() -> bool:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            try:
                row = conn.execute("SELECT last_sequence FROM usage_state WHERE worker='usage'").fetchone()
                return bool(row) and row[0] == len(evs)
            except sqlite3.OperationalError:
                return False
            finally:
                conn.close()

        wait_for(applied, timeout=20, what="the worker applied every event")
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            assert query.today(conn) == {"date": query.local_date(events.parse_timestamp(now), None).isoformat(),
                                         "total_tokens": 0, "cost_usd": None, "prompts": 3, "requests": 0}
            assert query.top_tools(conn, None, 5) == [{"tool": "Bash", "kind": "shell", "calls": 1},
                                                      {"tool": "Read", "kind": "tool", "calls": 1}]
        finally:
            conn.close()
    r = run_cli("sessions", "--json", env=app_env)
    assert r.returncode == 0, r.stderr
    got = {s["session_id"]: (s["prompts"], s["tool_calls"]) for s in json.loads(r.stdout)}
    assert got == {"hook-only": (2, 2), "both": (1, 0)}
    text = run_cli("report", "daily", env=app_env)
    assert text.returncode == 0 and "Prices: genai-prices" in text.stdout
    # the session's timeline shows each prompt once: Claude Code's own telemetry repeats the hook's
    tl = json.loads(run_cli("session", "hook-only", "--json", env=app_env).stdout)
    assert [s["kind"] for s in tl["steps"]].count("prompt") == 2


def test_the_worker_pauses_and_resumes_with_the_engine(app_env, redis_server):
    with running_engine(redis_server.url) as eng:
        wait_for(lambda: eng.usage.health()["state"] == "running", what="worker running")
        eng.pause()
        assert eng.usage.paused and eng.usage.health()["state"] == "paused"
        eng.resume()
        assert not eng.usage.paused and eng.usage.health()["state"] == "running"
