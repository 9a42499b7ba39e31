"""ClaudeCodeTranscriptMonitor against real JSONL files shaped like Claude Code's and a real server."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import free_port, wait_for
from monitor_fixtures import (FAKE_API_KEY, ClaudeProjects, Transcript, jline, monitor_config, stream_events,
                              uid, write_conversation)
from tray_app import events
from tray_app.monitors import claude_transcripts
from tray_app.monitors.claude_transcripts import ClaudeCodeTranscriptMonitor, default_roots
from tray_app.monitors.state_store import StateStore, state_file
from tray_app.redis_conn import endpoint_from_url

CWD = "/home/dev/shop"


@pytest.fixture()
def projects(tmp_path: Path) -> ClaudeProjects:
    return ClaudeProjects(tmp_path / "claude" / "projects")


def make_monitor(tmp_path: Path, url: str, projects: ClaudeProjects, **kw) -> ClaudeCodeTranscriptMonitor:
    cfg = monitor_config(tmp_path / "home", url, poll_interval_s=0.05,
                         **{k: v for k, v in kw.items() if k.startswith("capture_")})
    opts = {k: v for k, v in kw.items() if not k.startswith("capture_")}
    return ClaudeCodeTranscriptMonitor(cfg, endpoint_from_url(url), roots=[projects.root], **opts)


def offsets(tmp_path: Path) -> dict[str, dict]:
    store = StateStore(state_file(tmp_path / "home" / "state", "claude_transcripts"))
    try:
        return store.items("file")
    finally:
        store.close()


def test_every_line_becomes_an_event(tmp_path, redis_server, projects):
    main, sub, written = write_conversation(projects, CWD)
    mon = make_monitor(tmp_path, redis_server.url, projects)
    assert mon.pass_once()
    evs = stream_events(redis_server.client())
    assert len(evs) == len(written) == 13
    assert all(e["event_type"] == "transcript_trace" and e["platform"] == "claude_code" for e in evs)
    assert all(e["metadata"]["source"] == "transcript_monitor" for e in evs)
    assert {e["hook_type"] for e in evs} == {"user", "assistant", "system", "summary", "file-history-snapshot"}
    # one session for the main file and its subagent; the summary line (no sessionId) from the file name
    assert {e["session_id"] for e in evs} == {main.session_id}
    by_uuid = {e["metadata"]["uuid"]: e for e in evs if "uuid" in e["metadata"]}
    for obj in written:
        if "uuid" in obj:
            e = by_uuid[obj["uuid"]]
            assert e["event_id"] == events.deterministic_event_id("claude_code", main.session_id, obj["uuid"])
            assert e["timestamp"] == obj["timestamp"]
            assert e["workspace_hash"] == events.workspace_hash(CWD)
    assistant = next(e for e in evs if e["hook_type"] == "assistant")
    assert assistant["payload"]["message"]["usage"]["cache_read_input_tokens"] == 19024
    assert assistant["metadata"]["model"] == "claude-sonnet-4-5-20250929"
    subs = [e for e in evs if e["metadata"].get("subagent")]
    assert len(subs) == 2 and all(e["metadata"]["agent_id"] == "a1b2c3d" for e in subs)
    assert all(e["metadata"]["file"] == str(sub.path) for e in subs)
    main_lines = sorted(e["metadata"]["line"] for e in evs if e["metadata"]["file"] == str(main.path))
    assert main_lines == list(range(1, 12))
    assert len({e["event_id"] for e in evs}) == len(evs)
    h = mon.health()
    assert h["items_emitted"] == 13 and h["files_tracked"] == 2 and h["errors"] == 0


def test_a_partial_last_line_waits_for_its_newline(tmp_path, redis_server, projects):
    t = projects.session(CWD, uid("s", 1))
    t.user("first prompt")
    line = jline(t._base("user") | {"message": {"role": "user", "content": "second prompt"}})
    t.write(line[:25])
    mon = make_monitor(tmp_path, redis_server.url, projects)
    assert mon.run_once() == 1
    assert mon.run_once() == 0
    t.write(line[25:])
    assert mon.run_once() == 1
    evs = stream_events(redis_server.client())
    assert [e["payload"]["message"]["content"] for e in evs] == ["first prompt", "second prompt"]
    assert [e["metadata"]["line"] for e in evs] == [1, 2]


def test_truncated_and_replaced_files_are_read_from_the_start(tmp_path, redis_server, projects):
    t = projects.session(CWD, uid("s", 2))
    for i in range(5):
        t.user(f"prompt {i}")
    mon = make_monitor(tmp_path, redis_server.url, projects)
    assert mon.run_once() == 5
    # truncated (e.g. rewritten by a tool): shorter than our offset
    with open(t.path, "wb") as fh:
        fh.write(jline({"type": "user", "uuid": uid("new", 1), "sessionId": t.session_id,
                        "timestamp": "2026-03-02T10:00:00.000Z", "message": {"role": "user", "content": "fresh"}}))
    assert mon.run_once() == 1
    # replaced by another file (new inode), longer than before, old lines kept: same ids
    old = t.path.read_bytes()
    tmp = t.path.with_suffix(".tmp")
    tmp.write_bytes(old + jline({"type": "user", "uuid": uid("new", 2), "sessionId": t.session_id,
                                 "timestamp": "2026-03-02T10:01:00.000Z",
                                 "message": {"role": "user", "content": "after replace"}}))
    os.replace(tmp, t.path)
    assert mon.run_once() == 2
    evs = stream_events(redis_server.client())
    texts = [e["payload"]["message"]["content"] for e in evs]
    assert texts[5:] == ["fresh", "fresh", "after replace"]
    assert evs[5]["event_id"] == evs[6]["event_id"]  # a re-read makes the same id: stored once
    assert mon.health()["restarts_from_zero"] == 2
    assert offsets(tmp_path)[str(t.path)]["offset"] == t.path.stat().st_size


def test_a_rewritten_file_of_the_same_size_is_detected(tmp_path, redis_server, projects):
    t = projects.session(CWD, uid("s", 3))
    t.user("aaaa")
    mon = make_monitor(tmp_path, redis_server.url, projects)
    assert mon.run_once() == 1
    data = t.path.read_bytes()
    with open(t.path, "r+b") as fh:  # same inode, same size, other content, then one more line
        fh.write(data.replace(b"aaaa", b"bbbb"))
    t.user("next")
    assert mon.run_once() == 2
    assert [e["payload"]["message"]["content"] for e in stream_events(redis_server.client())] == \
        ["aaaa", "bbbb", "next"]


def test_a_malformed_line_is_an_error_event_and_reading_goes_on(tmp_path, redis_server, projects):
    t = projects.session(CWD, uid("s", 4))
    t.user("before")
    t.write(b'{"type":"user","uuid": broken\n')
    t.write(b"[1, 2, 3]\n")
    t.write(b"\n")
    t.user("after")
    mon = make_monitor(tmp_path, redis_server.url, projects)
    mon.pass_once()
    evs = stream_events(redis_server.client())
    assert [e["event_type"] for e in evs] == ["transcript_trace", "error", "error", "transcript_trace"]
    errs = [e for e in evs if e["event_type"] == "error"]
    assert [(e["payload"]["file"], e["payload"]["line"]) for e in errs] == [(str(t.path), 2), (str(t.path), 3)]
    assert errs[0]["session_id"] == t.session_id and errs[0]["metadata"]["source"] == "transcript_monitor"
    assert "broken" not in json.dumps(errs)  # the line's content is not copied into the error
    assert evs[-1]["metadata"]["line"] == 5
    assert mon.health()["malformed_lines"] == 2
    assert mon.run_once() == 0  # and not reported twice


def test_offset_moves_only_after_the_xadd_succeeded(tmp_path, redis_server, projects):
    main, _sub, written = write_conversation(projects, CWD)
    down = make_monitor(tmp_path, f"redis://127.0.0.1:{free_port()}/0", projects)
    assert down.pass_once() is False
    h = down.health()
    assert h["errors"] == 1 and "cannot add monitor events" in h["last_error"]
    assert all(m["offset"] == 0 for m in offsets(tmp_path).values())
    down.close()
    up = make_monitor(tmp_path, redis_server.url, projects)  # Redis back, app restarted
    assert up.pass_once()
    evs = stream_events(redis_server.client())
    assert len(evs) == len(written) and len({e["event_id"] for e in evs}) == len(evs)
    assert offsets(tmp_path)[str(main.path)]["offset"] == main.path.stat().st_size


def test_a_restart_sends_nothing_twice(tmp_path, redis_server, projects):
    main, _sub, written = write_conversation(projects, CWD)
    first = make_monitor(tmp_path, redis_server.url, projects)
    assert first.run_once() == len(written)
    first.close()
    main.user("one more")
    second = make_monitor(tmp_path, redis_server.url, projects)
    assert second.run_once() == 1
    evs = stream_events(redis_server.client())
    assert len({e["event_id"] for e in evs}) == len(evs) == len(written) + 1


def test_lines_longer_than_a_read_chunk(tmp_path, redis_server, projects, monkeypatch):
    monkeypatch.setattr(claude_transcripts, "READ_CHUNK_BYTES", 64)
    t = projects.session(CWD, uid("s", 5))
    texts = [f"prompt {i} " + "x" * (50 * i) for i in range(6)]
    for text in texts:
        t.user(text)
    mon = make_monitor(tmp_path, redis_server.url, projects)
    assert mon.run_once() == 6
    assert [e["payload"]["message"]["content"] for e in stream_events(redis_server.client())] == texts


def test_budget_per_pass_continues_where_it_stopped(tmp_path, redis_server, projects):
    t = projects.session(CWD, uid("s", 6))
    for i in range(7):
        t.user(f"p{i}")
    mon = make_monitor(tmp_path, redis_server.url, projects, max_lines_per_pass=3)
    counts = [mon.run_once() for _ in range(4)]
    assert counts == [3, 3, 1, 0]
    assert [e["payload"]["message"]["content"] for e in stream_events(redis_server.client())] == \
        [f"p{i}" for i in range(7)]


def test_capture_settings_and_credentials(tmp_path, redis_server, projects):
    main, _sub, _ = write_conversation(projects, CWD)
    main.user(f"use this key: {FAKE_API_KEY} please")
    mon = make_monitor(tmp_path, redis_server.url, projects, capture_prompts="none", capture_responses="hash",
                       capture_shell_output="hash", capture_file_contents="none")
    mon.run_once()
    evs = stream_events(redis_server.client())
    raw = json.dumps(evs)
    assert FAKE_API_KEY not in raw
    assert "Add a sum helper" not in raw and "5 passed" not in raw and "return sum(xs)" not in raw
    users = [e["payload"] for e in evs if e["hook_type"] == "user" and isinstance(
        e["payload"]["message"].get("content", ""), str)]
    assert users and all("content" not in u["message"] for u in users)
    bash_result = next(e["payload"] for e in evs if "stdout" in (e["payload"].get("toolUseResult") or {}))
    assert bash_result["toolUseResult"]["stdout"].startswith("sha256:")
    assert bash_result["message"]["content"][0]["content"].startswith("sha256:")
    write_use = next(b for e in evs if e["hook_type"] == "assistant"
                     for b in e["payload"]["message"]["content"] if b.get("name") == "Write")
    assert "content" not in write_use["input"] and write_use["input"]["file_path"] == "/home/dev/shop/app.py"
    text = next(b for e in evs if e["hook_type"] == "assistant"
                for b in e["payload"]["message"]["content"] if b.get("type") == "text")
    assert text["text"].startswith("sha256:")


def test_full_capture_keeps_content_but_not_tokens(tmp_path, redis_server, projects):
    t = projects.session(CWD, uid("s", 7))
    t.user(f"my key is {FAKE_API_KEY}")
    mon = make_monitor(tmp_path, redis_server.url, projects)
    mon.run_once()
    (ev,) = stream_events(redis_server.client())
    assert ev["payload"]["message"]["content"] == "my key is [redacted:token]"


def test_thread_picks_up_new_lines(tmp_path, redis_server, projects):
    t = projects.session(CWD, uid("s", 8))
    t.user("hello")
    mon = make_monitor(tmp_path, redis_server.url, projects)
    mon.start()
    try:
        wait_for(lambda: len(stream_events(redis_server.client())) == 1, what="first line")
        t.user("again")
        wait_for(lambda: len(stream_events(redis_server.client())) == 2, what="appended line")
    finally:
        mon.stop()
        mon.join(5)
    assert not mon.is_alive()


def test_default_roots():
    home = Path("/home/u")
    assert default_roots({}, home) == [home / ".claude" / "projects", home / ".config" / "claude" / "projects"]
    env = {"CLAUDE_CONFIG_DIR": "/opt/claude", "XDG_CONFIG_HOME": "/x"}
    assert default_roots(env, home) == [Path("/opt/claude/projects"), home / ".claude" / "projects",
                                        Path("/x/claude/projects")]


def test_summary_without_session_takes_the_files_session(tmp_path, redis_server, projects):
    sid = uid("s", 9)
    t = Transcript(projects.root / "-home-dev-shop" / f"{sid}.jsonl", sid, CWD)
    t.summary("Refactor of the cart")
    mon = make_monitor(tmp_path, redis_server.url, projects)
    mon.run_once()
    (ev,) = stream_events(redis_server.client())
    assert ev["session_id"] == sid and ev["hook_type"] == "summary"
    assert "workspace_hash" not in ev  # no cwd seen yet in this file


def test_a_file_cut_back_to_its_first_lines_is_read_again(tmp_path, redis_server, projects):
    """The first bytes are unchanged (so only the size tells): e.g. a session rewound."""
    t = projects.session(CWD, uid("s", 10))
    for i in range(12):
        t.user(f"prompt {i} " + "y" * 900)
    mon = make_monitor(tmp_path, redis_server.url, projects)
    assert mon.run_once() == 12
    lines = t.path.read_bytes().splitlines(keepends=True)
    t.path.write_bytes(b"".join(lines[:6]))  # > 4 KiB kept, as it was
    t.user("after the rewind")
    assert t.path.stat().st_size < sum(len(x) for x in lines)
    mon.run_once()
    evs = stream_events(redis_server.client())
    assert evs[-1]["payload"]["message"]["content"] == "after the rewind"
    assert evs[-1]["metadata"]["line"] == 7


def test_overlapping_roots_read_each_file_once(tmp_path, redis_server, projects):
    write_conversation(projects, CWD)
    link = tmp_path / "claude-config-link"
    link.symlink_to(projects.root.parent)  # e.g. CLAUDE_CONFIG_DIR pointing at ~/.claude
    cfg = monitor_config(tmp_path / "home", redis_server.url)
    mon = ClaudeCodeTranscriptMonitor(cfg, endpoint_from_url(redis_server.url),
                                      roots=[projects.root, link / "projects", projects.root / "-home-dev-shop"])
    assert mon.run_once() == 13
    assert mon.health()["files_tracked"] == 2


def _summary_file(projects: ClaudeProjects, sid: str, leaf: str | None) -> tuple[Transcript, list[dict]]:
    t = projects.session(CWD, sid)
    t.write({"type": "summary", "summary": "Refactor the parser", "leafUuid": leaf or "not-in-this-file"})
    first = t.user("first prompt")
    second = t.user("second prompt")
    os.utime(t.path, (2_000_000_000, 2_000_000_000))  # last write in 2033: must not date the summary
    return t, [first, second]


@pytest.mark.parametrize("refers_to", ["second", "missing"])
def test_a_leading_summary_line_is_dated_from_the_session_not_the_file_time(tmp_path, redis_server, projects,
                                                                            refers_to):
    sid = uid("s", "summary", refers_to)
    # the leaf is the second line of the file (uuids are deterministic in the fixture)
    probe = ClaudeProjects(tmp_path / "probe")
    _, lines = _summary_file(probe, sid, None)
    leaf = lines[1]["uuid"] if refers_to == "second" else None
    t, lines = _summary_file(projects, sid, leaf)
    mon = make_monitor(tmp_path, redis_server.url, projects)
    assert mon.pass_once()
    evs = stream_events(redis_server.client())
    summary = next(e for e in evs if e["hook_type"] == "summary")
    want = lines[1]["timestamp"] if refers_to == "second" else lines[0]["timestamp"]
    assert summary["timestamp"] == want
    assert not summary["timestamp"].startswith("2033")


def test_assistant_rows_carry_message_request_model_and_usage_in_metadata(tmp_path, redis_server, projects):
    t = projects.session(CWD, uid("s", "usage"))
    t.user("count my tokens")
    a = t.assistant([{"type": "text", "text": "done"}])
    extra = t._base("assistant")
    extra["requestId"] = "req_011CUsageSplit"
    extra["message"] = {"model": "claude-opus-4-1-20250805", "id": "msg_01SplitCache", "type": "message",
                        "role": "assistant", "content": [{"type": "text", "text": "ok"}],
                        "usage": {"input_tokens": 3, "output_tokens": 7, "cache_creation_input_tokens": 1500,
                                  "cache_read_input_tokens": 20000,
                                  "cache_creation": {"ephemeral_5m_input_tokens": 1000,
                                                     "ephemeral_1h_input_tokens": 500},
                                  "server_tool_use": {"web_search_requests": 2}, "service_tier": "standard"}}
    t.write(extra)
    mon = make_monitor(tmp_path, redis_server.url, projects)
    assert mon.pass_once()
    by_uuid = {e["metadata"].get("uuid"): e for e in stream_events(redis_server.client())}
    m1 = by_uuid[a["uuid"]]["metadata"]
    assert m1["message_id"] == a["message"]["id"] and m1["request_id"] == a["requestId"]
    assert m1["model"] == "claude-sonnet-4-5-20250929"
    assert m1["usage"] == {"input_tokens": 12, "output_tokens": 85, "cache_creation_input_tokens": 187,
                           "cache_read_input_tokens": 19024}
    m2 = by_uuid[extra["uuid"]]["metadata"]
    assert m2["usage"] == {"input_tokens": 3, "output_tokens": 7, "cache_creation_input_tokens": 1500,
                           "cache_read_input_tokens": 20000, "ephemeral_5m_input_tokens": 1000,
                           "ephemeral_1h_input_tokens": 500, "server_tool_use.web_search_requests": 2}
    assert "message_id" not in by_uuid[next(iter(u for u, e in by_uuid.items()
                                                 if e["hook_type"] == "user"))]["metadata"]


def test_an_import_of_history_reports_its_progress_in_health_the_log_and_the_menu(tmp_path, redis_server, projects,
                                                                                  caplog):
    import logging

    from tray_app.config import TraySettings
    from tray_app.engine.health import RUNNING, HealthSnapshot
    from tray_app.tray.menu import build_menu

    for s in range(4):
        t = projects.session(CWD, uid("s", "history", s))
        for i in range(10):
            t.user(f"prompt {i} " + "x" * 200)
    caplog.set_level(logging.INFO, logger="tray_app.monitors.claude_transcripts")
    mon = make_monitor(tmp_path, redis_server.url, projects, max_lines_per_pass=15)
    assert mon.pass_once()
    pct = mon.health()["import_progress_pct"]
    assert 0 < pct < 100
    assert any("importing transcripts:" in r.getMessage() for r in caplog.records)
    snap = HealthSnapshot(state=RUNNING, monitors={"claude_transcripts": mon.health()})
    assert f"(importing history: {pct:.0f}%)" in build_menu(snap, TraySettings()).text()
    for _ in range(10):
        if mon.health()["import_progress_pct"] is None:
            break
        assert mon.pass_once()
    assert mon.health()["import_progress_pct"] is None
    assert any("transcripts imported:" in r.getMessage() for r in caplog.records)
    assert len(stream_events(redis_server.client())) == 40
