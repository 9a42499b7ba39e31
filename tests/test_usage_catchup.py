"""The usage worker's position and its recoveries: a change feed trimmed below
it, `usage rebuild`, a worker process killed mid-way, a derived-table failure
that must not stop ingest."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT, run_cli, wait_for
from engine_util import make_event, push, row_count
from tray_app.config import load_config
from tray_app.engine.engine import Engine
from tray_app.redis_conn import CDC_STREAM, endpoint_from_url, ensure_streams
from usage_fixtures import REQUESTS, write_claude, write_cursor


def dump(db: Path) -> dict[str, list[tuple]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
                for t in ("usage_requests", "usage_activity", "usage_cursor_composers")}
    finally:
        conn.close()


def top_and_position(db: Path) -> tuple[int, int]:
    if not db.exists():
        return 0, 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        try:
            top = conn.execute("SELECT COALESCE(MAX(sequence), 0) FROM raw_traces").fetchone()[0]
        except sqlite3.OperationalError:  # the engine is still creating it
            return 0, 0
        try:
            row = conn.execute("SELECT last_sequence FROM usage_state WHERE worker='usage'").fetchone()
        except sqlite3.OperationalError:
            row = None
        return top, row[0] if row else 0
    finally:
        conn.close()


@pytest.fixture()
def sources(tmp_path: Path, app_env, monkeypatch):
    cursor = write_cursor(tmp_path / "Cursor" / "User")
    write_claude(tmp_path / "claude-projects")
    monkeypatch.setenv("TELEMETRY_TRAY_MONITORS_CURSOR_USER_DIR", str(cursor.user_dir))
    monkeypatch.setenv("TELEMETRY_TRAY_MONITORS_CLAUDE_PROJECTS_DIRS", str(tmp_path / "claude-projects"))
    monkeypatch.setenv("TELEMETRY_TRAY_MONITORS_POLL_INTERVAL_S", "0.1")
    ep = endpoint_from_url(app_env["TELEMETRY_TRAY_REDIS_URL"])
    ensure_streams(ep.client())
    yield ep
    cursor.close()


def ingest_everything(ep, *, with_usage: bool) -> Engine:
    eng = Engine(load_config(), ep, with_usage=with_usage)
    eng.start()
    wait_for(lambda: all(m.health()["passes"] >= 3 for m in eng.monitors) and eng.health().backlog == 0
             and eng.health().pending == 0 and row_count(eng.cfg.paths.database) >= 30,
             timeout=60, what="every monitor event stored")
    return eng


def test_worker_catches_up_from_raw_traces_when_the_feed_was_trimmed(sources, app_env):
    eng = ingest_everything(sources, with_usage=False)  # history recorded before the worker existed
    db = eng.cfg.paths.database
    assert eng.stop(10)
    client = sources.client()
    client.xtrim(CDC_STREAM, maxlen=0)  # the capped feed kept none of it
    assert client.xlen(CDC_STREAM) == 0
    eng = Engine(load_config(), sources)
    eng.start()
    try:
        wait_for(lambda: (lambda tp: tp[1] == tp[0] > 0)(top_and_position(db)), timeout=30,
                 what="the worker caught up from raw_traces")
        assert eng.usage.health()["rows_applied"] == top_and_position(db)[0]
    finally:
        assert eng.stop(10)
    r = run_cli("report", "daily", "--json", "--timezone", "UTC", "--platform", "claude_code", env=app_env)
    tot = json.loads(r.stdout)["totals"]
    assert tot["requests"] == len(REQUESTS) and tot["prompts"] == 3
    assert tot["output_tokens"] == sum(q.output for q in REQUESTS.values())
    before = dump(db)
    assert len(before["usage_requests"]) == len(REQUESTS) + 2  # and the two Cursor bubbles

    r = run_cli("usage", "rebuild", env=app_env)
    assert r.returncode == 0, r.stderr
    assert "Rebuilt the usage tables" in r.stdout
    assert dump(db) == before
    r = run_cli("usage", "rebuild", env=app_env)
    assert dump(db) == before  # idempotent


CRASHY = textwrap.dedent("""
    import sys, time
    from tray_app.config import load_config
    from tray_app.usage import schema
    from tray_app.usage.worker import open_db, process_chunk
    conn = open_db(load_config())
    pos = schema.position(conn)
    while True:
        n, pos = process_chunk(conn, pos, 3)
        print(pos, flush=True)
        if n == 0:
            break
        time.sleep(0.2)
