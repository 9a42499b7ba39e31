"""Forgetting in SQLite: the selector's rows of telemetry.db (raw and derived
tables) in short transactions, and compaction that leaves no deleted byte in
a database file or its WAL (secure_delete, checkpoint(TRUNCATE), VACUUM)."""

from __future__ import annotations

import sqlite3
import time
import zlib
from datetime import datetime, timezone
from collections.abc import Callable, Iterable
from contextlib import closing
from pathlib import Path
from typing import Any

from tray_app.engine.schema import TOMBSTONE
from tray_app.errors import DatabaseError
from tray_app.lifecycle.rule import utc_second
from tray_app.lifecycle.selector import Outcome, Selector
from tray_app.monitors.session_rows import NOT_ACTIVITY, canonical, parse

#: rows per delete transaction (the engine's writer waits at most this long)
CHUNK_ROWS = 1000
BUSY_TIMEOUT_S = 30.0


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
    conn.execute("PRAGMA secure_delete=ON")  # freed cells and pages are zeroed, not left behind
    return conn


def tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _where(sel: Selector) -> tuple[str, list[Any]]:
    """The condition for rows of ``sel`` in a table with session_id /
    workspace_hash / timestamp columns (the timestamp is ISO text of any zone:
    an index range widened by a day, then the exact check in Python)."""
    if sel.session_id:
        return "session_id = ?", [sel.session_id]
    if sel.workspace:
        return "workspace_hash = ?", [sel.workspace]
    assert sel.end is not None
    conds, params = ["timestamp < ?"], [utc_second(sel.end + 86400)]
    if sel.start is not None:
        conds.append("timestamp >= ?")
        params.append(utc_second(sel.start - 86400))
    conds.append("forget_in_range(timestamp)")
    return " AND ".join(conds), params



def _in_range_fn(sel: Selector) -> Callable[[Any], int]:
    r = sel.as_rule()
    return lambda ts: int(isinstance(ts, str) and r.covers_iso(ts))


def _chunked_delete(conn: sqlite3.Connection, table: str, key: str, cond: str, params: list[Any]) -> int:
    """Delete ``cond`` rows, CHUNK_ROWS per short transaction."""
    total = 0
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            cur = conn.execute(f"DELETE FROM {table} WHERE {key} IN "
                               f"(SELECT {key} FROM {table} WHERE {cond} LIMIT {CHUNK_ROWS})", params)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        total += cur.rowcount
        if cur.rowcount < CHUNK_ROWS:
            return total


def _delete_forget_seq(conn: sqlite3.Connection) -> int:
    """Delete the raw rows listed in forget_seq, CHUNK_ROWS per short transaction,
    walking the list by sequence (each chunk starts where the last ended: the
    list is not scanned from its start again, which made this quadratic)."""
    total, after = 0, -1
    while True:
        hi = conn.execute("SELECT MAX(sequence) FROM (SELECT sequence FROM forget_seq WHERE sequence > ? "
                          "ORDER BY sequence LIMIT ?)", (after, CHUNK_ROWS)).fetchone()[0]
        if hi is None:
            return total
        conn.execute("BEGIN IMMEDIATE")
        try:
            total += conn.execute("DELETE FROM raw_traces WHERE sequence IN (SELECT sequence FROM forget_seq "
                                  "WHERE sequence > ? AND sequence <= ?) AND event_type != ?",
                                  (after, hi, TOMBSTONE)).rowcount
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        after = int(hi)


