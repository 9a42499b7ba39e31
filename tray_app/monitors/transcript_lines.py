"""Claude Code transcript lines -> ``transcript_trace`` / ``error`` events (pure).

A transcript is JSON Lines, one object per line, written by Claude Code under
``~/.claude/projects/<encoded cwd>/<sessionId>.jsonl``; subagents (Task tool)
write ``<sessionId>/subagents/agent-<agentId>.jsonl`` beside it (older
versions: ``agent-<agentId>.jsonl`` in the project directory). Lines carry
``type`` (user, assistant, system, summary, file-history-snapshot,
queue-operation, …), ``uuid``/``parentUuid``, ``sessionId``, ``timestamp``,
``cwd``, ``isSidechain``, ``agentId``; assistant lines hold the API message
(``model``, ``content`` blocks text/thinking/tool_use, ``usage``); user lines
hold the prompt or ``tool_result`` blocks plus a structured ``toolUseResult``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from tray_app import jsonutil

from tray_app import events
from tray_app.monitors import privacy
from tray_app.monitors.emit import fit_payload
from tray_app.monitors.privacy import Capture

SOURCE = "transcript_monitor"
PLATFORM = "claude_code"

_FILE_INPUT_FIELDS = ("content", "old_string", "new_string", "new_source")
_RESULT_FILE_FIELDS = ("content", "originalFile", "oldString", "newString", "structuredPatch", "file")
_SHELL_TOOLS = ("Bash", "BashOutput", "KillShell", "KillBash")


def session_from_path(path: Path) -> str:
    """The session a transcript file belongs to, from its location."""
    if path.parent.name == "subagents" and path.parent.parent.name:
        return path.parent.parent.name
    return path.stem


def line_digest(line: bytes) -> str:
    return hashlib.blake2b(line, digest_size=16).hexdigest()


def parse_line(line: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """(object, None) or (None, why it is malformed)."""
    try:
        obj = jsonutil.loads(line)
    except ValueError as exc:
        return None, f"not valid JSON: {exc}"
    if not isinstance(obj, dict):
        return None, f"expected a JSON object, found {type(obj).__name__}"
    return obj, None


class ToolNames:
    """tool_use id -> tool name, for telling shell output from file contents in
    the tool_result lines that follow (bounded; lost on restart, where the
    ``toolUseResult`` shape decides instead)."""

    def __init__(self, cap: int = 2000) -> None:
        self.cap = cap
        self._names: dict[str, str] = {}

    def add(self, tool_id: str, name: str) -> None:
        self._names[tool_id] = name
        if len(self._names) > self.cap:
            for k in list(self._names)[: self.cap // 2]:
                del self._names[k]

    def get(self, tool_id: Any) -> str | None:
        return self._names.get(tool_id) if isinstance(tool_id, str) else None


def apply_capture(obj: dict[str, Any], cap: Capture, tools: ToolNames) -> None:
    kind = obj.get("type")
    msg = obj.get("message")
    content = msg.get("content") if isinstance(msg, dict) else None
    if kind == "summary":
        cap.field(obj, "summary", privacy.RESPONSES)
        return
    if kind == "assistant" and isinstance(content, list):
        for block in content:
            if not isinstance(block, dict):
                continue
            btype = block.get("type")
            if btype == "text":
                cap.field(block, "text", privacy.RESPONSES)
            elif btype in ("thinking", "redacted_thinking"):
                cap.fields(block, ("thinking", "data"), privacy.RESPONSES)
            elif btype == "tool_use":
                if isinstance(block.get("id"), str):
                    tools.add(block["id"], str(block.get("name") or ""))
                inp = block.get("input")
                if isinstance(inp, dict):
                    cap.fields(inp, _FILE_INPUT_FIELDS, privacy.FILE_CONTENTS)
                    edits = inp.get("edits")
                    if isinstance(edits, list):
                        for e in edits:
                            cap.fields(e, ("old_string", "new_string"), privacy.FILE_CONTENTS)
        return
    if kind != "user":
        return
    result = obj.get("toolUseResult")
    shellish = isinstance(result, dict) and ("stdout" in result or "stderr" in result)
    category = privacy.PROMPTS if not obj.get("isCompactSummary") else privacy.RESPONSES
    if isinstance(content, str):
        cap.field(msg, "content", category)
    elif isinstance(content, list):
        for block in content:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text":
                cap.field(block, "text", category)
            elif block.get("type") == "tool_result":
                name = tools.get(block.get("tool_use_id"))
                shell = name in _SHELL_TOOLS if name else shellish
                cap.field(block, "content", privacy.SHELL_OUTPUT if shell else privacy.FILE_CONTENTS)
    if isinstance(result, dict):
        cap.fields(result, ("stdout", "stderr"), privacy.SHELL_OUTPUT)
        cap.fields(result, _RESULT_FILE_FIELDS, privacy.FILE_CONTENTS)
    elif isinstance(result, str):
        cap.field(obj, "toolUseResult", privacy.SHELL_OUTPUT if shellish else privacy.FILE_CONTENTS)


def line_time(obj: dict[str, Any]) -> str | None:
    """The line's own time (file-history-snapshot lines keep it inside ``snapshot``)."""
    snap = obj.get("snapshot")
    return events.iso_or_none(obj.get("timestamp")) or (events.iso_or_none(snap.get("timestamp")) if isinstance(snap, dict) else None)


