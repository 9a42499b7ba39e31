"""UsageWorker: a slow-path thread of the engine that keeps the derived usage
tables (tray_app/usage/schema.py) from ``raw_traces``.

It follows the change feed ``cdc:events`` with its own consumer group
(``usage``): a read blocks until rows were committed (one entry is read, then
the group moves to the end of the feed), then the rows above the worker's
position are fetched from ``raw_traces`` by ``sequence``, derived
(accounting.py) and applied in short transactions of their own, each of which
also moves the position (``usage_state.last_sequence``). The position lives in
SQLite with the rows, so the feed is only the signal: a feed trimmed below the
position (the cap), a fresh install with history, or a crash mid-way all end
the same way: the rows above the position are read from ``raw_traces``, in
order. Every write is an idempotent
upsert, so nothing is ever counted twice.

Never in the fast path's way: transactions are small (``CHUNK_ROWS`` rows, a
few milliseconds of the write lock; the writer waits up to 250 ms), prices are
computed before the transaction, and while ingest is busy a catch-up works at
most a twentieth of the time (``BUSY_DUTY``), so the consumer keeps the
interpreter. A failing pass is counted in this thread's health and retried; a
failure that persists ends the thread, which the engine's supervisor shows in
``thread_errors`` and restarts with backoff; ingest never waits for it.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import redis

from tray_app.config import Config
from tray_app.engine.schema import immediate
from tray_app.monitors.base import MonitorThread
from tray_app.redis_conn import CDC_STREAM, Endpoint, close_quietly
from tray_app.usage import accounting, pricing, schema
from tray_app.usage.accounting import Derived, Request

log = logging.getLogger(__name__)

NAME = "usage"
GROUP = "usage"
CONSUMER = "usage-worker"
CHUNK_ROWS = 500
#: rows per pass before the loop yields (the next pass starts at once)
PASS_ROWS = 20_000
#: while ingest is busy, work at most this share of the time during a catch-up
BUSY_DUTY = 0.05
#: a backlog this large is announced in the log (and its end)
CATCH_UP_LOG_ROWS = 10_000
#: consecutive failed passes before the thread gives up (the supervisor restarts it)
MAX_FAILURES = 3


class UsageFailed(RuntimeError):
    """The derived tables could not be kept for several passes in a row."""


def _rank(output: int, ts: str, seq: int) -> tuple[int, str, int]:
    """Smaller is better: the most output tokens, then the earliest line (accounting.py)."""
    return (-output, ts, seq)


def best_requests(conn: sqlite3.Connection, derived: list[Derived]) -> list[Request]:
    """The candidates that would change a record, priced (outside any transaction;
    a price is ~0.1 ms, so each request is priced once, not once per line).
    A concurrent writer cannot make this wrong: the upsert checks the rule again."""
    best: dict[str, Request] = {}
    for d in derived:
        for r in d.requests:
            cur = best.get(r.key)
            if cur is None or _rank(r.tokens.output, r.timestamp, r.sequence) < \
                    _rank(cur.tokens.output, cur.timestamp, cur.sequence):
                best[r.key] = r
    if not best:
        return []
    keys = list(best)
    have: dict[str, tuple[int, str, int]] = {}
    for i in range(0, len(keys), 500):  # within any SQLite's limit of bound variables
        part = keys[i:i + 500]
        have.update((k, _rank(o, t, s)) for k, o, t, s in conn.execute(
            f"SELECT request_key, output_tokens, timestamp, source_sequence FROM usage_requests "
            f"WHERE request_key IN ({','.join('?' * len(part))})", part))
    out = []
    for r in best.values():
        old = have.get(r.key)
        if old is not None and old <= _rank(r.tokens.output, r.timestamp, r.sequence):
            continue  # the record kept already is at least as complete
        if r.model is not None:  # else its model may come from the conversation: priced later
            cost = pricing.price(r.platform, r.model, r.tokens, accounting.parse_ts(r.timestamp))
            r = replace(r, cost_pusd=pricing.to_pico(cost), pricing_version=pricing.VERSION)
        out.append(r)
    return out


def process_chunk(conn: sqlite3.Connection, after: int, limit: int = CHUNK_ROWS,
                  upto: int | None = None) -> tuple[int, int]:
    """Derive and apply the raw rows above ``after`` (at most ``limit``, not above
    ``upto``) in one short transaction that also moves the position.
    Returns (rows read, last sequence read, or ``after`` when none)."""
    cond = "sequence > ?" + (" AND sequence <= ?" if upto is not None else "")
    args: tuple[Any, ...] = (after, upto, limit) if upto is not None else (after, limit)
    rows = conn.execute(f"SELECT {accounting.ROW_COLUMNS} FROM raw_traces WHERE {cond} "
                        f"ORDER BY sequence LIMIT ?", args).fetchall()
    if not rows:
        return 0, after
    derived = [_derive(r) for r in rows]
    requests = best_requests(conn, derived)
    last = int(rows[-1][0])
    try:
        with immediate(conn):
            accounting.apply(conn, derived, requests)
            schema.set_position(conn, last)
    except ROW_ERRORS as exc:
        # a value the tables cannot hold: that row's problem, found by applying
        # the chunk one row at a time
        log.warning("usage: a raw row between %s and %s cannot be applied (%s): applying them one by one",
                    rows[0][0], last, exc)
        with immediate(conn):
            for row, d in zip(rows, derived):
                keys = {r.key for r in d.requests}
                conn.execute("SAVEPOINT usage_row")
                try:
                    accounting.apply(conn, [d], [r for r in requests if r.key in keys])
                except ROW_ERRORS as err:
                    conn.execute("ROLLBACK TO usage_row")
                    log.warning("usage: raw row %s skipped: %s", row[0], err)
                conn.execute("RELEASE usage_row")
            schema.set_position(conn, last)
    return len(rows), last


#: errors that belong to one row's values (a number or text the tables cannot hold),
#: never to the database: those (a constraint, a lock, a full disk) propagate, the
#: worker retries with backoff and health shows them
ROW_ERRORS = (OverflowError, ValueError, TypeError, sqlite3.InterfaceError)


def _derive(row: tuple[Any, ...]) -> Derived:
    """accounting.derive, where any exception is that row's problem: it derives nothing."""
    try:
        return accounting.derive(row)
    except Exception as exc:  # noqa: BLE001 - producers send anything; one row never stops the tables
        log.warning("usage: raw row %s skipped: %s: %s", row[0], type(exc).__name__, exc)
        return Derived()


