"""The monitors never get stuck on one line or item: whatever a transcript line
or a Cursor item holds, it becomes an event (or an error event naming it) and
the lines after it are imported. Real JSONL files, a real Cursor-shaped
database, a real server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monitor_fixtures import ClaudeProjects, uid
from test_monitor_transcripts import make_monitor
from tray_app.monitors import claude_transcripts
from tray_app.redis_conn import EVENTS_STREAM

CWD = "/home/dev/deep"


def raw_payloads(client) -> list[bytes]:
    """The payload text of every entry, undecoded (the test checks its exactness)."""
    return [fields[b"payload"] for _, fields in client.xrange(EVENTS_STREAM)]


@pytest.fixture()
def projects(tmp_path: Path) -> ClaudeProjects:
    return ClaudeProjects(tmp_path / "claude" / "projects")


def test_deep_and_big_integer_lines_are_imported_exactly_and_the_next_line_too(tmp_path, redis_server, projects):
    t = projects.session(CWD, uid("s", "deep"))
    deep = t._base("user")
    deep["message"] = {"role": "user", "content": "deep one"}
    deep["toolUseResult"] = json.loads("[" * 300 + "]" * 300)
    t.write(deep)
    big = t._base("user")
    big["message"] = {"role": "user", "content": "big one", "usage": {"input_tokens": 123456789012345678901234567890}}
    t.write(big)
    t.user("after them")
    mon = make_monitor(tmp_path, redis_server.url, projects)
    assert mon.pass_once()
    payloads = raw_payloads(redis_server.client())
    assert len(payloads) == 3
    assert payloads[0].count(b"[") >= 300
    assert b"123456789012345678901234567890" in payloads[1]  # not 1.2345678901234568e+29
    assert json.loads(payloads[2])["message"]["content"] == "after them"
    assert mon.health()["errors"] == 0


def test_a_line_that_breaks_the_mapping_becomes_an_error_event_and_the_file_goes_on(
        tmp_path, redis_server, projects, monkeypatch: pytest.MonkeyPatch) -> None:
    real = claude_transcripts.line_event

    def line_event(obj, line, **kw):  # type: ignore[no-untyped-def]
        if b"mapping bug here" in line:
            raise KeyError("a field the mapping did not expect")
        return real(obj, line, **kw)

    monkeypatch.setattr(claude_transcripts, "line_event", line_event)
    t = projects.session(CWD, uid("s", "bug"))
    t.user("before")
    t.user("mapping bug here")
    t.user("after")
    mon = make_monitor(tmp_path, redis_server.url, projects)
    assert mon.pass_once()
    assert mon.pass_once()  # nothing is retried: the second pass emits nothing new
    entries = [fields for _, fields in redis_server.client().xrange(EVENTS_STREAM)]
    assert [e[b"event_type"] for e in entries] == [b"transcript_trace", b"error", b"transcript_trace"]
    err = json.loads(entries[1][b"payload"])
    assert err["line"] == 2 and "KeyError" in err["detail"] and "mapping bug here" not in entries[1][b"payload"].decode()
    assert mon.health()["unprocessable_lines"] == 1


def test_a_cursor_item_that_breaks_the_mapping_becomes_an_error_event_and_the_rest_is_imported(
        tmp_path, redis_server, monkeypatch: pytest.MonkeyPatch) -> None:
    from monitor_fixtures import CursorFixture, stream_events
    from test_monitor_cursor import make_monitor as make_cursor_monitor
    from tray_app.monitors import cursor_db

    fx = CursorFixture(tmp_path / "Cursor" / "User")
    fx.make_global()
    cid = uid("composer", "bug")
    keys = fx.add_conversation(cid, 2)
    bad_key = keys[1]
    real = cursor_db.to_event

    def to_event(it, *a, **kw):  # type: ignore[no-untyped-def]
        if it.key == bad_key:
            raise TypeError("Integer exceeds 64-bit range")
        return real(it, *a, **kw)

    monkeypatch.setattr(cursor_db, "to_event", to_event)
    try:
        mon = make_cursor_monitor(tmp_path, redis_server, fx)
        assert mon.pass_once() and mon.pass_once()
        evs = stream_events(redis_server.client())
    finally:
        fx.close()
    errors = [e for e in evs if e["event_type"] == "error"]
    assert len(errors) == 1 and errors[0]["payload"]["key"] == bad_key
    assert "TypeError" in errors[0]["payload"]["detail"]
    bubbles = [e for e in evs if e["hook_type"] == "bubbleId"]
    assert len(bubbles) == 3  # the 4 bubbles less the broken one, each once
    assert mon.health()["unprocessable_items"] == 1 and mon.health()["errors"] == 0
