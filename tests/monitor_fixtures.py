"""Builders for what the monitors read: Cursor's state.vscdb files and Claude
Code's JSONL transcripts, shaped like the real ones.

Formats (reverse-engineered by the community; no official schema exists):
* Cursor: ``CREATE TABLE ItemTable / cursorDiskKV (key TEXT UNIQUE ON CONFLICT
  REPLACE, value BLOB)``; global ``cursorDiskKV`` holds ``composerData:<id>``
  (``_v``, ``fullConversationHeadersOnly``, ``createdAt``/``lastUpdatedAt`` in ms,
  ``modelConfig``, ``usageData``…) and ``bubbleId:<composerId>:<bubbleId>``
  (``_v``, ``type`` 1 user / 2 assistant, ``text``, ``richText``, ``createdAt`` ISO,
  ``codeBlocks``, ``toolFormerData``, ``tokenCount``…); workspace ``ItemTable``
  holds ``aiService.prompts`` ([{text, commandType}]), ``aiService.generations``
  ([{unixMs, generationUUID, type, textDescription}]) and ``composer.composerData``
  ({allComposers: [{composerId, name, createdAt, lastUpdatedAt…}]}); ``workspace.json``
  is {"folder": "file:///…"}. Older Cursor versions keep a conversation's messages
  inline in composerData ``conversation[]``; ``codeBlockDiff:<composerId>:<diffId>``
  holds an applied diff ({newModelDiffWrtV0: [{original: {startLineNumber,
  endLineNumberExclusive}, modified: [lines]}]}) whose file the conversation's
  ``codeBlockData`` names; newer versions add ``agentKv:blob:<sha256>`` rows.
* Claude Code: one JSON object per line; ``type`` user / assistant / system /
  summary / file-history-snapshot; ``uuid``, ``parentUuid``, ``sessionId``,
  ``timestamp``, ``cwd``, ``version``, ``gitBranch``, ``isSidechain``; assistant
  ``message`` with ``model``, ``content`` blocks and ``usage``; tool results in
  user lines with ``toolUseResult``; subagents in ``<session>/subagents/agent-<id>.jsonl``.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import uuid as uuidlib
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

# A JWT-shaped secret and an API key: tests assert neither ever reaches the stream.
FAKE_JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhdXRoMHx1c2VyXzAxIiwiZXhwIjoxOTAwMDAwMDAwfQ."
            "c2lnbmF0dXJlLWJ5dGVzLWZvci10ZXN0cw")
FAKE_REFRESH = "eyJhbGciOiJIUzI1NiJ9.eyJyZWZyZXNoIjoidG9rZW4tMDEyMzQ1Njc4OSJ9.cmVmcmVzaC1zaWduYXR1cmU"
FAKE_API_KEY = "sk-ant-api03-" + "A1b2C3d4E5f6G7h8I9j0" * 3
FAKE_ENCRYPTION_KEY = "K7dQ1mZ9pR4tY6uW8xA2bC3dE5fG7hJ9kL0mN1oP2q="
SECRETS = (FAKE_JWT, FAKE_REFRESH, FAKE_API_KEY, FAKE_ENCRYPTION_KEY)

T0 = datetime(2026, 3, 2, 9, 30, 0, tzinfo=timezone.utc)


def iso(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def uid(*parts: object) -> str:
    """A stable uuid-shaped id from ``parts`` (fixtures are deterministic)."""
    return str(uuidlib.UUID(hashlib.md5(repr(parts).encode()).hexdigest()))


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ============================================================================ Cursor

KV_SQL = "CREATE TABLE {} (key TEXT UNIQUE ON CONFLICT REPLACE, value BLOB)"


def create_state_db(path: Path) -> sqlite3.Connection:
    """An empty state.vscdb in WAL mode, both tables; returns the (open) writer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(KV_SQL.format("ItemTable"))
    conn.execute(KV_SQL.format("cursorDiskKV"))
    return conn


def put(conn: sqlite3.Connection, table: str, key: str, value: Any) -> None:
    """What Cursor does: INSERT, relying on ON CONFLICT REPLACE (new rowid)."""
    text = value if isinstance(value, (str, bytes)) else json.dumps(value, separators=(",", ":"))
    conn.execute(f"INSERT INTO {table} (key, value) VALUES (?, ?)", (key, text))


