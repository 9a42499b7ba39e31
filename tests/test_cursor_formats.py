"""Cursor's other storage formats and format drift, against real SQLite files
shaped like Cursor's (synthetic) and a real server.

* legacy conversations (messages inline in composerData ``conversation[]``)
  become one event per message, like ``bubbleId:`` rows, and a message stored
  both ways is sent once;
* ``codeBlockDiff:`` rows become ``file_edit`` events with lines added/removed;
* unknown key families / tables and a known key that lost its fields are
  reported in the monitor's health, ``doctor`` and the diagnostics bundle,
  as counts and names only; the current format reports nothing.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from conftest import run_cli
from monitor_fixtures import T0, CursorFixture, iso, monitor_config, put, stream_events, uid
from tray_app.events import workspace_hash
from tray_app.monitors import cursor_db
from tray_app.monitors.cursor_db import CursorDatabaseMonitor
from tray_app.redis_conn import endpoint_from_url

SHOP = "/home/dev/shop"
CID = uid("composer", 1)
OLD = uid("composer", "legacy")
WS = "6f1c2a9e0b3d"


@pytest.fixture()
def cursor(tmp_path: Path) -> CursorFixture:
    fx = CursorFixture(tmp_path / "Cursor" / "User")
    fx.make_global()
    fx.add_conversation(CID, 3)
    fx.make_workspace(WS, SHOP, [CID, OLD])
    yield fx
    fx.close()


def make_monitor(tmp_path: Path, redis_server, fx: CursorFixture, home: Path | None = None,
                 **kw) -> CursorDatabaseMonitor:
    cfg = monitor_config(home or tmp_path / "home", redis_server.url, cursor_user_dir=str(fx.user_dir),
                         poll_interval_s=0.05)
    return CursorDatabaseMonitor(cfg, endpoint_from_url(redis_server.url), **kw)


def events_for(redis_server, key_prefix: str) -> list[dict]:
    return [e for e in stream_events(redis_server.client()) if e["metadata"]["key"].startswith(key_prefix)]


# -- legacy inline conversations -------------------------------------------------------------------

def test_legacy_inline_conversation_becomes_one_event_per_message(tmp_path, redis_server, cursor):
    bubble_ids = cursor.add_legacy_conversation(OLD, 2)
    mon = make_monitor(tmp_path, redis_server, cursor)
    assert mon.pass_once()
    msgs = events_for(redis_server, f"bubbleId:{OLD}:")
    assert [e["metadata"]["key"] for e in msgs] == [f"bubbleId:{OLD}:{b}" for b in bubble_ids]
    for e in msgs:
        # the same shape as a bubbleId row's event
        assert e["event_type"] == "database_trace" and e["hook_type"] == "bubbleId"
        assert e["session_id"] == OLD == e["external_session_id"]
        assert e["workspace_hash"] == workspace_hash(SHOP)  # via the workspace's composer list
        assert e["metadata"]["inline_in"] == f"composerData:{OLD}"
        # the messages carry no time of their own: the conversation's, not the time of reading
        assert e["timestamp"] == iso(T0)
    assert [e["payload"]["type"] for e in msgs] == [1, 2, 1, 2]
    assert msgs[0]["payload"]["text"] == "Rename helper step 0"
    assert msgs[3]["payload"]["text"] == "Renamed it (step 1)."
    (conv,) = events_for(redis_server, f"composerData:{OLD}")
    # the conversation's own event lists its messages instead of repeating them
    assert "conversation" not in conv["payload"]
    assert [h["bubbleId"] for h in conv["payload"]["conversationHeaders"]] == bubble_ids
    assert "Rename helper" not in json.dumps(conv["payload"])
    # re-reads and lost state make the same ids (the engine stores them once)
    ids = sorted(e["event_id"] for e in msgs)
    assert mon.run_once() == 0
    mon.close()
    for f in (tmp_path / "home" / "state" / "monitors").glob("cursor_db.sqlite3*"):
        f.unlink()
    fresh = make_monitor(tmp_path, redis_server, cursor)
    fresh.run_once()
    fresh.close()
    again = events_for(redis_server, f"bubbleId:{OLD}:")[len(msgs):]
    assert sorted(e["event_id"] for e in again) == ids


def test_a_new_inline_message_is_one_new_event(tmp_path, redis_server, cursor):
    cursor.add_legacy_conversation(OLD, 1)
    mon = make_monitor(tmp_path, redis_server, cursor)
    mon.pass_once()
    before = len(events_for(redis_server, f"bubbleId:{OLD}:"))
    cursor.add_legacy_conversation(OLD, 2)  # the whole conversation rewritten with one more turn
    assert mon.run_once() == 3  # two new messages + the conversation
    assert len(events_for(redis_server, f"bubbleId:{OLD}:")) == before + 2


def test_a_message_stored_inline_and_as_a_row_is_sent_once(tmp_path, redis_server, cursor):
    bubble_ids = cursor.add_legacy_conversation(OLD, 1)
    conn = cursor.writers["global"]
    data = json.loads(conn.execute("SELECT value FROM cursorDiskKV WHERE key=?",
                                   (f"composerData:{OLD}",)).fetchone()[0])
    # the first message also has its own row (with more fields than the inline copy)
    row = dict(data["conversation"][0], createdAt=iso(T0), tokenCount={"inputTokens": 5, "outputTokens": 0})
    put(conn, "cursorDiskKV", f"bubbleId:{OLD}:{bubble_ids[0]}", row)
    mon = make_monitor(tmp_path, redis_server, cursor)
    mon.pass_once()
    msgs = events_for(redis_server, f"bubbleId:{OLD}:")
    assert sorted(e["metadata"]["key"] for e in msgs) == sorted(f"bubbleId:{OLD}:{b}" for b in bubble_ids)
    first = [e for e in msgs if e["metadata"]["key"].endswith(bubble_ids[0])]
    assert len(first) == 1 and "inline_in" not in first[0]["metadata"]  # from its row
    assert first[0]["payload"]["tokenCount"]["inputTokens"] == 5


def test_cursor_moving_inline_messages_to_rows_sends_nothing_again(tmp_path, redis_server, cursor):
    """What Cursor's migration does: the same messages, now as bubbleId rows and
    headers; none of them is a second event."""
    bubble_ids = cursor.add_legacy_conversation(OLD, 2)
    mon = make_monitor(tmp_path, redis_server, cursor)
    mon.pass_once()
    n = len(events_for(redis_server, f"bubbleId:{OLD}:"))
    conn = cursor.writers["global"]
    data = json.loads(conn.execute("SELECT value FROM cursorDiskKV WHERE key=?",
                                   (f"composerData:{OLD}",)).fetchone()[0])
    for b in data["conversation"]:
        # Cursor's own serialisation: other key order, same content
        put(conn, "cursorDiskKV", f"bubbleId:{OLD}:{b['bubbleId']}", dict(reversed(list(b.items()))))
    data["fullConversationHeadersOnly"] = [{"bubbleId": b["bubbleId"], "type": b["type"]}
                                           for b in data.pop("conversation")]
    data["_v"] = 10
    put(conn, "cursorDiskKV", f"composerData:{OLD}", data)
    assert mon.run_once() == 1  # the conversation's metadata changed; its messages did not
    assert len(events_for(redis_server, f"bubbleId:{OLD}:")) == n == len(bubble_ids)


# -- codeBlockDiff -> file_edit ----------------------------------------------------------------------

def test_code_block_diffs_become_file_edits_with_line_counts(tmp_path, redis_server, cursor):
    diff = uid("diff", 1)
    cursor.add_code_block_diff(CID, diff, "/home/dev/shop/app.py",
                               [(3, 5, ["def total(xs):", "    return sum(xs)", "", "# done"]),  # 2 -> 4 lines
                                (10, 11, [])])  # one line deleted
    mon = make_monitor(tmp_path, redis_server, cursor)
    assert mon.pass_once()
    (edit,) = [e for e in stream_events(redis_server.client()) if e["event_type"] == "file_edit"]
    assert edit["platform"] == "cursor" and edit["hook_type"] == "codeBlockDiff"
    assert edit["session_id"] == CID and edit["workspace_hash"] == workspace_hash(SHOP)
    assert edit["payload"]["lines_added"] == 4 and edit["payload"]["lines_removed"] == 3
    assert edit["payload"]["changes"] == 2 and edit["payload"]["diff_id"] == diff
    assert edit["payload"]["file_path"] == "/home/dev/shop/app.py"
    assert edit["metadata"]["lines_added"] == 4 and edit["metadata"]["lines_removed"] == 3
    # dated by its conversation, not by when it was read
    assert edit["timestamp"].startswith("2026-03-02T09:3")
    # the fixture's empty diff (no change) is no edit
    assert not [e for e in stream_events(redis_server.client()) if e["metadata"]["key"].startswith(
        "codeBlockDiff:") and e["event_type"] != "file_edit"]
    assert mon.run_once() == 0


def test_diff_contents_follow_the_file_contents_setting(tmp_path, redis_server, cursor):
    cursor.add_code_block_diff(CID, uid("diff", 2), "/home/dev/shop/app.py", [(1, 1, ["SECRET_LINE = 1"])])
    cfg = monitor_config(tmp_path / "home", redis_server.url, cursor_user_dir=str(cursor.user_dir),
                         capture_file_contents="none")
    mon = CursorDatabaseMonitor(cfg, endpoint_from_url(redis_server.url))
    mon.pass_once()
    (edit,) = [e for e in stream_events(redis_server.client()) if e["event_type"] == "file_edit"]
    assert edit["payload"]["lines_added"] == 1 and "newModelDiffWrtV0" not in edit["payload"]
    assert "SECRET_LINE" not in json.dumps(stream_events(redis_server.client()))


# -- hook conversation_id and the database's composerId ----------------------------------------------

def test_hook_events_and_database_events_share_the_session(tmp_path, redis_server, cursor):
    """Cursor's hooks name the conversation ``conversation_id``; the database keys
    it by composerId. Both become ``session_id``, so the two sources join."""
    from tray_app.capture import mapping

    mon = make_monitor(tmp_path, redis_server, cursor)
    mon.pass_once()
    bubble = events_for(redis_server, f"bubbleId:{CID}:")[0]
    hook_input = {"hook_event_name": "beforeSubmitPrompt", "conversation_id": CID,
                  "generation_id": uid("gen", 1), "prompt": "Please add a sum helper",
                  "workspace_roots": [SHOP], "cursor_version": "2.0.77"}
    fields = mapping.build("cursor", json.dumps(hook_input).encode(), {})
    assert fields["session_id"] == bubble["session_id"] == CID
    assert fields["external_session_id"] == bubble["external_session_id"]
    assert fields["workspace_hash"] == bubble["workspace_hash"]
    assert fields["platform"] == bubble["platform"] == "cursor"


# -- format drift ----------------------------------------------------------------------------------

def test_current_format_reports_no_drift(tmp_path, redis_server, cursor):
    cursor.add_legacy_conversation(OLD, 1)  # older conversations are a known format too
    mon = make_monitor(tmp_path, redis_server, cursor)
    assert mon.pass_once()
    fmt = mon.health()["storage_format"]
    assert fmt["status"] == "known" and fmt["message"] == ""
    assert fmt["unknown_key_families"] == {} and fmt["unexpected_shapes"] == {}


def test_unknown_key_families_and_reshaped_conversations_are_reported(tmp_path, redis_server, cursor):
    cursor.add_agent_kv(340, CID)
    for i in range(12):
        cursor.add_reshaped_conversation(uid("future", i))
    cursor.add_table("composerHeaders", 25)
    statements: list[str] = []
    real = cursor_db.open_readonly

    def traced(*a, **k):
        conn = real(*a, **k)
        conn.set_trace_callback(statements.append)
        return conn

    mon = make_monitor(tmp_path, redis_server, cursor)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cursor_db, "open_readonly", traced)
        assert mon.pass_once()
    h = mon.health()
    fmt = h["storage_format"]
    assert fmt["status"] == "changed"
    assert fmt["conversations_may_be_missed"] == 12
    assert fmt["unknown_key_families"] == {"agentKv": 341}
    assert fmt["unknown_tables"] == {"composerHeaders": 25}
    assert fmt["unexpected_shapes"] == {"composerData": 12}
    assert fmt["message"].startswith("Cursor's storage format has changed: 12 conversations may be missed (")
    assert "agentKv (341)" in fmt["message"] and "composerHeaders (25)" in fmt["message"]
    text = json.dumps(h)
    assert "secret" not in text and "opaque-state" not in text and CID not in text  # counts and names only
    # never a value of an unknown key: every statement reading values is limited to known keys
    for sql in statements:
        if "value" in sql.lower() and "select" in sql.lower():
            assert ("composerData" in sql or "bubbleId" in sql or "codeBlockDiff" in sql or "key=" in sql
                    or "key IN" in sql), sql
    # what was understood is still recorded: nothing else is lost
    assert len(events_for(redis_server, f"bubbleId:{CID}:")) == 6
    assert len(events_for(redis_server, "composerData:")) == 13
    # the verdict is published once per pass and stays until the format is known again
    assert mon.run_once() == 0 and mon.health()["storage_format"]["status"] == "changed"


def test_messages_that_lost_their_fields_are_reported_and_fixed_ones_clear(tmp_path, redis_server, cursor):
    conn = cursor.writers["global"]
    odd = [f"bubbleId:{CID}:{uid('odd', i)}" for i in range(3)]
    for key in odd:  # no type, no text: a new message shape
        put(conn, "cursorDiskKV", key, {"_v": 9, "role": "user", "parts": [{"kind": "t", "value": "x"}]})
    mon = make_monitor(tmp_path, redis_server, cursor)
    mon.pass_once()
    fmt = mon.health()["storage_format"]
    assert fmt["unexpected_shapes"] == {"bubbleId": 3} and fmt["conversations_may_be_missed"] == 1
    assert "messages without type/text: 3" in fmt["message"]
    for key in odd:  # Cursor rewrites them in the known shape
        put(conn, "cursorDiskKV", key, {"_v": 3, "type": 1, "text": "fixed"})
    mon.run_once()
    assert mon.health()["storage_format"]["status"] == "known"
    mon.close()
    again = make_monitor(tmp_path, redis_server, cursor)  # a restart remembers what it counted
    again.run_once()
    assert again.health()["storage_format"]["status"] == "known"


def test_family_scan_is_bounded_in_time(tmp_path, redis_server, cursor):
    """The key-family count runs at most every format_scan_interval_s per database."""
    counts: list[str] = []
    real = cursor_db.cursor_drift.scan_families

    def counting(*a, **k):
        counts.append("scan")
        return real(*a, **k)

    now = [1_000_000.0]
    mon = make_monitor(tmp_path, redis_server, cursor, clock=lambda: now[0], format_scan_interval_s=300)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cursor_db.cursor_drift, "scan_families", counting)
        mon.run_once()
        first = len(counts)
        cursor.add_agent_kv(30)
        cursor.add_conversation(CID, 1)
        mon.run_once()
        assert len(counts) == first  # changed, but scanned less than 300 s ago
        assert mon.health()["storage_format"]["status"] == "known"
        now[0] += 300
        cursor.add_conversation(CID, 1)
        mon.run_once()
        assert len(counts) > first
    assert mon.health()["storage_format"]["unknown_key_families"] == {"agentKv": 30}


def test_bundle_monitors_part_carries_the_verdict(tmp_path, redis_server, cursor):
    from tray_app.diagnostics import parts as bundle_parts

    cursor.add_agent_kv(40)
    cfg = monitor_config(tmp_path / "home", redis_server.url, cursor_user_dir=str(cursor.user_dir))
    part = bundle_parts.monitors(cfg)["cursor"]["storage_format"]
    assert part["verdict"]["status"] == "changed"
    assert part["verdict"]["unknown_key_families"] == {"agentKv": 40}
    assert part["monitor_record"] is None  # the monitor has not run in this home
    assert "secret" not in json.dumps(part)


# -- doctor ----------------------------------------------------------------------------------------

def _doctor_env(app_env: dict[str, str]) -> tuple[dict[str, str], Path]:
    user_dir = Path(app_env["XDG_CONFIG_HOME"]) / "Cursor" / "User"  # Cursor's place under the fake HOME
    return app_env, user_dir


def _cursor_line(out: str) -> str:
    lines = [ln for ln in out.splitlines() if "cursor format" in ln]
    assert len(lines) == 1, out
    return lines[0]


def test_doctor_warns_when_cursors_format_changed(app_env, redis_server):
    env, user_dir = _doctor_env(app_env)
    fx = CursorFixture(user_dir)
    fx.make_global()
    fx.add_conversation(CID, 2)
    fx.add_agent_kv(340)
    for i in range(12):
        fx.add_reshaped_conversation(uid("future", i))
    try:
        out = run_cli("doctor", env=env)
    finally:
        fx.close()
    line = _cursor_line(out.stdout)
    assert line.startswith("WARN cursor format"), out.stdout
    assert "Cursor's storage format has changed: 12 conversations may be missed" in line
    assert "agentKv (340)" in line
    assert "secret" not in out.stdout and "opaque" not in out.stdout
    assert out.returncode == 0, out.stdout + out.stderr  # a warning, not a failure


def test_doctor_shows_what_the_monitor_recorded(app_env, redis_server, tmp_path):
    """Shapes the monitor met beyond doctor's sample are in doctor's line too."""
    env, user_dir = _doctor_env(app_env)
    fx = CursorFixture(user_dir)
    fx.make_global()
    fx.add_conversation(CID, 1)
    for i in range(3):
        put(fx.writers["global"], "cursorDiskKV", f"bubbleId:{CID}:{uid('odd', i)}", {"role": "user"})
    mon = make_monitor(tmp_path, redis_server, fx, home=Path(env["TELEMETRY_TRAY_HOME"]))
    mon.pass_once()
    mon.close()
    fx.close()
    out = run_cli("doctor", env=env)
    line = _cursor_line(out.stdout)
    assert line.startswith("WARN cursor format") and "messages without type/text: 3" in line, out.stdout


def test_doctor_is_quiet_about_the_known_format(app_env, redis_server):
    env, user_dir = _doctor_env(app_env)
    fx = CursorFixture(user_dir)
    fx.make_global()
    fx.add_conversation(CID, 2)
    fx.add_legacy_conversation(OLD, 1)
    fx.close()  # Cursor quit: no -wal; doctor must not create one
    listing = sorted(os.listdir(fx.global_path.parent))
    out = run_cli("doctor", env=env)
    assert _cursor_line(out.stdout).startswith("OK   cursor format"), out.stdout
    assert sorted(os.listdir(fx.global_path.parent)) == listing
    with sqlite3.connect(fx.global_path) as conn:  # still Cursor's database, untouched
        assert conn.execute("SELECT COUNT(*) FROM cursorDiskKV").fetchone()[0] > 0


# -- Cursor 3.x: the conversation names its workspace ---------------------------------------------

def test_conversations_naming_their_workspace_get_its_hash(tmp_path, redis_server, cursor):
    """Cursor 3.x writes no ``allComposers`` list; composerData's
    ``workspaceIdentifier`` names the folder. Messages read before their
    conversation's composerData (earlier chunks) get it too, and a restart keeps it."""
    web = "/home/dev/web app"
    new = uid("composer", "v3")
    keys = cursor.add_conversation(new, 3, workspace=web)
    mon = make_monitor(tmp_path, redis_server, cursor, chunk_rows=2)
    while mon.run_once():
        pass
    evs = [e for e in stream_events(redis_server.client()) if e["session_id"] == new]
    assert sorted(e["metadata"]["key"] for e in evs if e["hook_type"] == "bubbleId") == sorted(keys)
    assert {e["workspace_hash"] for e in evs} == {workspace_hash(web)}
    mon.close()
    more = cursor.add_conversation(new, 1, workspace=web)
    again = make_monitor(tmp_path, redis_server, cursor, chunk_rows=2)
    while again.run_once():
        pass
    late = [e for e in stream_events(redis_server.client()) if e["metadata"]["key"] in more]
    assert len(late) == 2 and {e["workspace_hash"] for e in late} == {workspace_hash(web)}