def sweep_database(path: Path, sel: Selector, out: Outcome, stream_ids: Iterable[str] = ()) -> set[int]:
    """Delete (or count) the selector's rows in every table of telemetry.db.
    Returns the raw_traces sequences concerned (for cdc:events)."""
    if not path.exists():
        return set()
    with closing(connect(path)) as conn:
        conn.create_function("forget_in_range", 1, _in_range_fn(sel), deterministic=True)
        present = tables(conn)
        if "raw_traces" not in present:
            return set()
        cond, params = _where(sel)
        if sel.session_id:
            cond, params = "session_id = ? OR external_session_id = ?", [sel.session_id, sel.session_id]
        # the rows to go, with what the sessions table counted of them
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS forget_seq (sequence INTEGER PRIMARY KEY, platform TEXT, "
                     "session_id TEXT, jd REAL, activity INTEGER)")
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS forget_sessions (platform TEXT, session_id TEXT, "
                     "PRIMARY KEY (platform, session_id))")
        conn.execute("DELETE FROM forget_seq")
        conn.execute("DELETE FROM forget_sessions")
        conn.execute(f"INSERT INTO forget_seq SELECT sequence, platform, session_id, julianday(timestamp), "
                     f"event_type NOT IN ({_NOT_ACTIVITY}) FROM raw_traces WHERE {cond}", params)
        conn.execute("INSERT OR IGNORE INTO forget_sessions SELECT DISTINCT platform, session_id FROM raw_traces "
                     "WHERE sequence IN (SELECT sequence FROM forget_seq)")
        seqs = {int(r[0]) for r in conn.execute("SELECT sequence FROM forget_seq")}
        ids = set(stream_ids) | {str(r[0]) for r in conn.execute(
            "SELECT stream_id FROM raw_traces WHERE sequence IN (SELECT sequence FROM forget_seq) "
            "AND stream_id IS NOT NULL")}
        derived = [(t, key, c) for t, key, c in (
            ("usage_requests", "request_key", "source_sequence"),
            ("usage_activity", "sequence", "sequence"),
            ("usage_reported_costs", "sequence", "sequence")) if t in present]
        if out.dry_run:
            out.add("raw_traces", len(seqs))
            for t, _key, seq_col in derived:
                c, p = _where(sel)
                out.add(t, conn.execute(f"SELECT COUNT(*) FROM {t} WHERE ({c}) OR {seq_col} IN "
                                        f"(SELECT sequence FROM forget_seq)", p).fetchone()[0])
            if "usage_cursor_composers" in present:
                goes, goes_params = _composer_goes(sel)
                out.add("usage_cursor_composers", conn.execute(
                    f"SELECT COUNT(*) FROM usage_cursor_composers WHERE {goes}", goes_params).fetchone()[0])
            _counted(conn)
            goes, goes_params = _session_goes(sel)
            out.add("sessions", conn.execute(f"SELECT COUNT(*) FROM sessions WHERE {goes}", goes_params).fetchone()[0])
            if "ingest_attempts" in present and ids:
                out.add("ingest_attempts", _count_in(conn, "ingest_attempts", "stream_id", ids))
            return seqs
        hollowed = _hollow_top(conn)
        out.add("raw_traces", _delete_forget_seq(conn) + hollowed)
        for t, key, seq_col in derived:
            c, p = _where(sel)
            out.add(t, _chunked_delete(conn, t, key, f"({c}) OR {seq_col} IN (SELECT sequence FROM forget_seq)", p))
        if "usage_cursor_composers" in present:
            out.add("usage_cursor_composers", _chunked_delete(
                conn, "usage_cursor_composers", "session_id", *_composer_goes(sel)))
        out.add("sessions", _sessions(conn, sel))
        if "ingest_attempts" in present and ids:
            with_ids = list(ids)
            n = 0
            for i in range(0, len(with_ids), 500):
                chunk = with_ids[i:i + 500]
                conn.execute("BEGIN IMMEDIATE")
                n += conn.execute(f"DELETE FROM ingest_attempts WHERE stream_id IN ({','.join('?' * len(chunk))})",
                                  chunk).rowcount
                conn.execute("COMMIT")
            out.add("ingest_attempts", n)
        return seqs


