"""The monitors inside the real Engine: rows in raw_traces and sessions, once,
across a restart that lost every monitor's saved position."""

from __future__ import annotations

import shutil
import sqlite3
import zlib
from collections import Counter
from pathlib import Path

import orjson
import pytest

from conftest import wait_for
from monitor_fixtures import CursorFixture, ClaudeProjects, uid, write_conversation
from tray_app.config import load_config
from tray_app.engine.engine import Engine
from tray_app.redis_conn import endpoint_from_url, ensure_streams

CID = uid("composer", 1)


@pytest.fixture()
def sources(tmp_path: Path, app_env, monkeypatch):
    fake_home = tmp_path / "user-home"  # default transcript roots must not be the real ~/.claude
    fake_home.mkdir()
    monkeypatch.setenv("HOME", str(fake_home))
    for var in ("CLAUDE_CONFIG_DIR", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    cursor = CursorFixture(tmp_path / "Cursor" / "User")
    cursor.make_global()
    cursor.add_conversation(CID, 3)
    cursor.make_workspace("6f1c2a9e0b3d", "/home/dev/shop", [CID])
    projects = ClaudeProjects(tmp_path / "claude-projects")
    main, _sub, written = write_conversation(projects, "/home/dev/shop")
    monkeypatch.setenv("TELEMETRY_TRAY_MONITORS_CURSOR_USER_DIR", str(cursor.user_dir))
    monkeypatch.setenv("TELEMETRY_TRAY_MONITORS_CLAUDE_PROJECTS_DIRS", str(projects.root))
    monkeypatch.setenv("TELEMETRY_TRAY_MONITORS_POLL_INTERVAL_S", "0.1")
    yield cursor, main, written
    cursor.close()


def rows(db: Path) -> list[tuple[str, str, str, dict]]:
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name='raw_traces'").fetchone():
            return []  # the engine is still creating it
        return [(eid, et, sid, orjson.loads(zlib.decompress(data)))
                for eid, et, sid, data in conn.execute(
                    "SELECT event_id, event_type, session_id, event_data FROM raw_traces")]
    finally:
        conn.close()


def sessions(db: Path) -> dict[str, tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return {r[0]: r[1:] for r in conn.execute(
            "SELECT session_id, platform, event_count, end_reason FROM sessions")}
    finally:
        conn.close()


def start_engine(redis_server) -> Engine:
    cfg = load_config()
    ep = endpoint_from_url(redis_server.url)
    ensure_streams(ep.client())
    eng = Engine(cfg, ep)
    eng.start()
    return eng


def test_monitor_events_become_rows_once_even_after_losing_state(sources, redis_server):
    cursor, main, written = sources
    eng = start_engine(redis_server)
    db = eng.cfg.paths.database
    try:
        assert sorted(m.name for m in eng.monitors) == ["claude_transcripts", "cursor_db", "sessions"]
        # 12 Cursor items + 13 transcript lines; both sessions are months old, so the
        # session monitor ends them (idle timeout) and those session_end events are rows too
        wait_for(lambda: len(rows(db)) == 27 and all(s[2] == "timeout" for s in sessions(db).values()),
                 timeout=30, what="monitor rows and timed-out sessions")
        got = rows(db)
        assert Counter(r[1] for r in got) == {"database_trace": 12, "transcript_trace": 13, "session_end": 2}
        assert Counter(r[3]["metadata"]["source"] for r in got) == {
            "python_monitor": 12, "transcript_monitor": 13, "session_monitor": 2}
        # the session_end rows are counted when the session monitor applies their commit
        expected = {CID: ("cursor", 9, "timeout"), main.session_id: ("claude_code", 14, "timeout")}
        wait_for(lambda: sessions(db) == expected, timeout=10, what="session counts with their ends")
        wait_for(lambda: len(eng.health().monitors) == 3, what="monitor health published")
        h = {m.name: m.health() for m in eng.monitors}
        assert h["cursor_db"]["items_emitted"] == 12 and h["claude_transcripts"]["items_emitted"] == 13
        assert h["sessions"]["sessions_timed_out"] == 2
    finally:
        assert eng.stop(10)
    shutil.rmtree(eng.cfg.paths.state_dir / "monitors")  # every saved position lost
    again = start_engine(redis_server)
    try:
        wait_for(lambda: again.consumer.totals["dups"] >= 25, timeout=30, what="everything re-sent")
        wait_for(lambda: again.monitors[2].health()["passes"] >= 2, what="session monitor passes")
        assert len(rows(db)) == 27
        assert len({r[0] for r in rows(db)}) == 27
        wait_for(lambda: sessions(db) == expected, timeout=10, what="the same session counts")
    finally:
        assert again.stop(10)
