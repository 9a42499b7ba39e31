"""One session as a timeline, for `telemetry-tray session ID`.

Built from that session's own raw rows (one index range of ``raw_traces``):
each prompt, the assistant's turns (one per API message: a message's content
blocks are separate transcript lines), their tool, shell and edit calls with
outcome and duration (from the matching tool result), and subagents attached
to the call that started them. The assistant's own store (transcript, Cursor
database) is used when the session has it, else the hook events. Content
stays on this machine; ``content=False`` keeps the structure only.
"""

from __future__ import annotations

import logging
import sqlite3
import zlib
from datetime import tzinfo
from typing import Any

from tray_app import events, jsonutil
from tray_app.errors import UsageError
from tray_app.usage.accounting import OTLP_SOURCE, SUBAGENT_TOOLS, tool_kind

log = logging.getLogger(__name__)

MAX_TEXT = 400
Step = dict[str, Any]


def find_session(conn: sqlite3.Connection, prefix: str) -> tuple[str, str]:
    rows = conn.execute("SELECT DISTINCT session_id, platform FROM raw_traces WHERE session_id >= ? "
                        "AND session_id < ? AND session_id NOT LIKE 'cursor-state:%' LIMIT 3",
                        (prefix, prefix + "\U0010ffff")).fetchall()
    ids = {r[0] for r in rows}
    if not ids:
        raise UsageError(f"no session {prefix!r} recorded (see `telemetry-tray sessions`)")
    if len(ids) > 1:
        raise UsageError(f"{prefix!r} matches several sessions: {', '.join(sorted(ids))}")
    return rows[0][0], rows[0][1]


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value[:MAX_TEXT]
    if isinstance(value, list):
        parts = [str(b["text"]) for b in value if isinstance(b, dict) and isinstance(b.get("text"), str)]
        return "\n".join(parts)[:MAX_TEXT] if parts else None
    return None


def _seconds(a: str, b: str) -> float:
    return round((events.parse_timestamp(b) - events.parse_timestamp(a)).total_seconds(), 3)


