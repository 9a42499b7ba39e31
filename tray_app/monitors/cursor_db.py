"""CursorDatabaseMonitor: Cursor's ``state.vscdb`` files -> ``database_trace`` events.

Rules this module keeps (see docs/monitors.md):

* **Cursor's files are never changed.** Connections are ``file:…?mode=ro``
  URIs with ``PRAGMA query_only``; no statement writes, the journal mode is
  never touched; every read is one short autocommit statement (a chunk of
  at most ``chunk_rows`` rows), so no lock outlives it. A WAL-mode database
  whose ``-wal`` does not exist (Cursor closed) is opened ``immutable=1`` so
  SQLite does not create ``-wal``/``-shm`` files next to it; the file is
  re-checked after each read and the pass discarded if it changed meanwhile.
  ``SQLITE_BUSY`` ends the pass for that database; the next pass retries.
* **An unchanged database costs two stats and two 32-byte reads**
  (:func:`cursor_files.file_state`), nothing is opened.
* **Incremental.** ``cursorDiskKV`` is read by rowid above a watermark: the
  table's ``UNIQUE ON CONFLICT REPLACE`` gives every new or rewritten key a
  rowid above the current maximum, so a pass reads what changed and no more.
  A shrinking ``max(rowid)`` or another key at a remembered (rowid, key)
  anchor (VACUUM renumbering), or a replaced file, resets the watermark; a
  periodic reconciliation walks the whole table in chunks, a bounded number
  of rows per pass,
  to catch in-place UPDATEs. Per-item digests in the state store make both
  re-scans emit only items whose content changed. ``ItemTable`` keys are
  three point lookups, skipped when the value's digest is unchanged.
* **Deterministic ids**: ``event_id`` = f(database, table, key, item, digest),
  so a restart or re-read never makes a second row.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

from tray_app.config import Config
from tray_app.events import utc_now_iso
from tray_app.monitors.base import Clock, MonitorThread
from tray_app.monitors.cursor_files import CursorDb, DatabaseFinder, FileState, default_user_dir, file_state
from tray_app.monitors.cursor_items import (COMPOSERS_KEY, unprocessable_event, DISK_KV, ITEM_TABLE, ITEM_TABLE_KEYS, Item, as_bytes,
                                            decode_json, fingerprint, split_item_table, to_event)
from tray_app.monitors.emit import Emitter, payload_budget
from tray_app.monitors.privacy import Capture, is_credential_key
from tray_app.monitors.state_store import StateStore, state_file
from tray_app.redis_conn import Endpoint

log = logging.getLogger(__name__)

NAME = "cursor_db"
DB_SCOPE = "db"
MAP_SCOPE = "composer_ws"
FP_SCOPE = "fp"

_KV_FILTER = "(key GLOB 'bubbleId:*' OR key GLOB 'composerData:*')"
#: (rowid, key) pairs remembered at chunk ends: a different key at one of
#: those rowids means the table was renumbered (VACUUM after deletions)
ANCHORS = 8


class ChangedWhileReading(Exception):
    """An immutable-opened database changed under the read: retry next pass."""


def is_busy(exc: BaseException) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc).lower()
    return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text or "busy" in text


def _renumbered(conn: sqlite3.Connection, anchors: list[list[Any]]) -> bool:
    for rowid, key in anchors:
        row = conn.execute(f"SELECT key FROM {DISK_KV} WHERE rowid=?", (rowid,)).fetchone()
        if row is not None and row[0] != key:
            return True  # (an absent row was deleted or rewritten higher: normal)
    return False


def open_readonly(path: Path, *, immutable: bool, busy_timeout_s: float) -> sqlite3.Connection:
    uri = path.absolute().as_uri() + ("?mode=ro&immutable=1" if immutable else "?mode=ro")
    conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout_s, isolation_level=None,
                           check_same_thread=False)
    conn.execute("PRAGMA query_only=1")
    return conn


class CursorDatabaseMonitor(MonitorThread):
    def __init__(self, cfg: Config, endpoint: Endpoint, *, user_dir: Path | None = None,
                 emitter: Emitter | None = None, store: StateStore | None = None,
                 clock: Clock = time.time, monotonic: Clock = time.monotonic,
                 max_items_per_pass: int = 5000, chunk_rows: int = 500,
                 reconcile_interval_s: float = 6 * 3600.0, reconcile_rows_per_pass: int = 20_000,
                 busy_timeout_s: float = 0.05) -> None:
        super().__init__(NAME, cfg.monitors.poll_interval_s, clock=clock, monotonic=monotonic)
        self.cfg = cfg
        self.user_dir = user_dir or (Path(cfg.monitors.cursor_user_dir).expanduser()
                                     if cfg.monitors.cursor_user_dir else default_user_dir())
        self.finder = DatabaseFinder(self.user_dir)
        self.emitter = emitter or Emitter(endpoint, socket_timeout_s=cfg.redis.socket_timeout_s,
                                          connect_timeout_s=cfg.redis.connect_timeout_s)
        self.store = store or StateStore(state_file(cfg.paths.state_dir, NAME))
        self.capture = Capture(cfg.capture)
        self.payload_max = payload_budget(cfg.ingest.max_entry_bytes)
        self.max_items_per_pass = max_items_per_pass
        self.chunk_rows = chunk_rows
        self.reconcile_interval_s = reconcile_interval_s
        self.reconcile_rows_per_pass = reconcile_rows_per_pass
        self.busy_timeout_s = busy_timeout_s
        self._states: dict[str, dict[str, Any]] | None = None
        self._composer_ws: dict[str, str] | None = None
        self._backlog = False
        self._budget = 0
        self._set(user_dir=str(self.user_dir), databases=[], busy=0, changed_while_reading=0,
                  backlog=False)

    # -- loop hooks ---------------------------------------------------------------------------

    def next_wait_s(self) -> float:
        # a backlog goes on at once, unless the engine is far behind (Redis memory)
        return 0.0 if self._backlog and self.emitter.may_hurry() else self.poll_interval_s

    def close(self) -> None:
        self.emitter.close()
        self.store.close()

    # -- one pass -----------------------------------------------------------------------------

    def run_once(self) -> int:
        if self._states is None:
            self._states = self.store.items(DB_SCOPE)
            self._composer_ws = self.store.items(MAP_SCOPE)
        dbs = self.finder.find()
        self._set(databases=[d.db_id for d in dbs][:50], databases_found=len(dbs))
        self._budget = self.max_items_per_pass
        backlog = False
        emitted = 0
        for db in dbs:
            if self.stopping:
                break
            try:
                n, more = self._pass_db(db)
            except ChangedWhileReading:
                self._bump("changed_while_reading")
                backlog = True
                continue
            except sqlite3.Error as exc:
                if is_busy(exc):
                    self._bump("busy")
                    log.debug("%s: %s busy, retrying next pass", NAME, db.path)
                else:
                    self.record_error(f"{db.path}: {exc}")
                continue
            emitted += n
            backlog = backlog or more
        self._backlog = backlog
        self._set(backlog=backlog)
        return emitted

    def _bump(self, key: str) -> None:
        with self._lock:
            self._h[key] = int(self._h.get(key, 0)) + 1

    def _pass_db(self, db: CursorDb) -> tuple[int, bool]:
        """Returns (events emitted, more work left for the next pass)."""
        assert self._states is not None
        fs = file_state(db.path)
        if not fs.exists:
            return 0, False
        st = self._states.setdefault(db.db_id, {})
        now = self.clock()
        # a reconciliation is due after reconcile_interval_s, if the file changed since the last one
        due = (now - float(st.get("last_recon_at") or now) >= self.reconcile_interval_s
               and st.get("recon_fp") != fs.fingerprint)
        if st.get("fp") == fs.fingerprint and st.get("recon_pos") is None and not due:
            return 0, False
        if st.get("inode") not in (None, fs.inode):
            log.info("%s: %s was replaced: re-reading it (unchanged items are not re-sent)", NAME, db.path)
            st["watermark"] = 0
            st["itemtable"] = {}
        immutable = fs.wal_mode and not fs.wal_exists
        conn = open_readonly(db.path, immutable=immutable, busy_timeout_s=self.busy_timeout_s)
        try:
            emitted = self._item_table(conn, db, st, fs, immutable)
            n, more = self._disk_kv(conn, db, st, fs, immutable, now, due)
            emitted += n
        finally:
            conn.close()
        if not more:
            st["fp"] = fs.fingerprint
            st["inode"] = fs.inode
        self.store.put(DB_SCOPE, db.db_id, st)
        return emitted, more

    def _check(self, db: CursorDb, fs: FileState, immutable: bool) -> None:
        if immutable and file_state(db.path).fingerprint != fs.fingerprint:
            raise ChangedWhileReading(str(db.path))

    # -- ItemTable ----------------------------------------------------------------------------

    def _item_table(self, conn: sqlite3.Connection, db: CursorDb, st: dict[str, Any], fs: FileState,
                    immutable: bool) -> int:
        q = ",".join("?" * len(ITEM_TABLE_KEYS))
        try:
            rows = conn.execute(f"SELECT key, value FROM {ITEM_TABLE} WHERE key IN ({q})",
                                ITEM_TABLE_KEYS).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return 0
            raise
        self._check(db, fs, immutable)
        seen: dict[str, str] = dict(st.get("itemtable") or {})
        items: list[Item] = []
        whole: dict[str, str] = {}
        for key, value in rows:
            raw = as_bytes(value)
            if raw is None or is_credential_key(key):
                continue
            digest = fingerprint(raw).hex()
            if seen.get(key) == digest:
                continue
            whole[key] = digest
            parts = split_item_table(key, raw)
            if key == COMPOSERS_KEY and db.workspace_hash:
                self._map_composers(parts, db.workspace_hash)
            items.extend(parts)
        n = self._emit_changed(db, items)
        if whole:
            seen.update(whole)
            st["itemtable"] = seen
        return n

    def _map_composers(self, parts: list[Item], ws_hash: str) -> None:
        assert self._composer_ws is not None
        new = [(i.item, ws_hash) for i in parts if i.item and self._composer_ws.get(i.item) != ws_hash]
        if new:
            self._composer_ws.update(new)  # type: ignore[arg-type]
            self.store.put_many(MAP_SCOPE, new)  # type: ignore[arg-type]

    # -- cursorDiskKV -------------------------------------------------------------------------

    def _disk_kv(self, conn: sqlite3.Connection, db: CursorDb, st: dict[str, Any], fs: FileState,
                 immutable: bool, now: float, due: bool) -> tuple[int, bool]:
        try:
            max_rowid = conn.execute(f"SELECT COALESCE(MAX(rowid), 0) FROM {DISK_KV}").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return 0, False
            raise
        watermark = int(st.get("watermark") or 0)
        anchors: list[list[Any]] = st.get("anchors") or []
        if max_rowid < watermark or _renumbered(conn, anchors):
            log.info("%s: %s rowids were renumbered (VACUUM?): re-scanning", NAME, db.path)
            watermark, anchors = 0, []
        emitted = 0
        # new and rewritten keys
        while watermark < max_rowid and self._budget > 0 and not self.stopping:
            n, last = self._chunk(conn, db, fs, immutable, watermark, max_rowid)
            emitted += n
            watermark = last
            row = conn.execute(f"SELECT key FROM {DISK_KV} WHERE rowid=?", (last,)).fetchone()
            if row is not None:
                anchors = (anchors + [[last, row[0]]])[-ANCHORS:]
            st["watermark"], st["anchors"] = watermark, anchors
            self.store.put(DB_SCOPE, db.db_id, st)
        more = watermark < max_rowid
        # reconciliation: in-place UPDATEs keep their rowid; walk everything now and then
        if st.get("recon_pos") is None and due:
            st["recon_pos"], st["recon_until"], st["recon_fp"] = 0, watermark, fs.fingerprint
        if "last_recon_at" not in st:
            st["last_recon_at"], st["recon_fp"] = now, fs.fingerprint  # the first full read counts as one
        rows_left = self.reconcile_rows_per_pass
        while st.get("recon_pos") is not None and self._budget > 0 and rows_left > 0 and not self.stopping:
            pos, until = int(st["recon_pos"]), min(int(st["recon_until"]), max_rowid)
            if pos >= until:
                st["recon_pos"], st["last_recon_at"] = None, now
                break
            n, last = self._chunk(conn, db, fs, immutable, pos, until)
            emitted += n
            rows_left -= self.chunk_rows
            st["recon_pos"] = last
            self.store.put(DB_SCOPE, db.db_id, st)
        # a reconciliation in progress keeps the database from being skipped (see
        # _pass_db) but goes on at the normal pace, not as a backlog
        return emitted, more

    def _chunk(self, conn: sqlite3.Connection, db: CursorDb, fs: FileState, immutable: bool,
               after: int, until: int) -> tuple[int, int]:
        """Read one chunk of matching rows in (after, until]. Returns (emitted, last rowid read)."""
        rows = conn.execute(
            f"SELECT rowid, key, value FROM {DISK_KV} WHERE rowid > ? AND rowid <= ? AND {_KV_FILTER} "
            f"ORDER BY rowid LIMIT ?", (after, until, self.chunk_rows)).fetchall()
        self._check(db, fs, immutable)
        items: list[Item] = []
        for rowid, key, value in rows:
            raw = as_bytes(value)
            if raw is None or is_credential_key(key):
                continue
            decoded = decode_json(raw)
            if decoded is None:
                continue
            items.append(Item(DISK_KV, key, None, fingerprint(raw), decoded, rowid))
        n = self._emit_changed(db, items)
        last = rows[-1][0] if len(rows) == self.chunk_rows else until
        return n, last

    # -- emit + remember ----------------------------------------------------------------------

    def _emit_changed(self, db: CursorDb, items: list[Item]) -> int:
        if not items:
            return 0
        scope = f"{FP_SCOPE}:{db.db_id}"
        known = self.store.fingerprints(scope, [i.state_key for i in items])
        latest: dict[str, Item] = {}
        for it in items:
            if known.get(it.state_key) != it.fp:
                latest[it.state_key] = it  # a key read twice in one chunk: the later value wins
        if not latest:
            return 0
        assert self._composer_ws is not None
        now_iso = utc_now_iso()
        evs = []
        for it in latest.values():
            sid = it.key.split(":")[1] if it.key.startswith(("bubbleId:", "composerData:")) else None
            ws = self._composer_ws.get(sid) if sid else None
            try:
                evs.append(to_event(it, db, self.capture, ws, now_iso, self.payload_max))
            except Exception as exc:  # noqa: BLE001 - one item's problem, never the monitor's
                self._bump("unprocessable_items")
                log.warning("%s: %s in %s could not be processed (%s: %s)", NAME, it.key, db.path,
                            type(exc).__name__, exc)
                evs.append(unprocessable_event(it, db, exc, now_iso))
        self.emitter.emit(evs)
        self.store.save(fingerprints=[(scope, k, it.fp) for k, it in latest.items()])
        self._budget -= len(evs)
        return len(evs)
