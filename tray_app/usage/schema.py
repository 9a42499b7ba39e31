"""The derived usage tables in telemetry.db, created idempotently.

They are a pure function of ``raw_traces``: every write is an idempotent upsert
keyed by what it describes (an API request, a raw row), never a counter, so
processing a raw row twice (a redelivered feed entry, a worker that crashed
between its commit and its acknowledgement, ``usage rebuild`` racing the
worker) changes nothing. ``usage_state`` keeps how far each worker got.

Times are UTC ISO text ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (text order is time order).
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from tray_app.engine.schema import immediate, open_database
from tray_app.usage import rollup

log = logging.getLogger(__name__)

#: bump when the derived tables change shape: they are dropped and rebuilt from
#: raw_traces, unless the old version is in ADDITIVE (the new shape only adds
#: tables: they are created, nothing is dropped)
VERSION = 3
ADDITIVE = frozenset({2})   # 3 added usage_reported_costs (no raw row before 3 had one)
WORKER = "usage"
SCHEMA_KEY = "schema"

TABLES = ("usage_requests", "usage_activity", "usage_cursor_composers", "usage_reported_costs")

DDL = """
CREATE TABLE IF NOT EXISTS usage_requests (
    request_key              TEXT PRIMARY KEY,
    platform                 TEXT NOT NULL,
    message_id               TEXT,
    request_id               TEXT,
    session_id               TEXT,
    workspace_hash           TEXT,
    model                    TEXT,
    timestamp                TEXT NOT NULL,
    input_tokens             INTEGER NOT NULL DEFAULT 0,
    output_tokens            INTEGER NOT NULL DEFAULT 0,
    cache_creation_tokens    INTEGER NOT NULL DEFAULT 0,
    cache_creation_5m_tokens INTEGER,
    cache_creation_1h_tokens INTEGER,
    cache_read_tokens        INTEGER NOT NULL DEFAULT 0,
    cursor_reported          INTEGER NOT NULL DEFAULT 0,
    source_sequence          INTEGER NOT NULL,
    cost_pusd                INTEGER,
    pricing_version          TEXT
);
CREATE INDEX IF NOT EXISTS idx_usage_requests_time ON usage_requests (timestamp);
CREATE INDEX IF NOT EXISTS idx_usage_requests_session ON usage_requests (platform, session_id);
CREATE INDEX IF NOT EXISTS idx_usage_requests_unpriced ON usage_requests (request_key) WHERE pricing_version IS NULL;
CREATE TABLE IF NOT EXISTS usage_activity (
    sequence       INTEGER PRIMARY KEY,
    platform       TEXT NOT NULL,
    session_id     TEXT,
    workspace_hash TEXT,
    timestamp      TEXT NOT NULL,
    kind           TEXT NOT NULL,
    name           TEXT,
    origin         TEXT NOT NULL,
    dedup_key      TEXT UNIQUE
);
CREATE INDEX IF NOT EXISTS idx_usage_activity_time ON usage_activity (timestamp);
CREATE INDEX IF NOT EXISTS idx_usage_activity_session ON usage_activity (platform, session_id, origin);
CREATE TABLE IF NOT EXISTS usage_cursor_composers (
    session_id     TEXT PRIMARY KEY,
    model          TEXT,
    reported_cents INTEGER
);
CREATE TABLE IF NOT EXISTS usage_reported_costs (
    sequence              INTEGER PRIMARY KEY,
    platform              TEXT NOT NULL,
    session_id            TEXT,
    workspace_hash        TEXT,
    model                 TEXT,
    timestamp             TEXT NOT NULL,
    cost_pusd             INTEGER,
    input_tokens          INTEGER NOT NULL DEFAULT 0,
    output_tokens         INTEGER NOT NULL DEFAULT 0,
    cache_creation_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS idx_usage_reported_time ON usage_reported_costs (timestamp);
CREATE INDEX IF NOT EXISTS idx_usage_reported_session ON usage_reported_costs (platform, session_id);
CREATE TABLE IF NOT EXISTS usage_state (
    worker        TEXT PRIMARY KEY,
    last_sequence INTEGER NOT NULL DEFAULT 0,
    updated_at    TEXT
);
"""

_NOW = "strftime('%Y-%m-%dT%H:%M:%fZ','now')"
#: the worker and the commands wait this long for the ingest writer's short transactions
BUSY_TIMEOUT_S = 5.0


def open_db(path: Path) -> sqlite3.Connection:
    """telemetry.db opened (and migrated) with the usage tables in place."""
    conn = open_database(path, timeout_s=BUSY_TIMEOUT_S)
    ensure(conn)
    return conn


def unpriced(conn: sqlite3.Connection) -> bool:
    """Some request has no cost for the pricing library yet (partial index: cheap)."""
    return conn.execute("SELECT 1 FROM usage_requests WHERE pricing_version IS NULL LIMIT 1").fetchone() \
        is not None


def exists(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='usage_state'").fetchone() \
        is not None


def _current(conn: sqlite3.Connection) -> bool:
    """Base tables and rollups both exist at this code's versions."""
    if not exists(conn):
        return False
    got = dict(conn.execute("SELECT worker, last_sequence FROM usage_state WHERE worker IN (?, ?)",
                            (SCHEMA_KEY, rollup.STATE_KEY)).fetchall())
    return got.get(SCHEMA_KEY) == VERSION and got.get(rollup.STATE_KEY) == rollup.VERSION


def ensure(conn: sqlite3.Connection) -> None:
    """Create the tables (or rebuild them empty when their VERSION changed), and
    the rollups (computed from the base tables when they are new or changed).
    ``conn`` is in autocommit mode (isolation_level=None)."""
    if _current(conn):
        return
    with immediate(conn):
        if _current(conn):
            return  # another process made them meanwhile
        if exists(conn):
            row = conn.execute("SELECT last_sequence FROM usage_state WHERE worker=?", (SCHEMA_KEY,)).fetchone()
            if row is not None and row[0] != VERSION and row[0] in ADDITIVE:
                log.info("usage: derived tables are version %s, now %s: adding the new tables", row[0], VERSION)
            elif row is not None and row[0] != VERSION:
                log.info("usage: derived tables are version %s, now %s: rebuilding them", row[0], VERSION)
                rollup.drop_triggers(conn)
                for t in (*TABLES, *rollup.TABLES, "usage_state"):
                    conn.execute(f"DROP TABLE IF EXISTS {t}")
        for statement in DDL.split(";"):
            if statement.strip():
                conn.execute(statement)
        rollup.rebuild(conn)
        conn.executemany(f"INSERT OR REPLACE INTO usage_state (worker, last_sequence, updated_at) "
                         f"VALUES (?, ?, {_NOW})", ((SCHEMA_KEY, VERSION), (rollup.STATE_KEY, rollup.VERSION)))


def position(conn: sqlite3.Connection, worker: str = WORKER) -> int:
    row = conn.execute("SELECT last_sequence FROM usage_state WHERE worker=?", (worker,)).fetchone()
    return int(row[0]) if row else 0


def set_position(conn: sqlite3.Connection, seq: int, worker: str = WORKER) -> None:
    """Inside the caller's transaction: the position moves only forward."""
    conn.execute(f"INSERT INTO usage_state (worker, last_sequence, updated_at) VALUES (?, ?, {_NOW}) "
                 f"ON CONFLICT(worker) DO UPDATE SET last_sequence=MAX(last_sequence, excluded.last_sequence), "
                 f"updated_at=excluded.updated_at", (worker, seq))


def clear(conn: sqlite3.Connection, worker: str = WORKER) -> None:
    """Inside the caller's transaction: every derived row and the position go."""
    rollup.clear(conn)
    for t in TABLES:
        conn.execute(f"DELETE FROM {t}")
    rollup.rebuild(conn)
    conn.execute("DELETE FROM usage_state WHERE worker=?", (worker,))


__all__ = ["VERSION", "WORKER", "TABLES", "open_db", "ensure", "exists", "position", "set_position", "clear",
           "unpriced"]
