"""Pure parts of the monitors: credential filtering, capture modes, payload
fitting, session row merging, and which monitors build_monitors returns."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import orjson

from monitor_fixtures import FAKE_API_KEY, FAKE_JWT, monitor_config
from tray_app.config import CaptureSettings
from tray_app.monitors import build_monitors
from tray_app.monitors.emit import fit_payload
from tray_app.monitors.privacy import Capture, is_credential_key, looks_like_token, redact
from tray_app.monitors.session_rows import Agg, Row, canonical, merge
from tray_app.redis_conn import endpoint_from_url

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def test_credential_keys():
    for key in ("cursorAuth/accessToken", "cursorAuth/refreshToken", "cursorAuth/cachedEmail",
                "secret://{\"extensionId\":\"x\"}", "github.auth.token", "openai.apiKey"):
        assert is_credential_key(key), key
    for key in ("aiService.prompts", "aiService.generations", "composer.composerData",
                "bubbleId:0a1b:2c3d", "composerData:0a1b"):
        assert not is_credential_key(key), key


def test_redact_keeps_counts_and_removes_secrets():
    value = {"tokenCount": {"inputTokens": 10, "outputTokens": 3}, "usage": {"input_tokens": 5},
             "accessToken": "abc123", "nested": [{"apiKey": "k-1"}, {"note": f"use {FAKE_API_KEY} now"}],
             "jwt": FAKE_JWT, "speculativeSummarizationEncryptionKey": "c2VjcmV0", "text": "plain words"}
    out = redact(json.loads(json.dumps(value)))
    assert out["tokenCount"] == {"inputTokens": 10, "outputTokens": 3} and out["usage"] == {"input_tokens": 5}
    assert out["accessToken"] == "[redacted]" and out["nested"][0]["apiKey"] == "[redacted]"
    assert out["nested"][1]["note"] == "use [redacted:token] now"
    assert out["jwt"] == "[redacted:token]" and out["speculativeSummarizationEncryptionKey"] == "[redacted]"
    assert out["text"] == "plain words"
    for s in ("ghp_" + "a" * 36, "AKIAABCDEFGHIJKLMNOP", "xoxb-1234567890-abcdef", "Bearer " + "z" * 30):
        assert looks_like_token(s), s
    assert not looks_like_token("a normal sentence about tokens and keys")


def test_capture_modes():
    cap = Capture(CaptureSettings(prompts="hash", responses="none"))
    obj = {"p": "hello", "r": "answer", "empty": ""}
    cap.field(obj, "p", "prompts")
    cap.field(obj, "r", "responses")
    cap.field(obj, "missing", "prompts")
    cap.field(obj, "empty", "prompts")
    assert obj["p"].startswith("sha256:") and len(obj["p"]) == 7 + 64
    assert "r" not in obj and obj["empty"] == ""
    assert cap.reduced == {"prompts": "hash", "responses": "none"}
    assert Capture(CaptureSettings()).reduced == {}


def test_fit_payload_keeps_entries_under_the_limit():
    small = {"a": 1}
    assert fit_payload(small, 1000) is small
    big = {"text": "x" * 100_000, "items": ["y" * 5000] * 50, "n": 7}
    out = fit_payload(big, 20_000)
    assert len(orjson.dumps(out)) <= 20_000
    assert out["n"] == 7 and out["_truncated"]["original_bytes"] > 100_000
    wide = {f"k{i}": i for i in range(5000)}
    stub = fit_payload(wide, 4096)
    assert stub["_truncated"]["dropped"] is True and len(orjson.dumps(stub)) <= 4096


def test_merge_rules():
    agg = Agg()
    agg.add("session_start", T0, "ws1")
    agg.add("user_prompt", T0 + timedelta(minutes=2), None)
    agg.add("error", T0 + timedelta(hours=1), None)
    row = merge(None, agg)
    assert (row.started_at, row.last_activity_at, row.event_count, row.workspace_hash) == \
        (T0, T0 + timedelta(minutes=2), 3, "ws1")
    # an end older than the last activity changes nothing
    late = Agg()
    late.add("session_end", T0 + timedelta(minutes=1), None, "other")
    assert merge(row, late).ended_at is None
    # an idle end followed by any newer activity re-opens
    ended = replace(row, ended_at=T0 + timedelta(minutes=32), end_reason="timeout")
    more = Agg()
    more.add("tool_use", T0 + timedelta(minutes=10), None)
    assert merge(ended, more).ended_at is None
    # our own timeout events only count
    echo = Agg()
    echo.add("session_end", T0 + timedelta(minutes=32), None, "timeout")
    assert merge(ended, echo) == replace(ended, event_count=ended.event_count + 1)
    assert canonical(T0) == "2026-03-02T09:00:00.000000Z"
    assert Row.from_db(("w", canonical(T0), None, None, None, 4)) == Row("w", T0, None, None, None, 4)


def test_build_monitors_returns_the_enabled_ones(tmp_path):
    url = "redis://127.0.0.1:1/0"
    cfg = monitor_config(tmp_path / "home", url, cursor_user_dir=str(tmp_path / "cursor"),
                         claude_projects_dirs=[str(tmp_path / "claude")])
    ep = endpoint_from_url(url)
    mons = build_monitors(cfg, ep)
    assert [m.name for m in mons] == ["cursor_db", "claude_transcripts", "sessions"]
    assert not any(m.is_alive() for m in mons)
    assert hasattr(mons[2], "on_commit") and not hasattr(mons[0], "on_commit")
    assert str(tmp_path / "claude") in mons[1].health()["roots"]
    for m in mons:
        json.dumps(m.health())
        assert {"last_pass_at", "items_emitted", "errors", "last_error", "state"} <= set(m.health())
    off = replace(cfg, monitors=replace(cfg.monitors, cursor_enabled=False, sessions_enabled=False))
    assert [m.name for m in build_monitors(off, ep)] == ["claude_transcripts"]


def test_backlog_waits_when_the_engine_is_far_behind(redis_server, monkeypatch):
    from tray_app.monitors import emit
    from tray_app.redis_conn import EVENTS_STREAM, ensure_streams

    em = emit.Emitter(endpoint_from_url(redis_server.url))
    c = redis_server.client()
    assert em.stream_lag() == 0 and em.may_hurry()
    for i in range(5):
        c.xadd(EVENTS_STREAM, {"n": str(i)})
    assert em.stream_lag() == 5  # no consumer group yet: the stream's length
    ensure_streams(c)
    assert em.stream_lag() == 5  # the group has read nothing
    c.xreadgroup("processors", "x", {EVENTS_STREAM: ">"}, count=3)
    assert em.stream_lag() == 2
    monkeypatch.setattr(emit, "MAX_STREAM_LAG", 2)
    assert not em.may_hurry()
    em.close()
    down = emit.Emitter(endpoint_from_url("redis://127.0.0.1:1/0"), connect_timeout_s=0.2)
    assert down.stream_lag() is None and not down.may_hurry()