def user_bubble(composer_id: str, bubble_id: str, text: str, at: datetime) -> dict[str, Any]:
    return {
        "_v": 3, "type": 1, "bubbleId": bubble_id, "text": text,
        "richText": json.dumps({"root": {"children": [{"children": [{"text": text, "type": "text"}],
                                                        "type": "paragraph"}], "type": "root"}}),
        "createdAt": iso(at), "requestId": uid("req", bubble_id), "isAgentic": True, "unifiedMode": 2,
        "attachedCodeChunks": [{"relativeWorkspacePath": "src/app.py", "startLineNumber": 1,
                                "lines": ["def main():", "    return 42"]}],
        "modelInfo": {"modelName": "claude-4.5-sonnet"}, "workspaceUris": ["file:///home/dev/shop"],
        "tokenCount": {"inputTokens": 0, "outputTokens": 0}, "images": [], "gitDiffs": [],
    }


def assistant_bubble(composer_id: str, bubble_id: str, text: str, at: datetime,
                     terminal: bool = False) -> dict[str, Any]:
    b: dict[str, Any] = {
        "_v": 3, "type": 2, "bubbleId": bubble_id, "serverBubbleId": uid("srv", bubble_id), "text": text,
        "createdAt": iso(at), "requestId": uid("req", bubble_id), "isAgentic": True, "unifiedMode": 2,
        "codeBlocks": [{"content": "def total(xs):\n    return sum(xs)\n", "languageId": "python",
                        "codeBlockIdx": 0, "isGenerating": False}],
        "thinking": {"text": "The user wants a helper that sums a list."},
        "timingInfo": {"clientStartTime": 4745281.3, "clientRpcSendTime": ms(at) - 2000,
                       "clientSettleTime": ms(at), "clientEndTime": ms(at)},
        "tokenCount": {"inputTokens": 1834, "outputTokens": 212}, "usageUuid": uid("usage", bubble_id),
    }
    if terminal:
        b["toolFormerData"] = {"tool": 15, "name": "run_terminal_cmd", "status": "completed",
                               "rawArgs": json.dumps({"command": "pytest -q"}),
                               "result": json.dumps({"output": "5 passed in 0.12s", "exitCode": 0})}
    return b


def composer_data(composer_id: str, bubbles: list[tuple[str, int]], at: datetime, name: str) -> dict[str, Any]:
    return {
        "_v": 10, "composerId": composer_id, "name": name, "text": "", "richText": "",
        "fullConversationHeadersOnly": [
            {"bubbleId": b, "type": t, **({"serverBubbleId": uid("srv", b)} if t == 2 else {})}
            for b, t in bubbles],
        "conversationMap": {}, "status": "completed", "createdAt": ms(at), "lastUpdatedAt": ms(at),
        "unifiedMode": "agent", "forceMode": "edit", "isAgentic": True, "hasLoaded": True,
        "modelConfig": {"modelName": "claude-4.5-sonnet", "maxMode": False},
        "context": {"fileSelections": [], "folderSelections": [], "selections": [], "mentions": {}},
        "usageData": {"default": {"costInCents": 4, "amount": 1}},
        "speculativeSummarizationEncryptionKey": FAKE_ENCRYPTION_KEY,
        "totalLinesAdded": 2, "totalLinesRemoved": 0, "filesChangedCount": 1,
    }


