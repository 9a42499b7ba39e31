"""Hook input (the assistant's JSON on stdin) -> one event of the contract.

Pure: time, randomness and settings are passed in, so every rule here is
unit-tested without a subprocess (tests/test_hook_mapping.py). The result
is the flat stream entry (str -> str) that ``tray_app.events.decode``
accepts: the hook sends it as it is.

Privacy (``[capture]`` modes) and the size cap are applied here, before
anything leaves the hook process. See docs/hooks.md for the tables.

Standard library only; loaded as a top-level module by hook.py.
"""

import time

try:
    from posix import urandom
except ImportError:  # Windows
    from nt import urandom  # type: ignore[no-redef,attr-defined]

try:
    from _sha2 import sha256 as _sha256  # CPython >= 3.12
except ImportError:
    try:
        from _sha256 import sha256 as _sha256  # CPython 3.11
    except ImportError:  # pragma: no cover - other interpreters
        from hashlib import sha256 as _sha256

try:
    from . import fastjson
except ImportError:
    import fastjson  # type: ignore[no-redef]

SCHEMA_VERSION = "1"
CAPTURE_VERSION = 1

PLATFORMS = {"cursor": "cursor", "claude": "claude_code", "claude_code": "claude_code"}
SOURCES = {"cursor": "cursor_hook", "claude_code": "claude_hook"}

#: Cursor's agent and Tab hooks -> event_type. Every event of
#: cursor.com/docs/agent/hooks (checked 2026-12-02; see docs/hooks.md).
CURSOR_EVENTS = {
    "sessionStart": "session_start",
    "sessionEnd": "session_end",
    "beforeSubmitPrompt": "user_prompt",
    "afterAgentResponse": "assistant_response",
    "afterAgentThought": "assistant_thought",
    "beforeShellExecution": "shell_execution",
    "afterShellExecution": "shell_execution",
    "beforeMCPExecution": "mcp_execution",
    "afterMCPExecution": "mcp_execution",
    "beforeReadFile": "file_read",
    "beforeTabFileRead": "file_read",
    "afterFileEdit": "file_edit",
    "afterTabFileEdit": "file_edit",
    "preToolUse": "tool_use",
    "postToolUse": "tool_result",
    "postToolUseFailure": "tool_failure",
    "subagentStart": "subagent_start",
    "subagentStop": "subagent_stop",
    "preCompact": "context_compact",
    "stop": "stop",
}

#: Claude Code's hook events -> event_type. Every event of
#: code.claude.com/docs/en/hooks (checked 2026-12-02; see docs/hooks.md).
CLAUDE_EVENTS = {
    "SessionStart": "session_start",
    "Setup": "setup",
    "SessionEnd": "session_end",
    "UserPromptSubmit": "user_prompt",
    "UserPromptExpansion": "prompt_expansion",
    "PreToolUse": "tool_use",
    "PermissionRequest": "permission_request",
    "PermissionDenied": "permission_denied",
    "PostToolUse": "tool_result",
    "PostToolUseFailure": "tool_failure",
    "PostToolBatch": "tool_batch",
    "Notification": "notification",
    "MessageDisplay": "message_display",
    "SubagentStart": "subagent_start",
    "SubagentStop": "subagent_stop",
    "TaskCreated": "task_created",
    "TaskCompleted": "task_completed",
    "Stop": "stop",
    "StopFailure": "stop_failure",
    "TeammateIdle": "teammate_idle",
    "InstructionsLoaded": "instructions_loaded",
    "ConfigChange": "config_change",
    "CwdChanged": "cwd_changed",
    "DirectoryAdded": "directory_added",
    "FileChanged": "file_changed",
    "WorktreeCreate": "worktree_create",
    "WorktreeRemove": "worktree_remove",
    "PreCompact": "context_compact",
    "PostCompact": "context_compacted",
    "PreModelSwitch": "model_switch_request",
    "PostModelSwitch": "model_switch",
    "Elicitation": "elicitation",
    "ElicitationResult": "elicitation_result",
}

#: unknown hook names are kept, generically, as this type
GENERIC_TYPE = "hook_event"
ERROR_TYPE = "error"

#: input keys copied into metadata when present (scalars only), for every event
CURSOR_META = ("generation_id", "model", "cursor_version", "transcript_path", "tool_name",
               "tool_use_id")
CLAUDE_META = ("tool_use_id", "transcript_path", "cwd", "permission_mode", "tool_name",
               "agent_id", "agent_type", "model", "prompt_id")
