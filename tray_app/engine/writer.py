"""SQLiteBatchWriter: one transaction per batch into raw_traces.

The insert is idempotent (one row per event_id): a redelivered or duplicate
event never fails the batch. SQLite failures are translated into
``DatabaseError`` with a ``kind`` (locked, disk_full, read_only, corrupt, io)
so the consumer can back off without blaming the message.
"""

from __future__ import annotations

import logging
import sqlite3
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tray_app.engine import schema
from tray_app.errors import DatabaseError, SchemaTooNew
from tray_app.events import dumps_compact, source_of

log = logging.getLogger(__name__)

#: zlib level: 1 is ~3x faster than 6 on ~1.5 KB events for ~10% bigger rows (bench/)
COMPRESS_LEVEL = 1
BUSY_TIMEOUT_S = 0.25

INSERT_SQL = (
    "INSERT INTO raw_traces (event_id, session_id, external_session_id, event_type, platform, "
    "hook_type, timestamp, workspace_hash, source, stream_id, ingested_at, event_data) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(event_id) DO NOTHING"
)


@dataclass
class Stored:
    """What a committed batch produced: (sequence, event) for every event of the
    batch, new rows and duplicates alike (both get CDC entries: at least once)."""

    rows: list[tuple[int, dict[str, Any]]]
    inserted: int
    duplicates: int
    commit_ms: float


def classify(exc: BaseException) -> str:
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc).lower()
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text or "busy" in text:
        return "locked"
    if name == "SQLITE_FULL" or "disk is full" in text or "database or disk is full" in text:
        return "disk_full"
    if name.startswith("SQLITE_READONLY") or "readonly" in text or "read-only" in text:
        return "read_only"
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in text or "not a database" in text:
        return "corrupt"
    if name.startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN")) or "i/o" in text or "unable to open" in text:
        return "io"
    return "error"


KIND_TEXT = {
    "locked": "database locked by another process",
    "disk_full": "disk full",
    "read_only": "database is read-only",
    "corrupt": "database file is corrupt",
    "io": "disk I/O error",
    "error": "database error",
}


def _volume_read_only(path: Path) -> bool:
    import os

    for p in (path, path.parent):
        try:
            if os.statvfs(p).f_flag & os.ST_RDONLY:
                return True
            if p.exists() and not os.access(p, os.W_OK):
                return True
        except OSError:
            continue
    return False


def translate(exc: BaseException, path: Path) -> DatabaseError:
    kind = classify(exc)
    if kind in ("io", "error") and _volume_read_only(path):
        kind = "read_only"  # SQLite reports a read-only volume as "unable to open" or I/O
    return DatabaseError(f"{path}: {KIND_TEXT[kind]} ({exc})", kind=kind)


class SQLiteBatchWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def open(self) -> None:
        if self._conn is not None:
            return
        try:
            self._conn = schema.open_database(self.path, timeout_s=BUSY_TIMEOUT_S)
        except SchemaTooNew:
            raise
        except (sqlite3.Error, OSError) as exc:
            self._conn = None
            raise translate(exc, self.path) from None

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def reset(self) -> None:
        """Drop the connection after a failure; the next write reopens it."""
        try:
            self.close()
        except sqlite3.Error:
            self._conn = None

    def row_count(self) -> int:
        self.open()
        assert self._conn is not None
        try:
            return int(self._conn.execute("SELECT COALESCE(MAX(sequence), 0) FROM raw_traces").fetchone()[0])
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from None

    def write(self, batch: Sequence[tuple[str, dict[str, Any]]]) -> Stored:
        """Insert ``(stream_id, event)`` pairs in one transaction."""
        self.open()
        conn = self._conn
        assert conn is not None
        started = time.perf_counter()
        ingested_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        params = [
            (ev["event_id"], ev["session_id"], ev.get("external_session_id"), ev["event_type"],
             ev["platform"], ev.get("hook_type"), ev["timestamp"], ev.get("workspace_hash"),
             source_of(ev), sid, ingested_at, zlib.compress(dumps_compact(ev), COMPRESS_LEVEL))
            for sid, ev in batch
        ]
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                before = conn.execute("SELECT COALESCE(MAX(sequence), 0) FROM raw_traces").fetchone()[0]
                conn.executemany(INSERT_SQL, params)
                new = dict(conn.execute(
                    "SELECT event_id, sequence FROM raw_traces WHERE sequence > ?", (before,)).fetchall())
                missing = [ev["event_id"] for _, ev in batch if ev["event_id"] not in new]
                if missing:
                    # duplicates: their rows exist from an earlier delivery; CDC them again
                    found: dict[str, int] = {}
                    uniq = list(dict.fromkeys(missing))
                    for i in range(0, len(uniq), 500):
                        chunk = uniq[i:i + 500]
                        q = ",".join("?" * len(chunk))
                        found.update(conn.execute(
                            f"SELECT event_id, sequence FROM raw_traces WHERE event_id IN ({q})", chunk).fetchall())
                    new_all = {**found, **new}
                else:
                    new_all = new
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                raise
        except sqlite3.Error as exc:
            err = translate(exc, self.path)
            if err.kind in ("corrupt", "io", "read_only"):
                self.reset()
            raise err from None
        rows: list[tuple[int, dict[str, Any]]] = []
        seen: set[str] = set()
        for _, ev in batch:
            eid = ev["event_id"]
            if eid in seen:
                continue
            seen.add(eid)
            rows.append((new_all[eid], ev))
        inserted = len(new)
        return Stored(rows=rows, inserted=inserted, duplicates=len(batch) - inserted,
                      commit_ms=(time.perf_counter() - started) * 1000)