def clear_derivable(conn: sqlite3.Connection) -> None:
    """Inside the caller's transaction: the derived rows ``raw_traces`` can give
    again (their source row is still there) and the position go; the rest,
    kept after retention removed their raw rows (engine/retention.py), stays.
    Re-applying every raw row then gives the same tables as before: a record
    kept had the best source line of its request, so it is the best of the
    lines left, and a record whose source line is gone beats every line left."""
    conn.execute("DELETE FROM usage_activity WHERE sequence IN (SELECT sequence FROM raw_traces)")
    conn.execute("DELETE FROM usage_requests WHERE source_sequence IN (SELECT sequence FROM raw_traces)")
    conn.execute("DELETE FROM usage_cursor_composers WHERE session_id IN (SELECT session_id FROM raw_traces "
                 "WHERE event_type='database_trace' AND hook_type='composerData')")
    conn.execute("DELETE FROM usage_state WHERE worker=?", (schema.WORKER,))


def price_pending(conn: sqlite3.Connection, limit: int = CHUNK_ROWS) -> int:
    """Price records whose cost is unknown for this library version: read and
    priced outside the transaction, written in a short one."""
    todo = accounting.pending_prices(conn, limit)
    if not todo:
        return 0
    with immediate(conn):
        accounting.store_prices(conn, todo)
    return len(todo)


def open_db(cfg: Config) -> sqlite3.Connection:
    return schema.open_db(cfg.paths.database)


