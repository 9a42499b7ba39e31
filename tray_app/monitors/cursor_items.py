"""Cursor's stored values -> items -> ``database_trace`` events (pure functions).

An *item* is the unit a pass decides is new or changed, by a content digest:

  cursorDiskKV ``bubbleId:<composerId>:<bubbleId>``   one message (type 1 user, 2 assistant)
  cursorDiskKV ``composerData:<composerId>``          one conversation's metadata
  ItemTable ``aiService.prompts``                     each element of the array (a prompt)
  ItemTable ``aiService.generations``                 each element, by ``generationUUID``
  ItemTable ``composer.composerData``                 each ``allComposers`` entry, by ``composerId``
  cursorDiskKV ``codeBlockDiff:<composerId>:<diffId>`` one applied diff -> a ``file_edit`` event

Older Cursor versions keep a conversation's messages inline, in a
``conversation[]`` array of ``composerData`` (no ``bubbleId:`` rows): each
inline message becomes an item of its own, keyed as the ``bubbleId:`` row it
would be (:func:`inline_bubbles`), so both formats give the same events and a
message stored both ways is sent once.

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
DISK_KV_PREFIXES = ("bubbleId:", "composerData:", "codeBlockDiff:")
DIFF_PREFIX = "codeBlockDiff:"
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
    #: an inline message: the composerData key it was read from
    inline_in: str | None = None
    #: the time to use when the item has none of its own (inline messages: the conversation's)
    fallback_time: str | None = None

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


def _inline_list(value: dict[str, Any]) -> list[dict[str, Any]]:
    """The messages a composerData holds inline: ``conversation[]``, then any
    ``conversationMap`` values not already in it (by bubbleId)."""
    conv = value.get("conversation")
    out = [b for b in conv if isinstance(b, dict)] if isinstance(conv, list) else []
    cmap = value.get("conversationMap")
    if isinstance(cmap, dict) and cmap:
        seen = {b.get("bubbleId") for b in out}
        for k, b in cmap.items():
            if isinstance(b, dict) and (b.get("bubbleId") or k) not in seen:
                seen.add(b.get("bubbleId") or k)
                out.append(b if b.get("bubbleId") else {**b, "bubbleId": k})
    return out


def inline_bubbles(it: Item) -> list[Item]:
    """A legacy ``composerData`` with its messages inline -> one item per message,
    keyed ``bubbleId:<composerId>:<bubbleId>`` like a separate row (position
    ``i<n>`` when a message has no id). Their digest is over the message's JSON
    with sorted keys. The conversation's time stands in for messages without one."""
    v = it.value
    if not isinstance(v, dict) or not it.key.startswith("composerData:"):
        return []
    cid = it.key[len("composerData:"):]
    bubbles = _inline_list(v)
    if not cid or not bubbles:
        return []
    when = _iso_any(v.get("createdAt")) or _iso_any(v.get("lastUpdatedAt"))
    out = []
    for i, b in enumerate(bubbles):
        bid = b.get("bubbleId") if isinstance(b.get("bubbleId"), str) and b.get("bubbleId") else f"i{i}"
        out.append(Item(DISK_KV, f"bubbleId:{cid}:{bid}", None, fingerprint(jsonutil.dumps(b, sort_keys=True)),
                        b, it.rowid, inline_in=it.key, fallback_time=when))
    return out


def without_inline(value: dict[str, Any]) -> dict[str, Any]:
    """A composerData payload with its inline messages replaced by headers
    (``{bubbleId, type}``): the messages travel as events of their own."""
    bubbles = _inline_list(value)
    if not bubbles:
        return value
    out = {k: v for k, v in value.items() if k not in ("conversation", "conversationMap")}
    out["conversationHeaders"] = [{"bubbleId": b.get("bubbleId"), "type": b.get("type")} for b in bubbles]
    return out


def conversation_time(value: dict[str, Any]) -> str | None:
    """A composerData's last activity (else its creation), ISO."""
    return _iso_any(value.get("lastUpdatedAt")) or _iso_any(value.get("createdAt"))


def diff_counts(value: Any) -> tuple[int, int, int]:
    """(lines added, lines removed, changes) of a ``codeBlockDiff`` value: each
    change of ``newModelDiffWrtV0`` replaces the original lines
    [startLineNumber, endLineNumberExclusive) with its ``modified`` lines."""
    changes = value.get("newModelDiffWrtV0") if isinstance(value, dict) else None
    added = removed = n = 0
    for c in changes if isinstance(changes, list) else []:
        if not isinstance(c, dict):
            continue
        n += 1
        mod = c.get("modified")
        added += len(mod) if isinstance(mod, list) else 0
        orig = c.get("original")
        if isinstance(orig, dict):
            start, end = orig.get("startLineNumber"), orig.get("endLineNumberExclusive")
            if isinstance(start, int) and isinstance(end, int) and end > start:
                removed += end - start
    return added, removed, n


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
        return _iso_any(v.get("createdAt")) or _iso_ms(timing.get("clientEndTime")) or it.fallback_time
    if it.key.startswith(DIFF_PREFIX):
        return it.fallback_time
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
    if it.key.startswith(DIFF_PREFIX):
        parts = it.key.split(":")
        if len(parts) >= 3 and parts[1]:
            return parts[1], False
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
    elif it.key.startswith(DIFF_PREFIX):
        cap.fields(payload, ("newModelDiffWrtV0", "originalModelDiffWrtV0"), privacy.FILE_CONTENTS)
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


def _diff_payload(it: Item, file_path: str | None) -> dict[str, Any]:
    v = it.value if isinstance(it.value, dict) else {}
    added, removed, n = diff_counts(v)
    parts = it.key.split(":")
    out: dict[str, Any] = {"diff_id": parts[-1] if len(parts) >= 2 else None, "lines_added": added,
                           "lines_removed": removed, "changes": n}
    if file_path:
        out["file_path"] = file_path
    for k, val in v.items():
        out.setdefault(k, val)
    return out


def is_empty_diff(it: Item) -> bool:
    """A ``codeBlockDiff`` with no change: nothing was edited, no event."""
    return it.key.startswith(DIFF_PREFIX) and diff_counts(it.value)[2] == 0


def to_event(it: Item, db: CursorDb, cap: Capture, workspace_hash: str | None,
             now_iso: str, payload_max_bytes: int, file_path: str | None = None) -> dict[str, Any]:
    session_id, synthetic = session_of(it, db)
    is_diff = it.key.startswith(DIFF_PREFIX)
    payload: dict[str, Any]
    if is_diff:
        payload = _diff_payload(it, file_path)
    elif isinstance(it.value, dict):
        payload = without_inline(it.value) if it.key.startswith("composerData:") else it.value
    else:
        payload = {"value": it.value}
    payload = privacy.redact(payload)
    apply_capture(it, payload, cap)
    payload = fit_payload(payload, payload_max_bytes)
    meta: dict[str, Any] = {"source": SOURCE, "monitor": "cursor_db", "database": db.db_id,
                            "table": it.table, "key": it.key, "fingerprint": it.fp.hex()}
    if it.item is not None:
        meta["item"] = it.item
    if it.rowid is not None:
        meta["rowid"] = it.rowid
    if it.inline_in:
        meta["inline_in"] = it.inline_in
    if is_diff:
        meta.update(lines_added=payload.get("lines_added"), lines_removed=payload.get("lines_removed"))
        if file_path:
            meta["file_path"] = file_path
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
        "event_type": "file_edit" if is_diff else "database_trace",
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