#: per event: documented classifier fields copied into metadata as
#: (input key, metadata key) -- never content, and never over a key above
CURSOR_EVENT_META = {
    "sessionEnd": (("reason", "reason"),),
    "postToolUseFailure": (("failure_type", "failure_type"), ("is_interrupt", "is_interrupt")),
    "subagentStart": (("subagent_type", "subagent_type"), ("subagent_id", "subagent_id")),
    "subagentStop": (("subagent_type", "subagent_type"), ("status", "status")),
    "preCompact": (("trigger", "trigger"),),
    "stop": (("status", "status"),),
}
CLAUDE_EVENT_META = {
    "SessionStart": (("source", "session_source"),),
    "Setup": (("trigger", "trigger"),),
    "SessionEnd": (("reason", "reason"),),
    "UserPromptExpansion": (("expansion_type", "expansion_type"), ("command_name", "command_name")),
    "PostToolUseFailure": (("is_interrupt", "is_interrupt"),),
    "Notification": (("notification_type", "notification_type"),),
    "TaskCreated": (("task_id", "task_id"),),
    "TaskCompleted": (("task_id", "task_id"),),
    "StopFailure": (("error", "error"),),
    "TeammateIdle": (("teammate_name", "teammate_name"),),
    "InstructionsLoaded": (("load_reason", "load_reason"), ("memory_type", "memory_type")),
    "ConfigChange": (("source", "config_source"),),
    "DirectoryAdded": (("source", "directory_source"),),
    "FileChanged": (("event", "file_event"),),
    "PreCompact": (("trigger", "trigger"),),
    "PostCompact": (("trigger", "trigger"),),
    "PreModelSwitch": (("from_model", "from_model"), ("to_model", "to_model"),
                       ("source", "switch_source")),
    "PostModelSwitch": (("from_model", "from_model"), ("to_model", "to_model"),
                        ("source", "switch_source")),
    "Elicitation": (("mcp_server_name", "mcp_server_name"), ("mode", "mode")),
    "ElicitationResult": (("mcp_server_name", "mcp_server_name"), ("action", "action")),
}

#: Cursor runs the hooks in ~/.claude/settings.json too ("third-party hooks",
#: cursor.com/docs/reference/third-party-hooks): our Claude hook then gets
#: Cursor's input, which our Cursor hook already records. Claude Code's input
#: never has these keys; Cursor's base input always has conversation_id and
#: the others.
CURSOR_ONLY_KEYS = ("cursor_version", "workspace_roots", "generation_id")


def is_cursor_input(obj):
    """Whether a hook input is Cursor's (see CURSOR_ONLY_KEYS)."""
    return "conversation_id" in obj and any(k in obj for k in CURSOR_ONLY_KEYS)


# ----------------------------------------------------------------------------- privacy

#: top-level input keys holding content, and the [capture] setting that governs each
TOP_LEVEL_CONTENT = {
    "prompt": "prompts",
    "custom_instructions": "prompts",
    "text": "responses",
    "last_assistant_message": "responses",
    "summary": "responses",
    "compact_summary": "responses",
    "delta": "responses",
    "agent_message": "responses",
    "task": "prompts",
    "content": "file_contents",
    "result_json": "file_contents",
    "output": "shell_output",
    "stdout": "shell_output",
    "stderr": "shell_output",
}
#: keys of an ``edits`` list item (Cursor afterFileEdit / afterTabFileEdit)
EDIT_CONTENT = ("old_string", "new_string", "old_line", "new_line")
#: keys of ``tool_input`` that carry file text (Write, Edit, MultiEdit, NotebookEdit)
TOOL_INPUT_CONTENT = ("content", "contents", "old_string", "new_string", "edits", "new_source",
                      "file_text")
SHELL_TOOLS = frozenset({"Bash", "BashOutput", "Shell", "run_terminal_cmd"})
SUBAGENT_TOOLS = frozenset({"Task", "Agent"})
TOOL_RESULT_KEYS = ("tool_response", "tool_output")


def sha256_hex(data):
    return _sha256(data).hexdigest()


def hash_value(value):
    """"sha256:<hex>" of a string's UTF-8 bytes, or of another value's compact JSON."""
    if isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
    else:
        data = fastjson.dumps(value).encode("utf-8", "surrogatepass")
    return "sha256:" + sha256_hex(data)


def apply_mode(container, key, mode, path, redacted):
    """Apply ``mode`` to ``container[key]`` in place; note it in ``redacted``."""
    if mode == "full" or key not in container or container[key] is None:
        return
    if mode == "hash":
        container[key] = hash_value(container[key])
    else:
        del container[key]
    redacted[path] = mode


def _tool_result_setting(tool_name):
    if tool_name in SHELL_TOOLS:
        return "shell_output"
    if tool_name in SUBAGENT_TOOLS:
        return "responses"
    return "file_contents"  # Read, Grep, Edit, MCP, ... results carry workspace text


