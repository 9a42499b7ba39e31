"""`telemetry-tray forget`: delete what matches a selector from every place the
app keeps it, and make sure it never comes back.

The order matters (the engine may be live):

1. the rule (rule.py) is persisted first: from then on the engine, the
   monitors and the session table drop anything that matches, whatever is
   in flight;
2. the hook spool, then the streams (``telemetry:events`` with XACK of
   pending entries, ``telemetry:dlq``), so nothing matching is drained or
   re-queued behind our back;
3. telemetry.db in short transactions (a batch committed meanwhile is caught
   by the second sweep), ``cdc:events`` by the sequences deleted, the
   monitors' state, files in the data and log directories;
4. the deletion is made real on disk: ``secure_delete`` on the deleting
   connection, WAL checkpoint(TRUNCATE), VACUUM (or incremental vacuum), and
   an append-only-file rewrite of Redis without the RDB preamble (a stream's
   RDB form keeps deleted entries' bytes; the command form does not).

A dry run counts the same places and changes nothing.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import redis

from tray_app import aof
from tray_app.capture import spoolfile
from tray_app.config import Config
from tray_app.engine.spool_drain import parse as parse_spool
from tray_app.errors import DatabaseError, UsageError
from tray_app.events import workspace_hash
from tray_app.lifecycle import rule
from tray_app.monitors.transcript_lines import session_from_path
from tray_app.redis_conn import CDC_STREAM, DLQ_STREAM, EVENTS_STREAM, GROUP, text, wants_managed

log = logging.getLogger(__name__)

#: rows per delete transaction (the engine's writer waits at most this long)
CHUNK_ROWS = 1000
#: stream entries per XRANGE page / XDEL
PAGE = 500
BUSY_TIMEOUT_S = 30.0
AOF_REWRITE_TIMEOUT_S = 120.0
_REL = re.compile(r"^\s*(\d+)\s*(s|sec|m|min|h|d|w)\s*$", re.I)
_REL_S = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
TIME_HELP = "an ISO date or date-time (local time unless it has a zone), or 30m, 1h, 2d meaning that long ago"


# ----------------------------------------------------------------------------- the selector

def parse_time(value: str, now: float | None = None) -> float:
    """Unix time for ``2026-12-01``, ``2026-12-01T14:00``, ``...Z``/``+02:00``, or
    ``30m``/``1h``/``2d``/``1w`` ago. Raises UsageError with one line."""
    now = time.time() if now is None else now
    m = _REL.match(value)
    if m:
        return now - int(m.group(1)) * _REL_S[m.group(2).lower()]
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"not a time: {value!r} (use {TIME_HELP})") from None
    if dt.tzinfo is None:
        dt = dt.astimezone()  # a naive time is the user's local time
    return dt.timestamp()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


@dataclass(frozen=True)
class Selector:
    """Exactly one of: a session id, a project path, a time range (``all`` is
    the range from the beginning up to now)."""

    session_id: str | None = None
    project: str | None = None
    start: float | None = None
    end: float | None = None
    everything: bool = False

    @classmethod
    def build(cls, *, session: str | None = None, project: str | None = None, since: str | None = None,
              until: str | None = None, everything: bool = False, now: float | None = None) -> Selector:
        now = time.time() if now is None else now
        chosen = [n for n, v in (("--session", session), ("--project", project), ("--since", since),
                                 ("--all", everything)) if v]
        if len(chosen) != 1:
            raise UsageError("give exactly one of --session ID, --project PATH, --since TIME, --all"
                             + (f" (got {', '.join(chosen)})" if chosen else ""))
        if until and not since:
            raise UsageError("--until goes with --since")
        if session is not None:
            if not session.strip():
                raise UsageError("--session: the session id is empty")
            return cls(session_id=session.strip())
        if project is not None:
            path = os.path.normpath(os.path.abspath(os.path.expanduser(project)))
            return cls(project=path)
        if everything:
            return cls(end=now, everything=True)
        start = parse_time(since or "", now)
        end = parse_time(until, now) if until else now
        if end <= start:
            raise UsageError(f"--until ({_iso(end)}) is not after --since ({_iso(start)})")
        return cls(start=start, end=end)

    @property
    def workspace(self) -> str | None:
        return workspace_hash(self.project) if self.project else None

    @property
    def transcript_dir(self) -> str | None:
        """Claude Code's directory name for the project (every non-alphanumeric a '-')."""
        return "".join(ch if ch.isalnum() else "-" for ch in self.project) if self.project else None

    @property
    def kind(self) -> str:
        if self.session_id:
            return "a session"
        if self.project:
            return "a project"
        return "everything so far" if self.everything else f"{_iso(self.start or 0)} to {_iso(self.end or 0)}"

    def describe(self) -> str:
        if self.session_id:
            return f"session {self.session_id}"
        if self.project:
            return f"project {self.project}"
        if self.everything:
            return f"everything up to {_iso(self.end or 0)}"
        return f"{_iso(self.start or 0)} to {_iso(self.end or 0)}"

    def as_rule(self) -> rule.Forgotten:
        return rule.Forgotten(
            sessions=frozenset([rule.digest(self.session_id)] if self.session_id else []),
            workspaces=frozenset([self.workspace] if self.workspace else []),
            dirs=frozenset([rule.digest(self.transcript_dir)] if self.transcript_dir else []),
            ranges=((self.start, self.end),) if self.end is not None else ())

    def persist(self, state_dir: Path) -> None:
        rule.add(state_dir, sessions=(self.session_id,) if self.session_id else (),
                 workspaces=(self.workspace,) if self.workspace else (),
                 dirs=(self.transcript_dir,) if self.transcript_dir else (),
                 span=(self.start, self.end) if self.end is not None else None)

    def raw_needles(self) -> list[bytes]:
        """Byte strings whose presence in an unparseable record ties it to the selector."""
        if self.session_id:
            return [self.session_id.encode()]
        if self.project:
            return [self.project.encode(), f'"workspace_hash":"{self.workspace}"'.encode(),
                    f'"workspace_hash": "{self.workspace}"'.encode()]
        return []


