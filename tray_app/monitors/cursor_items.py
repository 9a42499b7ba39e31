"""Cursor's stored values -> items -> ``database_trace`` events (pure functions).

An *item* is the unit a pass decides is new or changed, by a content digest:

  cursorDiskKV ``bubbleId:<composerId>:<bubbleId>``   one message (type 1 user, 2 assistant)
  cursorDiskKV ``composerData:<composerId>``          one conversation's metadata
  ItemTable ``aiService.prompts``                     each element of the array (a prompt)
  ItemTable ``aiService.generations``                 each element, by ``generationUUID``
  ItemTable ``composer.composerData``                 each ``allComposers`` entry, by ``composerId``

The two arrays are capped by Cursor (old entries fall off), so they are split
into their elements: a new prompt is one new event, not a re-send of fifty.
Identical prompt elements (same text, same fields) are one item.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from tray_app import jsonutil

from tray_app import events
from tray_app.monitors import privacy
from tray_app.monitors.cursor_files import CursorDb
from tray_app.monitors.emit import fit_payload
from tray_app.monitors.privacy import Capture

SOURCE = "python_monitor"
ITEM_TABLE = "ItemTable"
DISK_KV = "cursorDiskKV"
PROMPTS_KEY = "aiService.prompts"
GENERATIONS_KEY = "aiService.generations"
COMPOSERS_KEY = "composer.composerData"
ITEM_TABLE_KEYS = (PROMPTS_KEY, GENERATIONS_KEY, COMPOSERS_KEY)
DISK_KV_PREFIXES = ("bubbleId:", "composerData:")
#: session ids of items that belong to no conversation (the SessionMonitor skips them)
SYNTHETIC_SESSION_PREFIX = "cursor-state:"

_TERMINAL_HINTS = ("terminal", "shell", "command", "bash")


def fingerprint(raw: bytes) -> bytes:
    return hashlib.blake2b(raw, digest_size=16).digest()


def as_bytes(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    if isinstance(value, memoryview):
        return value.tobytes()
    return str(value).encode("utf-8", "surrogatepass")


def decode_json(raw: bytes) -> Any:
    try:
        return jsonutil.loads(raw)
    except ValueError:
        return None


@dataclass
class Item:
    table: str
    key: str
    item: str | None
    fp: bytes
    value: Any
    rowid: int | None = None

    @property
    def state_key(self) -> str:
        base = f"{self.table}/{self.key}"
        return base if self.item is None else f"{base}#{self.item}"


def split_item_table(key: str, raw: bytes) -> list[Item]:
    """ItemTable value -> one item per array element (see the module docstring)."""
    value = decode_json(raw)
    out: list[Item] = []
    if key in (PROMPTS_KEY, GENERATIONS_KEY) and isinstance(value, list):
        for el in value:
            el_raw = jsonutil.dumps(el, sort_keys=True)
            fp = fingerprint(el_raw)
            ident = el.get("generationUUID") if isinstance(el, dict) else None
            out.append(Item(ITEM_TABLE, key, str(ident) if ident else fp.hex()[:16], fp, el))
    elif key == COMPOSERS_KEY and isinstance(value, dict):
        for el in value.get("allComposers") or []:
            if not isinstance(el, dict) or not el.get("composerId"):
                continue
            fp = fingerprint(jsonutil.dumps(el, sort_keys=True))
            out.append(Item(ITEM_TABLE, key, str(el["composerId"]), fp, el))
    elif value is not None:
        out.append(Item(ITEM_TABLE, key, None, fingerprint(raw), value))
    return out


def composer_map(items: list[Item]) -> dict[str, None]:
    """composerIds listed by a workspace DB's composer.composerData."""
    return {i.item: None for i in items if i.key == COMPOSERS_KEY and i.item}


# -- events -----------------------------------------------------------------------------------

