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
* **Format drift is said, not swallowed** (:mod:`cursor_drift`): key families
  and tables the monitor does not know are counted from the key index (never
  their values) at most every ``format_scan_interval_s`` per changed
  database, known keys whose JSON lost the fields relied on are counted as
  they are read, and the verdict is published once per pass in
  ``health()["storage_format"]`` and recorded for ``doctor`` and the
  diagnostics bundle.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

from tray_app.config import Config
from tray_app.events import utc_now_iso, workspace_hash
from tray_app.lifecycle.rule import RuleCache
from tray_app import jsonutil
from tray_app.monitors import cursor_drift
from tray_app.monitors.base import Clock, MonitorThread
from tray_app.monitors.cursor_files import (CursorDb, DatabaseFinder, FileState, default_user_dir, file_state,
                                            uri_to_path)
from tray_app.monitors.cursor_items import (COMPOSERS_KEY, DIFF_PREFIX, DISK_KV, ITEM_TABLE, ITEM_TABLE_KEYS, Item,
                                            as_bytes, conversation_time, decode_json, fingerprint, inline_bubbles, is_empty_diff,
                                            split_item_table, to_event, unprocessable_event)
from tray_app.monitors.emit import Emitter, payload_budget
from tray_app.monitors.privacy import Capture, is_credential_key
from tray_app.monitors.state_store import StateStore, state_file
from tray_app.redis_conn import Endpoint

log = logging.getLogger(__name__)

NAME = "cursor_db"
DB_SCOPE = "db"
MAP_SCOPE = "composer_ws"
FP_SCOPE = "fp"

_KV_FILTER = "(key GLOB 'bubbleId:*' OR key GLOB 'composerData:*' OR key GLOB 'codeBlockDiff:*')"
SHAPE_SCOPE = "shape"
#: shape problems remembered per database (beyond this they are no longer itemised)
MAX_SHAPE_KEYS = 20_000
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


def _conversation(key: str) -> str | None:
    """The conversation (composer id) a ``cursorDiskKV`` key belongs to, if any."""
    return key.split(":")[1] if key.startswith(("bubbleId:", "composerData:", DIFF_PREFIX)) else None


