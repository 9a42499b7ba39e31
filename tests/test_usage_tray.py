"""The tray's usage line and "Usage report...": today's tokens, cost and prompts
come from the derived usage tables (through the engine's health snapshot,
refreshed by the maintenance thread), and the menu shows them."""

from __future__ import annotations

from typing import Any

from conftest import RedisProc, wait_for
from engine_util import push, running_engine
from tray_app import events
from tray_app.config import TraySettings
from tray_app.engine.health import RUNNING, HealthSnapshot
from tray_app.redis_conn import ensure_streams
from tray_app.tray.menu import A_USAGE_REPORT, build_menu, usage_line


def test_the_menu_shows_todays_usage_and_offers_the_report() -> None:
    snap = HealthSnapshot(state=RUNNING, usage_today_tokens=1_234_567, usage_today_cost_usd=3.4123,
                          usage_today_prompts=42)
    model = build_menu(snap, TraySettings())
    texts = [e.text for e in model.entries]
    assert "Usage today: 1.2M tokens · $3.41 · 42 prompts" in texts
    assert any(e.action == A_USAGE_REPORT and e.text == "Usage report..." for e in model.entries)
    # nothing priced (unknown models only): no dollar amount is made up
    assert usage_line(HealthSnapshot(usage_today_tokens=950, usage_today_prompts=1)) == \
        "Usage today: 950 tokens · 1 prompt"


def _assistant_line(i: int, model: str, tokens: dict[str, int]) -> dict[str, Any]:
    now = events.utc_now_iso()
    mid, rid = f"msg_tray{i:04d}", f"req_tray{i:04d}"
    return {
        "event_id": events.deterministic_event_id("claude_code", "s-tray", f"u{i}"),
        "platform": "claude_code", "event_type": "transcript_trace", "timestamp": now,
        "session_id": "s-tray", "external_session_id": "s-tray", "hook_type": "assistant",
        "workspace_hash": "0123456789abcdef",
        "payload": {"type": "assistant", "uuid": f"u{i}", "requestId": rid, "timestamp": now,
                    "message": {"id": mid, "model": model, "role": "assistant",
                                "content": [{"type": "text", "text": "ok"}], "usage": tokens}},
        "metadata": {"source": "transcript_monitor", "model": model, "message_id": mid, "request_id": rid,
                     "usage": tokens, "uuid": f"u{i}"},
    }


def test_health_carries_todays_usage_from_the_usage_tables(app_env, redis_server: RedisProc,
                                                           monkeypatch) -> None:
    monkeypatch.setattr("tray_app.engine.maintenance.USAGE_REFRESH_S", 0.2)
    c = redis_server.client()
    ensure_streams(c)
    tokens = {"input_tokens": 1000, "output_tokens": 200, "cache_creation_input_tokens": 300,
              "cache_read_input_tokens": 4000}
    with running_engine(redis_server.url) as eng:
        push(c, [_assistant_line(i, "claude-sonnet-4-5-20250929", tokens) for i in range(3)])
        wait_for(lambda: eng.health().usage_today_tokens == 3 * 5500, timeout=20,
                 what="today's tokens in the health snapshot")
        snap = eng.health()
    assert snap.usage_today_cost_usd is not None and snap.usage_today_cost_usd > 0
    assert "Usage today: 16.5k tokens · $" in usage_line(snap)
