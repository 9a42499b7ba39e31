"""telemetry.db: schema, forward migrations and connection settings.

Migrations are applied in order inside one transaction each; the version is
kept in ``schema_version``. A database whose version is newer than the app
knows is refused (SchemaTooNew) and left untouched.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tray_app.errors import SchemaTooNew

log = logging.getLogger(__name__)

#: the files SQLite keeps next to the database; it creates them with the
#: database's own mode (so a 0600 database gives 0600 companions)
COMPANION_SUFFIXES = ("-wal", "-shm", "-journal")
#: the mode of every database file the app creates
DB_FILE_MODE = 0o600

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
    # how far a reader of raw_traces has applied, written in the same transaction
    # as what it applied (the sessions monitor: a restart adds what is new to its
    # rows instead of recounting them from raw rows that retention may have pruned)
    (2, """
    CREATE TABLE reader_positions (
        reader            TEXT PRIMARY KEY,
        applied_sequence  INTEGER NOT NULL
    );
    """),
]

LATEST = MIGRATIONS[-1][0]

#: the event_type of the content-free row ``forget`` leaves in place of a
#: forgotten newest row (so its sequence is never given again); no reader counts it
TOMBSTONE = "forgotten"


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


@contextmanager
def immediate(conn: sqlite3.Connection, held: list[float] | None = None) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``; ``ROLLBACK`` when the body raises (for
    connections opened with ``isolation_level=None``, as ``connect`` does).
    ``held``: its first item is set to how long the write lock was held, in ms
    (what another writer may have waited for; not the wait for the lock itself)."""
    conn.execute("BEGIN IMMEDIATE")
    started = time.perf_counter()
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        if held is not None:
            held[0] = (time.perf_counter() - started) * 1000


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


def repair_modes(path: Path | str) -> list[str]:
    """Make the database's files user-only again so a database that was made
    read-only and then restored can be written (SQLite creates ``-wal`` and
    ``-shm`` with the database's mode at that moment, so a ``chmod 0444`` leaves
    0444 companions behind that outlive the restore).

    Only when the database itself is writable by us, and only files we own
    that are regular files (never follows a symlink): companions get 0600, the
    database keeps its owner bits and loses group/other bits. Returns one line
    per file changed (for the log); an unchangeable file is left as it is (the
    open then reports read_only and the writer retries)."""
    path = Path(path)
    changed: list[str] = []
    try:
        st = os.lstat(path)
    except OSError:
        return changed
    if not stat.S_ISREG(st.st_mode) or not os.access(path, os.W_OK):
        return changed  # read-only on purpose (or not ours): leave everything alone
    me = os.geteuid() if hasattr(os, "geteuid") else None
    targets = [(path, stat.S_IMODE(st.st_mode) & 0o700 | 0o600 if st.st_uid == me else None, st)]
    for suffix in COMPANION_SUFFIXES:
        companion = Path(f"{path}{suffix}")
        try:
            cst = os.lstat(companion)
        except OSError:
            continue
        targets.append((companion, DB_FILE_MODE, cst))
    for p, want, fst in targets:
        if want is None or fst.st_uid != me or not stat.S_ISREG(fst.st_mode):
            continue
        have = stat.S_IMODE(fst.st_mode)
        if have == want:
            continue
        try:
            os.chmod(p, want)
        except OSError as exc:
            log.warning("database: cannot change the mode of %s (%o): %s", p, have, exc.strerror or exc)
            continue
        changed.append(f"{p.name}: {have:o} -> {want:o}")
    if changed:
        log.info("database: repaired file modes (%s)", ", ".join(changed))
    return changed


def _create_private(path: Path) -> None:
    """Create an empty database file 0600 before SQLite does (SQLite would use
    0644 less the umask, and gives -wal/-shm the database's mode)."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0), DB_FILE_MODE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, DB_FILE_MODE)  # the umask may have taken bits away, never added: be exact
    except (AttributeError, OSError):
        pass
    finally:
        os.close(fd)


def open_database(path: Path, timeout_s: float = 0.0) -> sqlite3.Connection:
    """Open (creating if needed, 0600) and migrate telemetry.db. A database of a
    newer schema is refused before anything (not even the journal mode) changes.
    A new database gets ``auto_vacuum=INCREMENTAL``.

    The writer calls this on every reopen after a failure, so the file-mode
    repair (repair_modes) runs each time it retries: a database whose mode was
    restored recovers by itself."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _create_private(path)
    repair_modes(path)
    conn = sqlite3.connect(str(path), timeout=timeout_s, isolation_level=None,
                           check_same_thread=False)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                _set_up(conn, path)
                return conn
            except sqlite3.OperationalError as exc:
                # two first opens of a new file at once (the engine's writer and a monitor
                # at first start): the switch to WAL takes an exclusive lock without
                # waiting on SQLite's busy handler, so it is tried again here
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)
    except BaseException:
        conn.close()
        raise


def _set_up(conn: sqlite3.Connection, path: Path) -> None:
    version = current_version(conn)
    if version > LATEST:
        migrate(conn, str(path))  # raises SchemaTooNew
    if version == 0 and conn.execute("PRAGMA page_count").fetchone()[0] == 0:
        # only an empty file can take it without a VACUUM: retention returns the
        # pages it frees to the file system (engine/retention.py)
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    _write_pragmas(conn)
    migrate(conn, str(path))


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
