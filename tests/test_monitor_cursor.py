"""CursorDatabaseMonitor against real SQLite files shaped like Cursor's and a real server."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path

import pytest

from conftest import wait_for
from monitor_fixtures import (SECRETS, T0, CursorFixture, file_sha256, monitor_config, put, stream_events, uid)
from tray_app.events import workspace_hash
from tray_app.monitors import cursor_db
from tray_app.monitors.cursor_db import CursorDatabaseMonitor
from tray_app.monitors.cursor_files import default_user_dir, read_workspace_json, uri_to_path
from tray_app.redis_conn import endpoint_from_url

SHOP = "/home/dev/shop"
CID = uid("composer", 1)


@pytest.fixture()
def cursor(tmp_path: Path) -> CursorFixture:
    fx = CursorFixture(tmp_path / "Cursor" / "User")
    fx.make_global()
    fx.add_conversation(CID, 3)
    fx.make_workspace("6f1c2a9e0b3d", SHOP, [CID])
    yield fx
    fx.close()


def make_monitor(tmp_path: Path, redis_server, fx: CursorFixture, **kw) -> CursorDatabaseMonitor:
    cfg = monitor_config(tmp_path / "home", redis_server.url, cursor_user_dir=str(fx.user_dir),
                         poll_interval_s=0.05, **{k: v for k, v in kw.items() if k.startswith("capture_")})
    opts = {k: v for k, v in kw.items() if not k.startswith("capture_")}
    return CursorDatabaseMonitor(cfg, endpoint_from_url(redis_server.url), **opts)


def by_key(evs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for e in evs:
        out.setdefault(e["metadata"]["key"], []).append(e)
    return out


def test_first_pass_emits_conversation_and_workspace_items(tmp_path, redis_server, cursor):
    mon = make_monitor(tmp_path, redis_server, cursor)
    assert mon.pass_once()
    evs = stream_events(redis_server.client())
    keys = by_key(evs)
    bubbles = [e for e in evs if e["hook_type"] == "bubbleId"]
    assert len(bubbles) == 6
    assert len(keys[f"composerData:{CID}"]) == 1
    assert len(keys["aiService.prompts"]) == 2 and len(keys["aiService.generations"]) == 2
    assert len(keys["composer.composerData"]) == 1
    assert len(evs) == 12
    for e in evs:
        assert e["platform"] == "cursor" and e["event_type"] == "database_trace"
        assert e["metadata"]["source"] == "python_monitor"
        assert e["metadata"]["table"] in ("ItemTable", "cursorDiskKV")
    # conversation items carry the composer as session and, through the workspace
    # database's composer list, the workspace of the folder it was opened in
    ws = workspace_hash(SHOP)
    for b in bubbles:
        assert b["session_id"] == CID and b["workspace_hash"] == ws
        assert b["metadata"]["database"] == "global"
    user = next(b for b in bubbles if b["payload"]["type"] == 1)
    assert user["payload"]["text"].startswith("Please add a sum helper")
    assert user["timestamp"] == "2026-03-02T09:30:00.000Z"
    assistant = next(b for b in bubbles if b["payload"]["type"] == 2)
    assert assistant["payload"]["tokenCount"] == {"inputTokens": 1834, "outputTokens": 212}
    gen = keys["aiService.generations"][0]
    assert gen["payload"]["textDescription"] == "Please add a sum helper"
    assert gen["workspace_hash"] == ws and gen["metadata"]["workspace_id"] == "6f1c2a9e0b3d"
    assert len({e["event_id"] for e in evs}) == len(evs)
    h = mon.health()
    assert h["items_emitted"] == 12 and h["errors"] == 0 and h["passes"] == 1
    assert h["databases_found"] == 2 and h["last_pass_at"]
    json.dumps(h)


def test_credentials_are_never_emitted(tmp_path, redis_server, cursor):
    mon = make_monitor(tmp_path, redis_server, cursor)
    mon.pass_once()
    raw = json.dumps([[k.decode(), v.decode()] for _id, f in redis_server.client().xrange("telemetry:events")
                      for k, v in f.items()])
    for secret in SECRETS:
        assert secret not in raw
    assert "cursorAuth" not in raw and "dev@example.com" not in raw
    composer = next(e for e in stream_events(redis_server.client())
                    if e["metadata"]["key"] == f"composerData:{CID}")
    assert composer["payload"]["speculativeSummarizationEncryptionKey"] == "[redacted]"
    assert composer["payload"]["modelConfig"]["modelName"] == "claude-4.5-sonnet"


def test_a_pass_leaves_cursors_files_unchanged(tmp_path, redis_server, cursor):
    wal = Path(f"{cursor.global_path}-wal")
    assert wal.exists()  # Cursor running: its writers hold the WAL
    before = {p: file_sha256(p) for p in (cursor.global_path, wal)}
    mon = make_monitor(tmp_path, redis_server, cursor)
    assert mon.pass_once()
    assert {p: file_sha256(p) for p in before} == before
    # Cursor quit (no -wal): the pass must not create -wal / -shm files either
    cursor.close()
    assert not wal.exists()
    put_conn = sqlite3.connect(cursor.global_path)  # one more conversation, then closed again
    put_conn.execute("INSERT INTO cursorDiskKV VALUES (?, ?)",
                     (f"bubbleId:{CID}:{uid('late')}", json.dumps({"_v": 3, "type": 1, "text": "late"})))
    put_conn.commit()
    put_conn.close()
    listing = sorted(os.listdir(cursor.global_path.parent))
    digest = file_sha256(cursor.global_path)
    assert mon.pass_once()
    assert file_sha256(cursor.global_path) == digest
    assert sorted(os.listdir(cursor.global_path.parent)) == listing
    assert any(e["payload"].get("text") == "late" for e in stream_events(redis_server.client()))


def test_unchanged_database_is_not_opened(tmp_path, redis_server, cursor, monkeypatch):
    mon = make_monitor(tmp_path, redis_server, cursor)
    mon.pass_once()
    opened = []
    real = cursor_db.open_readonly
    monkeypatch.setattr(cursor_db, "open_readonly", lambda *a, **k: opened.append(a[0]) or real(*a, **k))
    assert mon.run_once() == 0
    assert opened == []
    put(cursor.writers["6f1c2a9e0b3d"], "ItemTable", "workbench.explorer.treeViewState", {"focus": ["x"]})
    assert mon.run_once() == 0  # changed, but nothing we read changed
    assert opened == [cursor.user_dir / "workspaceStorage" / "6f1c2a9e0b3d" / "state.vscdb"]


def test_new_bubbles_are_read_incrementally(tmp_path, redis_server, cursor):
    mon = make_monitor(tmp_path, redis_server, cursor)
    mon.pass_once()
    first = len(stream_events(redis_server.client()))
    new_keys = cursor.add_conversation(CID, 2)
    assert mon.run_once() == 5  # 4 new bubbles + the rewritten composerData
    evs = stream_events(redis_server.client())[first:]
    assert sorted(e["metadata"]["key"] for e in evs) == sorted(new_keys + [f"composerData:{CID}"])
    assert mon.run_once() == 0


def test_changed_value_is_a_new_event_and_rereads_are_not(tmp_path, redis_server, cursor):
    mon = make_monitor(tmp_path, redis_server, cursor)
    mon.pass_once()
    key = f"bubbleId:{CID}:{uid('u', CID, 0)}"
    conn = cursor.writers["global"]
    value = json.loads(conn.execute("SELECT value FROM cursorDiskKV WHERE key=?", (key,)).fetchone()[0])
    value["text"] = "Please add a sum helper (edited)"
    put(conn, "cursorDiskKV", key, value)
    assert mon.run_once() == 1
    evs = [e for e in stream_events(redis_server.client()) if e["metadata"]["key"] == key]
    assert [e["payload"]["text"] for e in evs] == ["Please add a sum helper, step 0",
                                                   "Please add a sum helper (edited)"]
    assert evs[0]["event_id"] != evs[1]["event_id"]
    # the same content written again (new rowid) is not news
    put(conn, "cursorDiskKV", key, value)
    assert mon.run_once() == 0


def test_restart_and_lost_state_never_make_new_ids(tmp_path, redis_server, cursor):
    mon = make_monitor(tmp_path, redis_server, cursor)
    mon.pass_once()
    mon.close()
    ids = [e["event_id"] for e in stream_events(redis_server.client())]
    again = make_monitor(tmp_path, redis_server, cursor)  # restart: state survives
    assert again.run_once() == 0
    again.close()
    for f in (tmp_path / "home" / "state" / "monitors").glob("cursor_db.sqlite3*"):
        f.unlink()  # state lost: everything is sent again, with the same ids (the engine dedups)
    fresh = make_monitor(tmp_path, redis_server, cursor)
    assert fresh.run_once() == len(ids)
    fresh.close()
    evs = stream_events(redis_server.client())
    assert sorted(e["event_id"] for e in evs[len(ids):]) == sorted(ids)


def test_appended_prompt_is_one_event(tmp_path, redis_server, cursor):
    mon = make_monitor(tmp_path, redis_server, cursor)
    mon.pass_once()
    n = len(stream_events(redis_server.client()))
    cursor.append_prompt("6f1c2a9e0b3d", "Also handle empty lists", T0)
    assert mon.run_once() == 2
    evs = stream_events(redis_server.client())[n:]
    assert {(e["metadata"]["key"], e["payload"].get("text") or e["payload"].get("textDescription"))
            for e in evs} == {("aiService.prompts", "Also handle empty lists"),
                              ("aiService.generations", "Also handle empty lists")}


def renumber(conn: sqlite3.Connection) -> None:
    """Rewrite the table with compact rowids 1..n (what a rebuild, or an old
    SQLite's VACUUM, does to a table without an INTEGER PRIMARY KEY)."""
    rows = conn.execute("SELECT key, value FROM cursorDiskKV ORDER BY rowid").fetchall()
    conn.execute("BEGIN")
    conn.execute("DELETE FROM cursorDiskKV")
    conn.executemany("INSERT INTO cursorDiskKV (rowid, key, value) VALUES (?, ?, ?)",
                     [(i + 1, k, v) for i, (k, v) in enumerate(rows)])
    conn.execute("COMMIT")


def test_renumbered_rowids_are_rescanned_without_resending(tmp_path, redis_server, cursor):
    mon = make_monitor(tmp_path, redis_server, cursor, chunk_rows=2)
    mon.pass_once()
    n = len(stream_events(redis_server.client()))
    conn = cursor.writers["global"]
    top = conn.execute("SELECT MAX(rowid) FROM cursorDiskKV").fetchone()[0]
    conn.execute("DELETE FROM cursorDiskKV WHERE key LIKE 'checkpointId:%' OR key LIKE 'codeBlockDiff:%'")
    renumber(conn)
    new_keys = cursor.add_conversation(CID, 1)
    # the table grew past the old maximum again: only the remembered anchors tell
    assert conn.execute("SELECT MAX(rowid) FROM cursorDiskKV").fetchone()[0] >= top
    assert mon.run_once() == 3  # the new turn and the rewritten composerData, nothing old
    keys = [e["metadata"]["key"] for e in stream_events(redis_server.client())[n:]]
    assert sorted(keys) == sorted(new_keys + [f"composerData:{CID}"])
    # shrunk below the watermark: re-scanned, nothing re-sent
    conn.execute(f"DELETE FROM cursorDiskKV WHERE key = '{new_keys[0]}'")
    renumber(conn)
    assert mon.run_once() == 0
    cursor.add_conversation(CID, 1)
    assert mon.run_once() == 3


def test_busy_database_is_retried_on_a_later_pass(tmp_path, redis_server):
    fx = CursorFixture(tmp_path / "Cursor" / "User")
    path = fx.global_path
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE ItemTable (key TEXT UNIQUE ON CONFLICT REPLACE, value BLOB)")
    conn.execute("CREATE TABLE cursorDiskKV (key TEXT UNIQUE ON CONFLICT REPLACE, value BLOB)")
    put(conn, "cursorDiskKV", f"bubbleId:{CID}:b1", {"_v": 3, "type": 1, "text": "hi"})
    conn.execute("BEGIN EXCLUSIVE")  # rollback-journal database, writer holds the lock
    mon = make_monitor(tmp_path, redis_server, fx)
    assert mon.pass_once()
    h = mon.health()
    assert h["busy"] == 1 and h["errors"] == 0
    assert stream_events(redis_server.client()) == []
    conn.execute("COMMIT")
    assert mon.run_once() == 1
    conn.close()


def test_a_writer_during_passes_loses_and_duplicates_nothing(tmp_path, redis_server, cursor):
    mon = make_monitor(tmp_path, redis_server, cursor, chunk_rows=3)
    writer = sqlite3.connect(cursor.global_path, isolation_level=None, check_same_thread=False, timeout=0)
    written: list[str] = []
    failures: list[BaseException] = []
    done = threading.Event()

    def write() -> None:
        try:
            for i in range(150):
                key = f"bubbleId:{CID}:{uid('w', i)}"
                put(writer, "cursorDiskKV", key, {"_v": 3, "type": 1, "bubbleId": key, "text": f"w{i}"})
                written.append(key)
        except BaseException as exc:  # noqa: BLE001
            failures.append(exc)
        finally:
            done.set()

    t = threading.Thread(target=write)
    t.start()
    while not done.is_set():
        assert mon.pass_once()
    t.join()
    assert mon.pass_once()
    writer.close()
    assert failures == []  # our reads never made Cursor's writes fail
    assert mon.health()["errors"] == 0
    evs = stream_events(redis_server.client())
    seen = [e["metadata"]["key"] for e in evs if e["payload"].get("text", "").startswith("w")]
    assert sorted(seen) == sorted(written)
    assert len({e["event_id"] for e in evs}) == len(evs)


def test_per_pass_budget_leaves_a_backlog_for_the_next_pass(tmp_path, redis_server, cursor):
    mon = make_monitor(tmp_path, redis_server, cursor, max_items_per_pass=4, chunk_rows=2)
    counts = [mon.run_once() for _ in range(6)]
    assert counts[0] <= 5 and mon.health()["backlog"] is False
    assert sum(counts) == 12 and counts[-1] == 0
    assert len({e["event_id"] for e in stream_events(redis_server.client())}) == 12


def test_capture_settings_apply_to_payloads(tmp_path, redis_server, cursor):
    mon = make_monitor(tmp_path, redis_server, cursor, capture_prompts="none", capture_responses="hash",
                       capture_shell_output="hash", capture_file_contents="none")
    mon.pass_once()
    evs = stream_events(redis_server.client())
    bubbles = [e["payload"] for e in evs if e["hook_type"] == "bubbleId"]
    for b in bubbles:
        if b["type"] == 1:
            assert "text" not in b and "richText" not in b and "attachedCodeChunks" not in b
        else:
            assert b["text"].startswith("sha256:") and b["codeBlocks"].startswith("sha256:")
            assert b["toolFormerData"]["result"].startswith("sha256:")
            assert "5 passed" not in json.dumps(b)
    for e in evs:
        if e["metadata"]["key"] == "aiService.prompts":
            assert "text" not in e["payload"]
        assert e["metadata"]["capture"]["prompts"] == "none"
    raw = json.dumps(evs)
    assert "Please add a sum helper" not in raw


def test_thread_runs_pauses_resumes_and_stops(tmp_path, redis_server, cursor):
    mon = make_monitor(tmp_path, redis_server, cursor)
    mon.start()
    try:
        wait_for(lambda: len(stream_events(redis_server.client())) == 12, what="first pass")
        mon.pause()
        assert mon.health()["state"] == "paused"
        cursor.add_conversation(CID, 1)
        mon.resume()
        wait_for(lambda: len(stream_events(redis_server.client())) == 15, what="pass after resume")
    finally:
        mon.stop()
        mon.join(5)
    assert not mon.is_alive()
    assert mon.health()["state"] == "stopped"


def test_locations_and_workspace_mapping(tmp_path):
    home = Path("/home/u")
    assert default_user_dir("linux", {}, home) == home / ".config" / "Cursor" / "User"
    assert default_user_dir("darwin", {}, home) == home / "Library" / "Application Support" / "Cursor" / "User"
    assert default_user_dir("win32", {"APPDATA": "C:\\Users\\u\\AppData\\Roaming"}, home) == \
        Path("C:\\Users\\u\\AppData\\Roaming") / "Cursor" / "User"
    assert uri_to_path("file:///home/u/my%20proj/") == "/home/u/my proj"
    assert uri_to_path("file:///c%3A/Users/u/proj") == "c:/Users/u/proj"
    assert uri_to_path("vscode-remote://ssh-remote%2Bbox/srv/app") == "vscode-remote://ssh-remote%2Bbox/srv/app"
    d = tmp_path / "ws"
    d.mkdir()
    (d / "workspace.json").write_text(json.dumps({"workspace": "file:///home/u/all.code-workspace"}))
    assert read_workspace_json(d) == "/home/u/all.code-workspace"
    (d / "workspace.json").write_text("{not json")
    assert read_workspace_json(d) is None


def test_in_place_updates_are_found_by_the_reconciliation(tmp_path, redis_server, cursor):
    now = [1_000_000.0]
    mon = make_monitor(tmp_path, redis_server, cursor, clock=lambda: now[0], reconcile_interval_s=3600,
                       chunk_rows=2, reconcile_rows_per_pass=4)
    mon.run_once()
    n = len(stream_events(redis_server.client()))
    key = f"bubbleId:{CID}:{uid('a', CID, 1)}"
    conn = cursor.writers["global"]
    value = json.loads(conn.execute("SELECT value FROM cursorDiskKV WHERE key=?", (key,)).fetchone()[0])
    value["text"] = "Added `total()` (step 1), now with tests."
    conn.execute("UPDATE cursorDiskKV SET value=? WHERE key=?", (json.dumps(value), key))  # rowid kept
    assert mon.run_once() == 0  # not before the reconciliation is due
    now[0] += 3600
    counts = [mon.run_once() for _ in range(4)]  # 4 rows per pass: the table takes a few passes
    assert sum(counts) == 1
    (ev,) = stream_events(redis_server.client())[n:]
    assert ev["metadata"]["key"] == key and ev["payload"]["text"].endswith("now with tests.")
    assert mon.run_once() == 0


def test_fingerprint_sees_every_commit_even_when_the_wal_looks_the_same(tmp_path):
    """After a checkpoint the WAL is rewritten from its start (same size) and
    mtime ticks are coarse: the -shm index header still tells a commit."""
    from tray_app.monitors.cursor_files import file_state

    fx = CursorFixture(tmp_path / "User")
    conn = fx.make_global()
    for i in range(20):
        put(conn, "cursorDiskKV", f"bubbleId:{CID}:{i}", {"_v": 3, "type": 1, "text": "x" * 3000})
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    put(conn, "cursorDiskKV", f"bubbleId:{CID}:a", {"_v": 3, "type": 1, "text": "a"})  # WAL restarts
    wal = Path(f"{fx.global_path}-wal")
    before, st = file_state(fx.global_path), wal.stat()
    put(conn, "cursorDiskKV", f"bubbleId:{CID}:b", {"_v": 3, "type": 1, "text": "b"})
    assert wal.stat().st_size == st.st_size  # overwrote old frames in place
    os.utime(wal, ns=(st.st_atime_ns, st.st_mtime_ns))  # as if within the same mtime tick
    os.utime(fx.global_path, ns=(fx.global_path.stat().st_atime_ns, fx.global_path.stat().st_mtime_ns))
    assert file_state(fx.global_path).fingerprint != before.fingerprint
    fx.close()


def test_an_import_of_cursors_history_reports_its_progress(tmp_path, redis_server, cursor, caplog):
    """A large database read over several passes: how far it has come is in the
    monitor's health (the tray menu shows it) and in the log, and done at the end."""
    import logging

    from tray_app.config import TraySettings
    from tray_app.engine.health import RUNNING, HealthSnapshot
    from tray_app.tray.menu import build_menu

    cursor.add_conversation(uid("composer", 2), 10)
    caplog.set_level(logging.INFO, logger="tray_app.monitors.cursor_db")
    mon = make_monitor(tmp_path, redis_server, cursor, max_items_per_pass=6, chunk_rows=3)
    mon.run_once()
    pct = mon.health()["import_progress_pct"]
    assert 0 < pct < 100
    assert any("importing Cursor's history:" in r.getMessage() for r in caplog.records)
    snap = HealthSnapshot(state=RUNNING, monitors={"cursor_db": mon.health()})
    assert f"(importing history: {pct:.0f}%)" in build_menu(snap, TraySettings()).text()
    for _ in range(20):
        if mon.health()["import_progress_pct"] is None:
            break
        mon.run_once()
    assert mon.health()["import_progress_pct"] is None
    assert any("Cursor's history imported:" in r.getMessage() for r in caplog.records)


def test_a_forgotten_conversation_is_neither_sent_nor_remembered(tmp_path, redis_server, cursor):
    """`telemetry-tray forget --session` (its rule): the monitor sends none of the
    conversation's items and keeps no digest keyed by its id, on a first read too."""
    from tray_app.lifecycle import rule

    gone = uid("composer", 2)
    cursor.add_conversation(gone, 2, name="Forget me")
    mon = make_monitor(tmp_path, redis_server, cursor)
    rule.add(mon.cfg.paths.state_dir, sessions=(gone,))
    assert mon.pass_once()
    evs = stream_events(redis_server.client())
    assert {e["session_id"] for e in evs if e["hook_type"] == "bubbleId"} == {CID}
    assert not [e for e in evs if e["session_id"] == gone]
    mon.close()
    with sqlite3.connect(tmp_path / "home" / "state" / "monitors" / "cursor_db.sqlite3") as c:
        keys = [k for (k,) in c.execute("SELECT key FROM fingerprints")]
    assert keys and not [k for k in keys if gone in k]
