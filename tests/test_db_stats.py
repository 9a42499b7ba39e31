"""`db stats`: counts from a real telemetry.db, read-only and safe beside a writer."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest

from conftest import run_cli
from tray_app.config import load_config
from tray_app.engine.schema import LATEST, open_database
from tray_app.errors import DatabaseError
from tray_app.support import dbstats

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=timezone.utc)


def row(i: int, platform: str, event_type: str, ts: datetime) -> tuple:
    event = {"event_id": f"e{i}", "platform": platform, "event_type": event_type,
             "timestamp": ts.isoformat().replace("+00:00", "Z"), "session_id": "s", "payload": {"i": i}}
    return (f"e{i}", "s", None, event_type, platform, None, event["timestamp"], None, "test", f"{i}-0",
            event["timestamp"], zlib.compress(orjson.dumps(event)))


def make_db(path: Path) -> sqlite3.Connection:
    conn = open_database(path)
    rows = []
    i = 0
    # today: 3 cursor prompts, 2 claude tool_use; 2 days ago: 4 claude prompts;
    # 13 days ago (the window's first day): 1 cursor file_edit; 20 days ago: 5 (outside the window)
    for n, platform, etype, days in ((3, "cursor", "user_prompt", 0), (2, "claude_code", "tool_use", 0),
                                     (4, "claude_code", "user_prompt", 2), (1, "cursor", "file_edit", 13),
                                     (5, "cursor", "user_prompt", 20)):
        for _ in range(n):
            rows.append(row(i, platform, etype, NOW - timedelta(days=days, minutes=i)))
            i += 1
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO raw_traces (event_id, session_id, external_session_id, event_type, platform, "
                     "hook_type, timestamp, workspace_hash, source, stream_id, ingested_at, event_data) "
                     "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    conn.execute("INSERT INTO sessions (platform, session_id, event_count) VALUES ('cursor', 's', 15)")
    conn.execute("COMMIT")
    return conn


def test_counts_by_platform_type_and_day(tmp_path: Path) -> None:
    db = tmp_path / "telemetry.db"
    make_db(db).close()
    s = dbstats.collect(db, now=NOW)
    assert s["exists"] and s["file_bytes"] == db.stat().st_size and s["page_count"] > 0
    assert s["schema_version"] == LATEST == s["app_schema_version"]
    assert s["journal_mode"] == "wal" and s["quick_check"] == "ok" and s["freelist_count"] >= 0
    assert s["rows"] == 15 and s["sessions"] == 1
    assert s["by_platform"] == {"cursor": 9, "claude_code": 6}
    last = s["last_days"]
    assert last["since"] == "2026-03-02" and len(last["by_day"]) == 14
    assert last["rows"] == 10
    assert last["by_day"]["2026-03-15"] == 5 and last["by_day"]["2026-03-13"] == 4
    assert last["by_day"]["2026-03-02"] == 1 and last["by_day"]["2026-03-14"] == 0
    assert last["by_event_type"] == {"user_prompt": 7, "tool_use": 2, "file_edit": 1}
    assert last["by_platform"] == {"cursor": 4, "claude_code": 6}
    assert ["2026-03-15", "claude_code", "tool_use", 2] in last["by_day_platform_event_type"]
    text = dbstats.format_text(s)
    assert "rows           15" in text and "2026-03-15  5" in text and "quick_check    ok" in text


def test_read_only_beside_an_open_write_transaction(tmp_path: Path) -> None:
    db = tmp_path / "telemetry.db"
    writer = make_db(db)
    writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO raw_traces (event_id, session_id, event_type, platform, timestamp, ingested_at, "
                   "event_data) VALUES ('x', 's', 'stop', 'cursor', '2026-03-15T00:00:00Z', 'now', x'00')")
    s = dbstats.collect(db, now=NOW, timeout_s=0.1)  # must not wait for the writer
    assert s["rows"] == 15  # only committed rows
    writer.execute("ROLLBACK")
    writer.close()
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_missing_empty_and_corrupt(tmp_path: Path) -> None:
    assert dbstats.collect(tmp_path / "nope.db") == {"path": str(tmp_path / "nope.db"), "exists": False}
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    s = dbstats.collect(empty)
    assert s["rows"] == 0 and s["schema_version"] == 0 and "no raw_traces table" in s["note"]
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(DatabaseError) as err:
        dbstats.collect(bad)
    assert err.value.kind == "corrupt" and "\n" not in str(err.value)


def test_cli(app_home: Path, tmp_path: Path) -> None:
    env = dict(os.environ)
    r = run_cli("db", "stats", env=env)
    assert r.returncode == 74 and r.stderr.strip().count("\n") == 0 and "no database at" in r.stderr
    cfg = load_config()
    make_db(cfg.paths.database).close()
    r = run_cli("db", "stats", "--json", env=env)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["rows"] == 15 and data["quick_check"] == "ok" and len(data["last_days"]["by_day"]) == 14
    r = run_cli("db", "stats", "--no-check", "--days", "3", env=env)
    assert r.returncode == 0 and "rows           15" in r.stdout and "quick_check" not in r.stdout
    assert "last 3 days" in r.stdout
    cfg.paths.database.write_bytes(b"garbage" * 1000)
    for suffix in ("-wal", "-shm"):
        Path(str(cfg.paths.database) + suffix).unlink(missing_ok=True)
    r = run_cli("db", "stats", env=env)
    assert r.returncode == 74 and r.stderr.strip().count("\n") == 0
    r = run_cli("db", "stats", "--help", env=env)
    assert r.returncode == 0 and "quick_check" in r.stdout
