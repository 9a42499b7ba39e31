"""SessionMonitor: the ``sessions`` table of telemetry.db, and idle timeouts.

Fed by the consumer's committed batches (``on_commit``), never by a second
read of the stream. ``on_commit`` runs on the consumer thread, so it only
queues a few fields per event; this monitor's own thread applies the queue
in one short transaction (at most every ``apply_interval_s``), then ends
sessions idle for ``session_idle_timeout_s`` since their last activity:
it XADDs a ``session_end`` (reason ``timeout``, deterministic id) and then
records the end in the row.

Never double-counting: every stored event carries its ``raw_traces.sequence``;
the highest sequence applied is kept in telemetry.db's ``reader_positions``,
written in the same transaction as the rows it produced, and events at or
below it are skipped (a redelivered duplicate carries its original row's
sequence). On start, and if the queue ever overflows, the rows above that
position are read back from ``raw_traces`` in chunks and applied through the
same path as committed batches: what is new is *added* to each session, so a
long session whose oldest rows retention has pruned keeps its count and start.

A database written before positions were kept there (its position is in the
monitor's state file, saved after the sessions commit) gets, once, an exact
recount of the sessions touched above that position.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import zlib
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from tray_app.config import Config
from tray_app.engine import schema
from tray_app.events import deterministic_event_id
from tray_app.lifecycle.rule import RuleCache
from tray_app.monitors.base import Clock, MonitorThread
from tray_app.monitors.emit import Emitter
from tray_app.monitors.session_rows import (NOT_ACTIVITY, TIMEOUT, Agg, Row, canonical, end_reason, idle_end,
                                            merge, parse, tracked)
from tray_app.monitors.state_store import StateStore, state_file
from tray_app.redis_conn import Endpoint

log = logging.getLogger(__name__)

NAME = "sessions"
SOURCE = "session_monitor"
SCOPE = "sessions"
#: one session's rows. "+platform": without it SQLite (no ANALYZE statistics)
#: picks the (platform, timestamp) index and reads every row of the platform
#: for each session, which made a recount of 1,000,000 rows take minutes
RECOUNT_WHERE = "FROM raw_traces WHERE session_id=? AND +platform=?"
BUSY_TIMEOUT_S = 5.0
#: queued events beyond this are dropped and read back from raw_traces instead
MAX_QUEUE_EVENTS = 200_000
IDLE_BATCH = 500
#: raw rows read per catch-up step (the write lock covers only the sessions they change)
CATCH_UP_ROWS = 20_000

_COLS = "workspace_hash, started_at, last_activity_at, ended_at, end_reason, event_count"
_UPSERT = (f"INSERT INTO sessions (platform, session_id, {_COLS}) VALUES (?,?,?,?,?,?,?,?) "
           "ON CONFLICT(platform, session_id) DO UPDATE SET workspace_hash=excluded.workspace_hash, "
           "started_at=excluded.started_at, last_activity_at=excluded.last_activity_at, "
           "ended_at=excluded.ended_at, end_reason=excluded.end_reason, event_count=excluded.event_count")

# (sequence, platform, session_id, event_type, timestamp, workspace_hash, end reason)
Entry = tuple[int, str, str, str, str, "str | None", "str | None"]


class SessionMonitor(MonitorThread):
    def __init__(self, cfg: Config, endpoint: Endpoint, *, emitter: Emitter | None = None,
                 store: StateStore | None = None, db_path: Path | None = None,
                 clock: Clock = time.time, monotonic: Clock = time.monotonic,
                 apply_interval_s: float = 1.0, max_queue_events: int = MAX_QUEUE_EVENTS) -> None:
        super().__init__(NAME, cfg.monitors.poll_interval_s, clock=clock, monotonic=monotonic)
        self.cfg = cfg
        self.idle_timeout_s = cfg.monitors.session_idle_timeout_s
        self.db_path = db_path or cfg.paths.database
        self.emitter = emitter or Emitter(endpoint, socket_timeout_s=cfg.redis.socket_timeout_s,
                                          connect_timeout_s=cfg.redis.connect_timeout_s,
                                          state_dir=cfg.paths.state_dir)
        self.store = store or StateStore(state_file(cfg.paths.state_dir, NAME))
        self.apply_interval_s = apply_interval_s
        self.max_queue_events = max_queue_events
        self._qlock = threading.Lock()
        self._queue: deque[list[Entry]] = deque()
        self._queued = 0
        self._overflow = False
        self._db: sqlite3.Connection | None = None
        self._applied: int | None = None
        self._last_apply = float("-inf")
        self._next_idle_check = float("-inf")
        #: a batch committed just before `telemetry-tray forget` must not bring its session back
        self._forgotten = RuleCache(cfg.paths.state_dir)
        self._set(applied_sequence=0, events_applied=0, sessions_timed_out=0, open_sessions=0,
                  queued_events=0, recounts=0, catch_ups=0, idle_timeout_s=self.idle_timeout_s)

    # -- called by the engine's consumer thread: fast ------------------------------------------

    def on_commit(self, events: list[dict[str, Any]]) -> None:
        entries: list[Entry] = []
        for ev in events:
            seq = ev.get("sequence")
            if not isinstance(seq, int):
                continue
            et = ev.get("event_type") or ""
            entries.append((seq, ev.get("platform"), ev.get("session_id"), et, ev.get("timestamp"),  # type: ignore[arg-type]
                            ev.get("workspace_hash"), end_reason(ev) if et == "session_end" else None))
        if not entries:
            return
        with self._qlock:
            was_empty = self._queued == 0
            if self._overflow or self._queued + len(entries) > self.max_queue_events:
                self._overflow = True  # read back from raw_traces by the monitor thread
                self._queue.clear()
                self._queued = 0
            else:
                self._queue.append(entries)
                self._queued += len(entries)
        if was_empty:
            self.wake()

    # -- the monitor thread ------------------------------------------------------------------

    def pass_once(self) -> bool:
        # at most one sessions transaction per apply_interval_s under load
        remaining = self._last_apply + self.apply_interval_s - self.monotonic()
        if remaining > 0 and not self.stopping:
            self._stopping.wait(min(remaining, self.apply_interval_s))
        return super().pass_once()

    def run_once(self) -> int:
        self._start()
        self.apply_pending()
        emitted = 0
        if self.monotonic() >= self._next_idle_check:
            emitted = self.check_idle()
            self._next_idle_check = self.monotonic() + self.poll_interval_s
        db = self._conn()
        open_n = db.execute("SELECT COUNT(*) FROM sessions WHERE ended_at IS NULL").fetchone()[0]
        with self._qlock:
            queued = self._queued
        self._set(open_sessions=int(open_n), queued_events=queued)
        return emitted

    def close(self) -> None:
        self.emitter.close()
        self.store.close()
        if self._db is not None:
            self._db.close()
            self._db = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = schema.open_database(self.db_path, timeout_s=BUSY_TIMEOUT_S)
        return self._db

    def _start(self) -> None:
        """First pass: catch up with rows stored while the monitor was not running."""
        if self._applied is not None:
            return
        db = self._conn()
        top = db.execute("SELECT COALESCE(MAX(sequence), 0) FROM raw_traces").fetchone()[0]
        row = db.execute("SELECT applied_sequence FROM reader_positions WHERE reader=?", (NAME,)).fetchone()
        if row is None:  # a new database, or one from before positions were kept in it
            if db.execute("SELECT 1 FROM sessions LIMIT 1").fetchone() is None:
                self._applied = 0  # nothing counted yet: adding up from the first row is exact
                self.catch_up()
                return
            # the old place of the position (opened only now: a new install never creates it)
            applied = int(self.store.get(SCOPE, "applied_sequence", 0) or 0)
            if top < applied:
                log.info("%s: telemetry.db is newer than the saved position: recounting every session", NAME)
                applied = 0
            self._applied = applied
            self.recount_since(applied)
            return
        applied = int(row[0])
        if top < applied:  # the newest rows were removed: their sequences may be given again
            log.info("%s: telemetry.db ends at sequence %d, below the position %d: following from there",
                     NAME, top, applied)
            with schema.immediate(db):
                self._advance(db, top)
            self._moved(top)
            return
        self._applied = applied
        self.catch_up()

    # -- applying batches --------------------------------------------------------------------

    def apply_pending(self) -> int:
        """Apply every queued batch in one transaction. Returns events applied."""
        self._start()
        with self._qlock:
            batches = list(self._queue)
            self._queue.clear()
            self._queued = 0
            overflow, self._overflow = self._overflow, False
        if overflow:
            self.catch_up()
        try:
            return self._apply(batches)
        except BaseException:
            with self._qlock:  # put them back: nothing was applied
                self._queue.extendleft(reversed(batches))
                self._queued += sum(len(b) for b in batches)
            raise

    def catch_up(self) -> int:
        """Apply the rows of raw_traces above the position, CATCH_UP_ROWS per
        transaction, exactly as committed batches are applied."""
        assert self._applied is not None
        db = self._conn()
        n = read = 0
        while True:
            rows = db.execute(
                "SELECT sequence, platform, session_id, event_type, timestamp, workspace_hash, "
                "CASE WHEN event_type='session_end' THEN event_data END FROM raw_traces "
                "WHERE sequence > ? ORDER BY sequence LIMIT ?", (self._applied, CATCH_UP_ROWS)).fetchall()
            if not rows:
                break
            entries: list[Entry] = [(seq, platform, sid, et, ts, ws, _stored_reason(blob) if blob else None)
                                    for seq, platform, sid, et, ts, ws, blob in rows]
            n += self._apply([entries])
            read += len(rows)
        if read:
            with self._lock:
                self._h["catch_ups"] += 1
            log.info("%s: caught up with %d stored rows (%d session events)", NAME, read, n)
        return n

    def _apply(self, batches: list[list[Entry]]) -> int:
        """One transaction: the sessions these entries change, and the position."""
        assert self._applied is not None
        aggs: dict[tuple[str, str], Agg] = {}
        top = self._applied
        n = 0
        forgotten = self._forgotten.get()
        #: entries `forget` selects: counted only while their row is still there (the
        #: sweep takes off what was counted, by this position; see db_sweep._sessions)
        selected: dict[int, Entry] = {}
        for batch in batches:
            for entry in sorted(batch, key=lambda e: e[0]):
                seq, platform, sid, et, ts, ws, reason = entry
                if seq <= top:
                    continue  # already counted (a duplicate, or seen by a catch-up)
                top = seq
                if not tracked(platform, sid):
                    continue
                if forgotten and forgotten.matches({"session_id": sid, "workspace_hash": ws, "timestamp": ts}):
                    selected[seq] = entry
                    continue
                aggs.setdefault((platform, sid), Agg()).add(et, parse(ts), ws, reason)
                n += 1
        if top == self._applied:
            return 0
        db = self._conn()
        with schema.immediate(db):
            for seq in self._still_stored(db, list(selected)):
                _, platform, sid, et, ts, ws, reason = selected[seq]
                aggs.setdefault((platform, sid), Agg()).add(et, parse(ts), ws, reason)
                n += 1
            for (platform, sid), agg in aggs.items():
                old = Row.from_db(db.execute(f"SELECT {_COLS} FROM sessions WHERE platform=? AND session_id=?",
                                             (platform, sid)).fetchone())
                db.execute(_UPSERT, (platform, sid, *merge(old, agg).to_db()))
            self._advance(db, top)
        self._moved(top)
        self._last_apply = self.monotonic()
        with self._lock:
            self._h["events_applied"] += n
        return n

    @staticmethod
    def _still_stored(db: sqlite3.Connection, seqs: list[int]) -> list[int]:
        """Those of ``seqs`` whose raw row `forget` has not removed (yet)."""
        found: list[int] = []
        for i in range(0, len(seqs), 500):
            chunk = seqs[i:i + 500]
            found += [int(r[0]) for r in db.execute(
                f"SELECT sequence FROM raw_traces WHERE sequence IN ({','.join('?' * len(chunk))}) "
                f"AND event_type != '{schema.TOMBSTONE}' ORDER BY sequence", chunk)]
        return found

    @staticmethod
    def _advance(db: sqlite3.Connection, top: int) -> None:
        """The position, inside the caller's transaction (``_moved`` after its commit)."""
        db.execute("INSERT INTO reader_positions (reader, applied_sequence) VALUES (?, ?) "
                   "ON CONFLICT(reader) DO UPDATE SET applied_sequence=excluded.applied_sequence", (NAME, top))

    def _moved(self, top: int) -> None:
        self._applied = top
        self._set(applied_sequence=top)

    def recount_since(self, after: int) -> int:
        """Exact values, from raw_traces, for every session with rows above
        ``after`` (a database from before positions were kept in it)."""
        db = self._conn()
        top = db.execute("SELECT COALESCE(MAX(sequence), 0) FROM raw_traces").fetchone()[0]
        touched = db.execute("SELECT DISTINCT platform, session_id FROM raw_traces WHERE sequence > ? "
                             "AND sequence <= ?", (after, top)).fetchall()
        rows = [(platform, sid, *self._recount(db, platform, sid).to_db())
                for platform, sid in touched if tracked(platform, sid)]
        with schema.immediate(db):
            db.executemany(_UPSERT, rows)
            self._advance(db, max(top, after))
        self._moved(max(top, after))
        with self._lock:
            self._h["recounts"] += 1
        log.info("%s: recounted %d sessions from raw_traces (rows after sequence %d)", NAME, len(rows), after)
        return len(rows)

    def _recount(self, db: sqlite3.Connection, platform: str, sid: str) -> Row:
        where = RECOUNT_WHERE
        args = (sid, platform)
        count, ws = db.execute(f"SELECT COUNT(*), MAX(workspace_hash) {where}", args).fetchone()

        def edge(extra: str, order: str) -> tuple[Any, ...] | None:
            # julianday() only orders mixed ISO spellings; the value is the stored text
            return db.execute(f"SELECT timestamp, event_data {where} {extra} "
                              f"ORDER BY julianday(timestamp) {order} LIMIT 1", args).fetchone()

        first = edge("", "ASC")
        last = edge(f"AND event_type NOT IN ({', '.join(repr(t) for t in sorted(NOT_ACTIVITY))})", "DESC")
        end = edge("AND event_type='session_end'", "DESC")
        last_dt = parse(last[0]) if last else None
        ended = reason = None
        if end is not None:
            end_dt = parse(end[0])
            if end_dt is not None and (last_dt is None or end_dt >= last_dt):
                ended = end_dt
                reason = _stored_reason(end[1])
        return Row(ws, parse(first[0]) if first else None, last_dt, ended, reason, int(count))

    # -- idle timeout ------------------------------------------------------------------------

    def check_idle(self) -> int:
        """End every open session idle for idle_timeout_s (XADD first, then the row)."""
        db = self._conn()
        now = datetime.fromtimestamp(self.clock(), timezone.utc)
        cutoff = canonical(datetime.fromtimestamp(self.clock() - self.idle_timeout_s, timezone.utc))
        total = 0
        while not self.stopping:
            rows = db.execute(
                f"SELECT platform, session_id, {_COLS} FROM sessions WHERE ended_at IS NULL "
                "AND last_activity_at IS NOT NULL AND last_activity_at <= ? ORDER BY last_activity_at LIMIT ?",
                (cutoff, IDLE_BATCH)).fetchall()
            if not rows:
                break
            evs, updates = [], []
            for platform, sid, *rest in rows:
                row = Row.from_db(tuple(rest))
                assert row is not None and row.last_activity_at is not None
                ended = min(idle_end(row.last_activity_at, self.idle_timeout_s), now)
                evs.append(self._end_event(platform, sid, row, ended))
                updates.append((canonical(ended), TIMEOUT, platform, sid, rest[2]))
            self.emitter.emit(evs)
            with schema.immediate(db):
                db.executemany("UPDATE sessions SET ended_at=?, end_reason=? WHERE platform=? AND session_id=? "
                               "AND ended_at IS NULL AND last_activity_at=?", updates)
            total += len(evs)
            if len(rows) < IDLE_BATCH:
                break
        if total:
            with self._lock:
                self._h["sessions_timed_out"] += total
            log.info("%s: %d sessions ended after %.0f s without activity", NAME, total, self.idle_timeout_s)
        return total

    def _end_event(self, platform: str, sid: str, row: Row, ended: datetime) -> dict[str, Any]:
        assert row.last_activity_at is not None
        last = canonical(row.last_activity_at)
        return {
            "event_id": deterministic_event_id("session_end", platform, sid, last),
            "platform": platform,
            "event_type": "session_end",
            "timestamp": canonical(ended),
            "session_id": sid,
            "external_session_id": sid,
            "workspace_hash": row.workspace_hash,
            "payload": {"reason": TIMEOUT, "idle_timeout_s": self.idle_timeout_s, "last_activity_at": last,
                        "started_at": canonical(row.started_at) if row.started_at else None,
                        "event_count": row.event_count},
            "metadata": {"source": SOURCE, "monitor": NAME},
        }


def _stored_reason(blob: bytes) -> str:
    """The end reason of a stored ``session_end`` row."""
    try:
        event = orjson.loads(zlib.decompress(blob))
    except (zlib.error, orjson.JSONDecodeError, TypeError):
        return "session_end"
    return end_reason(event) if isinstance(event, dict) else "session_end"