#: the token counts of ``message.usage`` kept in metadata (ints only)
USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def usage_numbers(usage: Any) -> dict[str, int]:
    """The token counts of an assistant line's ``message.usage``, with the cache
    creation split by TTL when present (``cache_creation.ephemeral_5m_input_tokens``
    / ``ephemeral_1h_input_tokens``), and the server tool counts."""
    if not isinstance(usage, dict):
        return {}
    out = {k: usage[k] for k in USAGE_FIELDS if type(usage.get(k)) is int}
    split = usage.get("cache_creation")
    if isinstance(split, dict):
        for k in ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"):
            if type(split.get(k)) is int:
                out[k] = split[k]
    tools = usage.get("server_tool_use")
    if isinstance(tools, dict):
        for k, v in tools.items():
            if type(v) is int:
                out[f"server_tool_use.{k}"] = v
    return out


#: how far into a file time_in_file looks
TIME_SCAN_BYTES = 8 * 1024 * 1024


def time_in_file(path: Path, leaf_uuid: str | None = None) -> str | None:
    """The time of the line whose ``uuid`` is ``leaf_uuid``, else of the first
    line with a time, within the first TIME_SCAN_BYTES of ``path``."""
    first: str | None = None
    needle = leaf_uuid.encode() if leaf_uuid else None
    try:
        with open(path, "rb") as fh:
            read = 0
            for line in fh:
                read += len(line)
                if read > TIME_SCAN_BYTES:
                    break
                if first is not None and (needle is None or needle not in line):
                    continue
                obj, _ = parse_line(line.strip())
                if obj is None:
                    continue
                ts = line_time(obj)
                if ts is None:
                    continue
                if needle is not None and obj.get("uuid") == leaf_uuid:
                    return ts
                if first is None:
                    first = ts
                    if needle is None:
                        return first
    except OSError:
        return None
    return first


def line_event(obj: dict[str, Any], line: bytes, *, path: Path, offset: int, line_no: int,
               file_session: str, workspace_hash: str | None, cap: Capture, tools: ToolNames,
               fallback_ts: str, payload_max_bytes: int) -> dict[str, Any]:
    """``fallback_ts`` is for lines without a time of their own (summary lines):
    the time of the line before, so reading an old file never looks like activity now."""
    sid = obj.get("sessionId")
    session_id = sid if isinstance(sid, str) and sid else file_session
    uuid = obj.get("uuid")
    if isinstance(uuid, str) and uuid:
        event_id = events.deterministic_event_id(PLATFORM, session_id, uuid)
    else:
        event_id = events.deterministic_event_id(PLATFORM, "line", str(path), str(offset), line_digest(line))
    kind = obj.get("type")
    message = obj.get("message")
    msg: dict[str, Any] = message if isinstance(message, dict) else {}
    payload = privacy.redact(obj)
    apply_capture(payload, cap, tools)
    payload = fit_payload(payload, payload_max_bytes)
    meta: dict[str, Any] = {"source": SOURCE, "monitor": "claude_transcripts", "file": str(path),
                            "line": line_no, "offset": offset}
    for src, dst in (("uuid", "uuid"), ("parentUuid", "parent_uuid"), ("agentId", "agent_id"),
                     ("isSidechain", "is_sidechain"), ("version", "claude_version")):
        if obj.get(src) is not None:
            meta[dst] = obj[src]
    if path.parent.name == "subagents" or path.name.startswith("agent-"):
        meta["subagent"] = True
    if isinstance(msg.get("model"), str):
        meta["model"] = msg["model"]
    if kind == "assistant":
        # what token accounting needs, without decompressing the payload
        if isinstance(msg.get("id"), str):
            meta["message_id"] = msg["id"]
        if isinstance(obj.get("requestId"), str):
            meta["request_id"] = obj["requestId"]
        usage = usage_numbers(msg.get("usage"))
        if usage:
            meta["usage"] = usage
    if cap.reduced:
        meta["capture"] = cap.reduced
    return {
        "event_id": event_id,
        "platform": PLATFORM,
        "event_type": "transcript_trace",
        "timestamp": line_time(obj) or fallback_ts,
        "session_id": session_id,
        "external_session_id": session_id,
        "hook_type": kind if isinstance(kind, str) and kind else "unknown",
        "workspace_hash": workspace_hash,
        "payload": payload,
        "metadata": meta,
    }


def error_event(line: bytes, why: str, *, path: Path, offset: int, line_no: int,
                file_session: str, workspace_hash: str | None, now_iso: str) -> dict[str, Any]:
    """A malformed line, named by file and line number (its content is not copied)."""
    return {
        "event_id": events.deterministic_event_id(PLATFORM, "malformed", str(path), str(offset),
                                                  line_digest(line)),
        "platform": PLATFORM,
        "event_type": "error",
        "timestamp": now_iso,
        "session_id": file_session,
        "hook_type": "malformed_line",
        "workspace_hash": workspace_hash,
        "payload": {"error": "malformed_line", "file": str(path), "line": line_no, "offset": offset,
                    "bytes": len(line), "detail": why[:300]},
        "metadata": {"source": SOURCE, "monitor": "claude_transcripts", "file": str(path), "line": line_no},
    }