class CursorDatabaseMonitor(MonitorThread):
    def __init__(self, cfg: Config, endpoint: Endpoint, *, user_dir: Path | None = None,
                 emitter: Emitter | None = None, store: StateStore | None = None,
                 clock: Clock = time.time, monotonic: Clock = time.monotonic,
                 max_items_per_pass: int = 5000, chunk_rows: int = 500,
                 reconcile_interval_s: float = 6 * 3600.0, reconcile_rows_per_pass: int = 20_000,
                 busy_timeout_s: float = 0.05, format_scan_interval_s: float = 300.0) -> None:
        super().__init__(NAME, cfg.monitors.poll_interval_s, clock=clock, monotonic=monotonic)
        self.cfg = cfg
        self.user_dir = user_dir or (Path(cfg.monitors.cursor_user_dir).expanduser()
                                     if cfg.monitors.cursor_user_dir else default_user_dir())
        self.finder = DatabaseFinder(self.user_dir)
        self.emitter = emitter or Emitter(endpoint, socket_timeout_s=cfg.redis.socket_timeout_s,
                                          connect_timeout_s=cfg.redis.connect_timeout_s,
                                          state_dir=cfg.paths.state_dir)
        self.store = store or StateStore(state_file(cfg.paths.state_dir, NAME))
        self.capture = Capture(cfg.capture)
        self.payload_max = payload_budget(cfg.ingest.max_entry_bytes)
        self.max_items_per_pass = max_items_per_pass
        self.chunk_rows = chunk_rows
        self.reconcile_interval_s = reconcile_interval_s
        self.reconcile_rows_per_pass = reconcile_rows_per_pass
        self.busy_timeout_s = busy_timeout_s
        self.format_scan_interval_s = format_scan_interval_s
        #: conversations `telemetry-tray forget` removed: neither sent nor remembered by key
        self._forgotten = RuleCache(cfg.paths.state_dir)
        self._states: dict[str, dict[str, Any]] | None = None
        #: db id -> {key: kind} of known keys whose JSON lacks what we rely on
        self._shapes: dict[str, dict[str, str]] = {}
        self._format_dirty = True
        self._format: dict[str, Any] = {}
        #: per pass: composerId -> (time, {diffId: file path}) for codeBlockDiff events
        self._cinfo: dict[str, tuple[str | None, dict[str, str]]] = {}
        #: composerIds already looked up for a workspaceIdentifier (found or not), this run
        self._ws_probed: set[str] = set()
        self._composer_ws: dict[str, str] | None = None
        self._backlog = False
        #: database -> (rowid read up to, highest rowid): the import's progress
        self._read_to: dict[str, tuple[int, int]] = {}
        self._budget = 0
        self._set(user_dir=str(self.user_dir), databases=[], busy=0, changed_while_reading=0,
                  backlog=False, storage_format={"status": "not checked yet", "message": ""})

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
        self._cinfo = {}
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
        marks = [self._read_to[d.db_id] for d in dbs if d.db_id in self._read_to]
        done, total = sum(w for w, _ in marks), sum(t for _, t in marks)
        self.report_import(backlog, done, total, "Cursor's history", unit="items", scale=1,
                           detail=f"{len(dbs)} databases")
        self._publish_format(dbs)
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
            if now - float(st.get("format_at") or float("-inf")) >= self.format_scan_interval_s:
                self._scan_format(conn, db, st, now)
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
        self._read_to[db.db_id] = (watermark, max_rowid)
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
                self._note_shape(db, key, cursor_drift.shape_problem(key, None))
                continue
            it = Item(DISK_KV, key, None, fingerprint(raw), decoded, rowid)
            items.append(it)
            inline = inline_bubbles(it)
            if inline:
                separate = self._separate_bubbles(conn, key[len("composerData:"):])
                items.extend(b for b in inline if b.key not in separate)
        n = self._emit_changed(db, items, conn)
        last = rows[-1][0] if len(rows) == self.chunk_rows else until
        return n, last

    def _separate_bubbles(self, conn: sqlite3.Connection, cid: str) -> set[str]:
        """Keys of a conversation's own ``bubbleId:`` rows (an index range; no values
        read): a message stored both inline and as a row is sent once, from its row."""
        lo = f"bubbleId:{cid}:"
        return {r[0] for r in conn.execute(f"SELECT key FROM {DISK_KV} WHERE key >= ? AND key < ?",
                                           (lo, lo[:-1] + ";"))}

    def _composer_info(self, conn: sqlite3.Connection | None, cid: str) -> tuple[str | None, dict[str, str]]:
        """A conversation's time and its diffs' files (``codeBlockData``), for
        ``codeBlockDiff`` events; read at most once per pass per conversation."""
        if cid in self._cinfo or conn is None:
            return self._cinfo.get(cid, (None, {}))
        info: tuple[str | None, dict[str, str]] = (None, {})
        try:
            row = conn.execute(f"SELECT value FROM {DISK_KV} WHERE key=?", (f"composerData:{cid}",)).fetchone()
        except sqlite3.Error:
            row = None
        raw = as_bytes(row[0]) if row is not None else None
        value = decode_json(raw) if raw is not None else None
        if isinstance(value, dict):
            info = (conversation_time(value), diff_files(value))
        self._cinfo[cid] = info
        return info

    # -- emit + remember ----------------------------------------------------------------------

    def _emit_changed(self, db: CursorDb, items: list[Item], conn: sqlite3.Connection | None = None) -> int:
        if not items:
            return 0
        scope = f"{FP_SCOPE}:{db.db_id}"
        known = self.store.fingerprints(scope, [i.state_key for i in items])
        latest: dict[str, Item] = {}
        for it in items:
            if known.get(it.state_key) != it.fp:
                latest[it.state_key] = it  # a key read twice in one chunk: the later value wins
        forgotten = self._forgotten.get()
        if forgotten.sessions:
            latest = {k: it for k, it in latest.items() if not forgotten.session(_conversation(it.key))}
        if not latest:
            return 0
        assert self._composer_ws is not None
        now_iso = utc_now_iso()
        evs = []
        quiet: list[Item] = []
        for it in latest.values():  # conversations first: newer ones name their workspace
            if it.key.startswith("composerData:") and it.inline_in is None and isinstance(it.value, dict):
                self._map_workspace(it.key[len("composerData:"):], it.value)
        for it in latest.values():
            if it.table == DISK_KV and it.inline_in is None:
                self._note_shape(db, it.key, cursor_drift.shape_problem(it.key, it.value))
            if is_empty_diff(it) or self._sent_inline(it, known.get(it.state_key)):
                quiet.append(it)  # remembered, nothing to send
                continue
            sid = _conversation(it.key)
            ws = self._composer_ws.get(sid) if sid else None
            if sid and ws is None and not db.workspace_hash and sid not in self._ws_probed:
                ws = self._probe_workspace(conn, sid)
            file_path = None
            if it.key.startswith(DIFF_PREFIX) and sid and it.key.count(":") >= 2:
                when, files = self._composer_info(conn, sid)
                it.fallback_time = when
                file_path = files.get(it.key.rsplit(":", 1)[1])
            try:
                evs.append(to_event(it, db, self.capture, ws, now_iso, self.payload_max, file_path))
            except Exception as exc:  # noqa: BLE001 - one item's problem, never the monitor's
                self._bump("unprocessable_items")
                log.warning("%s: %s in %s could not be processed (%s: %s)", NAME, it.key, db.path,
                            type(exc).__name__, exc)
                evs.append(unprocessable_event(it, db, exc, now_iso))
        if evs:
            self.emitter.emit(evs)
        self.store.save(fingerprints=[(scope, k, it.fp) for k, it in latest.items()])
        self._budget -= len(evs)
        return len(evs)

    def _map_workspace(self, cid: str, value: dict[str, Any]) -> str | None:
        """Cursor 3.x no longer lists conversations in the workspace databases'
        ``allComposers``; its composerData names the workspace itself
        (``workspaceIdentifier.uri.fsPath``). Remembered like the list's mapping."""
        assert self._composer_ws is not None
        self._ws_probed.add(cid)
        folder = workspace_folder(value)
        if not folder:
            return None
        ws = workspace_hash(folder)
        if self._composer_ws.get(cid) != ws:
            self._composer_ws[cid] = ws
            self.store.put(MAP_SCOPE, cid, ws)
        return ws

    def _probe_workspace(self, conn: sqlite3.Connection | None, cid: str) -> str | None:
        """A message of a conversation with no known workspace: look at its
        composerData once (per run) for a workspaceIdentifier."""
        self._ws_probed.add(cid)
        if conn is None or len(self._ws_probed) > 100_000:
            return None
        try:
            row = conn.execute(f"SELECT value FROM {DISK_KV} WHERE key=?", (f"composerData:{cid}",)).fetchone()
        except sqlite3.Error:
            return None
        raw = as_bytes(row[0]) if row is not None else None
        value = decode_json(raw) if raw is not None else None
        return self._map_workspace(cid, value) if isinstance(value, dict) else None

    @staticmethod
    def _sent_inline(it: Item, known: bytes | None) -> bool:
        """A message row whose content was already sent from its conversation's
        inline copy (Cursor moved it out of ``conversation[]``): same content, no event."""
        if known is None or it.inline_in is not None or not it.key.startswith("bubbleId:"):
            return False
        return fingerprint(jsonutil.dumps(it.value, sort_keys=True)) == known

    # -- format drift -------------------------------------------------------------------------

    def _shape_map(self, db_id: str) -> dict[str, str]:
        m = self._shapes.get(db_id)
        if m is None:
            m = {k: str(v) for k, v in self.store.items(f"{SHAPE_SCOPE}:{db_id}").items()}
            self._shapes[db_id] = m
        return m

    def _note_shape(self, db: CursorDb, key: str, kind: str | None) -> None:
        m = self._shape_map(db.db_id)
        if kind is None:
            if key in m:
                del m[key]
                self.store.delete(f"{SHAPE_SCOPE}:{db.db_id}", key)
                self._format_dirty = True
        elif m.get(key) != kind and len(m) < MAX_SHAPE_KEYS:
            m[key] = kind
            self.store.put(f"{SHAPE_SCOPE}:{db.db_id}", key, kind)
            self._format_dirty = True

    def _scan_format(self, conn: sqlite3.Connection, db: CursorDb, st: dict[str, Any], now: float) -> None:
        try:
            tables = cursor_drift.scan_tables(conn)
            families: dict[str, int] = {}
            if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (DISK_KV,)).fetchone():
                families, _complete = cursor_drift.scan_families(conn)
        except sqlite3.Error as exc:
            log.debug("%s: %s: format scan failed: %s", NAME, db.path, exc)
            return
        if st.get("families") != families or st.get("tables") != tables:
            self._format_dirty = True
        st["families"], st["tables"], st["format_at"] = families, tables, now

    def _publish_format(self, dbs: list[CursorDb]) -> None:
        """Once per pass: the verdict over every database, in health; recorded
        (and logged) when it changed."""
        if not self._format_dirty:
            return
        assert self._states is not None
        families: dict[str, int] = {}
        tables: dict[str, int] = {}
        shapes: dict[str, int] = {}
        composers: set[str] = set()
        for db in dbs:
            st = self._states.get(db.db_id) or {}
            for k, v in (st.get("families") or {}).items():
                families[k] = families.get(k, 0) + int(v)
            for k, v in (st.get("tables") or {}).items():
                tables[k] = max(tables.get(k, 0), int(v))
            for key, kind in self._shape_map(db.db_id).items():
                shapes[kind] = shapes.get(kind, 0) + 1
                cid = cursor_drift.composer_of(key)
                if cid and kind in ("composerData", "bubbleId"):
                    composers.add(cid)
        report = cursor_drift.summarize(families, tables, shapes, len(composers), utc_now_iso())
        self._format_dirty = False
        comparable = {k: v for k, v in report.items() if k != "checked_at"}
        if comparable != {k: v for k, v in self._format.items() if k != "checked_at"}:
            if report["message"]:
                log.warning("%s: %s", NAME, report["message"])
            elif self._format.get("message"):
                log.info("%s: Cursor's storage format is the known one again", NAME)
            self.store.put(cursor_drift.REPORT_SCOPE, cursor_drift.REPORT_KEY, report)
        self._format = report
        self._set(storage_format=report)


