"""Retention and the size cap of telemetry.db (``[retention]`` in the config).

The maintenance thread runs ``Retention.run`` in slices of a bounded time.
Each rule removes rows in short ``BEGIN IMMEDIATE`` transactions of at most
``batch_rows`` rows, fewer while one takes longer than ``batch_ms`` (the
engine's writer waits for the lock up to 250 ms, so a few milliseconds of
retention never fail a batch), and rests between them as long as it worked,
nineteen times as long while ingest is busy (``BUSY_DUTY``):

  age        raw rows whose event time is older than ``raw_days``
  usage_age  derived usage rows older than ``usage_days`` (tokens, costs and
             activity; Cursor's per-conversation composer row, a model name
             and a cost, is kept)
  size_cap   once the used pages pass ``max_db_mb``: the oldest raw rows (by
             event time) until the used pages are at ``cap_low_water_pct`` of it

Raw rows go by event time (through the timestamp index), not by sequence: a
monitor that imports old transcripts stores old events with new sequences.
Two rows are never removed: one the usage worker has not applied yet
(``sequence`` above its position in ``usage_state``; the usage tables must
keep what retention removes, so raw rows wait while they do not exist), and
the newest row (SQLite gives a new row ``MAX(sequence)+1``: an emptied table
would count again from 1, below every reader's position).

Space goes back to the file system by ``PRAGMA incremental_vacuum`` in small
steps (new databases are ``auto_vacuum=INCREMENTAL``, schema.open_database)
and a checkpoint, which truncates the file. A database made before that
(auto_vacuum off) reuses the pages retention frees, so it stops growing; it
is switched over by one VACUUM (``convert_old_db``) at a quiet moment, and
only when the disk has room for the copy a VACUUM writes.

What was removed is counted per rule in ``retention_stats`` (rows, bytes the
deletes freed inside the file, bytes given back to the file system, last
time), in the same transaction as the delete; ``status`` reads it for health,
``db stats`` and the diagnostics bundle.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from tray_app.config import RetentionSettings
from tray_app.engine import schema
from tray_app.engine.storage import disk_space, pages

log = logging.getLogger(__name__)

AGE = "age"
USAGE_AGE = "usage_age"
CAP = "size_cap"
VACUUM = "vacuum"      # bytes returned to the file system (rows: pages)
RUN = "run"            # rows: passes; last_at: the last completed pass

STATS_SQL = ("CREATE TABLE IF NOT EXISTS retention_stats (rule TEXT PRIMARY KEY, "
             "rows INTEGER NOT NULL DEFAULT 0, bytes INTEGER NOT NULL DEFAULT 0, last_at TEXT)")
_COUNT_SQL = ("INSERT INTO retention_stats (rule, rows, bytes, last_at) VALUES (?, ?, ?, ?) "
              "ON CONFLICT(rule) DO UPDATE SET rows=rows+excluded.rows, bytes=bytes+excluded.bytes, "
              "last_at=excluded.last_at")
#: the same, the bytes being the pages the delete freed (the freelist before it is given)
_COUNT_FREED_SQL = ("INSERT INTO retention_stats (rule, rows, bytes, last_at) VALUES (?, ?, "
                    "MAX(0, (SELECT freelist_count FROM pragma_freelist_count()) - ?) * ?, ?) "
                    "ON CONFLICT(rule) DO UPDATE SET rows=rows+excluded.rows, bytes=bytes+excluded.bytes, "
                    "last_at=excluded.last_at")

#: the WAL is checkpointed between two transactions once it is this big (as maintenance.checkpoint)
CHECKPOINT_WAL_BYTES = 4 * 1024 * 1024
#: the writer's lock wait is 250 ms; retention waits less and tries again later
BUSY_TIMEOUT_S = 0.1
#: while ingest is busy, retention works at most this share of the time
BUSY_DUTY = 0.05
MIN_BATCH_ROWS = 10
MIN_VACUUM_PAGES = 8
#: a failed or refused switch of an old database is tried again after this long
CONVERT_RETRY_S = 3600.0
#: the old database's VACUUM needs this much more than its copy, on top of the disk reserve
CONVERT_SLACK = 1.1

#: (table, its row key): the derived rows usage_days removes, by their ``timestamp``
_USAGE_TABLES = (("usage_activity", "sequence"), ("usage_requests", "rowid"), ("usage_reported_costs", "sequence"))


def _iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Pacer:
    """The size of the next transaction (rows or pages): halved while one takes
    longer than ``target_ms``, grown again while they take under half of it."""

    def __init__(self, start: int, lo: int, target_ms: float) -> None:
        self.hi = max(lo, start)
        self.lo = min(lo, self.hi)
        self.size = self.hi
        self.target_ms = target_ms

    def took(self, ms: float) -> None:
        if ms > self.target_ms:
            self.size = max(self.lo, self.size // 2)
        elif ms < self.target_ms / 2:
            self.size = min(self.hi, self.size * 3 // 2 + 1)


def read_stats(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    """``{rule: {"rows", "bytes", "last_at"}}`` from retention_stats (empty before
    the first pass)."""
    try:
        got = conn.execute("SELECT rule, rows, bytes, last_at FROM retention_stats").fetchall()
    except sqlite3.OperationalError:
        return {}
    return {r: {"rows": int(n), "bytes": int(b), "last_at": at} for r, n, b, at in got}


def usage_position(conn: sqlite3.Connection) -> int | None:
    """The usage worker's position (rows up to it are derived); None: no usage tables."""
    try:
        row = conn.execute("SELECT last_sequence FROM usage_state WHERE worker='usage'").fetchone()
    except sqlite3.OperationalError:
        return None
    return int(row[0]) if row else 0