def _hollow_top(conn: sqlite3.Connection) -> int:
    """SQLite gives a new row MAX(sequence)+1: with the newest row forgotten, the
    next events would get sequences the usage worker and the sessions monitor
    have already passed, and never be counted. So the newest row, when it is to
    go, is emptied in place instead (one transaction: a live writer never sees
    the top free): no content, event_type ``forgotten``, which every reader
    skips. Returns 1 when it did (a row forgotten), else 0."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute("SELECT sequence FROM raw_traces WHERE sequence = (SELECT MAX(sequence) FROM raw_traces) "
                           "AND sequence IN (SELECT sequence FROM forget_seq)").fetchone()
        if row is None:
            conn.execute("COMMIT")
            return 0
        top = int(row[0])
        conn.execute("UPDATE raw_traces SET event_id=?, session_id='', external_session_id=NULL, event_type=?, "
                     "platform='', hook_type=NULL, timestamp=?, workspace_hash=NULL, source='forget', "
                     "stream_id=NULL, ingested_at=?, event_data=? WHERE sequence=?",
                     (f"{TOMBSTONE}:{top}", TOMBSTONE, now, now, zlib.compress(b"{}"), top))
        conn.execute("COMMIT")
        return 1
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _count_in(conn: sqlite3.Connection, table: str, col: str, values: set[str]) -> int:
    vals, n = list(values), 0
    for i in range(0, len(vals), 500):
        chunk = vals[i:i + 500]
        n += conn.execute(f"SELECT COUNT(*) FROM {table} WHERE {col} IN ({','.join('?' * len(chunk))})",
                          chunk).fetchone()[0]
    return int(n)


def _whole(sel: Selector) -> tuple[str, list[Any]]:
    """The sessions rows the selector takes whole: its id, its project, or a
    time range holding the session's whole span. Told by the row itself, so
    this also finds sessions whose raw rows retention has pruned."""
    if sel.session_id:
        return "session_id = ?", [sel.session_id]
    if sel.workspace:
        return "workspace_hash = ?", [sel.workspace]
    return "forget_in_range(started_at) AND forget_in_range(COALESCE(ended_at, last_activity_at, started_at))", []


def _composer_goes(sel: Selector) -> tuple[str, list[Any]]:
    """A Cursor conversation's usage row goes with its session: taken whole, or
    none of its raw rows left."""
    whole, params = _whole(sel)
    return (f"session_id IN (SELECT session_id FROM sessions WHERE {whole}) OR session_id = ? OR "
            "(session_id IN (SELECT session_id FROM forget_sessions) AND NOT EXISTS "
            "(SELECT 1 FROM raw_traces r WHERE r.session_id = usage_cursor_composers.session_id "
            "AND r.sequence NOT IN (SELECT sequence FROM forget_seq)))", [*params, sel.session_id])


def _session_goes(sel: Selector) -> tuple[str, list[Any]]:
    """A session row goes when the selector takes it whole, and with the last
    event it counted."""
    whole, params = _whole(sel)
    return (f"({whole}) OR EXISTS (SELECT 1 FROM forget_counted f WHERE f.platform = sessions.platform "
            "AND f.session_id = sessions.session_id AND f.n >= sessions.event_count)", params)


_NOT_ACTIVITY = ", ".join(f"'{t}'" for t in sorted(NOT_ACTIVITY))
#: a session's earliest event, or its latest activity, among the raw rows left
_EDGE = ("(SELECT canonical_ts(r.timestamp) FROM raw_traces r WHERE r.session_id = sessions.session_id "
         "AND +r.platform = sessions.platform {extra} ORDER BY julianday(r.timestamp) {order} LIMIT 1)")


def _counted(conn: sqlite3.Connection) -> None:
    """``forget_counted``: per session, the rows to go that its ``sessions`` row
    has counted: those at or below the sessions monitor's position (read in
    the caller's transaction; the monitor counts a row the rule selects only
    while the row is still stored, so this is exact)."""
    try:
        row = conn.execute("SELECT applied_sequence FROM reader_positions WHERE reader='sessions'").fetchone()
    except sqlite3.OperationalError:  # a database from before positions were kept in it
        row = None
    position = int(row[0]) if row else 2 ** 62
    conn.execute("DROP TABLE IF EXISTS temp.forget_counted")
    conn.execute("CREATE TEMP TABLE forget_counted AS SELECT platform, session_id, COUNT(*) AS n, "
                 "MIN(jd) AS first_jd, MAX(CASE WHEN activity THEN jd END) AS last_jd FROM forget_seq "
                 "WHERE sequence <= ? GROUP BY platform, session_id", (position,))


def _sessions(conn: sqlite3.Connection, sel: Selector) -> int:
    """The sessions the deleted rows belonged to lose what they counted of them
    (not recounted from the rows left: retention may have pruned a long
    session's oldest rows, which still count). A start or a last activity that
    went is taken from the rows left; a row goes as ``_session_goes`` says."""
    touched = "(platform, session_id) IN (SELECT platform, session_id FROM forget_sessions)"
    conn.create_function("canonical_ts", 1, _canonical_ts, deterministic=True)
    conn.execute("BEGIN IMMEDIATE")
    try:
        _counted(conn)
        goes, goes_params = _session_goes(sel)
        n = conn.execute(f"DELETE FROM sessions WHERE {goes}", goes_params).rowcount
        first = _EDGE.format(extra="", order="ASC")
        last = _EDGE.format(extra=f"AND r.event_type NOT IN ({_NOT_ACTIVITY})", order="DESC")
        conn.execute(f"""UPDATE sessions SET
            event_count = event_count - f.n,
            started_at = CASE WHEN f.first_jd <= julianday(started_at) THEN COALESCE({first}, started_at)
                              ELSE started_at END,
            last_activity_at = CASE WHEN f.last_jd >= julianday(last_activity_at)
                                    THEN COALESCE({last}, last_activity_at) ELSE last_activity_at END
            FROM forget_counted f WHERE f.platform = sessions.platform AND f.session_id = sessions.session_id""")
        # an end in a forgotten range went with its event (the monitor ends the session again when idle)
        conn.execute(f"""UPDATE sessions SET end_reason = NULL, ended_at = NULL
            WHERE {touched} AND forget_in_range(ended_at)""")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return int(n)


def _canonical_ts(value: Any) -> str | None:
    dt = parse(value)
    return canonical(dt) if dt else None


def compact_sqlite(path: Path, out: Outcome) -> None:
    """Leave no deleted byte in the file or its WAL: checkpoint(TRUNCATE),
    VACUUM (incremental when the database is in incremental auto-vacuum mode),
    checkpoint(TRUNCATE) again."""
    if not path.exists():
        return
    with closing(connect(path)) as conn:
        _checkpoint(conn, path)
        if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:
            conn.execute("PRAGMA incremental_vacuum")
            how = "incremental vacuum"
        else:
            conn.execute("VACUUM")
            how = "VACUUM"
        _checkpoint(conn, path)
    out.compacted.append(f"{path.name}: secure delete, {how}, WAL truncated")


def _checkpoint(conn: sqlite3.Connection, path: Path) -> None:
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if not busy:
            return
        if time.monotonic() > deadline:
            raise DatabaseError(f"{path}: a reader kept the WAL busy; its old pages may still hold "
                                "forgotten data (run forget again when the app is idle)", kind="locked")
        time.sleep(0.1)