class CursorFixture:
    """A Cursor ``User`` directory: one global DB and workspace DBs, with open
    writer connections (as while Cursor runs: the -wal files exist)."""

    def __init__(self, user_dir: Path) -> None:
        self.user_dir = user_dir
        self.global_path = user_dir / "globalStorage" / "state.vscdb"
        self.writers: dict[str, sqlite3.Connection] = {}
        self.bubble_count: dict[str, int] = {}

    # -- global -------------------------------------------------------------------------------

    def make_global(self) -> sqlite3.Connection:
        conn = create_state_db(self.global_path)
        self.writers["global"] = conn
        put(conn, "ItemTable", "cursorAuth/accessToken", FAKE_JWT)
        put(conn, "ItemTable", "cursorAuth/refreshToken", FAKE_REFRESH)
        put(conn, "ItemTable", "cursorAuth/cachedEmail", "dev@example.com")
        put(conn, "ItemTable", "cursorAuth/stripeMembershipType", "pro")
        put(conn, "ItemTable", "workbench.view.extensions.state.hidden", [{"id": "x", "isHidden": False}])
        put(conn, "ItemTable", "src.vs.platform.reactivestorage.browser.reactiveStorageServiceImpl.persistentStorage"
                               ".applicationUser", {"openAIKey": FAKE_API_KEY, "teamId": 7})
        put(conn, "cursorDiskKV", "checkpointId:" + uid("cp", 1), {"files": [], "nonExistentFiles": []})
        put(conn, "cursorDiskKV", "codeBlockDiff:" + uid("cbd", 1), {"newModelDiffWrtV0": []})
        return conn

    def add_conversation(self, composer_id: str, turns: int, at: datetime = T0, name: str = "Add a sum helper",
                         terminal: bool = True, workspace: str | None = None) -> list[str]:
        """``turns`` user+assistant pairs, then the composerData. Returns the bubble keys.
        ``workspace``: Cursor 3.x's ``workspaceIdentifier`` (``_v`` 16), naming the folder
        in the conversation itself (3.x no longer lists it in the workspace database)."""
        conn = self.writers["global"]
        keys: list[str] = []
        heads: list[tuple[str, int]] = []
        start = self.bubble_count.get(composer_id, 0)
        for i in range(start, start + turns):
            ub, ab = uid("u", composer_id, i), uid("a", composer_id, i)
            t = at + timedelta(seconds=30 * i)
            put(conn, "cursorDiskKV", f"bubbleId:{composer_id}:{ub}",
                user_bubble(composer_id, ub, f"Please add a sum helper, step {i}", t))
            put(conn, "cursorDiskKV", f"bubbleId:{composer_id}:{ab}",
                assistant_bubble(composer_id, ab, f"Added `total()` (step {i}).", t + timedelta(seconds=5),
                                 terminal=terminal))
            keys += [f"bubbleId:{composer_id}:{ub}", f"bubbleId:{composer_id}:{ab}"]
            heads += [(ub, 1), (ab, 2)]
        self.bubble_count[composer_id] = start + turns
        data = composer_data(composer_id, heads, at + timedelta(seconds=30 * (start + turns)), name)
        if workspace:
            data.update(_v=16, workspaceIdentifier={"id": uid("ws", workspace).replace("-", ""),
                                                    "uri": {"fsPath": workspace, "scheme": "file",
                                                            "external": "file://" + workspace}})
        put(conn, "cursorDiskKV", f"composerData:{composer_id}", data)
        return keys

    # -- other formats ------------------------------------------------------------------------

    def add_legacy_conversation(self, composer_id: str, turns: int, at: datetime = T0,
                                name: str = "Rename a helper") -> list[str]:
        """An older Cursor's conversation: the messages inline in composerData's
        ``conversation[]`` (``_v`` 2, no ``bubbleId:`` rows, bubbles without
        ``createdAt``). Returns the bubble ids in order."""
        conv = []
        for i in range(turns):
            ub, ab = uid("lu", composer_id, i), uid("la", composer_id, i)
            u = user_bubble(composer_id, ub, f"Rename helper step {i}", at)
            a = assistant_bubble(composer_id, ab, f"Renamed it (step {i}).", at)
            for b in (u, a):
                b.pop("createdAt", None)
                b.pop("timingInfo", None)
                b["_v"] = 2
            conv += [u, a]
        put(self.writers["global"], "cursorDiskKV", f"composerData:{composer_id}", {
            "_v": 2, "composerId": composer_id, "name": name, "text": "", "richText": "",
            "conversation": conv, "status": "completed", "createdAt": ms(at), "lastUpdatedAt": ms(at),
            "isAgentic": False, "context": {"fileSelections": []}})
        return [b["bubbleId"] for b in conv]

    def add_code_block_diff(self, composer_id: str, diff_id: str, path: str,
                            changes: list[tuple[int, int, list[str]]]) -> None:
        """An applied diff, as ``codeBlockDiff:<composerId>:<diffId>``: each change
        replaces original lines [start, end) with the given lines; the
        conversation's ``codeBlockData`` names the file."""
        conn = self.writers["global"]
        put(conn, "cursorDiskKV", f"codeBlockDiff:{composer_id}:{diff_id}", {
            "newModelDiffWrtV0": [{"original": {"startLineNumber": s, "endLineNumberExclusive": e},
                                   "modified": lines} for s, e, lines in changes],
            "originalModelDiffWrtV0": []})
        row = conn.execute("SELECT value FROM cursorDiskKV WHERE key=?", (f"composerData:{composer_id}",)).fetchone()
        data = json.loads(row[0]) if row else composer_data(composer_id, [], T0, "Edit")
        uri = "file://" + path
        data.setdefault("codeBlockData", {}).setdefault(uri, []).append(
            {"_v": 2, "bubbleId": uid("a", composer_id, 0), "codeBlockIdx": 0, "version": 0,
             "uri": {"fsPath": path, "scheme": "file"}, "status": "accepted", "languageId": "python",
             "diffId": diff_id, "isNoOp": False})
        put(conn, "cursorDiskKV", f"composerData:{composer_id}", data)

    def add_agent_kv(self, n: int, composer_id: str = "") -> None:
        """Newer Cursor's ``agentKv:blob:<sha256>`` (hex protobuf) rows, plus a
        checkpoint pointer per conversation: a key family the monitor does not read."""
        conn = self.writers["global"]
        for i in range(n):
            sha = hashlib.sha256(f"blob{i}".encode()).hexdigest()
            put(conn, "cursorDiskKV", f"agentKv:blob:{sha}", ("0a" + "secret agent text".encode().hex()) * 4)
        if composer_id:
            put(conn, "cursorDiskKV", f"agentKv:checkpoint:{composer_id}", hashlib.sha256(b"x").hexdigest())

    def add_reshaped_conversation(self, composer_id: str, at: datetime = T0) -> None:
        """A composerData of a (hypothetical) future version: the messages are
        neither in ``conversation`` nor listed in ``fullConversationHeadersOnly``."""
        put(self.writers["global"], "cursorDiskKV", f"composerData:{composer_id}", {
            "_v": 40, "composerId": composer_id, "name": "Future chat", "createdAt": ms(at),
            "lastUpdatedAt": ms(at), "conversationState": "~opaque-state-token~",
            "turns": [{"id": uid("t", composer_id), "text": "secret future prompt"}]})

    def add_table(self, name: str, rows: int) -> None:
        conn = self.writers["global"]
        conn.execute(f'CREATE TABLE IF NOT EXISTS "{name}" (id TEXT PRIMARY KEY, value BLOB)')
        conn.executemany(f'INSERT OR REPLACE INTO "{name}" VALUES (?, ?)',
                         [(uid(name, i), "secret table text") for i in range(rows)])

    # -- workspace ----------------------------------------------------------------------------

    def make_workspace(self, ws_id: str, folder: str, composer_ids: list[str], at: datetime = T0,
                       prompts: list[str] | None = None) -> sqlite3.Connection:
        d = self.user_dir / "workspaceStorage" / ws_id
        d.mkdir(parents=True, exist_ok=True)
        (d / "workspace.json").write_text(json.dumps({"folder": "file://" + folder.replace(" ", "%20")}))
        conn = create_state_db(d / "state.vscdb")
        self.writers[ws_id] = conn
        prompts = prompts or ["Please add a sum helper", "Now write tests for it"]
        put(conn, "ItemTable", "aiService.prompts", [{"text": p, "commandType": 4} for p in prompts])
        put(conn, "ItemTable", "aiService.generations", [
            {"unixMs": ms(at) + i * 1000, "generationUUID": uid("gen", ws_id, i), "type": "composer",
             "textDescription": p} for i, p in enumerate(prompts)])
        put(conn, "ItemTable", "composer.composerData", {
            "allComposers": [{"type": "head", "composerId": c, "name": "Add a sum helper",
                              "createdAt": ms(at), "lastUpdatedAt": ms(at), "unifiedMode": "agent",
                              "forceMode": "edit"} for c in composer_ids],
            "selectedComposerIds": composer_ids[:1], "lastFocusedComposerIds": composer_ids[:1],
            "hasMigratedComposerData": True})
        put(conn, "ItemTable", "workbench.explorer.treeViewState", {"focus": [], "expanded": []})
        return conn

    def append_prompt(self, ws_id: str, text: str, at: datetime) -> None:
        conn = self.writers[ws_id]
        old = json.loads(conn.execute("SELECT value FROM ItemTable WHERE key='aiService.prompts'").fetchone()[0])
        put(conn, "ItemTable", "aiService.prompts", old + [{"text": text, "commandType": 4}])
        gens = json.loads(conn.execute("SELECT value FROM ItemTable WHERE key='aiService.generations'")
                          .fetchone()[0])
        gens.append({"unixMs": ms(at), "generationUUID": uid("gen", ws_id, text), "type": "composer",
                     "textDescription": text})
        put(conn, "ItemTable", "aiService.generations", gens)

    def close(self) -> None:
        """Cursor quits: the last connection checkpoints and removes the -wal."""
        for conn in self.writers.values():
            conn.close()
        self.writers.clear()


