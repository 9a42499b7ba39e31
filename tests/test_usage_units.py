"""Pure parts of the usage slow path: keys, times, prices, the record rule."""

from __future__ import annotations

import sqlite3
import warnings
import zlib
from datetime import datetime, timezone
from decimal import Decimal

import genai_prices
import orjson

from tray_app.usage import accounting, pricing, schema
from tray_app.usage.pricing import Tokens


def test_times_are_normalised_to_sortable_utc_text():
    assert accounting.norm_ts("2026-03-02T09:30:03.120Z") == "2026-03-02T09:30:03.120000Z"
    assert accounting.norm_ts("2026-03-02T10:30:03+01:00") == "2026-03-02T09:30:03.000000Z"
    assert accounting.norm_ts("2026-03-02T09:30:03.000001Z") == "2026-03-02T09:30:03.000001Z"


def test_request_keys():
    assert accounting.request_key("claude_code", "msg_1", "req_1", "9") == "claude_code:msg_1:req_1"
    assert accounting.request_key("claude_code", "msg_1", None, "9") == "claude_code:msg_1"
    assert accounting.request_key("claude_code", None, None, "9") == "claude_code:row:9"


def test_prices_are_the_library_s_exactly_and_unknown_models_have_none():
    t = Tokens(input=12, output=85, cache_write=187, cache_write_5m=87, cache_write_1h=100, cache_read=19024)
    at = datetime(2026, 3, 2, tzinfo=timezone.utc)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = genai_prices.calc_price(genai_prices.Usage(
            input_tokens=12 + 187 + 19024, output_tokens=85, cache_write_tokens=187, cache_write_5m_tokens=87,
            cache_write_1h_tokens=100, cache_read_tokens=19024), "claude-sonnet-4-5-20250929",
            provider_id="anthropic", genai_request_timestamp=at).total_price
    got = pricing.price("claude_code", "claude-sonnet-4-5-20250929", t, at)
    assert got == Decimal(want)
    assert pricing.usd(pricing.to_pico(got)) == float(want)
    assert pricing.price("claude_code", "claude-mystery-9", t, at) is None
    assert pricing.price("cursor", None, t, at) is None


def row(seq: int, output: int, ts: str, session: str = "s1") -> tuple:
    ev = {"payload": {"type": "assistant", "message": {"content": [{"type": "text", "text": "hi"}]}},
          "metadata": {"message_id": "msg_1", "request_id": "req_1", "model": "claude-sonnet-4-5-20250929",
                       "usage": {"input_tokens": 3, "output_tokens": output, "cache_creation_input_tokens": 0,
                                 "cache_read_input_tokens": 7}}}
    return (seq, "claude_code", "transcript_trace", "assistant", session, None, ts, "transcript_monitor",
            zlib.compress(orjson.dumps(ev)))


def test_the_most_complete_line_wins_whatever_the_order():
    lines = [row(1, 5, "2026-03-02T09:00:00Z"), row(2, 90, "2026-03-02T09:00:01Z"),
             row(3, 90, "2026-03-02T09:00:02Z"), row(4, 90, "2026-03-02T09:00:01Z", session="copy")]
    results = []
    for order in (lines, list(reversed(lines)), [lines[2], lines[0], lines[3], lines[1]]):
        conn = sqlite3.connect(":memory:", isolation_level=None)
        schema.ensure(conn)
        for r in order:
            accounting.apply(conn, [accounting.derive(r)])
        results.append(conn.execute("SELECT output_tokens, source_sequence, session_id, timestamp "
                                    "FROM usage_requests").fetchall())
    assert results[0] == [(90, 2, "s1", "2026-03-02T09:00:01.000000Z")]
    assert results[0] == results[1] == results[2]


def test_synthetic_messages_are_not_requests():
    r = list(row(1, 5, "2026-03-02T09:00:00Z"))
    ev = orjson.loads(zlib.decompress(r[-1]))
    ev["metadata"]["model"] = "<synthetic>"
    r[-1] = zlib.compress(orjson.dumps(ev))
    assert accounting.derive(tuple(r)) == accounting.Derived()


def prompt(seq: int, session: str, ts: str) -> tuple:
    ev = {"payload": {"type": "user", "message": {"role": "user", "content": "add tests"}}, "metadata": {}}
    return (seq, "claude_code", "transcript_trace", "user", session, None, ts, "transcript_monitor",
            zlib.compress(orjson.dumps(ev)))


def test_a_copied_prompt_stays_with_the_original_session_whatever_the_order():
    # the resumed session's copy keeps the time; stored first or last, the original wins
    lines = [prompt(5, "copy", "2026-03-02T09:00:00Z"), prompt(2, "original", "2026-03-02T09:00:00Z"),
             prompt(9, "original", "2026-03-02T09:05:00Z")]
    results = []
    for order in (lines, list(reversed(lines)), lines + lines):
        conn = sqlite3.connect(":memory:", isolation_level=None)
        schema.ensure(conn)
        for r in order:
            accounting.apply(conn, [accounting.derive(r)])
        results.append(conn.execute("SELECT sequence, session_id FROM usage_activity ORDER BY 1").fetchall())
    assert results[0] == [(2, "original"), (9, "original")]
    assert results[0] == results[1] == results[2]


def test_the_pricing_version_is_the_installed_library_s():
    from importlib import metadata

    assert pricing.VERSION == metadata.version("genai-prices") == pricing.pricing_info()["version"]


def test_the_reports_platforms_are_the_contracts():
    from tray_app import events
    from tray_app.usage import query

    assert set(query.PLATFORMS) == events.PLATFORMS
