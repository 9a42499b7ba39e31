"""Claude Code's own account of its cost beside ours: `claude_code.api_request`
log records sent by the OpenTelemetry SDK's own OTLP/HTTP exporter (as Claude
Code sends them) to the engine's receiver become `api_request` events, are
kept apart from the transcript accounting, and `report daily` shows both per
day, flagging days more than 5% apart."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest

from conftest import run_cli, wait_for
from otlp_util import log_records
from test_usage_report import recorded  # noqa: F401  (the fixture)
from tray_app.usage import html as usage_html
from usage_fixtures import REQUESTS, SESSIONS, library_cost, settled


def api_request(session: str, name: str, at, cost: Decimal) -> dict:
    """One claude_code.api_request log record (Logger.emit arguments), numbers as
    strings the way Claude Code's exporter sends them."""
    r = REQUESTS[name]
    when = at + timedelta(seconds=1)
    return {"body": "claude_code.api_request", "timestamp": int(when.timestamp() * 1e9),
            "attributes": {"event.name": "api_request", "session.id": session,
                           "event.timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                           "model": r.model, "cost_usd": str(cost), "duration_ms": "1200",
                           "input_tokens": str(r.input), "output_tokens": str(r.output),
                           "cache_read_tokens": str(r.cache_read), "cache_creation_tokens": str(r.cache_write)}}


@pytest.fixture()
def with_claude_costs(recorded):  # noqa: F811
    """Day 1: Claude reports R1-R3 at the library's prices (agrees); day 2: R4
    at 10% more (differs); day 3: nothing reported."""
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs.export import LogRecordExportResult

    eng, times = recorded
    exact = {k: library_cost(REQUESTS[k], times[k]) for k in ("R1", "R2", "R3", "R4")}
    specs = [api_request(SESSIONS["A"], k, times[k], exact[k]) for k in ("R1", "R2", "R3")]
    specs.append(api_request(SESSIONS["B"], "R4", times["R4"], exact["R4"] * Decimal("1.10")))
    assert eng.otlp.listening.wait(10), eng.health().otlp_receiver
    exporter = OTLPLogExporter(endpoint=f"{eng.otlp.url}/v1/logs", timeout=10)
    try:
        assert exporter.export(log_records(specs)) == LogRecordExportResult.SUCCESS
    finally:
        exporter.shutdown()
    wait_for(lambda: settled(eng) and _reported(eng) == 4, timeout=30, what="the api_request events derived")
    return eng, times, exact


def _reported(eng) -> int:
    import sqlite3

    conn = sqlite3.connect(f"file:{eng.cfg.paths.database}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT COUNT(*) FROM usage_reported_costs").fetchone()[0]
    finally:
        conn.close()


def test_report_daily_shows_claude_codes_own_cost_and_flags_days_that_differ(with_claude_costs):
    _eng, _times, exact = with_claude_costs
    out = run_cli("report", "daily", "--json", "--timezone", "UTC")
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    days = {d["date"]: d for d in rep["days"]}
    d1, d2, d3 = (days[k]["claude_reported"] for k in ("2026-03-02", "2026-03-03", "2026-03-04"))
    ours1 = sum(exact[k] for k in ("R1", "R2", "R3"))
    assert d1["requests"] == 3 and d1["our_requests"] == 3
    assert d1["cost_usd"] == pytest.approx(float(ours1), rel=1e-9)
    assert d1["our_cost_usd"] == days["2026-03-02"]["models"][REQUESTS["R1"].model]["cost_usd"] + \
        days["2026-03-02"]["models"][REQUESTS["R3"].model]["cost_usd"]
    assert d1["differs"] is False and abs(d1["difference_pct"]) < 0.01
    assert d2["requests"] == 1 and d2["differs"] is True
    assert d2["difference_pct"] == pytest.approx(-100 / 11, abs=0.01)  # ours is 1/1.1 of theirs
    assert d3 is None  # nothing reported that day
    # the transcript accounting is untouched: reported requests are not added to ours
    claude_only = json.loads(run_cli("report", "daily", "--json", "--platform", "claude_code").stdout)
    assert claude_only["totals"]["requests"] == len(REQUESTS)
    assert claude_only["totals"]["claude_reported"] == rep["totals"]["claude_reported"]
    t = rep["totals"]["claude_reported"]
    assert t["requests"] == 4 and t["differs"] is True
    # the text table: a column, the flag, and what it means
    text = run_cli("report", "daily", "--timezone", "UTC").stdout
    row2 = next(line for line in text.splitlines() if line.startswith("2026-03-03"))
    row3 = next(line for line in text.splitlines() if line.startswith("2026-03-04"))
    assert "Claude's cost" in text and row2.rstrip().endswith("!") and row3.rstrip().endswith("-")
    assert "differs by more than 5%" in text
    # --platform cursor has no Claude Code cost to compare
    cur = json.loads(run_cli("report", "daily", "--json", "--platform", "cursor").stdout)
    assert cur["totals"]["claude_reported"] is None


