"""The catalogue of hook events: every event each assistant documents is
installed (or, with a reason, deliberately not), mapped to its own event type,
has a real-format sample in tests/test_hook_events.py, and, where the event
can make a decision, gets exactly the output that makes none.

The lists below are copied from the documentation, not from our code:
  Claude Code: code.claude.com/docs/en/hooks ("Hook lifecycle" table; the
    stored copy checked on 2026-12-02 names versions up to v2.1.274)
  Cursor: cursor.com/docs/agent/hooks ("Agent and Tab Support"; checked on
    2026-12-02) and cursor.com/docs/reference/third-party-hooks
docs/hooks.md records the same sources.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import RedisProc
from test_hook_events import (CLAUDE_BASE, CLAUDE_SAMPLES, CURSOR_BASE, CURSOR_SAMPLES, assert_clean_exit,
                              hook_env, run_hook, stream_entries)
from tray_app import events
from tray_app.capture import installers, mapping

CLAUDE_DOCUMENTED = (
    "SessionStart", "Setup", "UserPromptSubmit", "UserPromptExpansion", "PreToolUse", "PermissionRequest",
    "PermissionDenied", "PostToolUse", "PostToolUseFailure", "PostToolBatch", "Notification", "MessageDisplay",
    "SubagentStart", "SubagentStop", "TaskCreated", "TaskCompleted", "Stop", "StopFailure", "TeammateIdle",
    "InstructionsLoaded", "ConfigChange", "CwdChanged", "DirectoryAdded", "FileChanged", "WorktreeCreate",
    "WorktreeRemove", "PreCompact", "PostCompact", "PreModelSwitch", "PostModelSwitch", "Elicitation",
    "ElicitationResult", "SessionEnd",
)
CURSOR_DOCUMENTED = (
    "sessionStart", "sessionEnd", "preToolUse", "postToolUse", "postToolUseFailure", "subagentStart",
    "subagentStop", "beforeShellExecution", "afterShellExecution", "beforeMCPExecution", "afterMCPExecution",
    "beforeReadFile", "afterFileEdit", "beforeSubmitPrompt", "preCompact", "stop", "afterAgentResponse",
    "afterAgentThought", "beforeTabFileRead", "afterTabFileEdit",
)
#: documented, but a command hook there always has an effect (docs/hooks.md)
CLAUDE_NOT_INSTALLED = {"WorktreeCreate", "WorktreeRemove"}

#: events whose output can decide something, with the documented output fields
#: that would (what our hook must never set). Claude Code: "Exit code 0 with no
#: output means the hook has no decision to report"; for UserPromptSubmit,
#: UserPromptExpansion, SessionStart and PostModelSwitch plain stdout would be
#: added to Claude's context, so there must be none at all.
CLAUDE_DECIDING = {
    "PreToolUse": ("hookSpecificOutput", "decision", "continue"),
    "PermissionRequest": ("hookSpecificOutput",),
    "PermissionDenied": ("hookSpecificOutput",),
    "UserPromptSubmit": ("decision", "hookSpecificOutput", "continue"),
    "UserPromptExpansion": ("decision", "hookSpecificOutput", "continue"),
    "Stop": ("decision", "hookSpecificOutput", "continue"),
    "SubagentStop": ("decision", "hookSpecificOutput", "continue"),
    "PostToolUse": ("decision", "hookSpecificOutput", "continue"),
    "PostToolUseFailure": ("hookSpecificOutput", "continue"),
    "PostToolBatch": ("decision", "hookSpecificOutput", "continue"),
    "TeammateIdle": ("continue",),
    "TaskCreated": ("decision",),
    "TaskCompleted": ("continue",),
    "ConfigChange": ("decision",),
    "PreCompact": ("decision",),
    "PreModelSwitch": ("decision", "hookSpecificOutput"),
    "PostModelSwitch": ("hookSpecificOutput",),
    "SessionStart": ("hookSpecificOutput",),
    "SubagentStart": ("hookSpecificOutput",),
    "Elicitation": ("hookSpecificOutput",),
    "ElicitationResult": ("hookSpecificOutput",),
    "MessageDisplay": ("hookSpecificOutput",),
    "CwdChanged": ("watchPaths",),
    "FileChanged": ("watchPaths",),
}
CURSOR_DECIDING = {
    "preToolUse": ("permission", "updated_input", "user_message", "agent_message"),
    "postToolUse": ("updated_mcp_tool_output", "additional_context"),
    "subagentStart": ("permission", "user_message"),
    "subagentStop": ("followup_message",),
    "beforeShellExecution": ("permission", "user_message", "agent_message"),
    "beforeMCPExecution": ("permission", "user_message", "agent_message"),
    "beforeReadFile": ("permission", "user_message"),
    "beforeTabFileRead": ("permission",),
    "beforeSubmitPrompt": ("continue", "user_message"),
    "sessionStart": ("env", "additional_context", "continue", "user_message"),
    "preCompact": ("user_message",),
    "stop": ("followup_message",),
}


def test_the_catalogue_is_mapped_to_specific_types() -> None:
    assert set(mapping.CLAUDE_EVENTS) == set(CLAUDE_DOCUMENTED)
    assert set(mapping.CURSOR_EVENTS) == set(CURSOR_DOCUMENTED)
    for table in (mapping.CLAUDE_EVENTS, mapping.CURSOR_EVENTS):
        for hook, event_type in table.items():
            assert event_type in events.EVENT_TYPES, hook
            assert event_type not in (mapping.GENERIC_TYPE, mapping.ERROR_TYPE), hook
    # what the issue asked to tell apart is told apart
    assert mapping.CLAUDE_EVENTS["PostToolUseFailure"] == mapping.CURSOR_EVENTS["postToolUseFailure"] \
        == "tool_failure" != mapping.CLAUDE_EVENTS["PostToolUse"]
    assert mapping.CLAUDE_EVENTS["StopFailure"] == "stop_failure" != mapping.CLAUDE_EVENTS["Stop"]


def test_every_documented_event_has_a_real_format_sample() -> None:
    assert {h for h, _, _ in CLAUDE_SAMPLES} >= set(CLAUDE_DOCUMENTED)
    assert {h for h, _, _ in CURSOR_SAMPLES} >= set(CURSOR_DOCUMENTED)
    for samples, table in ((CLAUDE_SAMPLES, mapping.CLAUDE_EVENTS), (CURSOR_SAMPLES, mapping.CURSOR_EVENTS)):
        for hook, event_type, _ in samples:
            assert table.get(hook, mapping.GENERIC_TYPE) == event_type, hook


def _install(tmp_path: Path) -> tuple[dict, dict, dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if k != "CLAUDE_CONFIG_DIR"}
    env["HOME"] = str(tmp_path / "user")
    for assistant in installers.ASSISTANTS:
        installers.apply(installers.plan(assistant, True, env))
    cursor = json.loads((tmp_path / "user" / ".cursor" / "hooks.json").read_text())
    claude = json.loads((tmp_path / "user" / ".claude" / "settings.json").read_text())
    return cursor, claude, env


def test_install_registers_every_documented_event(tmp_path: Path, app_home: Path) -> None:
    cursor, claude, env = _install(tmp_path)
    assert set(cursor["hooks"]) == set(CURSOR_DOCUMENTED)
    assert set(claude["hooks"]) == set(CLAUDE_DOCUMENTED) - CLAUDE_NOT_INSTALLED
    for assistant, data in (("cursor", cursor), ("claude", claude)):
        st = installers.status(assistant, env)
        assert st.state == "installed" and st.missing == () and st.stale == ()
        assert set(st.installed) == set(data["hooks"])
    # FileChanged: no matcher, so our hook adds no file to what Claude Code watches
    assert "matcher" not in claude["hooks"]["FileChanged"][0]
    # installing again changes nothing; uninstalling leaves nothing of ours (the files were ours)
    for assistant in installers.ASSISTANTS:
        assert not installers.plan(assistant, True, env).changed
        installers.apply(installers.plan(assistant, False, env))
    assert not (tmp_path / "user" / ".cursor" / "hooks.json").exists()
    assert not (tmp_path / "user" / ".claude" / "settings.json").exists()


def test_an_entry_of_ours_on_a_worktree_event_is_removed(tmp_path: Path, app_home: Path) -> None:
    """A WorktreeCreate command hook replaces git's worktree creation and must
    print the path: an entry of ours there (an old or hand-made install) would
    make every worktree fail, so install takes it out and keeps the user's."""
    env = {k: v for k, v in os.environ.items() if k != "CLAUDE_CONFIG_DIR"}
    env["HOME"] = str(tmp_path / "user")
    path = tmp_path / "user" / ".claude" / "settings.json"
    path.parent.mkdir(parents=True)
    mine = {"type": "command", "command": installers.hook_command("claude")}
    users = {"type": "command", "command": "svn-worktree.sh"}
    path.write_text(json.dumps({"hooks": {"WorktreeCreate": [{"hooks": [mine]}, {"hooks": [users]}]}}))
    installers.apply(installers.plan("claude", True, env))
    data = json.loads(path.read_text())
    assert data["hooks"]["WorktreeCreate"] == [{"hooks": [users]}]