# ============================================================================ Claude Code

def encode_project(cwd: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in cwd)


def jline(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")


class Transcript:
    """Appends lines the way Claude Code does (one JSON object per line)."""

    def __init__(self, path: Path, session_id: str, cwd: str, agent_id: str | None = None,
                 start: datetime = T0) -> None:
        self.path = path
        self.session_id = session_id
        self.cwd = cwd
        self.agent_id = agent_id
        self.t = start
        self.last_uuid: str | None = None
        self.n = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()

    def _base(self, kind: str) -> dict[str, Any]:
        self.n += 1
        self.t += timedelta(seconds=3)
        u = uid(self.path.name, self.session_id, self.n)
        d: dict[str, Any] = {"parentUuid": self.last_uuid, "isSidechain": self.agent_id is not None,
                             "userType": "external", "cwd": self.cwd, "sessionId": self.session_id,
                             "version": "2.1.12", "gitBranch": "main", "type": kind, "uuid": u,
                             "timestamp": iso(self.t)}
        if self.agent_id:
            d["agentId"] = self.agent_id
        self.last_uuid = u
        return d

    def write(self, obj: dict[str, Any] | bytes) -> dict[str, Any] | bytes:
        with open(self.path, "ab") as fh:
            fh.write(obj if isinstance(obj, bytes) else jline(obj))
        return obj

    def user(self, text: str) -> dict[str, Any]:
        d = self._base("user")
        d["message"] = {"role": "user", "content": text}
        return self.write(d)  # type: ignore[return-value]

    def assistant(self, blocks: list[dict[str, Any]], stop_reason: str | None = "end_turn") -> dict[str, Any]:
        d = self._base("assistant")
        d["requestId"] = "req_" + uid("req", d["uuid"]).replace("-", "")[:24]
        d["message"] = {"model": "claude-sonnet-4-5-20250929", "id": "msg_" + d["uuid"].replace("-", "")[:24],
                        "type": "message", "role": "assistant", "content": blocks, "stop_reason": stop_reason,
                        "stop_sequence": None,
                        "usage": {"input_tokens": 12, "cache_creation_input_tokens": 187,
                                  "cache_read_input_tokens": 19024, "output_tokens": 85,
                                  "service_tier": "standard"}}
        return self.write(d)  # type: ignore[return-value]

    def tool_use(self, name: str, inp: dict[str, Any]) -> str:
        tid = "toolu_" + uid("tool", self.path.name, self.n).replace("-", "")[:24]
        self.assistant([{"type": "tool_use", "id": tid, "name": name, "input": inp}], stop_reason="tool_use")
        return tid

    def tool_result(self, tool_id: str, content: str, result: dict[str, Any]) -> dict[str, Any]:
        d = self._base("user")
        d["message"] = {"role": "user", "content": [{"tool_use_id": tool_id, "type": "tool_result",
                                                     "content": content, "is_error": False}]}
        d["toolUseResult"] = result
        return self.write(d)  # type: ignore[return-value]

    def system(self, subtype: str, content: str, **extra: Any) -> dict[str, Any]:
        d = self._base("system")
        d.update({"subtype": subtype, "content": content, "level": "info", **extra})
        return self.write(d)  # type: ignore[return-value]

    def summary(self, text: str) -> dict[str, Any]:
        return self.write({"type": "summary", "summary": text, "leafUuid": self.last_uuid})  # type: ignore[return-value]

    def snapshot(self) -> dict[str, Any]:
        return self.write({"type": "file-history-snapshot", "messageId": uid("snap", self.n),  # type: ignore[return-value]
                           "snapshot": {"messageId": uid("snap", self.n), "trackedFileBackups": {},
                                        "timestamp": iso(self.t)}, "isSnapshotUpdate": False})


class ClaudeProjects:
    def __init__(self, root: Path) -> None:
        self.root = root

    def session(self, cwd: str, session_id: str, start: datetime = T0) -> Transcript:
        return Transcript(self.root / encode_project(cwd) / f"{session_id}.jsonl", session_id, cwd, start=start)

    def subagent(self, parent: Transcript, agent_id: str) -> Transcript:
        path = parent.path.parent / parent.session_id / "subagents" / f"agent-{agent_id}.jsonl"
        return Transcript(path, parent.session_id, parent.cwd, agent_id=agent_id, start=parent.t)


def write_conversation(projects: ClaudeProjects, cwd: str = "/home/dev/shop",
                       session_id: str | None = None) -> tuple[Transcript, Transcript, list[dict[str, Any]]]:
    """A realistic session: prompt, thinking + text with usage, Bash, Write, a
    Task subagent with its own file, a compaction boundary, a snapshot and a
    summary. Returns (main, subagent, every object written, in order)."""
    sid = session_id or uid("session", cwd)
    t = projects.session(cwd, sid)
    written: list[dict[str, Any]] = []
    written.append(t.snapshot())
    written.append(t.user("Add a sum helper to app.py and run the tests"))
    written.append(t.assistant([{"type": "thinking", "thinking": "Look at app.py first.", "signature": "EuY"},
                                {"type": "text", "text": "I'll add `total()` and run pytest."}],
                               stop_reason=None))
    bash = t.tool_use("Bash", {"command": "pytest -q", "description": "Run tests"})
    written.append(_last(t))
    written.append(t.tool_result(bash, "5 passed in 0.12s",
                                 {"stdout": "5 passed in 0.12s", "stderr": "", "interrupted": False,
                                  "isImage": False}))
    write = t.tool_use("Write", {"file_path": "/home/dev/shop/app.py",
                                 "content": "def total(xs):\n    return sum(xs)\n"})
    written.append(_last(t))
    written.append(t.tool_result(write, "File created successfully at: /home/dev/shop/app.py",
                                 {"type": "create", "filePath": "/home/dev/shop/app.py",
                                  "content": "def total(xs):\n    return sum(xs)\n", "structuredPatch": []}))
    task = t.tool_use("Task", {"description": "Review", "prompt": "Review app.py", "subagent_type": "Explore"})
    written.append(_last(t))
    sub = projects.subagent(t, "a1b2c3d")
    sub_written = [sub.user("Review app.py"),
                   sub.assistant([{"type": "text", "text": "app.py looks fine."}])]
    written.append(t.tool_result(task, "app.py looks fine.\nagentId: a1b2c3d",
                                 {"status": "completed", "agentId": "a1b2c3d", "totalTokens": 2400}))
    written.append(t.system("compact_boundary", "Conversation compacted",
                            compactMetadata={"trigger": "auto", "preTokens": 155025}))
    written.append(t.summary("Added total() helper and ran tests"))
    return t, sub, written + sub_written


def _last(t: Transcript) -> dict[str, Any]:
    lines = t.path.read_bytes().splitlines()
    return json.loads(lines[-1])


# ============================================================================ test plumbing

def stream_events(client: Any, stream: str = "telemetry:events") -> list[dict[str, Any]]:
    """Every entry of the stream, decoded (and so validated) by the event contract."""
    from tray_app import events

    return [events.decode(fields) for _id, fields in client.xrange(stream)]


def monitor_config(home: Path, redis_url: str, **monitors: Any) -> Any:
    """A Config for an isolated app home; ``monitors`` overrides [monitors] keys,
    ``capture_<key>`` overrides [capture] keys."""
    from dataclasses import replace

    from tray_app.config import load_config

    cfg = load_config(environ={"TELEMETRY_TRAY_HOME": str(home), "TELEMETRY_TRAY_REDIS_URL": redis_url})
    capture = {k[len("capture_"):]: v for k, v in monitors.items() if k.startswith("capture_")}
    mons = {k: v for k, v in monitors.items() if not k.startswith("capture_")}
    return replace(cfg, monitors=replace(cfg.monitors, **mons), capture=replace(cfg.capture, **capture))