def sqlite_temp_dir() -> Path:
    """Where SQLite writes a VACUUM's temporary copy: on unix the first usable
    of SQLITE_TMPDIR, TMPDIR, /var/tmp, /usr/tmp, /tmp (its os_unix.c order,
    not Python's); elsewhere the system's temporary directory."""
    if os.name == "nt":
        return Path(tempfile.gettempdir())
    for d in (os.environ.get("SQLITE_TMPDIR"), os.environ.get("TMPDIR"), "/var/tmp", "/usr/tmp", "/tmp"):
        if d and os.path.isdir(d) and os.access(d, os.W_OK | os.X_OK):
            return Path(d)
    return Path.cwd()


@dataclass
class RunResult:
    removed: dict[str, int] = field(default_factory=dict)
    returned_bytes: int = 0
    #: work is left (the slice's time ran out): the next tick goes on at once
    more: bool = False
    max_txn_ms: float = 0.0
    note: str = ""


class Retention:
    """The rules of one database. Not thread-safe: the maintenance thread owns it."""

    def __init__(self, settings: RetentionSettings, path: Path, *,
                 wait: Callable[[float], bool] | None = None,
                 busy: Callable[[], bool] = lambda: False,
                 clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.s = settings
        self.path = Path(path)
        self._wait = wait or threading.Event().wait
        self._busy = busy
        self._clock = clock
        self._now = now
        self._next = 0.0
        self._more = False
        self._capping = False
        self._cap_stuck = False
        self._pass: dict[str, int] = {}  # removed so far in the pass under way (for its log line)
        self._rows = Pacer(settings.batch_rows, MIN_BATCH_ROWS, settings.batch_ms)
        self._rows.size = max(self._rows.lo, self._rows.hi // 4)  # a cold cache: start small, grow
        self._vac = Pacer(settings.vacuum_pages, MIN_VACUUM_PAGES, settings.batch_ms)
        self._next_convert = 0.0
        self._resumed = 0.0  # when the work since the last rest began
        self._not_before = 0.0  # the rest a slice ended with is over
        self._conn: sqlite3.Connection | None = None  # while a slice runs
        self.last_note = ""
        #: the longest transaction since start (ms)
        self.peak_txn_ms = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self.s.raw_days or self.s.usage_days or self.s.max_db_mb)

    @property
    def cap_bytes(self) -> int:
        return self.s.max_db_mb * 1_000_000

    def due(self) -> bool:
        now = self._clock()
        return self.enabled and (now >= self._not_before if self._more else now >= self._next)

    def wait_s(self) -> float:
        """Seconds until ``due``: the rest a slice ended with, or the next check."""
        if not self.enabled:
            return float("inf")
        return max(0.0, (self._not_before if self._more else self._next) - self._clock())

    def postpone(self) -> None:
        """After a failure: the next pass in ``check_interval_s``, not at the next tick."""
        self._more = False
        self._next = self._clock() + self.s.check_interval_s

    # -- one slice -----------------------------------------------------------------------------

    def run(self, budget_s: float) -> RunResult:
        """Apply the rules for at most about ``budget_s`` (pauses included)."""
        res = RunResult()
        if not self.enabled or not self.path.exists():
            return res
        deadline = self._resumed = self._clock()
        deadline += budget_s
        conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            # as the writer: no fsync per commit, and no checkpoint inside a COMMIT
            # (checkpoints run between transactions, in _pause, without the write lock)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA wal_autocheckpoint=0")
            if schema.current_version(conn) != schema.LATEST:
                # not made (or migrated) by the engine yet, or newer than this app: not ours to write
                res.note = "the database's schema is not this app's: nothing removed"
                self.postpone()
                return res
            self._conn = conn
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name='retention_stats'").fetchone() is None:
                conn.execute(STATS_SQL)
            res.more = not self._apply(conn, res, deadline)
            if not res.more:
                with schema.immediate(conn):
                    conn.execute(_COUNT_SQL, (RUN, 1, 0, _now_iso()))
            if res.returned_bytes or sum(res.removed.values()):
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")  # the file is truncated by the checkpoint
        finally:
            self._conn = None
            conn.close()
        self._more = res.more
        if not res.more:
            self._next = self._clock() + self.s.check_interval_s
        self.last_note, self.peak_txn_ms = res.note, max(self.peak_txn_ms, res.max_txn_ms)
        for rule, n in (*res.removed.items(), (VACUUM, res.returned_bytes)):
            self._pass[rule] = self._pass.get(rule, 0) + n
        if not res.more and any(self._pass.values()):  # one line per pass, not per slice
            returned = self._pass.pop(VACUUM, 0)
            log.info("retention: removed %s; %d bytes returned to the file system; longest transaction %.1f ms",
                     ", ".join(f"{n} rows ({rule})" for rule, n in self._pass.items()) or "no rows",
                     returned, self.peak_txn_ms)
        if not res.more:
            self._pass = {}
        return res

    def _apply(self, conn: sqlite3.Connection, res: RunResult, deadline: float) -> bool:
        """True when every rule is done for now, False when the time ran out."""
        pos = usage_position(conn)
        top = int(conn.execute("SELECT COALESCE(MAX(sequence), 0) FROM raw_traces").fetchone()[0])
        limit = min(pos, top - 1) if pos is not None else 0
        # the position is read again in each delete: `usage rebuild` may set it back meanwhile
        keep = "+sequence <= MIN(?, (SELECT last_sequence FROM usage_state WHERE worker='usage'))" \
            if pos is not None else "+sequence <= ?"
        if pos is None and (self.s.raw_days or self.s.max_db_mb):
            res.note = "raw events are kept until the usage tables exist (the usage worker makes them)"
        if self.s.raw_days:
            cutoff = _iso(self._now() - timedelta(days=self.s.raw_days))
            if not self._drain(conn, res, deadline, AGE, self._raw_sql(f"timestamp < ? AND {keep}"),
                               (cutoff, limit)):
                return False
        if self.s.usage_days:
            cutoff = _iso(self._now() - timedelta(days=self.s.usage_days))
            for table, key in _USAGE_TABLES:
                sql = (f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} WHERE timestamp < ? "
                       f"ORDER BY timestamp LIMIT ?)")
                if not self._drain(conn, res, deadline, USAGE_AGE, sql, (cutoff,)):
                    return False
        if self.s.max_db_mb:
            if not self._cap(conn, res, deadline, limit, keep):
                return False
        return self._vacuum(conn, res, deadline)

    @staticmethod
    def _raw_sql(where: str) -> str:
        # the oldest first, through the timestamp index ("+sequence": not the primary key)
        return (f"DELETE FROM raw_traces WHERE sequence IN (SELECT sequence FROM raw_traces "
                f"INDEXED BY idx_raw_traces_timestamp WHERE {where} ORDER BY timestamp LIMIT ?)")

    def _cap(self, conn: sqlite3.Connection, res: RunResult, deadline: float, limit: int, keep: str) -> bool:
        """Oldest raw rows first while the used pages are over the cap, down to the low water."""
        low = self.cap_bytes * self.s.cap_low_water_pct // 100
        used = pages(conn).used_bytes
        if used <= self.cap_bytes:
            self._cap_stuck = False
        elif not self._capping and not self._cap_stuck:
            self._capping = True
            log.warning("retention: database uses %d bytes, over its cap of %d: removing the oldest raw "
                        "events down to %d%% of it", used, self.cap_bytes, self.s.cap_low_water_pct)
        if self._cap_stuck:
            res.note = ("over the size cap, and no raw event is left that retention may remove "
                        "(the usage tables, rows not yet derived and the newest row stay)")
        while self._capping:
            if used <= low:
                self._capping = False
                break
            n = self._batch(conn, res, CAP, self._raw_sql(keep), (limit,))
            if n == 0:
                if used > self.cap_bytes:
                    self._cap_stuck = True  # tried again every pass, announced once
                    log.warning("retention: the database is still over its cap, and no raw event is left "
                                "that retention may remove")
                self._capping = False
                break
            used = pages(conn).used_bytes
            if not self._pause(deadline):
                return False
        return True

    def _drain(self, conn: sqlite3.Connection, res: RunResult, deadline: float, rule: str, sql: str,
               args: tuple[Any, ...]) -> bool:
        while self._batch(conn, res, rule, sql, args):
            if not self._pause(deadline):
                return False
        return True

    def _batch(self, conn: sqlite3.Connection, res: RunResult, rule: str, sql: str, args: tuple[Any, ...]) -> int:
        """One transaction: at most the pacer's rows, and the count. Returns rows removed."""
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        # few statements: each one between BEGIN and COMMIT may wait for the GIL
        held = [0.0]
        with schema.immediate(conn, held):
            before = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
            n = conn.execute(sql, (*args, self._rows.size)).rowcount
            if n > 0:
                conn.execute(_COUNT_FREED_SQL, (rule, n, before, page_size, _now_iso()))
        ms = held[0]
        self._rows.took(ms)
        res.max_txn_ms = max(res.max_txn_ms, ms)
        if n > 0:
            res.removed[rule] = res.removed.get(rule, 0) + n
        return max(0, n)

    def _vacuum(self, conn: sqlite3.Connection, res: RunResult, deadline: float) -> bool:
        """Give free pages back to the file system, a few at a time."""
        while True:
            p = pages(conn)
            if p.auto_vacuum != 2 or p.freelist == 0:
                return True
            held = [0.0]
            with schema.immediate(conn, held):
                conn.execute(f"PRAGMA incremental_vacuum({self._vac.size})").fetchall()
                after = int(conn.execute("PRAGMA page_count").fetchone()[0])
                gone = p.page_count - after
                conn.execute(_COUNT_SQL, (VACUUM, gone, gone * p.page_size, _now_iso()))
            ms = held[0]
            self._vac.took(ms)
            res.max_txn_ms = max(res.max_txn_ms, ms)
            res.returned_bytes += gone * p.page_size
            if gone == 0 or not self._pause(deadline):
                return gone == 0

    def _pause(self, deadline: float) -> bool:
        """Between two transactions (and a checkpoint once the WAL has grown):
        rest as long as the work since the last rest took, nineteen times as long
        while ingest is busy (BUSY_DUTY), so that retention takes at most half of
        a quiet engine's time and a twentieth of a busy one's. False: the slice
        is over (the rest still due is kept: ``due`` waits for it)."""
        if self._conn is not None:
            schema.checkpoint_if_large(self._conn, self.path, CHECKPOINT_WAL_BYTES)
        now = self._clock()
        work = now - self._resumed
        gap = work * (1 - BUSY_DUTY) / BUSY_DUTY if self._busy() else work
        if now + gap >= deadline:
            self._not_before = now + gap
            return False
        stopped = self._wait(max(gap, 0.0005))
        self._resumed = self._clock()
        return not stopped

    # -- databases made before incremental vacuum ------------------------------------------------

    def convert_old(self, quiet: bool) -> str:
        """Switch a database with auto_vacuum off to INCREMENTAL by one VACUUM,
        at a quiet moment and only with room on the disk. Returns what happened
        ("" when nothing was to do or it is not the time)."""
        if not (self.enabled and self.s.convert_old_db and quiet and self.path.exists()):
            return ""
        if self._clock() < self._next_convert:
            return ""
        self._next_convert = self._clock() + CONVERT_RETRY_S
        conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            if schema.current_version(conn) != schema.LATEST:
                return ""  # the engine has not opened (migrated) it, or it is newer: leave it alone
            p = pages(conn)
            if p.auto_vacuum != 0:
                self._next_convert = float("inf")
                return ""
            reserve = self.s.disk_warn_free_mb * 1024 * 1024
            need = int(p.used_bytes * CONVERT_SLACK)
            free, _total = disk_space(self.path)
            tmp = sqlite_temp_dir()
            tmp_free = shutil.disk_usage(tmp).free if tmp.exists() else 0
            same_fs = tmp.exists() and os.stat(tmp).st_dev == os.stat(self.path).st_dev
            # the VACUUM writes the copy into a temporary file, then the whole database into the WAL
            need_here = need * (2 if same_fs else 1) + reserve
            if free < need_here or (not same_fs and tmp_free < need):
                msg = (f"auto_vacuum stays off: switching needs about {need_here // 1_000_000} MB free next to "
                       f"the database ({free // 1_000_000} MB free) and {need // 1_000_000} MB in {tmp}; "
                       f"freed pages are reused meanwhile")
                log.warning("retention: %s", msg)
                return msg
            started = time.monotonic()
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            after = pages(conn)
        except sqlite3.Error as exc:
            log.warning("retention: could not switch the database to incremental vacuum: %s", exc)
            return f"switch to incremental vacuum failed: {exc}"
        finally:
            conn.close()
        msg = (f"database switched to incremental vacuum in {time.monotonic() - started:.1f} s: "
               f"{p.file_bytes} -> {after.file_bytes} bytes")
        log.info("retention: %s", msg)
        self._next_convert = float("inf")
        return msg


def status(conn: sqlite3.Connection) -> dict[str, Any]:
    """What health, ``db stats`` and diagnostics show: the counts per rule and
    the database's auto_vacuum mode."""
    p = pages(conn)
    stats = read_stats(conn)
    run = stats.pop(RUN, None)
    vac = stats.pop(VACUUM, None)
    return {
        "auto_vacuum": {0: "none", 1: "full", 2: "incremental"}.get(p.auto_vacuum, str(p.auto_vacuum)),
        "removed": {rule: stats[rule] for rule in (AGE, USAGE_AGE, CAP) if rule in stats},
        "returned_bytes": vac["bytes"] if vac else 0,
        "passes": run["rows"] if run else 0,
        "last_run_at": run["last_at"] if run else None,
    }


__all__ = ["Retention", "RunResult", "status", "read_stats", "STATS_SQL",
           "AGE", "USAGE_AGE", "CAP", "VACUUM"]