class Builder:
    def __init__(self, content: bool) -> None:
        self.content = content
        self.steps: list[Step] = []
        self.turns: dict[str, Step] = {}
        self.calls: dict[str, Step] = {}
        self.agents: dict[str, list[Step]] = {}
        self.agent_of_call: dict[str, str] = {}
        self.seen: set[str] = set()

    def _put(self, step: Step, text: str | None = None, agent: str | None = None) -> Step:
        if text and self.content:
            step["text"] = text
        (self.agents.setdefault(agent, []) if agent else self.steps).append(step)
        return step

    def call(self, turn: Step, ts: str, name: str | None, cid: str | None, inp: Any) -> None:
        c: Step = {"kind": tool_kind(name), "tool": name, "time": ts, "outcome": None, "duration_s": None}
        if self.content and isinstance(inp, dict):
            detail = inp.get("command") or inp.get("file_path") or inp.get("description") or inp.get("pattern")
            if isinstance(detail, str):
                c["input"] = detail[:MAX_TEXT]
        turn.setdefault("calls", []).append(c)
        if cid:
            self.calls[cid] = c

    def result(self, cid: Any, ts: str, error: bool, agent: Any = None) -> None:
        c = self.calls.get(cid) if isinstance(cid, str) else None
        if c is None:
            return
        c["outcome"] = "error" if error else "ok"
        c["duration_s"] = _seconds(c["time"], ts)
        if isinstance(agent, str) and agent:
            self.agent_of_call[agent] = cid

    # -- Claude Code transcript lines --------------------------------------------------------

    def transcript(self, ts: str, hook_type: str | None, data: dict[str, Any]) -> None:
        line = _d(data.get("payload"))
        meta = _d(data.get("metadata"))
        msg = _d(line.get("message"))
        agent = meta.get("agent_id") if meta.get("is_sidechain") or meta.get("subagent") else None
        key = f"{hook_type}:{ts}:{meta.get('message_id') or ''}:{jsonutil.dumps(msg.get('content'))[:200]!r}"
        if key in self.seen:  # a resumed or copied session's repeat of an earlier line
            return
        self.seen.add(key)
        content = msg.get("content")
        if hook_type == "user":
            if isinstance(content, list) and any(isinstance(b, dict) and b.get("type") == "tool_result"
                                                 for b in content):
                res = line.get("toolUseResult")
                for b in content:
                    if isinstance(b, dict) and b.get("type") == "tool_result":
                        self.result(b.get("tool_use_id"), ts, bool(b.get("is_error")),
                                    res.get("agentId") if isinstance(res, dict) else None)
                return
            if line.get("isMeta") or line.get("isCompactSummary"):
                return
            self._put({"kind": "prompt", "time": ts}, _text(content), agent)
        elif hook_type == "assistant":
            if msg.get("model") == "<synthetic>":
                return
            mid = meta.get("message_id") or f"line:{ts}"
            turn = self.turns.get(mid)
            if turn is None:
                turn = self.turns[mid] = self._put({"kind": "turn", "time": ts, "model": msg.get("model")},
                                                   None, agent)
            for b in content if isinstance(content, list) else ():
                if not isinstance(b, dict):
                    continue
                if b.get("type") == "text" and self.content and isinstance(b.get("text"), str):
                    turn["text"] = ((turn.get("text") or "") + b["text"])[:MAX_TEXT]
                elif b.get("type") == "tool_use":
                    self.call(turn, ts, b.get("name"), b.get("id"), b.get("input"))
            usage = _d(meta.get("usage"))
            if isinstance(usage.get("output_tokens"), int):
                turn["output_tokens"] = max(turn.get("output_tokens", 0), usage["output_tokens"])

    # -- Cursor bubbles -----------------------------------------------------------------------

    def bubble(self, ts: str, data: dict[str, Any]) -> None:
        v = _d(data.get("payload"))
        key = str(_d(data.get("metadata")).get("key") or ts)
        old = self.turns.get(key)
        if old is not None:  # a rewritten bubble: the latest version replaces it
            self.steps.remove(old)
        if v.get("type") == 1:
            self.turns[key] = self._put({"kind": "prompt", "time": ts}, _text(v.get("text")))
        elif v.get("type") == 2:
            turn = self.turns[key] = self._put({"kind": "turn", "time": ts, "model": None}, _text(v.get("text")))
            tool = v.get("toolFormerData")
            if isinstance(tool, dict) and tool.get("name"):
                self.call(turn, ts, tool.get("name"), None, None)
                turn["calls"][-1]["outcome"] = "ok" if tool.get("status") == "completed" else tool.get("status")

    # -- hook events ----------------------------------------------------------------------------

    def hook(self, ts: str, et: str, hook_type: str | None, data: dict[str, Any]) -> None:
        p = _d(data.get("payload"))
        meta = _d(data.get("metadata"))
        if et == "user_prompt":
            self._put({"kind": "prompt", "time": ts}, _text(p.get("prompt")))
        elif et == "assistant_response":
            self._put({"kind": "turn", "time": ts, "model": meta.get("model")}, _text(p.get("text")))
        elif et in ("tool_use", "mcp_execution", "shell_execution") and hook_type not in (
                "afterShellExecution", "afterMCPExecution"):
            name = meta.get("tool_name") or p.get("tool_name") or ("shell" if et == "shell_execution" else None)
            turn = self._put({"kind": "calls", "time": ts})
            inp = _d(p.get("tool_input")) or {"command": p.get("command")}
            self.call(turn, ts, name if name != "shell" else "Bash", meta.get("tool_use_id"), inp)
        elif et == "tool_result" or hook_type in ("afterShellExecution", "afterMCPExecution"):
            self.result(meta.get("tool_use_id"), ts, bool(p.get("error")))
        elif et == "file_edit":
            step = self._put({"kind": "edit", "time": ts})
            if self.content and isinstance(p.get("file_path"), str):
                step["file"] = p["file_path"]
        elif et in ("subagent_start", "subagent_stop"):
            self._put({"kind": et, "time": ts})

    def finish(self) -> list[Step]:
        for agent, steps in self.agents.items():
            cid = self.agent_of_call.get(agent)
            call = self.calls.get(cid) if cid else None
            if call is None:  # the last subagent call before the subagent's first line
                first = steps[0]["time"]
                cands = [c for c in self.calls.values() if c["tool"] in SUBAGENT_TOOLS and c["time"] <= first]
                call = cands[-1] if cands else None
            if call is not None:
                call.setdefault("subagents", []).append({"agent_id": agent, "steps": steps})
            else:
                self.steps.append({"kind": "subagent", "time": steps[0]["time"], "agent_id": agent, "steps": steps})
        return self.steps