def test_the_html_report_shows_the_comparison(with_claude_costs, tmp_path):
    eng, _times, _exact = with_claude_costs
    import sqlite3
    from datetime import datetime, timezone

    conn = sqlite3.connect(f"file:{eng.cfg.paths.database}?mode=ro", uri=True)
    try:
        data = usage_html.collect(conn, days=5, tz="UTC", now=datetime(2026, 3, 4, 20, tzinfo=timezone.utc))
    finally:
        conn.close()
    page = usage_html.render(data)
    assert 'id="claude-cost"' in page and "1 day differs by more than 5%." in page
    assert '<tr class="differs" data-date="2026-03-03">' in page
    assert '<tr data-date="2026-03-02">' in page
    assert "$0.0407</td><td>$0.0370</td><td>-9.1% ⚠" in page  # R4: Claude's 10% more than ours



def test_an_absurd_reported_number_does_not_stop_the_usage_tables(app_home):
    """An api_request any local program can send the receiver, with a token count
    and a cost beyond SQLite's 64-bit integers: the report still runs (no
    traceback), counts the transcript's request after it, and keeps the absurd
    numbers out of the sums."""
    import sqlite3
    import zlib

    import orjson

    from tray_app import jsonutil
    from tray_app.config import load_config
    from tray_app.engine.schema import open_database

    db = load_config().paths.database
    conn = open_database(db)
    absurd = {"payload": {"model": "claude-sonnet-4-5", "cost_usd": 1e8, "input_tokens": 10**20,
                          "output_tokens": 5}, "metadata": {"source": "otlp"}}
    usage = {"input_tokens": 3, "output_tokens": 7, "cache_creation_input_tokens": 0,
             "cache_read_input_tokens": 0}
    assistant = {"payload": {"type": "assistant", "message": {"content": [{"type": "text", "text": "hi"}]}},
                 "metadata": {"message_id": "msg_1", "request_id": "req_1", "model": "claude-sonnet-4-5-20250929",
                              "usage": usage}}
    insert = ("INSERT INTO raw_traces (event_id, session_id, event_type, platform, hook_type, timestamp, "
              "source, ingested_at, event_data) VALUES (?,?,?,?,?,?,?,?,?)")
    with conn:
        conn.execute(insert, ("e1", "s1", "api_request", "claude_code", "claude_code.api_request",
                              "2026-03-02T09:00:00.000000Z", "otlp", "2026-03-02T09:00:00.000000Z",
                              zlib.compress(jsonutil.dumps(absurd))))
        conn.execute(insert, ("e2", "s1", "transcript_trace", "claude_code", "assistant",
                              "2026-03-02T09:00:01.000000Z", "transcript_monitor", "2026-03-02T09:00:01.000000Z",
                              zlib.compress(orjson.dumps(assistant))))
    conn.close()
    out = run_cli("report", "daily", "--json", "--timezone", "UTC")
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    day = json.loads(out.stdout)["days"][0]
    assert (day["requests"], day["input_tokens"], day["output_tokens"]) == (1, 3, 7)
    assert day["claude_reported"]["requests"] == 1 and day["claude_reported"]["cost_usd"] is None
    ro = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert ro.execute("SELECT input_tokens, cost_pusd FROM usage_reported_costs").fetchall() == [(0, None)]
    finally:
        ro.close()
