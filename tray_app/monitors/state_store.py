"""Where monitors remember how far they got: a small SQLite file per monitor
in the app's state directory (``<state_dir>/monitors/<name>.sqlite3``).

Two tables:
  ``kv``            scope + key -> JSON value: file fingerprints, rowid watermarks,
                    transcript offsets, the session monitor's applied sequence.
  ``fingerprints``  scope + key -> short content digest, one per Cursor item, so a
                    re-scan (after a VACUUM, or the periodic reconciliation) re-emits
                    only items whose content changed.

Every write is its own short transaction. Losing this file is safe: the
monitors start over and the engine's idempotent insert (deterministic
``event_id``) drops what was already stored.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from tray_app.engine.schema import immediate
from tray_app.paths import make_private_dir

BUSY_TIMEOUT_S = 5.0

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS kv (scope TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, "
    "PRIMARY KEY (scope, key)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS fingerprints (scope TEXT NOT NULL, key TEXT NOT NULL, fp BLOB NOT NULL, "
    "PRIMARY KEY (scope, key)) WITHOUT ROWID",
)


def state_file(state_dir: Path, name: str) -> Path:
    return state_dir / "monitors" / f"{name}.sqlite3"


class StateStore:
    """Thread-confined in practice (each monitor owns one); ``check_same_thread``
    is off so tests can drive a monitor's pass from the test thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    # -- connection -------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            make_private_dir(self.path.parent)
            conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False)
            try:
                self.path.chmod(0o600)
            except OSError:
                pass
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            for sql in _SCHEMA:
                conn.execute(sql)
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    # -- kv ---------------------------------------------------------------------------------

    def get(self, scope: str, key: str, default: Any = None) -> Any:
        row = self._db().execute("SELECT value FROM kv WHERE scope=? AND key=?", (scope, key)).fetchone()
        return default if row is None else orjson.loads(row[0])

    def items(self, scope: str) -> dict[str, Any]:
        rows = self._db().execute("SELECT key, value FROM kv WHERE scope=?", (scope,)).fetchall()
        return {k: orjson.loads(v) for k, v in rows}

    def put(self, scope: str, key: str, value: Any) -> None:
        self.put_many(scope, [(key, value)])

    def put_many(self, scope: str, pairs: Iterable[tuple[str, Any]]) -> None:
        rows = [(scope, k, orjson.dumps(v)) for k, v in pairs]
        if not rows:
            return
        db = self._db()
        with immediate(db):
            db.executemany("INSERT OR REPLACE INTO kv (scope, key, value) VALUES (?,?,?)", rows)

    def delete(self, scope: str, key: str) -> None:
        self._db().execute("DELETE FROM kv WHERE scope=? AND key=?", (scope, key))

    # -- fingerprints -----------------------------------------------------------------------

    def fingerprints(self, scope: str, keys: list[str]) -> dict[str, bytes]:
        """Stored digests of ``keys`` (missing keys are absent from the result)."""
        out: dict[str, bytes] = {}
        db = self._db()
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            q = ",".join("?" * len(chunk))
            out.update(db.execute(f"SELECT key, fp FROM fingerprints WHERE scope=? AND key IN ({q})",
                                  (scope, *chunk)).fetchall())
        return out

    def save(self, fingerprints: Iterable[tuple[str, str, bytes]] = (),
             kv: Iterable[tuple[str, str, Any]] = ()) -> None:
        """Fingerprints (scope, key, fp) and kv (scope, key, value) in one transaction."""
        fps = list(fingerprints)
        kvs = [(s, k, orjson.dumps(v)) for s, k, v in kv]
        if not fps and not kvs:
            return
        db = self._db()
        with immediate(db):
            if fps:
                db.executemany("INSERT OR REPLACE INTO fingerprints (scope, key, fp) VALUES (?,?,?)", fps)
            if kvs:
                db.executemany("INSERT OR REPLACE INTO kv (scope, key, value) VALUES (?,?,?)", kvs)

