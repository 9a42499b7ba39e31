"""Noticing that Cursor's storage format changed (see docs/monitors.md, "Format drift").

Cursor has no published schema; when a new version stores conversations
somewhere else, a reader that only knows the old places silently sees
nothing. This module tells, cheaply and without reading content:

* **key families** of ``cursorDiskKV`` (the part of a key before the first
  ``:`` or ``.``) that the monitor neither reads nor knows to be irrelevant,
  with how many keys each has. Counted by walking the key index
  (``key >= ? ORDER BY key LIMIT 1`` to find the next family, then a
  ``COUNT`` over that family's key range, itself capped): the values of
  unknown keys are never read, and the known families are skipped with one
  index seek each, so the cost follows the number of families and of unknown
  keys, not the database;
* **tables** other than ``ItemTable`` / ``cursorDiskKV`` (capped row counts);
* **shapes**: a known key whose JSON no longer has the fields the monitor
  relies on (:func:`shape_problem`), counted by the monitor on the items it
  reads anyway.

:func:`summarize` turns that into the verdict and the one line shown in the
monitor's health, ``doctor`` and the diagnostics bundle: counts and family
names only.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

DISK_KV = "cursorDiskKV"
KNOWN_TABLES = frozenset({"ItemTable", DISK_KV})
#: families the monitor reads
READ_FAMILIES = frozenset({"bubbleId", "composerData", "codeBlockDiff"})
#: families documented by public write-ups that hold no conversation text of their own:
#: file checkpoints, request context sidecars, inline diff state, original-file snapshots
#: (``ofsContent:``, ``composer.content.<sha>``), and Cursor's own migration markers
IGNORED_FAMILIES = frozenset({"checkpointId", "messageRequestContext", "inlineDiffs", "inlineDiff",
                              "ofsContent", "composer"})
KNOWN_FAMILIES = READ_FAMILIES | IGNORED_FAMILIES
#: an unknown family (or table) counts as a format change from this many keys (rows) on
MIN_UNKNOWN = 20
#: bounds of one scan: families visited, keys counted per family, rows counted per table
MAX_FAMILIES = 200
MAX_COUNT = 1_000_000
MAX_TABLE_ROWS = 100_000
#: names shown (health, doctor, bundle); anything else is "(other)"
_NAME_OK = re.compile(r"^[A-Za-z0-9_.\-]{1,48}$")
#: conversation content fields of a bubble: a bubble has at least one of them
#: (``text`` is absent on tool-call bubbles, which carry ``toolFormerData``)
BUBBLE_CONTENT = ("text", "richText", "toolFormerData", "thinking", "codeBlocks")

#: shape problems, by kind (the wording doctor shows)
SHAPE_TEXT = {
    "composerData": "conversations without conversation/fullConversationHeadersOnly",
    "bubbleId": "messages without type/text",
    "codeBlockDiff": "diffs without newModelDiffWrtV0",
}


def safe_name(name: str) -> str:
    return name if _NAME_OK.match(name) else "(other)"


def family_of(key: str) -> tuple[str, str]:
    """(family, separator): ``agentKv:blob:…`` -> (agentKv, ':'),
    ``composer.content.<sha>`` -> (composer, '.'), ``plain`` -> (plain, '')."""
    for i, ch in enumerate(key):
        if ch in ":.":
            return key[:i], ch
    return key, ""


def scan_families(conn: sqlite3.Connection, skip: frozenset[str] = KNOWN_FAMILIES,
                  table: str = DISK_KV) -> tuple[dict[str, int], bool]:
    """Key families of ``table`` not in ``skip`` -> key count. Never reads a value.
    Returns (families, complete): complete is False when MAX_FAMILIES was reached."""
    out: dict[str, int] = {}
    start, strict = "", False
    for _ in range(MAX_FAMILIES):
        row = conn.execute(f"SELECT key FROM {table} WHERE key {'>' if strict else '>='} ? "
                           f"ORDER BY key LIMIT 1", (start,)).fetchone()
        if row is None:
            return out, True
        key = row[0]
        if isinstance(key, (bytes, memoryview)):  # keys are TEXT; a BLOB key sorts after every text
            out["(binary)"] = out.get("(binary)", 0) + 1
            return out, True
        key = str(key)
        fam, sep = family_of(key)
        if sep:
            lo, hi = fam + sep, fam + chr(ord(sep) + 1)
            if fam not in skip:
                n = conn.execute(f"SELECT COUNT(*) FROM (SELECT 1 FROM {table} WHERE key >= ? AND key < ? "
                                 f"LIMIT ?)", (lo, hi, MAX_COUNT)).fetchone()[0]
                name = safe_name(fam)
                out[name] = out.get(name, 0) + int(n)
            start, strict = hi, False
        else:
            if fam not in skip:
                name = safe_name(fam)
                out[name] = out.get(name, 0) + 1
            start, strict = key, True
    return out, False


def scan_tables(conn: sqlite3.Connection) -> dict[str, int]:
    """Tables other than ItemTable/cursorDiskKV -> row count (capped)."""
    out: dict[str, int] = {}
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                        "AND name NOT LIKE 'sqlite_%'")]
    for name in names:
        if name in KNOWN_TABLES or not isinstance(name, str):
            continue
        quoted = '"' + name.replace('"', '""') + '"'
        try:
            n = conn.execute(f"SELECT COUNT(*) FROM (SELECT 1 FROM {quoted} LIMIT ?)",
                             (MAX_TABLE_ROWS,)).fetchone()[0]
        except sqlite3.DatabaseError:
            n = 0
        out[safe_name(name)] = int(n)
    return out


def shape_problem(key: str, value: Any) -> str | None:
    """The kind of a known key whose JSON lacks what the monitor relies on, else None."""
    if key.startswith("composerData:"):
        if not isinstance(value, dict) or not (isinstance(value.get("conversation"), list)
                                               or isinstance(value.get("fullConversationHeadersOnly"), list)):
            return "composerData"
    elif key.startswith("bubbleId:"):
        if (not isinstance(value, dict) or not isinstance(value.get("type"), int)
                or not any(f in value for f in BUBBLE_CONTENT)):
            return "bubbleId"
    elif key.startswith("codeBlockDiff:"):
        if not isinstance(value, dict) or not isinstance(value.get("newModelDiffWrtV0"), list):
            return "codeBlockDiff"
    return None


def composer_of(key: str) -> str | None:
    parts = key.split(":")
    return parts[1] if len(parts) >= 2 and parts[1] else None


# -- the verdict --------------------------------------------------------------------------------

def summarize(families: dict[str, int], tables: dict[str, int], shapes: dict[str, int],
              conversations: int, checked_at: str | None = None) -> dict[str, Any]:
    """The report shown everywhere: ``status`` known/changed, ``message`` (one
    line, counts and names only) and the numbers behind it."""
    unknown = {k: v for k, v in sorted(families.items(), key=lambda kv: (-kv[1], kv[0])) if v >= MIN_UNKNOWN}
    minor = {k: v for k, v in families.items() if v < MIN_UNKNOWN}
    odd_tables = {k: v for k, v in sorted(tables.items(), key=lambda kv: (-kv[1], kv[0])) if v >= MIN_UNKNOWN}
    bad = {k: v for k, v in shapes.items() if v}
    changed = bool(unknown or odd_tables or bad)
    parts = []
    for kind, n in sorted(bad.items()):
        parts.append(f"{SHAPE_TEXT.get(kind, kind)}: {n}")
    if unknown:
        parts.append("unknown key families: " + ", ".join(f"{k} ({v})" for k, v in list(unknown.items())[:8]))
    if odd_tables:
        parts.append("unknown tables: " + ", ".join(f"{k} ({v})" for k, v in list(odd_tables.items())[:8]))
    message = ""
    if changed:
        lead = (f"{conversations} conversation{'s' if conversations != 1 else ''} may be missed"
                if conversations else "some conversations may be missed")
        message = f"Cursor's storage format has changed: {lead} ({'; '.join(parts)})"
    return {"status": "changed" if changed else "known", "message": message,
            "conversations_may_be_missed": conversations,
            "unknown_key_families": dict(list(unknown.items())[:20]),
            "minor_unknown_key_families": dict(sorted(minor.items())[:20]),
            "unknown_tables": dict(list(odd_tables.items())[:20]),
            "unexpected_shapes": bad, "checked_at": checked_at}


def merge(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Several summaries (the monitor's record, a fresh scan) -> one: the larger count of each."""
    fams: dict[str, int] = {}
    tabs: dict[str, int] = {}
    shapes: dict[str, int] = {}
    conv = 0
    at = None
    for r in reports:
        for src, dst in ((r.get("unknown_key_families"), fams), (r.get("minor_unknown_key_families"), fams),
                         (r.get("unknown_tables"), tabs), (r.get("unexpected_shapes"), shapes)):
            for k, v in (src or {}).items():
                dst[k] = max(dst.get(k, 0), int(v))
        conv = max(conv, int(r.get("conversations_may_be_missed") or 0))
        at = max(at or "", r.get("checked_at") or "") or None
    return summarize(fams, tabs, shapes, conv, at)