def workspace_folder(value: dict[str, Any]) -> str | None:
    """The folder a (Cursor 3.x) composerData names in ``workspaceIdentifier``."""
    ident = value.get("workspaceIdentifier")
    if not isinstance(ident, dict):
        return None
    for field in ("uri", "configPath"):
        u = ident.get(field)
        if isinstance(u, dict):
            if isinstance(u.get("fsPath"), str) and u["fsPath"]:
                return str(u["fsPath"]).rstrip("/") or "/"
            if isinstance(u.get("external"), str) and u["external"]:
                return uri_to_path(u["external"])
        elif isinstance(u, str) and u:
            return uri_to_path(u)
    return None


def diff_files(value: dict[str, Any]) -> dict[str, str]:
    """diffId -> file path from a composerData's ``codeBlockData``
    ({file uri: [{diffId, uri: {fsPath}}, …]} or {file uri: {id: {…}}})."""
    out: dict[str, str] = {}
    data = value.get("codeBlockData")
    if not isinstance(data, dict):
        return out
    for uri, blocks in data.items():
        entries = blocks if isinstance(blocks, list) else list(blocks.values()) if isinstance(blocks, dict) else []
        for b in entries:
            if not isinstance(b, dict):
                continue
            path = None
            u = b.get("uri")
            if isinstance(u, dict) and isinstance(u.get("fsPath"), str):
                path = u["fsPath"]
            elif isinstance(uri, str):
                path = uri_to_path(uri)
            for k in ("diffId", "lastDiffId"):
                if isinstance(b.get(k), str) and path:
                    out[b[k]] = path
    return out