@pytest.mark.parametrize("hook", sorted(CLAUDE_DECIDING))
def test_claude_events_that_decide_get_no_decision(hook: str, app_home: Path, redis_server: RedisProc) -> None:
    extra = next(e for h, _, e in CLAUDE_SAMPLES if h == hook)
    proc, _ = run_hook("claude", json.dumps({**CLAUDE_BASE, "hook_event_name": hook, **extra}),
                       hook_env(app_home, redis_server.url))
    assert proc.returncode == 0 and proc.stdout == b"" and proc.stderr == b""  # exit 0, no output at all
    assert len(stream_entries(redis_server.client())) == 1


@pytest.mark.parametrize("hook", sorted(CURSOR_DECIDING))
def test_cursor_events_that_decide_get_no_decision(hook: str, app_home: Path, redis_server: RedisProc) -> None:
    extra = next(e for h, _, e in CURSOR_SAMPLES if h == hook)
    proc, _ = run_hook("cursor", json.dumps({**CURSOR_BASE, "hook_event_name": hook, **extra}),
                       hook_env(app_home, redis_server.url))
    assert_clean_exit("cursor", proc)
    assert proc.stdout == b"{}\n"  # a JSON object that sets none of the fields below
    assert not set(json.loads(proc.stdout)) & set(CURSOR_DECIDING[hook])
    assert len(stream_entries(redis_server.client())) == 1
