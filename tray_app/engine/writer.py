"""SQLiteBatchWriter: one transaction per batch into raw_traces.

The insert is idempotent (one row per event_id): a redelivered or duplicate
event never fails the batch. SQLite failures are translated into
``DatabaseError`` with a ``kind`` (locked, disk_full, read_only, corrupt, io)
so the consumer can back off without blaming the message.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tray_app.engine import schema
from tray_app.errors import DatabaseError, SchemaTooNew
from tray_app.events import dumps_compact, event_json, source_of

log = logging.getLogger(__name__)

#: zlib level: on ~1.5 KB events, 1 is faster than 6 for ~2% bigger rows (bench/)
COMPRESS_LEVEL = 1
BUSY_TIMEOUT_S = 0.25
#: the writer checkpoints by itself only if the WAL grows past this
WAL_MAX_BYTES = 64 * 1024 * 1024
#: batches at least this big are compressed on two threads
PARALLEL_MIN = 64
#: page cache of the writer connection (KiB): keeps the hot index pages of a
#: large table in memory, which random (uuid4) ids touch all over
CACHE_KIB = 16 * 1024


#: events up to this size are compressed with a small deflate state (8 KiB
#: window): zlib.compress's default state is ~256 KiB, which glibc serves with
#: mmap/munmap on every call, costing more than the deflate itself (25 us vs
#: 10 us per ~1.5 KB event here). The output is an ordinary zlib stream.
SMALL_EVENT = 16 * 1024


_isal_zlib: Any
try:  # ISA-L: standard zlib streams, same size at level 1, ~45% less CPU (bench/)
    from isal import isal_zlib as _isal_zlib
except ImportError:  # no wheel for this platform: the stdlib path below
    _isal_zlib = None


def compress(data: bytes) -> bytes:
    """``data`` as a standard zlib stream (``zlib.decompress`` reads it)."""
    if _isal_zlib is not None:
        return _isal_zlib.compress(data, COMPRESS_LEVEL)
    if len(data) <= SMALL_EVENT:
        c = zlib.compressobj(COMPRESS_LEVEL, zlib.DEFLATED, 13, 5)
        return c.compress(data) + c.flush()
    return zlib.compress(data, COMPRESS_LEVEL)


def _compress_all(datas: list[bytes]) -> list[bytes]:
    return [compress(d) for d in datas]

INSERT_SQL = (
    "INSERT INTO raw_traces (event_id, session_id, external_session_id, event_type, platform, "
    "hook_type, timestamp, workspace_hash, source, stream_id, ingested_at, event_data) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(event_id) DO NOTHING"
)


#: failures that belong to the database, never to an entry: the batch is held
#: and retried (backpressure); anything else may be one entry's fault
DATABASE_KINDS = frozenset({"locked", "disk_full", "read_only", "corrupt", "io"})

#: how many times processing of a stream entry was started after a restart or a
#: claim: kept in SQLite because the stream's own delivery counter does not
#: survive a restart of the private server (re-reads of one's own pending
#: entries are not in its append-only file). Rows go when the entry settles.
ATTEMPTS_SQL = ("CREATE TABLE IF NOT EXISTS ingest_attempts (stream_id TEXT PRIMARY KEY, "
                "attempts INTEGER NOT NULL, updated_at TEXT NOT NULL)")
#: attempt rows of entries nobody came back for (acknowledged elsewhere) go after this
ATTEMPTS_MAX_AGE = "-7 days"


@dataclass
class Prepared:
    """One entry ready for the insert: its stream id, its event and event_data
    before compression."""

    stream_id: str
    event: dict[str, Any]
    data: bytes


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
        self._pool: ThreadPoolExecutor | None = None

    def open(self) -> None:
        if self._conn is not None:
            return
        try:
            self._conn = schema.open_database(self.path, timeout_s=BUSY_TIMEOUT_S)
            self._conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            # checkpoints run on the maintenance thread (maintenance.checkpoint), so a
            # commit never also copies the WAL into the database and fsyncs it
            self._conn.execute("PRAGMA wal_autocheckpoint=0")
            self._conn.execute(ATTEMPTS_SQL)
        except SchemaTooNew:
            raise
        except (sqlite3.Error, OSError) as exc:
            self._conn = None
            raise translate(exc, self.path) from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
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

    def _compress(self, datas: list[bytes]) -> list[bytes]:
        """zlib releases the GIL while it deflates, so a large batch is compressed
        in two halves at once: one here, one on a helper thread (a second core is
        idle while the consumer works; bench/ingest_bench.py)."""
        if len(datas) < PARALLEL_MIN:
            return _compress_all(datas)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="compress")
        half = len(datas) // 2
        tail = self._pool.submit(_compress_all, datas[half:])
        head = _compress_all(datas[:half])
        return head + tail.result()

    @staticmethod
    def _sequences_with_duplicates(conn: sqlite3.Connection, batch: Sequence[tuple[str, dict[str, Any]]],
                                   before: int) -> list[tuple[int, dict[str, Any]]]:
        """(sequence, event) once per event_id of the batch when some were already
        stored (a redelivery) or repeated: the new rows by their sequence range,
        the others looked up, so every event gets a CDC entry (at least once)."""
        seq = dict(conn.execute("SELECT event_id, sequence FROM raw_traces WHERE sequence > ?",
                                (before,)).fetchall())
        missing = list(dict.fromkeys(ev["event_id"] for _, ev in batch if ev["event_id"] not in seq))
        for i in range(0, len(missing), 500):
            chunk = missing[i:i + 500]
            q = ",".join("?" * len(chunk))
            seq.update(conn.execute(f"SELECT event_id, sequence FROM raw_traces WHERE event_id IN ({q})",
                                    chunk).fetchall())
        rows: list[tuple[int, dict[str, Any]]] = []
        seen: set[str] = set()
        for _, ev in batch:
            eid = ev["event_id"]
            if eid not in seen:
                seen.add(eid)
                rows.append((seq[eid], ev))
        return rows

    def _wal_guard(self) -> None:
        """Safety net should the maintenance thread fall behind: never let the
        WAL grow past WAL_MAX_BYTES."""
        if self._conn is None:
            return
        try:
            schema.checkpoint_if_large(self._conn, self.path, WAL_MAX_BYTES)
        except sqlite3.Error as exc:
            log.warning("checkpoint failed: %s", exc)

    def row_count(self) -> int:
        self.open()
        assert self._conn is not None
        try:
            return int(self._conn.execute("SELECT COALESCE(MAX(sequence), 0) FROM raw_traces").fetchone()[0])
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from None

    # -- attempts (crash loops across restarts) ----------------------------------------

    def _ids_query(self, sql: str, ids: Sequence[str]) -> list[tuple[Any, ...]]:
        assert self._conn is not None
        out: list[tuple[Any, ...]] = []
        for i in range(0, len(ids), 500):
            chunk = list(ids[i:i + 500])
            out.extend(self._conn.execute(sql.format(",".join("?" * len(chunk))), chunk).fetchall())
        return out

    def attempts(self, ids: Sequence[str]) -> dict[str, int]:
        """Recorded processing attempts of these stream ids (absent: none)."""
        self.open()
        try:
            rows = self._ids_query("SELECT stream_id, attempts FROM ingest_attempts WHERE stream_id IN ({})", ids)
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from None
        return {str(k): int(v) for k, v in rows}

    @contextmanager
    def _write_transaction(self, commit: bool = True) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT (or ROLLBACK when ``commit`` is false or the
        body raised); SQLite errors become DatabaseError."""
        self.open()
        conn = self._conn
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                if commit:
                    conn.execute("COMMIT")
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from None

    def record_attempts(self, ids: Sequence[str]) -> dict[str, int]:
        """Count one more attempt for each id, committed before the entries are
        processed, so a crash while processing them is remembered."""
        with self._write_transaction() as conn:
            conn.execute("DELETE FROM ingest_attempts WHERE updated_at < datetime('now', ?)", (ATTEMPTS_MAX_AGE,))
            conn.executemany(
                "INSERT INTO ingest_attempts (stream_id, attempts, updated_at) VALUES (?, 1, datetime('now')) "
                "ON CONFLICT(stream_id) DO UPDATE SET attempts = attempts + 1, updated_at = datetime('now')",
                [(i,) for i in ids])
        return self.attempts(ids)

    def probe(self) -> None:
        """Raise DatabaseError unless the database takes a write right now (the
        write is rolled back). Tells a database failure from one entry's."""
        with self._write_transaction(commit=False) as conn:
            conn.execute("INSERT OR REPLACE INTO ingest_attempts VALUES ('probe', 0, datetime('now'))")

    # -- the batch insert ----------------------------------------------------------------

    @staticmethod
    def prepare(stream_id: str, event: dict[str, Any],
                fields: Any = None) -> Prepared:
        """Serialise one entry (may raise: that is the entry's own failure). With
        the stream ``fields`` it came from, its JSON fields are stored as they
        came (events.event_json)."""
        data = dumps_compact(event) if fields is None else event_json(event, fields)
        return Prepared(stream_id, event, data)

    def write(self, batch: Sequence[tuple[str, dict[str, Any]]]) -> Stored:
        """Insert ``(stream_id, event)`` pairs in one transaction."""
        return self.write_prepared([self.prepare(sid, ev) for sid, ev in batch])

    def write_prepared(self, batch: Sequence[Prepared], settled: Sequence[str] = ()) -> Stored:
        """Insert prepared entries in one transaction, and forget the recorded
        attempts of ``settled`` stream ids in the same transaction."""
        self.open()
        conn = self._conn
        assert conn is not None
        started = time.perf_counter()
        ingested_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        blobs = self._compress([p.data for p in batch])
        params = [
            (ev["event_id"], ev["session_id"], ev.get("external_session_id"), ev["event_type"],
             ev["platform"], ev.get("hook_type"), ev["timestamp"], ev.get("workspace_hash"),
             source_of(ev), p.stream_id, ingested_at, blob)
            for p, blob in zip(batch, blobs) for ev in (p.event,)
        ]
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                before = conn.execute("SELECT COALESCE(MAX(sequence), 0) FROM raw_traces").fetchone()[0]
                changes = conn.total_changes
                conn.executemany(INSERT_SQL, params)
                inserted = conn.total_changes - changes
                pairs = [(p.stream_id, p.event) for p in batch]
                rows: list[tuple[int, dict[str, Any]]]
                if inserted == len(params):
                    # no duplicates: under our write lock, new rowids are max+1, max+2, ...
                    rows = [(before + i + 1, p.event) for i, p in enumerate(batch)]
                else:
                    rows = self._sequences_with_duplicates(conn, pairs, before)
                if settled:
                    self._ids_query("DELETE FROM ingest_attempts WHERE stream_id IN ({})", settled)
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
        self._wal_guard()
        return Stored(rows=rows, inserted=inserted, duplicates=len(batch) - inserted,
                      commit_ms=(time.perf_counter() - started) * 1000)