# ----------------------------------------------------------------------------- the result

@dataclass
class Outcome:
    selector: Selector
    dry_run: bool
    #: place -> count (what was deleted, or would be)
    counts: dict[str, int] = field(default_factory=dict)
    #: what could not be done (one line each); the exit code is 1 when there are any
    problems: list[str] = field(default_factory=list)
    #: what was done to make the deletion real on disk
    compacted: list[str] = field(default_factory=list)

    def add(self, place: str, n: int) -> None:
        self.counts[place] = self.counts.get(place, 0) + n

    @property
    def total_events(self) -> int:
        return self.counts.get("raw_traces", 0)


# ----------------------------------------------------------------------------- telemetry.db

def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
    conn.execute("PRAGMA secure_delete=ON")  # freed cells and pages are zeroed, not left behind
    return conn


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _where(sel: Selector) -> tuple[str, list[Any]]:
    """The condition for rows of ``sel`` in a table with session_id /
    workspace_hash / timestamp columns (the timestamp is ISO text of any zone:
    an index range widened by a day, then the exact check in Python)."""
    if sel.session_id:
        return "session_id = ?", [sel.session_id]
    if sel.project:
        return "workspace_hash = ?", [sel.workspace]
    assert sel.end is not None
    conds, params = ["timestamp < ?"], [_text_bound(sel.end + 86400)]
    if sel.start is not None:
        conds.append("timestamp >= ?")
        params.append(_text_bound(sel.start - 86400))
    conds.append("forget_in_range(timestamp)")
    return " AND ".join(conds), params


