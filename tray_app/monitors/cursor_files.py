"""Finding Cursor's databases and telling, cheaply, whether one changed.

Cursor (a VS Code fork) keeps its state in SQLite files named ``state.vscdb``
under its ``User`` directory:

  ``globalStorage/state.vscdb``            ItemTable + cursorDiskKV (composerData:*, bubbleId:*)
  ``workspaceStorage/<id>/state.vscdb``    ItemTable (aiService.*, composer.composerData)
  ``workspaceStorage/<id>/workspace.json`` {"folder": "file:///path"} or {"workspace": "file:///x.code-workspace"}

A database's *fingerprint* is what a pass compares before opening anything:
inode, size and mtime of the database and of its ``-wal``, plus the few
header bytes SQLite changes on every commit: the file change counter, the WAL
salts and the WAL-index header in ``-shm``. Two stats and three short reads:
microseconds.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson

from tray_app.events import workspace_hash

DB_NAME = "state.vscdb"


def default_user_dir(platform: str | None = None, env: dict[str, str] | None = None,
                     home: Path | None = None) -> Path:
    """Cursor's ``User`` directory on this OS."""
    platform = platform or sys.platform
    env = dict(os.environ) if env is None else env
    home = home or Path.home()
    if platform.startswith("win"):
        base = env.get("APPDATA") or str(home / "AppData" / "Roaming")
        return Path(base) / "Cursor" / "User"
    if platform == "darwin":
        return home / "Library" / "Application Support" / "Cursor" / "User"
    base = env.get("XDG_CONFIG_HOME") or str(home / ".config")
    return Path(base) / "Cursor" / "User"


@dataclass(frozen=True)
class CursorDb:
    #: stable name used in state and event metadata: "global" or "workspace:<id>"
    db_id: str
    path: Path
    workspace_id: str | None = None
    folder: str | None = None
    workspace_hash: str | None = None


def uri_to_path(uri: str) -> str:
    """``file:///home/u/proj`` -> ``/home/u/proj``; ``file:///c%3A/x`` -> ``c:/x``;
    remote URIs (``vscode-remote://…``) are kept as they are."""
    parts = urlsplit(uri)
    if parts.scheme != "file":
        return uri
    path = unquote(parts.path)
    if len(path) >= 3 and path[0] == "/" and path[2] == ":":  # /c:/Users -> c:/Users
        path = path[1:]
    if parts.netloc:  # UNC: file://server/share
        path = f"//{parts.netloc}{path}"
    return path.rstrip("/") or "/"


def read_workspace_json(directory: Path) -> str | None:
    """The workspace folder (or .code-workspace file) a workspace DB belongs to."""
    try:
        data = orjson.loads((directory / "workspace.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    uri = data.get("folder") or data.get("workspace") or data.get("configuration")
    if isinstance(uri, dict):  # {"workspace": {"id":…, "configPath": "file:///…"}}
        uri = uri.get("configPath") or uri.get("path")
    return uri_to_path(uri) if isinstance(uri, str) and uri else None


class DatabaseFinder:
    """Lists the databases; re-lists ``workspaceStorage`` only when its mtime
    changed, or while a workspace directory has no database yet."""

    def __init__(self, user_dir: Path) -> None:
        self.user_dir = user_dir
        self._ws_mtime: int | None = None
        self._ws: list[CursorDb] = []
        self._pending: set[str] = set()

    def find(self) -> list[CursorDb]:
        dbs: list[CursorDb] = []
        dbs.extend(self._workspaces())
        g = self.user_dir / "globalStorage" / DB_NAME
        if g.is_file():
            dbs.append(CursorDb("global", g))
        return dbs  # workspace databases first: they map composers to workspaces

    def _workspaces(self) -> list[CursorDb]:
        root = self.user_dir / "workspaceStorage"
        try:
            mtime = root.stat().st_mtime_ns
        except OSError:
            self._ws, self._ws_mtime, self._pending = [], None, set()
            return []
        if mtime == self._ws_mtime and not self._pending:
            return self._ws
        found: list[CursorDb] = []
        pending: set[str] = set()
        try:
            entries = sorted(os.scandir(root), key=lambda e: e.name)
        except OSError:
            return self._ws
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False):
                continue
            db = Path(entry.path) / DB_NAME
            if not db.is_file():
                pending.add(entry.name)
                continue
            folder = read_workspace_json(Path(entry.path))
            found.append(CursorDb(f"workspace:{entry.name}", db, entry.name, folder,
                                  workspace_hash(folder) if folder else None))
        self._ws, self._ws_mtime, self._pending = found, mtime, pending
        return found


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _head(path: Path, n: int) -> bytes:
    try:
        with open(path, "rb", buffering=0) as fh:
            return fh.read(n)
    except OSError:
        return b""


@dataclass(frozen=True)
class FileState:
    """What a pass sees of a database before it reads: enough to skip an
    unchanged one and to choose how to open it."""

    fingerprint: list[Any]
    exists: bool
    inode: int
    wal_mode: bool
    wal_exists: bool


def file_state(path: Path) -> FileState:
    st = _stat(path)
    if st is None:
        return FileState([None], False, 0, False, False)
    header = _head(path, 100)
    wal_mode = len(header) >= 20 and header[18] == 2 and header[19] == 2
    wal = Path(f"{path}-wal")
    wst = _stat(wal)
    fp: list[Any] = [st.st_ino, st.st_size, st.st_mtime_ns, header[24:28].hex(), header[92:96].hex()]
    if wst is not None:
        # After a checkpoint the WAL is rewritten from its start: the file keeps its
        # size, and mtime ticks are coarse (a few ms). The WAL-index header in -shm
        # (iChange, mxFrame, salts, checksums) changes on every commit.
        fp += [wst.st_ino, wst.st_size, wst.st_mtime_ns, _head(wal, 32).hex(),
               _head(Path(f"{path}-shm"), 48).hex()]
    return FileState(fp, True, st.st_ino, wal_mode, wst is not None)