""")


def test_a_worker_killed_mid_way_double_counts_nothing(sources, app_env):
    eng = ingest_everything(sources, with_usage=True)
    db = eng.cfg.paths.database
    wait_for(lambda: (lambda tp: tp[1] == tp[0])(top_and_position(db)), timeout=30, what="caught up")
    assert eng.stop(10)
    whole = dump(db)
    conn = sqlite3.connect(str(db), timeout=5)
    with conn:
        for t in ("usage_requests", "usage_activity", "usage_cursor_composers"):
            conn.execute(f"DELETE FROM {t}")
        conn.execute("DELETE FROM usage_state WHERE worker='usage'")  # a clean start ...
    conn.close()
    proc = subprocess.Popen([sys.executable, "-c", CRASHY], cwd=str(ROOT), env=app_env,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    seen = [int(proc.stdout.readline()) for _ in range(4)]  # ... then killed after four chunks
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    top, pos = top_and_position(db)
    assert 0 < seen[-1] <= pos < top
    eng = Engine(load_config(), sources)  # the engine's worker goes on from the saved position
    eng.start()
    try:
        wait_for(lambda: (lambda tp: tp[1] == tp[0])(top_and_position(db)), timeout=30, what="caught up again")
    finally:
        assert eng.stop(10)
    assert dump(db) == whole


def test_a_failing_usage_table_is_shown_and_ingest_goes_on(app_env, redis_server):
    ep = endpoint_from_url(redis_server.url)
    ensure_streams(ep.client())
    eng = Engine(load_config(), ep, with_monitors=False)
    eng.start()
    db = eng.cfg.paths.database
    try:
        push(redis_server.client(), [make_event(i, event_type="user_prompt", metadata={"source": "claude_hook"})
                                     for i in range(20)])
        wait_for(lambda: top_and_position(db) == (20, 20), timeout=20, what="the first events applied")
        conn = sqlite3.connect(str(db), timeout=5)
        conn.execute("CREATE TRIGGER usage_boom BEFORE INSERT ON usage_activity "
                     "BEGIN SELECT RAISE(ABORT, 'usage table broken'); END")
        conn.commit()
        push(redis_server.client(), [make_event(i, event_type="user_prompt", metadata={"source": "claude_hook"})
                                     for i in range(20, 220)])
        wait_for(lambda: row_count(db) == 220, timeout=20, what="ingest going on")
        wait_for(lambda: any(line.startswith("usage:") and "usage table broken" in line
                             for line in eng.health().thread_errors), timeout=30, what="the failure in health")
        assert eng.health().state == "running"
        assert top_and_position(db)[1] == 20
        conn.execute("DROP TRIGGER usage_boom")
        conn.commit()
        conn.close()
        wait_for(lambda: top_and_position(db) == (220, 220), timeout=60, what="the restarted worker caught up")
    finally:
        assert eng.stop(10)


def test_a_raw_row_the_tables_cannot_take_is_skipped_not_a_stuck_worker(app_home):
    """Raw rows are whatever producers sent: a lone surrogate in a name, a
    timestamp whose UTC time is before year 1. Each is that row's problem: the
    rows after it are counted, the report runs, the tables catch up."""
    import zlib

    import orjson

    from tray_app.engine.schema import open_database

    db = load_config().paths.database
    conn = open_database(db)

    def assistant(msg: str, tokens: int) -> bytes:
        usage = {"input_tokens": tokens, "output_tokens": 7, "cache_creation_input_tokens": 0,
                 "cache_read_input_tokens": 0}
        return zlib.compress(orjson.dumps({
            "payload": {"type": "assistant", "message": {"content": [{"type": "text", "text": "hi"}]}},
            "metadata": {"message_id": msg, "request_id": "req", "model": "claude-sonnet-4-5-20250929",
                         "usage": usage}}))

    insert = ("INSERT INTO raw_traces (event_id, session_id, event_type, platform, hook_type, timestamp, "
              "source, ingested_at, event_data) VALUES (?,?,?,?,?,?,?,?,?)")
    ts = "2026-03-02T09:00:0{}.000000Z"
    with conn:
        # a lone surrogate in the model name: no text SQLite could store (the JSON reader refuses it)
        conn.execute(insert, ("e1", "s1", "transcript_trace", "claude_code", "assistant", ts.format(1),
                              "transcript_monitor", ts.format(1),
                              zlib.compress(zlib.decompress(assistant("bad", 5)).replace(
                                  b'"claude-sonnet-4-5-20250929"', b'"claude-\\ud800"'))))
        conn.execute(insert, ("e2", "s1", "user_prompt", "claude_code", "UserPromptSubmit",
                              "0001-01-01T00:00:00+05:00", "claude_hook", ts.format(2),
                              zlib.compress(b'{"payload": {}, "metadata": {"source": "claude_hook"}}')))
        conn.execute(insert, ("e3", "s1", "transcript_trace", "claude_code", "assistant", ts.format(3),
                              "transcript_monitor", ts.format(3), assistant("fine", 3)))
    conn.close()
    out = run_cli("report", "daily", "--json", "--timezone", "UTC")
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    days = json.loads(out.stdout)["days"]
    assert [(d["date"], d["requests"], d["input_tokens"]) for d in days] == [("2026-03-02", 1, 3)]
    status = json.loads(run_cli("usage", "status", "--json").stdout)
    assert status["behind"] == 0 and status["position"] == 3