# -- a fresh look, for doctor and the diagnostics bundle -------------------------------------------

SAMPLE = 200


def inspect_databases(user_dir: Path, sample: int = SAMPLE, busy_timeout_s: float = 0.2) -> dict[str, Any]:
    """Scan every Cursor database under ``user_dir`` the monitor's way (read-only,
    never creating files beside them): families, tables, and the shapes of up to
    ``sample`` conversations and messages (known keys only)."""
    from tray_app.events import utc_now_iso
    from tray_app.monitors.cursor_db import open_readonly
    from tray_app.monitors.cursor_files import DatabaseFinder, file_state
    from tray_app.monitors.cursor_items import as_bytes, decode_json

    fams: dict[str, int] = {}
    tabs: dict[str, int] = {}
    shapes: dict[str, int] = {}
    bad_composers: set[str] = set()
    errors: list[str] = []
    for db in DatabaseFinder(user_dir).find():
        fs = file_state(db.path)
        if not fs.exists:
            continue
        try:
            conn = open_readonly(db.path, immutable=fs.wal_mode and not fs.wal_exists,
                                 busy_timeout_s=busy_timeout_s)
        except sqlite3.Error as exc:
            errors.append(f"{db.db_id}: {type(exc).__name__}")
            continue
        try:
            for k, v in scan_tables(conn).items():
                tabs[k] = max(tabs.get(k, 0), v)
            if DISK_KV not in _tables(conn):
                continue
            found, _complete = scan_families(conn)
            for k, v in found.items():
                fams[k] = fams.get(k, 0) + v
            for prefix in ("composerData:", "bubbleId:", "codeBlockDiff:"):
                rows = conn.execute(f"SELECT key, value FROM {DISK_KV} WHERE key >= ? AND key < ? "
                                    f"ORDER BY rowid DESC LIMIT ?", (prefix, prefix[:-1] + ";", sample))
                for key, value in rows:
                    raw = as_bytes(value)
                    kind = shape_problem(key, decode_json(raw) if raw is not None else None)
                    if kind:
                        shapes[kind] = shapes.get(kind, 0) + 1
                        cid = composer_of(key)
                        if cid and kind != "codeBlockDiff":
                            bad_composers.add(cid)
        except sqlite3.Error as exc:
            errors.append(f"{db.db_id}: {type(exc).__name__}: {exc}"[:200])
        finally:
            conn.close()
    report = summarize(fams, tabs, shapes, len(bad_composers), utc_now_iso())
    report["sampled_per_kind"] = sample
    if errors:
        report["errors"] = errors[:10]
    return report


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


REPORT_SCOPE = "drift"
REPORT_KEY = "summary"


def recorded_report(state_path: Path) -> dict[str, Any] | None:
    """What the monitor recorded at its last pass (its state store, read-only), or None."""
    if not state_path.is_file():
        return None
    try:
        conn = sqlite3.connect(state_path.absolute().as_uri() + "?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error:
        return None
    try:
        row = conn.execute("SELECT value FROM kv WHERE scope=? AND key=?", (REPORT_SCOPE, REPORT_KEY)).fetchone()
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    if row is None:
        return None
    import orjson

    try:
        value = orjson.loads(row[0])
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