def build(conn: sqlite3.Connection, prefix: str, content: bool = True) -> dict[str, Any]:
    sid, platform = find_session(conn, prefix)
    rows = conn.execute("SELECT event_type, hook_type, timestamp, source, event_data FROM raw_traces "
                        "WHERE session_id=? ORDER BY timestamp, sequence", (sid,)).fetchall()
    store = any(r[0] in ("transcript_trace", "database_trace") for r in rows)
    b = Builder(content)
    for et, hook_type, ts, source, blob in rows:
        is_store = et in ("transcript_trace", "database_trace")
        if store != is_store or source == OTLP_SOURCE:
            continue  # the hooks' or the store's account; Claude Code's own telemetry repeats them
        try:
            data = jsonutil.loads(zlib.decompress(blob))
        except (zlib.error, ValueError):
            continue
        if et == "transcript_trace":
            b.transcript(ts, hook_type, data)
        elif et == "database_trace" and hook_type == "bubbleId":
            b.bubble(ts, data)
        elif not is_store:
            b.hook(ts, et, hook_type, data)
    steps = b.finish()
    times = [r[2] for r in rows]
    ws = conn.execute("SELECT MAX(workspace_hash) FROM raw_traces WHERE session_id=?", (sid,)).fetchone()[0]
    return {"session_id": sid, "assistant": platform, "project": ws, "start": min(times) if times else None,
            "end": max(times) if times else None, "steps": steps}


def _clock(ts: str, tz: tzinfo | None) -> str:
    dt = events.parse_timestamp(ts)
    return (dt.astimezone(tz) if tz is not None else dt.astimezone()).strftime("%Y-%m-%d %H:%M:%S")


def _lines(steps: list[Step], tz: tzinfo | None, indent: str) -> list[str]:
    out: list[str] = []
    for s in steps:
        head = f"{indent}{_clock(s['time'], tz)}  "
        text = (s.get("text") or "").replace("\n", " ")
        if s["kind"] == "prompt":
            out.append(f"{head}> prompt{': ' + text if text else ''}")
        elif s["kind"] == "turn":
            tokens = f", {s['output_tokens']} output tokens" if s.get("output_tokens") else ""
            model = f" ({s['model']}{tokens})" if s.get("model") else ""
            out.append(f"{head}* assistant{model}{': ' + text if text else ''}")
        elif s["kind"] == "edit":
            out.append(f"{head}~ edit {s.get('file') or ''}".rstrip())
        elif s["kind"] != "calls":
            out.append(f"{head}{s['kind']} {s.get('agent_id') or ''}".rstrip())
        for c in s.get("calls", []):
            dur = f" {c['duration_s']:.1f} s" if c.get("duration_s") is not None else ""
            detail = f"  {c['input']}" if c.get("input") else ""
            out.append(f"{indent}    - {c['kind']} {c['tool'] or ''} [{c['outcome'] or 'no result'}{dur}]{detail}")
            for sub in c.get("subagents", []):
                out.append(f"{indent}      subagent {sub['agent_id']}:")
                out += _lines(sub["steps"], tz, indent + "        ")
        if s.get("steps") and s["kind"] == "subagent":
            out += _lines(s["steps"], tz, indent + "    ")
    return out


def print_text(tl: dict[str, Any], tz: tzinfo | None = None) -> None:
    print(f"Session {tl['session_id']} ({tl['assistant']}, project {tl['project'] or '-'})")
    print("\n".join(_lines(tl["steps"], tz, "")) or "(no prompts or turns recorded)")


__all__ = ["build", "print_text", "find_session"]