def _text_bound(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


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


def sweep_database(path: Path, sel: Selector, out: Outcome, stream_ids: Iterable[str] = ()) -> set[int]:
    """Delete (or count) the selector's rows in every table of telemetry.db.
    Returns the raw_traces sequences concerned (for cdc:events)."""
    if not path.exists():
        return set()
    with closing(_connect(path)) as conn:
        conn.create_function("forget_in_range", 1, _in_range_fn(sel), deterministic=True)
        tables = _tables(conn)
        if "raw_traces" not in tables:
            return set()
        cond, params = _where(sel)
        if sel.session_id:
            cond, params = "session_id = ? OR external_session_id = ?", [sel.session_id, sel.session_id]
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS forget_seq (sequence INTEGER PRIMARY KEY)")
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS forget_sessions (platform TEXT, session_id TEXT, "
                     "PRIMARY KEY (platform, session_id))")
        conn.execute("DELETE FROM forget_seq")
        conn.execute("DELETE FROM forget_sessions")
        conn.execute(f"INSERT INTO forget_seq SELECT sequence FROM raw_traces WHERE {cond}", params)
        conn.execute("INSERT OR IGNORE INTO forget_sessions SELECT DISTINCT platform, session_id FROM raw_traces "
                     "WHERE sequence IN (SELECT sequence FROM forget_seq)")
        seqs = {int(r[0]) for r in conn.execute("SELECT sequence FROM forget_seq")}
        ids = set(stream_ids) | {str(r[0]) for r in conn.execute(
            "SELECT stream_id FROM raw_traces WHERE sequence IN (SELECT sequence FROM forget_seq) "
            "AND stream_id IS NOT NULL")}
        derived = [(t, key, c) for t, key, c in (
            ("usage_requests", "request_key", "source_sequence"),
            ("usage_activity", "sequence", "sequence")) if t in tables]
        if out.dry_run:
            out.add("raw_traces", len(seqs))
            for t, _key, seq_col in derived:
                c, p = _where(sel)
                out.add(t, conn.execute(f"SELECT COUNT(*) FROM {t} WHERE ({c}) OR {seq_col} IN "
                                        f"(SELECT sequence FROM forget_seq)", p).fetchone()[0])
            if "usage_cursor_composers" in tables:
                out.add("usage_cursor_composers", conn.execute(
                    f"SELECT COUNT(*) FROM usage_cursor_composers WHERE {_COMPOSER_GOES}",
                    (sel.session_id,)).fetchone()[0])
            out.add("sessions", conn.execute(
                f"SELECT COUNT(*) FROM sessions WHERE {_SESSION_GOES}", (sel.session_id,)).fetchone()[0])
            if "ingest_attempts" in tables and ids:
                out.add("ingest_attempts", _count_in(conn, "ingest_attempts", "stream_id", ids))
            return seqs
        out.add("raw_traces", _chunked_delete(conn, "raw_traces", "sequence",
                                              "sequence IN (SELECT sequence FROM forget_seq)", []))
        for t, key, seq_col in derived:
            c, p = _where(sel)
            out.add(t, _chunked_delete(conn, t, key, f"({c}) OR {seq_col} IN (SELECT sequence FROM forget_seq)", p))
        if "usage_cursor_composers" in tables:
            out.add("usage_cursor_composers", _chunked_delete(
                conn, "usage_cursor_composers", "session_id", _COMPOSER_GOES, [sel.session_id]))
        out.add("sessions", _sessions(conn, sel))
        if "ingest_attempts" in tables and ids:
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


def _count_in(conn: sqlite3.Connection, table: str, col: str, values: set[str]) -> int:
    vals, n = list(values), 0
    for i in range(0, len(vals), 500):
        chunk = vals[i:i + 500]
        n += conn.execute(f"SELECT COUNT(*) FROM {table} WHERE {col} IN ({','.join('?' * len(chunk))})",
                          chunk).fetchone()[0]
    return int(n)


#: a Cursor conversation's usage row goes with its session, or when none of its rows is left
_COMPOSER_GOES = ("session_id = ? OR (session_id IN (SELECT session_id FROM forget_sessions) AND NOT EXISTS "
                  "(SELECT 1 FROM raw_traces r WHERE r.session_id = usage_cursor_composers.session_id "
                  "AND r.sequence NOT IN (SELECT sequence FROM forget_seq)))")
#: a session row goes when its session was forgotten, or none of its rows is left
_SESSION_GOES = ("session_id = ? OR ((platform, session_id) IN (SELECT platform, session_id FROM forget_sessions) "
                 "AND NOT EXISTS (SELECT 1 FROM raw_traces r WHERE r.session_id = sessions.session_id "
                 "AND r.platform = sessions.platform AND r.sequence NOT IN (SELECT sequence FROM forget_seq)))")


def _sessions(conn: sqlite3.Connection, sel: Selector) -> int:
    """Sessions the deleted rows belonged to: recounted from what is left, and
    deleted when nothing is (or when the session itself was forgotten)."""
    touched = "(platform, session_id) IN (SELECT platform, session_id FROM forget_sessions)"
    conn.execute("BEGIN IMMEDIATE")
    try:
        n = conn.execute(f"DELETE FROM sessions WHERE {_SESSION_GOES}", (sel.session_id,)).rowcount
        conn.execute(f"""UPDATE sessions SET
            event_count = (SELECT COUNT(*) FROM raw_traces r WHERE r.session_id = sessions.session_id
                           AND r.platform = sessions.platform),
            started_at = (SELECT MIN(timestamp) FROM raw_traces r WHERE r.session_id = sessions.session_id
                          AND r.platform = sessions.platform),
            last_activity_at = (SELECT MAX(timestamp) FROM raw_traces r WHERE r.session_id = sessions.session_id
                                AND r.platform = sessions.platform)
            WHERE {touched}""")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return int(n)


def compact_sqlite(path: Path, out: Outcome) -> None:
    """Leave no deleted byte in the file or its WAL: checkpoint(TRUNCATE),
    VACUUM (incremental when the database is in incremental auto-vacuum mode),
    checkpoint(TRUNCATE) again."""
    if not path.exists():
        return
    with closing(_connect(path)) as conn:
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


# ----------------------------------------------------------------------------- Redis

def _fields_match(fields: dict[Any, Any], sel: Selector, r: rule.Forgotten) -> bool:
    """As the consumer decodes an entry: the indexed fields, else (an entry it
    could not decode) the session id or project anywhere in its bytes."""
    if r.matches(fields):
        return True
    needles = sel.raw_needles()
    if not needles:
        return False
    for k, v in fields.items():
        for raw in (k, v):
            b = raw if isinstance(raw, bytes) else str(raw).encode("utf-8", "surrogatepass")
            if any(n in b for n in needles):
                return True
    return False


def _entries(client: redis.Redis, stream: str) -> Iterator[tuple[str, dict[Any, Any]]]:
    cursor = "-"
    while True:
        batch: list[Any] = client.xrange(stream, min=cursor, max="+", count=PAGE) or []
        for eid, fields in batch:
            yield text(eid), fields or {}
        if len(batch) < PAGE:
            return
        cursor = "(" + text(batch[-1][0])


def sweep_stream(client: redis.Redis, stream: str, match: Callable[[dict[Any, Any]], bool],
                 dry_run: bool, group: str | None = None) -> list[str]:
    """XDEL (and XACK for ``group``) every matching entry. Returns their ids."""
    if not client.exists(stream):
        return []
    ids = [eid for eid, fields in _entries(client, stream) if match(fields)]
    if not dry_run:
        for i in range(0, len(ids), PAGE):
            chunk = ids[i:i + PAGE]
            pipe = client.pipeline(transaction=True)
            if group is not None:
                pipe.xack(stream, group, *chunk)
            pipe.xdel(stream, *chunk)
            pipe.execute()
    return ids


def rewrite_aof(client: redis.Redis, timeout_s: float = AOF_REWRITE_TIMEOUT_S) -> str:
    """BGREWRITEAOF and wait for it, with the RDB preamble off for this rewrite
    (an RDB stream keeps its deleted entries' bytes; XADD commands do not).
    Returns what happened, in a few words."""
    info = client.info("persistence")
    if not int(info.get("aof_enabled", 0)):
        return "no append-only file"
    preamble: str | None = None
    try:
        preamble = text(client.config_get("aof-use-rdb-preamble").get("aof-use-rdb-preamble") or "yes")
        client.config_set("aof-use-rdb-preamble", "no")
    except redis.ResponseError:
        preamble = None  # CONFIG is disabled on this server: rewrite as it is configured
    try:
        deadline = time.monotonic() + timeout_s
        before = int(info.get("aof_rewrites", -1))
        while True:
            try:
                client.bgrewriteaof()
                break
            except redis.ResponseError as exc:  # a rewrite already runs: ours comes after it
                if "in progress" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        while time.monotonic() < deadline:
            now = client.info("persistence")
            running = int(now.get("aof_rewrite_in_progress", 0)) or int(now.get("aof_rewrite_scheduled", 0))
            done = before < 0 or int(now.get("aof_rewrites", 0)) > before
            if not running and done:
                status = text(now.get("aof_last_bgrewrite_status", "ok"))
                return "append-only file rewritten" if status == "ok" else f"append-only file rewrite: {status}"
            time.sleep(0.05)
        return "append-only file rewrite still running"
    finally:
        if preamble is not None:
            client.config_set("aof-use-rdb-preamble", preamble)


def _await_history_gone(aof_dir: Path, timeout_s: float = 10.0) -> bool:
    """The private server removes the pre-rewrite files (manifest type ``h``) in
    a background thread once the rewrite is done: wait for it (we may stop the
    server next). True when none is left."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if all(e.kind != "h" for e in aof.read_manifest(aof_dir)):
                return True
        except (OSError, ValueError):
            return False
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


# ----------------------------------------------------------------------------- files

def _scrub(path: Path) -> None:
    """Overwrite a file's bytes with zeros before unlinking it (on filesystems
    that write in place the content is then gone from the disk too)."""
    try:
        size = path.stat().st_size
        with open(path, "r+b") as fh:
            fh.write(b"\0" * size)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError:
        pass
    path.unlink(missing_ok=True)


def sweep_spool(spool_dir: Path, sel: Selector, r: rule.Forgotten, dry_run: bool) -> int:
    """Spool files (and unparseable ones in ``bad/``) of the selector."""
    n = 0
    for d in (spool_dir, spool_dir / spoolfile.BAD_DIR):
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        for name in names:
            path = d / name
            if not path.is_file():
                continue
            try:
                data = path.read_bytes()
            except OSError:
                continue
            fields = parse_spool(data)
            if fields is not None:
                hit = _fields_match(dict(fields), sel, r)
            else:
                created = spoolfile.created_ns(name.lstrip("."))
                hit = any(n_ in data for n_ in sel.raw_needles()) or (
                    created is not None and sel.end is not None and r.covers(created / 1e9))
            if hit:
                n += 1
                if not dry_run:
                    _scrub(path)
    return n


def sweep_monitor_state(state_dir: Path, sel: Selector, dry_run: bool, out: Outcome) -> int:
    """The monitors' state stores: Claude transcript offsets of the session's or
    project's files (their paths name them; the monitor no longer reads those
    files), Cursor item digests keyed by the session's ids. Offsets of a
    time range stay: they keep the monitors from reading the transcripts again."""
    n = 0
    for path in sorted((state_dir / "monitors").glob("*.sqlite3")):
        with closing(_connect(path)) as conn:
            if "kv" not in _tables(conn):
                continue
            keys = [(t, s, k) for t in ("kv", "fingerprints") if t in _tables(conn)
                    for s, k in conn.execute(f"SELECT scope, key FROM {t}")]
            doomed = [(t, s, k) for t, s, k in keys if _state_key_matches(str(k), sel)]
            if sel.session_id:
                doomed += [("kv", str(s), str(k)) for s, k in conn.execute(
                    "SELECT scope, key FROM kv WHERE instr(CAST(value AS TEXT), ?) > 0", (sel.session_id,))
                    if ("kv", s, k) not in doomed]
            n += len(doomed)
            if doomed and not dry_run:
                conn.execute("BEGIN IMMEDIATE")
                for t, s, k in doomed:
                    conn.execute(f"DELETE FROM {t} WHERE scope=? AND key=?", (s, k))
                conn.execute("COMMIT")
        if doomed and not dry_run:
            compact_sqlite(path, out)
    return n


def _state_key_matches(key: str, sel: Selector) -> bool:
    if sel.session_id:
        if sel.session_id in key:
            return True
        return key.endswith(".jsonl") and session_from_path(Path(key)) == sel.session_id
    if sel.transcript_dir and key.endswith(".jsonl"):
        p = Path(key)
        project = p.parents[2] if p.parent.name == "subagents" and len(p.parents) > 2 else p.parent
        return project.name == sel.transcript_dir
    return False


def sweep_logs(log_dir: Path, sel: Selector, dry_run: bool) -> int:
    """Log lines naming the session or project (a transcript's path in a
    warning, say) are removed from the app's logs. Returns the lines."""
    needles = [n.decode() for n in sel.raw_needles()[:1]] + ([sel.transcript_dir] if sel.transcript_dir else [])
    if not needles:
        return 0
    n = 0
    for path in sorted(log_dir.glob("*.log*")) if log_dir.is_dir() else []:
        try:
            lines = path.read_text("utf-8", "replace").splitlines(keepends=True)
        except OSError:
            continue
        kept = [ln for ln in lines if not any(x in ln for x in needles)]
        if len(kept) != len(lines):
            n += len(lines) - len(kept)
            if not dry_run:
                with open(path, "w", encoding="utf-8") as fh:  # in place: the log handler keeps its file
                    fh.writelines(kept)
    return n


