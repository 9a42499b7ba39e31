"""Exact accounting end to end: real-format transcripts and a Cursor database
read by the real monitors, stored by the real engine, the usage tables kept by
the engine's worker, and `telemetry-tray report daily --json` (a real
subprocess) equal to numbers computed by hand; costs equal genai-prices' own."""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal
from pathlib import Path

import genai_prices
import pytest

from conftest import run_cli
from usage_fixtures import CURSOR_TOKENS, MYSTERY, REQUESTS, expected_claude, recording_engine

FIELDS = ("input_tokens", "output_tokens", "cache_creation_tokens", "cache_read_tokens")


@pytest.fixture()
def recorded(tmp_path: Path, app_env, monkeypatch):
    """Everything read and stored by a running engine; yields (engine, request times)."""
    with recording_engine(tmp_path, app_env["TELEMETRY_TRAY_REDIS_URL"], monkeypatch) as got:
        yield got


def report(env, *args: str) -> dict:
    r = run_cli("report", *args, "--json", env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_daily_report_equals_hand_computed_claude_numbers(recorded, app_env):
    eng, times = recorded
    want = expected_claude(times)
    rep = report(app_env, "daily", "--platform", "claude_code", "--timezone", "UTC")
    assert rep["pricing"] == {"source": "genai-prices", "version": genai_prices.__version__}
    assert [d["date"] for d in rep["days"]] == ["2026-03-02", "2026-03-03", "2026-03-04"]
    for day in rep["days"]:
        w = want[day["date"]]
        assert {k: day[k] for k in FIELDS} == {k: w[k] for k in FIELDS}, day["date"]
        assert day["total_tokens"] == sum(w[k] for k in FIELDS)
        assert day["requests"] == w["requests"]
        assert day["prompts"] == 1 and day["sessions"] == 1  # copies and the sidechain prompt not counted
        assert set(day["models"]) == set(w["models"])
        for model, m in day["models"].items():
            assert m["requests"] == w["models"][model]["requests"]
            if model == MYSTERY:
                assert m["cost_usd"] is None  # unknown to the library: no guess
            else:
                assert m["cost_usd"] == float(w["models"][model]["cost"]), model
    tot = rep["totals"]
    assert {k: tot[k] for k in FIELDS} == {k: sum(getattr(r, a) for r in REQUESTS.values())
                                           for k, a in zip(FIELDS, ("input", "output", "cache_write",
                                                                    "cache_read"))}
    assert tot["requests"] == 6 and tot["prompts"] == 3 and tot["sessions"] == 3
    priced = sum((m["cost"] for d in want.values() for m in d["models"].values()), Decimal(0))
    assert tot["cost_usd"] == float(priced)
    assert rep["unpriced"] == [MYSTERY]


def test_cursor_tokens_appear_under_cursor_as_its_own_numbers(recorded, app_env):
    eng, _ = recorded
    rep = report(app_env, "daily", "--platform", "cursor", "--timezone", "UTC")
    assert [d["date"] for d in rep["days"]] == ["2026-03-02"]
    t = rep["totals"]
    assert (t["input_tokens"], t["output_tokens"]) == CURSOR_TOKENS
    assert t["requests"] == 2 and t["prompts"] == 2 and t["sessions"] == 1
    assert list(t["models"]) == ["claude-4.5-sonnet"]  # from the conversation's composerData
    conn = sqlite3.connect(f"file:{eng.cfg.paths.database}?mode=ro", uri=True)
    try:
        assert conn.execute("SELECT DISTINCT cursor_reported FROM usage_requests WHERE platform='cursor'"
                            ).fetchall() == [(1,)]
    finally:
        conn.close()
    r = run_cli("sessions", "--json", "--platform", "cursor", env=app_env)
    (conv,) = json.loads(r.stdout)
    assert conv["assistant"] == "cursor" and conv["requests"] == 2 and conv["tool_calls"] == 2  # terminal calls
    assert conv["cursor_reported_cost_usd"] == 0.04  # composer usageData: 4 cents, as Cursor reports it
    both = report(app_env, "daily", "--timezone", "UTC")
    assert both["totals"]["requests"] == 8
    assert both["days"][0]["sessions"] == 2  # Claude session A and the Cursor conversation


def test_days_follow_the_time_zone_and_filters(recorded, app_env):
    rep = report(app_env, "daily", "--platform", "claude_code", "--timezone", "America/Los_Angeles")
    # R4 at 01:59 UTC on March 3 is March 2 in California
    assert [d["date"] for d in rep["days"]] == ["2026-03-02", "2026-03-04"]
    assert rep["days"][0]["requests"] == 4
    only = report(app_env, "daily", "--since", "2026-03-03", "--until", "2026-03-03", "--timezone", "UTC")
    assert [d["date"] for d in only["days"]] == ["2026-03-03"]
    web = report(app_env, "models", "--project", "/home/dev/web")
    assert {m["model"] for m in web["models"]} == {REQUESTS["R5"].model, REQUESTS["R6"].model}
    monthly = report(app_env, "monthly", "--timezone", "UTC")
    assert [m["month"] for m in monthly["months"]] == ["2026-03"]
    assert monthly["totals"]["total_tokens"] == report(app_env, "daily", "--timezone", "UTC")["totals"]["total_tokens"]


def test_sessions_list(recorded, app_env):
    r = run_cli("sessions", "--json", env=app_env)
    assert r.returncode == 0, r.stderr
    rows = {s["session_id"]: s for s in json.loads(r.stdout)}
    from usage_fixtures import SESSIONS
    a = rows[SESSIONS["A"]]
    assert a["assistant"] == "claude_code" and a["prompts"] == 1 and a["requests"] == 3
    assert a["tool_calls"] == 2  # Bash and Task; the subagent's work is its own requests
    assert a["duration_s"] > 0
    text = run_cli("sessions", env=app_env)
    assert text.returncode == 0 and SESSIONS["A"][:12] in text.stdout


def test_session_timeline(recorded, app_env):
    from usage_fixtures import SESSIONS
    r = run_cli("session", SESSIONS["A"][:10], "--json", env=app_env)
    assert r.returncode == 0, r.stderr
    tl = json.loads(r.stdout)
    assert tl["session_id"] == SESSIONS["A"] and tl["assistant"] == "claude_code"
    kinds = [s["kind"] for s in tl["steps"]]
    assert kinds == ["prompt", "turn", "turn"]  # R1's three lines are one turn; <synthetic> left out
    assert tl["steps"][0]["text"] == "Add a sum helper and run the tests"
    r1, r2 = tl["steps"][1], tl["steps"][2]
    assert r1["output_tokens"] == 120 and r1["text"] == "Adding total()."
    bash = r1["calls"][0]
    assert (bash["kind"], bash["tool"], bash["outcome"], bash["input"]) == ("shell", "Bash", "ok", "pytest -q")
    assert bash["duration_s"] == 3.0
    task = r2["calls"][0]
    assert task["tool"] == "Task" and task["outcome"] == "ok"
    sub = task["subagents"][0]  # the subagent under the call that started it
    assert sub["agent_id"] == "agent01" and [s["kind"] for s in sub["steps"]] == ["prompt", "turn"]
    bare = run_cli("session", SESSIONS["A"], "--json", "--no-content", env=app_env)
    assert "Add a sum helper" not in bare.stdout and "pytest -q" not in bare.stdout
    assert [s["kind"] for s in json.loads(bare.stdout)["steps"]] == kinds
    text = run_cli("session", SESSIONS["A"], "--timezone", "UTC", env=app_env)
    assert text.returncode == 0, text.stderr
    assert "2026-03-02 09:30:03  > prompt: Add a sum helper" in text.stdout
    assert "- shell Bash [ok 3.0 s]  pytest -q" in text.stdout
    missing = run_cli("session", "nope", env=app_env)
    assert missing.returncode == 64 and "no session 'nope'" in missing.stderr
