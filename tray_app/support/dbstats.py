"""Read-only statistics of telemetry.db (`telemetry-tray db stats`, diagnostics).

Opens the database read-only (``mode=ro``): it never writes, never changes the
journal mode, and takes only the shared lock a reader needs, so it is safe to
run while the engine is ingesting. Counts only: no event content is read.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from tray_app.engine.schema import LATEST, TOMBSTONE, current_version
from tray_app.errors import DatabaseError

#: how long to wait for a writer's lock before giving up
BUSY_TIMEOUT_S = 2.0


def _open_readonly(path: Path, timeout_s: float) -> sqlite3.Connection:
    uri = path.absolute().as_uri() + "?mode=ro"
    return sqlite3.connect(uri, uri=True, timeout=timeout_s, isolation_level=None,
                           check_same_thread=False)


def _kind(exc: sqlite3.Error) -> str:
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return "locked"
    if "malformed" in text or "not a database" in text:
        return "corrupt"
    if "unable to open" in text or "i/o" in text:
        return "io"
    return "error"


def file_modes(path: Path) -> tuple[dict[str, dict[str, Any]], str]:
    """The database's files (the database, -wal, -shm, -journal that exist):
    mode, whether they are yours and writable; and one line saying what keeps
    the engine from writing ("" when nothing does)."""
    files: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    me = os.geteuid() if hasattr(os, "geteuid") else None
    for suffix in ("", "-wal", "-shm", "-journal"):
        p = Path(f"{path}{suffix}")
        try:
            st = os.lstat(p)
        except OSError:
            continue
        yours = me is None or st.st_uid == me
        writable = os.access(p, os.W_OK)
        files[p.name] = {"mode": f"{stat.S_IMODE(st.st_mode):04o}", "yours": yours, "writable": writable}
        if not yours:
            problems.append(f"{p.name} belongs to uid {st.st_uid}")
        elif not writable:
            problems.append(f"{p.name} is read-only ({stat.S_IMODE(st.st_mode):04o})")
    if not os.access(path.parent, os.W_OK):
        problems.append(f"{path.parent} is not writable")
    return files, "; ".join(problems)


def _table_exists(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                        (name,)).fetchone() is not None


def collect(path: Path, *, days: int = 14, check: bool = True,
            now: datetime | None = None, timeout_s: float = BUSY_TIMEOUT_S) -> dict[str, Any]:
    """Statistics of the database at ``path``. A missing file gives
    ``{"exists": False}``; an unreadable one raises :class:`DatabaseError`."""
    path = Path(path)
    out: dict[str, Any] = {"path": str(path), "exists": path.exists()}
    if not out["exists"]:
        return out
    wal = path.with_name(path.name + "-wal")
    out["file_bytes"] = path.stat().st_size
    out["wal_bytes"] = wal.stat().st_size if wal.exists() else 0
    out["files"], problem = file_modes(path)
    if problem:
        out["write_problem"] = problem
    today = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).date()
    since = today - timedelta(days=days - 1)
    try:
        conn = _open_readonly(path, timeout_s)
    except sqlite3.Error as exc:
        raise DatabaseError(f"{path}: cannot open the database read-only: {exc}", kind=_kind(exc)) from None
    try:
        out["page_size"] = conn.execute("PRAGMA page_size").fetchone()[0]
        out["page_count"] = conn.execute("PRAGMA page_count").fetchone()[0]
        out["freelist_count"] = conn.execute("PRAGMA freelist_count").fetchone()[0]
        out["journal_mode"] = conn.execute("PRAGMA journal_mode").fetchone()[0]
        out["schema_version"] = current_version(conn)
        out["app_schema_version"] = LATEST
        if _table_exists(conn, "raw_traces"):
            # the row `forget` left empty to keep the newest sequence taken is no event
            real = f"event_type != '{TOMBSTONE}'"
            out["rows"] = conn.execute(f"SELECT COUNT(*) FROM raw_traces WHERE {real}").fetchone()[0]
            first_last = conn.execute(f"SELECT MIN(timestamp), MAX(timestamp) FROM raw_traces WHERE {real}").fetchone()
            out["oldest_event"], out["newest_event"] = first_last
            out["by_platform"] = dict(conn.execute(
                f"SELECT platform, COUNT(*) FROM raw_traces WHERE {real} GROUP BY platform ORDER BY 2 DESC").fetchall())
            window = conn.execute(
                "SELECT substr(timestamp, 1, 10) AS day, platform, event_type, COUNT(*) FROM raw_traces "
                f"WHERE timestamp >= ? AND {real} GROUP BY day, platform, event_type "
                "ORDER BY day, platform, event_type", (since.isoformat(),)).fetchall()
            by_day = {(since + timedelta(days=i)).isoformat(): 0 for i in range(days)}
            by_type: dict[str, int] = {}
            by_platform_window: dict[str, int] = {}
            for day, platform, event_type, n in window:
                if day in by_day:
                    by_day[day] += n
                by_type[event_type] = by_type.get(event_type, 0) + n
                by_platform_window[platform] = by_platform_window.get(platform, 0) + n
            out["last_days"] = {
                "days": days,
                "since": since.isoformat(),
                "rows": sum(by_day.values()),
                "by_day": by_day,
                "by_platform": by_platform_window,
                "by_event_type": dict(sorted(by_type.items(), key=lambda kv: -kv[1])),
                "by_day_platform_event_type": [list(r) for r in window if r[0] in by_day],
            }
        else:
            out["rows"] = 0
            out["note"] = "no raw_traces table yet (the engine creates it on first start)"
        if _table_exists(conn, "sessions"):
            out["sessions"] = conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]
        from tray_app.engine import retention

        out["retention"] = retention.status(conn)
        if check:
            problems = [r[0] for r in conn.execute("PRAGMA quick_check(20)").fetchall()]
            out["quick_check"] = "ok" if problems == ["ok"] else problems
    except sqlite3.Error as exc:
        raise DatabaseError(f"{path}: cannot read the database: {exc}", kind=_kind(exc)) from None
    finally:
        conn.close()
    return out


def human_bytes(n: int | float) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def format_text(stats: dict[str, Any]) -> str:
    """The human-readable form printed by `db stats`."""
    lines = [f"database       {stats['path']}"]
    lines.append(f"size           {human_bytes(stats['file_bytes'])} (+ WAL {human_bytes(stats['wal_bytes'])})")
    lines.append(f"pages          {stats['page_count']:,} x {stats['page_size']} B, "
                 f"{stats['freelist_count']:,} free")
    lines.append(f"schema         version {stats['schema_version']} (this app: {stats['app_schema_version']})")
    lines.append(f"rows           {stats['rows']:,}")
    if "sessions" in stats:
        lines.append(f"sessions       {stats['sessions']:,}")
    if stats.get("oldest_event"):
        lines.append(f"events from    {stats['oldest_event']} to {stats['newest_event']}")
    ret = stats.get("retention")
    if ret:
        lines.append(f"auto_vacuum    {ret['auto_vacuum']}")
        removed = ret["removed"]
        text = ", ".join(f"{v['rows']:,} rows by {rule.replace('_', ' ')} ({human_bytes(v['bytes'])} freed)"
                         for rule, v in removed.items()) or "nothing yet"
        lines.append(f"retention      removed {text}; {human_bytes(ret['returned_bytes'])} returned to the disk")
        if ret["last_run_at"]:
            lines.append(f"  last run     {ret['last_run_at']} ({ret['passes']:,} passes)")
    if "quick_check" in stats:
        qc = stats["quick_check"]
        lines.append(f"quick_check    {qc if isinstance(qc, str) else '; '.join(qc)}")
    if stats.get("by_platform"):
        lines.append("by platform    " + ", ".join(f"{k} {v:,}" for k, v in stats["by_platform"].items()))
    last = stats.get("last_days")
    if last:
        lines.append(f"last {last['days']} days   {last['rows']:,} rows")
        if last["by_event_type"]:
            lines.append("  by type      " + ", ".join(f"{k} {v:,}" for k, v in last["by_event_type"].items()))
        lines.append("  by day")
        for day, n in last["by_day"].items():
            lines.append(f"    {day}  {n:,}")
    if stats.get("files"):
        lines.append("files          " + ", ".join(f"{name} {f['mode']}" for name, f in stats["files"].items()))
    if stats.get("write_problem"):
        lines.append(f"cannot write   {stats['write_problem']} (see docs/operations.md, A read-only database)")
    if stats.get("note"):
        lines.append(f"note           {stats['note']}")
    return "\n".join(lines)


__all__ = ["collect", "format_text", "human_bytes"]