def _tool_privacy(obj, settings, prefix, redacted):
    """The [capture] modes for one tool call's input and result in ``obj``."""
    tool = obj.get("tool_name")
    tool_input = obj.get("tool_input")
    if isinstance(tool_input, dict):
        for key in TOOL_INPUT_CONTENT:
            apply_mode(tool_input, key, settings["file_contents"], f"{prefix}tool_input.{key}", redacted)
        if tool in SUBAGENT_TOOLS:
            apply_mode(tool_input, "prompt", settings["prompts"], f"{prefix}tool_input.prompt", redacted)
    for key in TOOL_RESULT_KEYS:
        if key in obj:
            apply_mode(obj, key, settings[_tool_result_setting(tool)], prefix + key, redacted)
    if tool in SHELL_TOOLS:  # a failed shell command: its error text carries the output
        for key in ("error", "error_message"):
            if key in obj:
                apply_mode(obj, key, settings["shell_output"], prefix + key, redacted)


def apply_privacy(obj, settings):
    """Apply the [capture] modes to the hook input ``obj`` (a dict, changed in
    place). Returns {path: mode} for each value hashed or removed."""
    redacted = {}
    if all(settings.get(k, "full") == "full" for k in
           ("prompts", "responses", "file_contents", "shell_output")):
        return redacted
    for key, setting in TOP_LEVEL_CONTENT.items():
        if key in obj:
            apply_mode(obj, key, settings[setting], key, redacted)
    edits = obj.get("edits")
    if isinstance(edits, list):
        mode = settings["file_contents"]
        for item in edits:
            if isinstance(item, dict):
                for key in EDIT_CONTENT:
                    apply_mode(item, key, mode, f"edits[].{key}", redacted)
    _tool_privacy(obj, settings, "", redacted)
    calls = obj.get("tool_calls")  # PostToolBatch: one item per tool call of the batch
    if isinstance(calls, list):
        for item in calls:
            if isinstance(item, dict):
                _tool_privacy(item, settings, "tool_calls[].", redacted)
    return redacted


# ----------------------------------------------------------------------------- size cap

