"""telemetry.db: schema, forward migrations and connection settings.

Migrations are applied in order inside one transaction each; the version is
kept in ``schema_version``. A database whose version is newer than the app
knows is refused (SchemaTooNew) and left untouched.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from tray_app.errors import SchemaTooNew

MIGRATIONS: list[tuple[int, str]] = [
    (1, """
    CREATE TABLE raw_traces (
        sequence            INTEGER PRIMARY KEY,
        event_id            TEXT NOT NULL UNIQUE,
        session_id          TEXT NOT NULL,
        external_session_id TEXT,
        event_type          TEXT NOT NULL,
        platform            TEXT NOT NULL,
        hook_type           TEXT,
        timestamp           TEXT NOT NULL,
        workspace_hash      TEXT,
        source              TEXT,
        stream_id           TEXT,
        ingested_at         TEXT NOT NULL,
        event_data          BLOB NOT NULL
    );
    CREATE INDEX idx_raw_traces_session_time ON raw_traces (session_id, timestamp);
    CREATE INDEX idx_raw_traces_type_time ON raw_traces (event_type, timestamp);
    CREATE INDEX idx_raw_traces_platform_time ON raw_traces (platform, timestamp);
    CREATE INDEX idx_raw_traces_workspace_time ON raw_traces (workspace_hash, timestamp);
    CREATE INDEX idx_raw_traces_timestamp ON raw_traces (timestamp);

    CREATE TABLE sessions (
        platform          TEXT NOT NULL,
        session_id        TEXT NOT NULL,
        workspace_hash    TEXT,
        started_at        TEXT,
        last_activity_at  TEXT,
        ended_at          TEXT,
        end_reason        TEXT,
        event_count       INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (platform, session_id)
    );
    CREATE INDEX idx_sessions_last_activity ON sessions (last_activity_at);
    """),
]

LATEST = MIGRATIONS[-1][0]


def connect(path: Path | str, *, readonly: bool = False, timeout_s: float = 0.0) -> sqlite3.Connection:
    """A connection with our pragmas. ``timeout_s`` is SQLite's busy timeout."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout_s,
                               isolation_level=None, check_same_thread=False)
    else:
        conn = sqlite3.connect(str(path), timeout=timeout_s, isolation_level=None,
                               check_same_thread=False)
        _write_pragmas(conn)
    return conn


def _write_pragmas(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")


def current_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name='schema_version'").fetchone()
    if row is None:
        return 0
    v = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
    return int(v or 0)


def migrate(conn: sqlite3.Connection, path: str = "telemetry.db") -> int:
    """Bring the schema up to date. Returns the version now in force."""
    version = current_version(conn)
    if version > LATEST:
        raise SchemaTooNew(f"{path}: database schema version {version} is newer than this app "
                           f"supports ({LATEST}); upgrade Telemetry Tray (the database was left untouched)")
    if version == LATEST:
        return version
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = current_version(conn)  # re-read under the write lock
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version ("
                      "version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL DEFAULT "
                      "(strftime('%Y-%m-%dT%H:%M:%fZ','now')))")
        for v, sql in MIGRATIONS:
            if v <= version:
                continue
            for statement in sql.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (v,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return LATEST


def open_database(path: Path, timeout_s: float = 0.0) -> sqlite3.Connection:
    """Open (creating if needed, 0600) and migrate telemetry.db. A database of a
    newer schema is refused before anything (not even the journal mode) changes."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not path.exists():
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)
    conn = sqlite3.connect(str(path), timeout=timeout_s, isolation_level=None,
                           check_same_thread=False)
    try:
        version = current_version(conn)
        if version > LATEST:
            migrate(conn, str(path))  # raises SchemaTooNew
        _write_pragmas(conn)
        migrate(conn, str(path))
    except BaseException:
        conn.close()
        raise
    return conn


def checkpoint_if_large(conn: sqlite3.Connection, path: Path | str, min_wal_bytes: int) -> bool:
    """A PASSIVE checkpoint (blocks neither the writer nor readers) once the WAL
    has grown past ``min_wal_bytes``. True when one ran."""
    try:
        if os.stat(f"{path}-wal").st_size < min_wal_bytes:
            return False
    except OSError:
        return False
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    return True