def _iso_ms(ms: Any) -> str | None:
    if isinstance(ms, (int, float)) and not isinstance(ms, bool) and ms > 0:
        try:
            dt = datetime.fromtimestamp(ms / 1000.0, timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
        return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return None


def _iso_any(value: Any) -> str | None:
    if isinstance(value, str):
        return events.iso_or_none(value)
    return _iso_ms(value)


def item_time(it: Item) -> str | None:
    v = it.value if isinstance(it.value, dict) else {}
    if it.key.startswith("bubbleId:"):
        timing_info = v.get("timingInfo")
        timing: dict[str, Any] = timing_info if isinstance(timing_info, dict) else {}
        return _iso_any(v.get("createdAt")) or _iso_ms(timing.get("clientEndTime"))
    if it.key == GENERATIONS_KEY:
        return _iso_ms(v.get("unixMs"))
    return _iso_any(v.get("lastUpdatedAt")) or _iso_any(v.get("createdAt"))


def session_of(it: Item, db: CursorDb) -> tuple[str, bool]:
    """(session_id, synthetic): a conversation's composerId where there is one."""
    if it.key.startswith("bubbleId:"):
        parts = it.key.split(":")
        if len(parts) >= 3 and parts[1]:
            return parts[1], False
    if it.key.startswith("composerData:") and len(it.key) > len("composerData:"):
        return it.key[len("composerData:"):], False
    if it.key == COMPOSERS_KEY and it.item:
        return it.item, False
    return f"{SYNTHETIC_SESSION_PREFIX}{db.db_id}", True


def kind_of(key: str) -> str:
    for p in DISK_KV_PREFIXES:
        if key.startswith(p):
            return p[:-1]
    return key


def apply_capture(it: Item, payload: dict[str, Any], cap: Capture) -> None:
    if it.key.startswith("bubbleId:"):
        _bubble_capture(payload, cap)
    elif it.key.startswith("composerData:"):
        cap.fields(payload, ("text", "richText"), privacy.PROMPTS)
        cap.fields(payload, ("latestConversationSummary",), privacy.RESPONSES)
        cap.fields(payload, ("originalFileStates", "codeBlockData"), privacy.FILE_CONTENTS)
        conv = payload.get("conversation")
        if isinstance(conv, list):
            for b in conv:
                if isinstance(b, dict):
                    _bubble_capture(b, cap)
        cmap = payload.get("conversationMap")
        if isinstance(cmap, dict):
            for b in cmap.values():
                if isinstance(b, dict):
                    _bubble_capture(b, cap)
    elif it.key == PROMPTS_KEY:
        cap.field(payload, "text", privacy.PROMPTS)
    elif it.key == GENERATIONS_KEY:
        cap.field(payload, "textDescription", privacy.PROMPTS)


def _bubble_capture(b: dict[str, Any], cap: Capture) -> None:
    if b.get("type") == 1:
        cap.fields(b, ("text", "richText", "rawText"), privacy.PROMPTS)
        cap.fields(b, ("attachedCodeChunks", "codebaseContextChunks", "userResponsesToSuggestedCodeBlocks"),
                   privacy.FILE_CONTENTS)
    else:
        cap.fields(b, ("text", "richText", "thinking", "allThinkingBlocks", "codeBlocks"), privacy.RESPONSES)
    tool = b.get("toolFormerData")
    if isinstance(tool, dict):
        name = str(tool.get("name") or tool.get("tool") or "").lower()
        if any(h in name for h in _TERMINAL_HINTS):
            cap.field(tool, "result", privacy.SHELL_OUTPUT)
        else:
            cap.fields(tool, ("result", "rawArgs", "params"), privacy.FILE_CONTENTS)


def to_event(it: Item, db: CursorDb, cap: Capture, workspace_hash: str | None,
             now_iso: str, payload_max_bytes: int) -> dict[str, Any]:
    session_id, synthetic = session_of(it, db)
    payload: dict[str, Any] = it.value if isinstance(it.value, dict) else {"value": it.value}
    payload = privacy.redact(payload)
    apply_capture(it, payload, cap)
    payload = fit_payload(payload, payload_max_bytes)
    meta: dict[str, Any] = {"source": SOURCE, "monitor": "cursor_db", "database": db.db_id,
                            "table": it.table, "key": it.key, "fingerprint": it.fp.hex()}
    if it.item is not None:
        meta["item"] = it.item
    if it.rowid is not None:
        meta["rowid"] = it.rowid
    if db.workspace_id:
        meta["workspace_id"] = db.workspace_id
    if synthetic:
        meta["synthetic_session"] = True
    if cap.reduced:
        meta["capture"] = cap.reduced
    return {
        "event_id": events.deterministic_event_id("cursor", db.db_id, it.table, it.key, it.item or "",
                                                  it.fp.hex()),
        "platform": "cursor",
        "event_type": "database_trace",
        "timestamp": item_time(it) or now_iso,
        "session_id": session_id,
        "external_session_id": None if synthetic else session_id,
        "hook_type": kind_of(it.key),
        "workspace_hash": db.workspace_hash or workspace_hash,
        "payload": payload,
        "metadata": meta,
    }


def unprocessable_event(it: Item, db: CursorDb, exc: BaseException, now_iso: str) -> dict[str, Any]:
    """An item that could not be turned into an event: named by its key (its
    value is not copied), so the record shows it existed and why it is missing."""
    return {
        "event_id": events.deterministic_event_id("cursor", "unprocessable", db.db_id, it.table, it.key,
                                                  it.item or "", it.fp.hex()),
        "platform": "cursor",
        "event_type": "error",
        "timestamp": now_iso,
        "session_id": _session_or_unknown(it, db),
        "hook_type": "unprocessable_item",
        "workspace_hash": db.workspace_hash,
        "payload": {"error": "unprocessable_item", "key": it.key, "table": it.table,
                    "detail": f"{type(exc).__name__}: {exc}"[:300]},
        "metadata": {"source": SOURCE, "monitor": "cursor_db", "database": db.db_id, "key": it.key},
    }


def _session_or_unknown(it: Item, db: CursorDb) -> str:
    try:
        return session_of(it, db)[0]
    except Exception:  # noqa: BLE001 - the item is already known to be odd
        return "unknown"