class UsageWorker(MonitorThread):
    error_backoff_s = 2.0

    def __init__(self, cfg: Config, endpoint: Endpoint, *, busy: Callable[[], bool] | None = None,
                 poll_interval_s: float = 1.0) -> None:
        super().__init__(NAME, poll_interval_s)
        self.cfg = cfg
        self.endpoint = endpoint
        self.busy = busy or (lambda: False)
        self._db: sqlite3.Connection | None = None
        self._client: redis.Redis | None = None
        self._failures = 0
        self._backlog = 0
        self._set(position=0, backlog=0, catching_up=False, rows_applied=0, feed_wakeups=0)

    # -- connections ---------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = open_db(self.cfg)
            n = accounting.stale_pricing(self._db)
            if n:
                log.info("usage: %d costs from another genai-prices version will be priced again", n)
        return self._db

    def _redis(self) -> redis.Redis:
        if self._client is None:
            c = self.endpoint.client(socket_timeout=max(5.0, self.poll_interval_s + 2))
            try:
                c.xgroup_create(CDC_STREAM, GROUP, id="$", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    close_quietly(c)
                    raise
            self._client = c
        return self._client

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        close_quietly(self._client)
        self._client = None

    # -- the loop ------------------------------------------------------------------------------

    def pass_once(self) -> bool:
        ok = super().pass_once()
        if ok:
            self._failures = 0
            return True
        self._failures += 1
        if self._db is not None:  # a broken connection is opened again
            try:
                self._db.close()
            finally:
                self._db = None
        if self._failures >= MAX_FAILURES:
            raise UsageFailed(self.health().get("last_error") or "derived tables failed")
        return False

    def next_wait_s(self) -> float:
        return 0.0 if self._backlog > 0 else self.poll_interval_s

    def run_once(self) -> int:
        conn = self._conn()
        self._wait_feed()
        done = self.catch_up(conn)
        while price_pending(conn):
            pass
        return done

    def _wait_feed(self) -> None:
        """Block (at most a poll interval) until the feed has an entry newer than
        the last look. The feed is only the signal: one entry is read and
        acknowledged, and the group moves to the end of the stream (the rows
        themselves are read from raw_traces), so a burst of thousands of
        commits costs the worker one small read, not thousands of parsed
        entries. Without Redis the worker polls raw_traces."""
        if self._backlog > 0:
            return  # still catching up: no need to wait
        try:
            c = self._redis()
            got: Any = c.xreadgroup(GROUP, CONSUMER, {CDC_STREAM: ">"}, count=1,
                                    block=max(1, int(self.poll_interval_s * 1000)))
            ids = [eid for _stream, entries in got or () for eid, _fields in entries]
            if ids:
                pipe = c.pipeline(transaction=False)
                pipe.xack(CDC_STREAM, GROUP, *ids)
                pipe.xgroup_setid(CDC_STREAM, GROUP, "$")  # before raw_traces is read: nothing is missed
                pipe.execute()
                with self._lock:
                    self._h["feed_wakeups"] += 1
        except (redis.RedisError, OSError) as exc:
            log.debug("usage: feed unavailable (%s); reading raw_traces", exc)
            self._drop_redis()
            self._stopping.wait(min(self.poll_interval_s, 1.0))

    def _drop_redis(self) -> None:
        close_quietly(self._client)
        self._client = None

    def catch_up(self, conn: sqlite3.Connection) -> int:
        """Rows above the position, up to PASS_ROWS, in chunks."""
        # retention may have removed the lowest rows: start at the lowest one left
        low, top = conn.execute("SELECT COALESCE(MIN(sequence), 1) - 1, COALESCE(MAX(sequence), 0) "
                                "FROM raw_traces").fetchone()
        pos, top = max(schema.position(conn), int(low)), int(top)
        done = 0
        while pos < top and done < PASS_ROWS and not self.stopping and not self.paused:
            started = time.monotonic()
            n, pos = process_chunk(conn, pos, CHUNK_ROWS, top)
            if n == 0:
                break
            done += n
            with self._lock:
                self._h["rows_applied"] += n
            self._set(position=pos, backlog=max(0, top - pos))
            if top - pos > 0 and self.busy():
                # ingest is busy: leave it the interpreter most of the time
                spent = time.monotonic() - started
                self._stopping.wait(spent * (1.0 - BUSY_DUTY) / BUSY_DUTY)
        behind = max(0, top - pos)
        if behind > CATCH_UP_LOG_ROWS and self._backlog <= CATCH_UP_LOG_ROWS:
            log.info("usage: catching up %d rows of raw_traces (from sequence %d)", behind, pos)
        elif behind == 0 and self._backlog > CATCH_UP_LOG_ROWS:
            log.info("usage: caught up (sequence %d)", pos)
        self._backlog = behind
        self._set(position=pos, backlog=self._backlog, catching_up=self._backlog > CHUNK_ROWS)
        return done


__all__ = ["UsageWorker", "UsageFailed", "process_chunk", "clear_derivable", "price_pending", "open_db", "NAME",
           "GROUP"]
