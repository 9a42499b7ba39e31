"""The per-quarter-hour rollups stay equal to the base tables, whatever writes
them: inserts, the worker's "most complete line wins" updates, re-pricing,
deletes (retention, forget), a cleared and rebuilt set, a database made before
the rollups existed. And a report read from them equals one computed from the
base tables row by row."""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tray_app.engine.schema import immediate
from tray_app.usage import query, rollup, schema

SESSIONS = ("s1", "s2", "s3", None)
MODELS = ("claude-sonnet-4-5", "claude-opus-4-1", None)
PROJECTS = ("aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb", None)
KINDS = ("prompt", "tool", "shell", "response")


def fresh() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    schema.ensure(conn)
    return conn


def ts(minute: int) -> str:
    """Minutes after 2026-03-01T22:00Z, over a few days (crossing midnights in most zones)."""
    base = datetime(2026, 3, 1, 22, 0, tzinfo=timezone.utc).timestamp()
    return datetime.fromtimestamp(base + minute * 60 + 0.25, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


request = st.tuples(st.integers(0, 30), st.integers(0, 4000), st.sampled_from(SESSIONS), st.sampled_from(MODELS),
                    st.sampled_from(PROJECTS), st.integers(0, 10_000), st.integers(0, 5000),
                    st.one_of(st.none(), st.integers(0, 10**9)), st.sampled_from(("claude_code", "cursor")))
activity = st.tuples(st.integers(0, 30), st.integers(0, 4000), st.sampled_from(SESSIONS), st.sampled_from(KINDS),
                     st.sampled_from(("hook", "store")), st.sampled_from(PROJECTS),
                     st.sampled_from(("claude_code", "cursor")))
op = st.one_of(st.tuples(st.just("req"), request), st.tuples(st.just("act"), activity),
               st.tuples(st.just("del_req"), st.integers(0, 30)), st.tuples(st.just("del_act"), st.integers(0, 30)),
               st.tuples(st.just("reprice"), st.integers(0, 30)))


def apply(conn: sqlite3.Connection, ops: list[tuple[str, Any]]) -> None:
    for kind, v in ops:
        if kind == "req":
            key, minute, sid, model, ws, inp, out, cost, platform = v
            conn.execute(
                "INSERT INTO usage_requests (request_key, platform, session_id, workspace_hash, model, timestamp, "
                "input_tokens, output_tokens, cache_creation_tokens, cache_read_tokens, source_sequence, cost_pusd) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(request_key) DO UPDATE SET "
                "session_id=excluded.session_id, workspace_hash=excluded.workspace_hash, model=excluded.model, "
                "timestamp=excluded.timestamp, input_tokens=excluded.input_tokens, "
                "output_tokens=excluded.output_tokens, cost_pusd=excluded.cost_pusd "
                "WHERE excluded.output_tokens > usage_requests.output_tokens",
                (f"k{key}", platform, sid, ws, model, ts(minute), inp, out, inp // 3, inp * 2, key, cost))
        elif kind == "act":
            seq, minute, sid, what, origin, ws, platform = v
            conn.execute(
                "INSERT INTO usage_activity (sequence, platform, session_id, workspace_hash, timestamp, kind, "
                "origin, dedup_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(sequence) DO NOTHING "
                "ON CONFLICT(dedup_key) DO UPDATE SET timestamp=excluded.timestamp, origin=excluded.origin, "
                "kind=excluded.kind WHERE excluded.timestamp < usage_activity.timestamp",
                (seq * 7 + minute % 7, platform, sid, ws, ts(minute), what, origin, f"d{seq}"))
        elif kind == "del_req":
            conn.execute("DELETE FROM usage_requests WHERE request_key=?", (f"k{v}",))
        elif kind == "del_act":
            conn.execute("DELETE FROM usage_activity WHERE dedup_key=?", (f"d{v}",))
        else:
            conn.execute("UPDATE usage_requests SET cost_pusd=IFNULL(cost_pusd, 0) + 1000 WHERE request_key=?",
                         (f"k{v}",))


def daily_from_rows(conn: sqlite3.Connection, tz: ZoneInfo, platform: str | None = None) -> dict[str, Any]:
    """The daily report computed the slow way: every base row, its local day."""
    days: dict[str, dict[str, Any]] = defaultdict(lambda: {"tokens": 0, "requests": 0, "cost": 0, "priced": 0,
                                                           "prompts": 0, "sessions": set()})

    def day(t: str) -> str:
        return datetime.strptime(t, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).astimezone(tz) \
            .date().isoformat()

    where = "WHERE platform=?" if platform else ""
    args = (platform,) if platform else ()
    for t, p, sid, inp, out, cw, cr, cost in conn.execute(
            f"SELECT timestamp, platform, session_id, input_tokens, output_tokens, cache_creation_tokens, "
            f"cache_read_tokens, cost_pusd FROM usage_requests {where}", args):
        d = days[day(t)]
        d["tokens"] += inp + out + cw + cr
        d["requests"] += 1
        d["cost"] += cost or 0
        d["priced"] += cost is not None
        d["sessions"].add((p, sid))
    store = {(p, s) for p, s in conn.execute("SELECT platform, session_id FROM usage_activity WHERE origin='store'")}
    for t, p, sid, kind, origin in conn.execute(
            f"SELECT timestamp, platform, session_id, kind, origin FROM usage_activity {where}", args):
        d = days[day(t)]
        d["sessions"].add((p, sid))
        if kind == "prompt" and (origin == "store" or (p, sid) not in store or sid is None):
            d["prompts"] += 1
    return {k: {**v, "sessions": len(v["sessions"])} for k, v in sorted(days.items())}


def daily_from_rollups(conn: sqlite3.Connection, tz: ZoneInfo, platform: str | None = None) -> dict[str, Any]:
    rep = query.daily(conn, tz=tz, platform=platform)
    out = {}
    for d in rep["days"]:
        cost = sum(m["cost_usd"] or 0 for m in d["models"].values())
        out[d["date"]] = {"tokens": d["total_tokens"], "requests": d["requests"], "prompts": d["prompts"],
                          "sessions": d["sessions"], "cost": cost}
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, max_size=60), st.sampled_from(("UTC", "Asia/Kolkata", "America/St_Johns", "Asia/Kathmandu",
                                                    "Pacific/Chatham", "America/Los_Angeles")))
def test_rollups_equal_the_base_tables_after_any_writes(ops, zone_name):
    conn = fresh()
    apply(conn, ops)
    assert rollup.differences(conn) == {}
    tz = ZoneInfo(zone_name)
    slow = daily_from_rows(conn, tz)
    fast = daily_from_rollups(conn, tz)
    assert {d: {k: v for k, v in row.items() if k != "cost"} for d, row in fast.items()} == \
        {d: {k: row[k] for k in ("tokens", "requests", "prompts", "sessions")} for d, row in slow.items()
         if row["requests"] or row["prompts"] or row["sessions"]}
    for d, row in fast.items():  # cost: pico-dollars summed exactly, converted once per model
        assert abs(row["cost"] - slow[d]["cost"] / 1e12) < 1e-9


def test_a_cleared_set_is_empty_and_keeps_counting_afterwards():
    conn = fresh()
    apply(conn, [("req", (1, 10, "s1", MODELS[0], PROJECTS[0], 5, 6, 7, "claude_code")),
                 ("act", (1, 10, "s1", "prompt", "hook", PROJECTS[0], "claude_code"))])
    with immediate(conn):
        schema.clear(conn)
    assert [conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in rollup.TABLES] == [0, 0, 0]
    apply(conn, [("req", (2, 20, "s2", MODELS[1], None, 1, 2, None, "cursor"))])
    assert rollup.differences(conn) == {}
    assert query.daily(conn, tz="UTC")["totals"]["requests"] == 1


def test_a_database_from_before_the_rollups_gets_them_from_its_rows():
    conn = fresh()
    apply(conn, [("req", (k, k * 97, SESSIONS[k % 4], MODELS[k % 3], PROJECTS[k % 3], k, k * 2, k * 1000,
                          "claude_code")) for k in range(40)]
          + [("act", (k, k * 89, SESSIONS[k % 4], KINDS[k % 4], ("hook", "store")[k % 2], PROJECTS[k % 3],
                      "claude_code")) for k in range(40)])
    before = query.daily(conn, tz="Asia/Kolkata")
    rollup.drop_triggers(conn)  # what a database of the previous version has: no rollups at all
    for t in rollup.TABLES:
        conn.execute(f"DROP TABLE {t}")
    conn.execute("DELETE FROM usage_state WHERE worker=?", (rollup.STATE_KEY,))
    schema.ensure(conn)
    assert rollup.differences(conn) == {}
    assert query.daily(conn, tz="Asia/Kolkata") == before
    assert before["totals"]["requests"] == 40


def test_differences_notices_a_wrong_rollup():
    conn = fresh()
    apply(conn, [("req", (1, 10, "s1", MODELS[0], PROJECTS[0], 5, 6, 7, "claude_code"))])
    conn.execute("UPDATE usage_rollup_models SET input_tokens=input_tokens+1")
    assert rollup.differences(conn) == {"usage_rollup_models": 2}


def test_a_version_2_database_keeps_its_rows_and_gains_the_new_table():
    """Version 3 only added usage_reported_costs: the upgrade adds it, drops nothing
    (a derived row whose raw row retention removed could not be derived again)."""
    conn = fresh()
    apply(conn, [("req", (1, 10, "s1", MODELS[0], PROJECTS[0], 5, 6, 7, "claude_code"))])
    conn.execute("DROP TABLE usage_reported_costs")
    conn.execute("UPDATE usage_state SET last_sequence=2 WHERE worker=?", (schema.SCHEMA_KEY,))
    conn.execute("INSERT INTO usage_state (worker, last_sequence) VALUES ('usage', 99)")
    schema.ensure(conn)
    assert conn.execute("SELECT COUNT(*) FROM usage_requests").fetchone()[0] == 1
    assert conn.execute("SELECT COUNT(*) FROM usage_reported_costs").fetchone()[0] == 0
    assert schema.position(conn) == 99 and rollup.differences(conn) == {}
    assert conn.execute("SELECT last_sequence FROM usage_state WHERE worker=?", (schema.SCHEMA_KEY,)
                        ).fetchone()[0] == schema.VERSION