def _cut(value, limit):
    """``value`` with every string longer than ``limit`` characters cut, marked."""
    if isinstance(value, str):
        if len(value) <= limit:
            return value
        return f"{value[:limit]}...[truncated {len(value) - limit} of {len(value)} chars]"
    if isinstance(value, dict):
        return {k: _cut(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [_cut(v, limit) for v in value]
    return value


def fit(payload, cap):
    """(payload, text, truncated): ``payload`` as compact JSON of at most
    ``cap`` UTF-8 bytes, long strings cut with a marker where needed."""
    text = _dumps(payload)
    if len(text) * 4 <= cap or len(text.encode("utf-8", "replace")) <= cap:
        return payload, text, False
    limit = cap // 2
    while limit >= 64:
        smaller = _cut(payload, limit)
        text = _dumps(smaller)
        if len(text.encode("utf-8", "replace")) <= cap:
            return smaller, text, True
        limit //= 2
    # Too many small values to fit: keep the shape's top level only.
    keys = list(payload)[:200] if isinstance(payload, dict) else []
    smaller = {"truncated": True, "keys": keys}
    return smaller, _dumps(smaller), True


def _finite(value):
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return repr(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _dumps(value):
    try:
        return fastjson.dumps(value)
    except ValueError:  # 1e999 in the input parsed as inf: not JSON
        return fastjson.dumps(_finite(value))


# ----------------------------------------------------------------------------- ids / time

def uuid7(now_ns, rand):
    """A UUIDv7 from unix nanoseconds and 8+ random bytes: 48 bits of
    milliseconds, 12 bits of sub-millisecond fraction (RFC 9562 method 3),
    62 random bits. Time-ordered, so inserts stay append-mostly."""
    ms, sub = divmod(now_ns, 1_000_000)
    frac = sub * 4096 // 1_000_000
    rand_b = int.from_bytes(rand[:8], "big") & 0x3FFF_FFFF_FFFF_FFFF
    value = (ms << 80) | (0x7 << 76) | (frac << 64) | (0b10 << 62) | rand_b
    h = "%032x" % value
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def iso_utc(now_ns):
    secs, ns = divmod(now_ns, 1_000_000_000)
    t = time.gmtime(secs)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (
        t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, ns // 1000)


def workspace_hash(path):
    """First 16 hex of sha256 of the workspace root (as tray_app.events)."""
    return sha256_hex(path.encode("utf-8", "surrogatepass"))[:16]


# ----------------------------------------------------------------------------- the event

def _str(value):
    return value if isinstance(value, str) else None


META_MAX_CHARS = 1000


def _scalar(value):
    if isinstance(value, str):
        return value[:META_MAX_CHARS]
    return value if isinstance(value, (int, float, bool)) else None


def platform_of(arg, obj=None):
    """'cursor' / 'claude_code' from the hook's argument (or, failing that,
    from the input's shape: only Cursor sends conversation_id)."""
    name = PLATFORMS.get((arg or "").strip().lower())
    if name:
        return name
    if isinstance(obj, dict) and ("conversation_id" in obj or "workspace_roots" in obj):
        return "cursor"
    return "claude_code"


def _error_payload(reason, raw, total_bytes):
    payload = {"error": reason, "input_bytes": total_bytes}
    if raw:
        payload["input_sha256"] = sha256_hex(raw)
    return payload, {"invalid_input": reason}


def build(arg, raw, settings, now_ns=None, rand=None, total_bytes=None):
    """The stream entry (dict of str) for one hook call, or None when there
    is nothing to record: the Claude hook run by Cursor with Cursor's input
    (third-party hooks; the Cursor hook records the same call).

    ``raw``: the stdin bytes read (at most the read limit); ``total_bytes``:
    how many stdin held (defaults to len(raw)). Never raises on bad input:
    empty, non-JSON or non-object input becomes an ``error`` event."""
    if now_ns is None:
        now_ns = time.time_ns()
    if rand is None:
        rand = urandom(8)
    if total_bytes is None:
        total_bytes = len(raw)
    obj = None
    error = None
    if total_bytes > len(raw):
        error = "input_too_large"
    elif not raw.strip():
        error = "empty_input"
    else:
        text = raw.decode("utf-8", "replace")
        if text.startswith("\ufeff"):
            text = text[1:]
        try:
            obj = fastjson.loads(text)
        except ValueError:
            error = "invalid_json"
        else:
            if not isinstance(obj, dict):
                obj, error = None, "not_an_object"
    platform = platform_of(arg, obj)
    if obj is not None and platform == "claude_code" and is_cursor_input(obj):
        return None  # Cursor running our Claude hook: its Cursor hook records this call
    metadata = {"source": SOURCES[platform], "capture_version": CAPTURE_VERSION}
    fields = {
        "event_id": uuid7(now_ns, rand),
        "platform": platform,
        "event_type": ERROR_TYPE,
        "timestamp": iso_utc(now_ns),
        "session_id": "unknown",
    }
    if obj is None:
        payload, extra = _error_payload(error, raw, total_bytes)
        metadata.update(extra)
        fields["hook_type"] = "invalid_input"
    else:
        name = _str(obj.get("hook_event_name")) or "unknown"
        table = CURSOR_EVENTS if platform == "cursor" else CLAUDE_EVENTS
        fields["event_type"] = table.get(name, GENERIC_TYPE)
        extra = (CURSOR_EVENT_META if platform == "cursor" else CLAUDE_EVENT_META).get(name, ())
        fields["hook_type"] = name
        if platform == "cursor":
            session = _str(obj.get("conversation_id")) or _str(obj.get("session_id"))
            roots = obj.get("workspace_roots")
            root = roots[0] if isinstance(roots, list) and roots and isinstance(roots[0], str) else None
            root = root or _str(obj.get("cwd"))
            meta_keys = CURSOR_META
        else:
            session = _str(obj.get("session_id"))
            root = _str(obj.get("cwd"))
            meta_keys = CLAUDE_META
        if session:
            fields["session_id"] = session
            fields["external_session_id"] = session
        if root:
            fields["workspace_hash"] = workspace_hash(root)
        for key in meta_keys:
            value = _scalar(obj.get(key))
            if value is not None:
                metadata[key] = value
        for key, meta_key in extra:
            value = _scalar(obj.get(key))
            if value is not None:
                metadata[meta_key] = value
        redacted = apply_privacy(obj, settings)
        if redacted:
            metadata["redacted"] = redacted
        payload = obj
    payload, payload_text, truncated = fit(payload, settings.get("max_input_bytes", 1 << 20))
    if truncated:
        metadata["truncated"] = True
        metadata["input_bytes"] = total_bytes
    fields["payload"] = payload_text
    fields["metadata"] = _dumps(metadata)
    fields["schema_version"] = SCHEMA_VERSION
    return fields


def to_resp_fields(fields):
    """Alternating names and values (bytes) for XADD."""
    out = []
    for key, value in fields.items():
        out.append(key.encode())
        out.append(value.encode("utf-8", "replace"))
    return out