def refresh_report(cfg: Config, dry_run: bool) -> int:
    """The usage HTML report, when there is one, is written again without what went."""
    from tray_app.usage.html import REPORT_NAME, write_report

    if not (cfg.paths.data_dir / REPORT_NAME).exists():
        return 0
    if not dry_run:
        write_report(cfg)
    return 1


# ----------------------------------------------------------------------------- the whole

@contextmanager
def _no_hold() -> Iterator[None]:
    yield


def forget(cfg: Config, sel: Selector, *, dry_run: bool = False, client: redis.Redis | None = None,
           redis_error: str | None = None, hold: Callable[[], Any] = _no_hold) -> Outcome:
    """Forget what ``sel`` selects everywhere (see the module doc). ``client``:
    Redis (None when it cannot be reached: ``redis_error`` says why). ``hold``:
    a context manager that keeps the engine still meanwhile (pauses it)."""
    out = Outcome(sel, dry_run)
    r = sel.as_rule()
    paths = cfg.paths
    if not dry_run:
        sel.persist(paths.state_dir)  # first: whatever is in flight is dropped from now on
    with hold():
        out.add("spool files", sweep_spool(paths.spool_dir, sel, r, dry_run))
        stream_ids: list[str] = []
        if client is not None:
            match = lambda f: _fields_match(f, sel, r)  # noqa: E731
            stream_ids = sweep_stream(client, EVENTS_STREAM, match, dry_run, group=GROUP)
            out.add(EVENTS_STREAM, len(stream_ids))
            out.add(DLQ_STREAM, len(sweep_stream(client, DLQ_STREAM, match, dry_run)))
        else:
            out.problems.append(f"Redis: {redis_error or 'unreachable'}; queued events, dead letters and the "
                                "change feed were not checked (the rule drops them when they are read)")
        seqs: set[int] = set()
        for _sweep in range(1 if dry_run else 2):  # the second catches a batch committed meanwhile
            seqs |= sweep_database(paths.database, sel, out, stream_ids)
            if client is not None:
                def cdc_match(f: dict[Any, Any]) -> bool:
                    seq = f.get(b"sequence", f.get("sequence"))
                    try:
                        if seq is not None and int(seq) in seqs:
                            return True
                    except ValueError:
                        pass
                    return _fields_match(f, sel, r)
                out.add(CDC_STREAM, len(sweep_stream(client, CDC_STREAM, cdc_match, dry_run)))
        out.add("monitor state", sweep_monitor_state(paths.state_dir, sel, dry_run, out))
        out.add("log lines", sweep_logs(paths.log_dir, sel, dry_run))
        out.add("usage report", refresh_report(cfg, dry_run))
        if not dry_run:
            compact_sqlite(paths.database, out)
            if client is not None:
                try:
                    out.compacted.append(rewrite_aof(client))
                    if wants_managed(cfg):
                        _await_history_gone(paths.data_dir / "redis" / aof.AOF_DIRNAME)
                except redis.RedisError as exc:
                    out.problems.append(f"Redis: the append-only file was not rewritten ({exc}); "
                                        "it may still hold the deleted entries until its next rewrite")
    # the log names the kind of selector only: a session id or path would be a new copy of it
    log.info("forget (%s)%s: %s", sel.kind, " (dry run)" if dry_run else "",
             ", ".join(f"{k} {v}" for k, v in out.counts.items()))
    return out


__all__ = ["Outcome", "Selector", "TIME_HELP", "compact_sqlite", "forget", "parse_time", "rewrite_aof",
           "sweep_database", "sweep_spool", "sweep_stream"]
