"""Per-quarter-hour rollups of the usage tables, kept exact by SQLite triggers.

A report reads these instead of every request: its work follows the number of
quarter hours with activity, not the number of requests (``report daily``
over 56,000 requests reads about 9,000 rollup rows). The quarter hour is the
grouping unit because every time zone's offset is a multiple of 15 minutes, so
a quarter hour lies within one local day whatever ``--timezone`` says.

Triggers on ``usage_requests`` and ``usage_activity`` add a row's numbers to
its quarter when it is inserted, take them away when it is deleted, and both
when it is updated; so every writer (the worker, ``usage rebuild``, retention,
``forget``) keeps the rollups right without knowing they exist, in the same
transaction. ``differences()`` recomputes them from the base tables: the tests
(and ``usage status --check``) compare.

Keys use ``''`` for a NULL project, model or session (a NULL in a primary key
never conflicts, so an upsert could not find its row).
"""

from __future__ import annotations

import sqlite3

#: usage_state row: the rollups' version (bump when they change shape: they are
#: dropped and rebuilt from the base tables, never from raw_traces)
STATE_KEY = "rollup"
VERSION = 1

TABLES = ("usage_rollup_models", "usage_rollup_sessions", "usage_rollup_store")


def quarter(col: str) -> str:
    """SQL: the UTC quarter hour of an ISO timestamp column, 'YYYY-MM-DDTHH:MM'."""
    return f"(substr({col},1,14) || printf('%02d', CAST(substr({col},15,2) AS INTEGER) / 15 * 15))"


DDL = """
CREATE TABLE IF NOT EXISTS usage_rollup_models (
    quarter               TEXT NOT NULL,
    platform              TEXT NOT NULL,
    workspace_hash        TEXT NOT NULL,
    model                 TEXT NOT NULL,
    requests              INTEGER NOT NULL,
    input_tokens          INTEGER NOT NULL,
    output_tokens         INTEGER NOT NULL,
    cache_creation_tokens INTEGER NOT NULL,
    cache_read_tokens     INTEGER NOT NULL,
    cost_pusd             INTEGER NOT NULL,
    priced                INTEGER NOT NULL,
    PRIMARY KEY (quarter, platform, workspace_hash, model)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS usage_rollup_sessions (
    quarter        TEXT NOT NULL,
    platform       TEXT NOT NULL,
    workspace_hash TEXT NOT NULL,
    session_id     TEXT NOT NULL,
    row_count      INTEGER NOT NULL,
    prompts_store  INTEGER NOT NULL,
    prompts_other  INTEGER NOT NULL,
    PRIMARY KEY (quarter, platform, workspace_hash, session_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS usage_rollup_store (
    platform   TEXT NOT NULL,
    session_id TEXT NOT NULL,
    row_count  INTEGER NOT NULL,
    store_rows INTEGER NOT NULL,
    PRIMARY KEY (platform, session_id)
) WITHOUT ROWID
"""

_TOKENS = ("input_tokens", "output_tokens", "cache_creation_tokens", "cache_read_tokens")


def _models_add(r: str) -> str:
    vals = ", ".join(f"{r}.{t}" for t in _TOKENS)
    sets = ", ".join(f"{c}={c}+excluded.{c}" for c in ("requests", *_TOKENS, "cost_pusd", "priced"))
    return (f"INSERT INTO usage_rollup_models VALUES ({quarter(r + '.timestamp')}, {r}.platform, "
            f"IFNULL({r}.workspace_hash,''), IFNULL({r}.model,''), 1, {vals}, IFNULL({r}.cost_pusd,0), "
            f"{r}.cost_pusd IS NOT NULL) "
            f"ON CONFLICT(quarter, platform, workspace_hash, model) DO UPDATE SET {sets};")


def _models_sub(r: str) -> str:
    key = (f"quarter={quarter(r + '.timestamp')} AND platform={r}.platform AND "
           f"workspace_hash=IFNULL({r}.workspace_hash,'') AND model=IFNULL({r}.model,'')")
    sets = ", ".join(f"{t}={t}-{r}.{t}" for t in _TOKENS)
    return (f"UPDATE usage_rollup_models SET requests=requests-1, {sets}, "
            f"cost_pusd=cost_pusd-IFNULL({r}.cost_pusd,0), priced=priced-({r}.cost_pusd IS NOT NULL) "
            f"WHERE {key}; DELETE FROM usage_rollup_models WHERE {key} AND requests=0;")


def _sessions_add(r: str, prompts_store: str, prompts_other: str) -> str:
    return (f"INSERT INTO usage_rollup_sessions VALUES ({quarter(r + '.timestamp')}, {r}.platform, "
            f"IFNULL({r}.workspace_hash,''), IFNULL({r}.session_id,''), 1, {prompts_store}, {prompts_other}) "
            f"ON CONFLICT(quarter, platform, workspace_hash, session_id) DO UPDATE SET row_count=row_count+1, "
            f"prompts_store=prompts_store+excluded.prompts_store, "
            f"prompts_other=prompts_other+excluded.prompts_other;")


def _sessions_sub(r: str, prompts_store: str, prompts_other: str) -> str:
    key = (f"quarter={quarter(r + '.timestamp')} AND platform={r}.platform AND "
           f"workspace_hash=IFNULL({r}.workspace_hash,'') AND session_id=IFNULL({r}.session_id,'')")
    return (f"UPDATE usage_rollup_sessions SET row_count=row_count-1, prompts_store=prompts_store-({prompts_store}), "
            f"prompts_other=prompts_other-({prompts_other}) WHERE {key}; "
            f"DELETE FROM usage_rollup_sessions WHERE {key} AND row_count=0;")


def _prompts(r: str) -> tuple[str, str]:
    return (f"({r}.kind='prompt' AND {r}.origin='store')", f"({r}.kind='prompt' AND {r}.origin!='store')")


def _store_add(r: str) -> str:
    return (f"INSERT INTO usage_rollup_store VALUES ({r}.platform, IFNULL({r}.session_id,''), "
            f"1, ({r}.origin='store')) ON CONFLICT(platform, session_id) DO UPDATE SET row_count=row_count+1, "
            f"store_rows=store_rows+excluded.store_rows;")


def _store_sub(r: str) -> str:
    key = f"platform={r}.platform AND session_id=IFNULL({r}.session_id,'')"
    return (f"UPDATE usage_rollup_store SET row_count=row_count-1, store_rows=store_rows-({r}.origin='store') "
            f"WHERE {key}; DELETE FROM usage_rollup_store WHERE {key} AND row_count=0;")


def _triggers() -> dict[str, str]:
    req_add = _models_add("NEW") + _sessions_add("NEW", "0", "0")
    req_sub = _models_sub("OLD") + _sessions_sub("OLD", "0", "0")
    act_add = _sessions_add("NEW", *_prompts("NEW")) + _store_add("NEW")
    act_sub = _sessions_sub("OLD", *_prompts("OLD")) + _store_sub("OLD")
    req_cols = "timestamp, platform, workspace_hash, model, session_id, " + ", ".join(_TOKENS) + ", cost_pusd"
    act_cols = "timestamp, platform, workspace_hash, session_id, kind, origin"
    return {
        "usage_rollup_req_ins": f"AFTER INSERT ON usage_requests BEGIN {req_add} END",
        "usage_rollup_req_del": f"AFTER DELETE ON usage_requests BEGIN {req_sub} END",
        "usage_rollup_req_upd": f"AFTER UPDATE OF {req_cols} ON usage_requests BEGIN {req_sub} {req_add} END",
        "usage_rollup_act_ins": f"AFTER INSERT ON usage_activity BEGIN {act_add} END",
        "usage_rollup_act_del": f"AFTER DELETE ON usage_activity BEGIN {act_sub} END",
        "usage_rollup_act_upd": f"AFTER UPDATE OF {act_cols} ON usage_activity BEGIN {act_sub} {act_add} END",
    }


TRIGGERS = _triggers()

#: the rollups computed from the base tables (the backfill, and what differences() compares with)
EXPECTED = {
    "usage_rollup_models": (
        f"SELECT {quarter('timestamp')}, platform, IFNULL(workspace_hash,''), IFNULL(model,''), COUNT(*), "
        f"{', '.join(f'SUM({t})' for t in _TOKENS)}, SUM(IFNULL(cost_pusd,0)), COUNT(cost_pusd) "
        f"FROM usage_requests GROUP BY 1, 2, 3, 4"),
    "usage_rollup_sessions": (
        f"SELECT q, p, w, s, COUNT(*), SUM(ps), SUM(po) FROM ("
        f"SELECT {quarter('timestamp')} q, platform p, IFNULL(workspace_hash,'') w, IFNULL(session_id,'') s, "
        f"0 ps, 0 po FROM usage_requests UNION ALL "
        f"SELECT {quarter('timestamp')}, platform, IFNULL(workspace_hash,''), IFNULL(session_id,''), "
        f"kind='prompt' AND origin='store', kind='prompt' AND origin!='store' FROM usage_activity"
        f") GROUP BY 1, 2, 3, 4"),
    "usage_rollup_store": (
        "SELECT platform, IFNULL(session_id,''), COUNT(*), SUM(origin='store') FROM usage_activity GROUP BY 1, 2"),
}


def create_triggers(conn: sqlite3.Connection) -> None:
    for name, body in TRIGGERS.items():
        conn.execute(f"CREATE TRIGGER IF NOT EXISTS {name} {body}")


def drop_triggers(conn: sqlite3.Connection) -> None:
    for name in TRIGGERS:
        conn.execute(f"DROP TRIGGER IF EXISTS {name}")


def rebuild(conn: sqlite3.Connection) -> None:
    """Inside the caller's transaction: the rollups recomputed from the base tables,
    triggers (re)created."""
    drop_triggers(conn)
    for statement in DDL.split(";"):
        conn.execute(statement)
    for table, select in EXPECTED.items():
        conn.execute(f"DELETE FROM {table}")
        conn.execute(f"INSERT INTO {table} {select}")
    create_triggers(conn)


def clear(conn: sqlite3.Connection) -> None:
    """Inside the caller's transaction, before the base tables are emptied: the
    triggers would otherwise take every deleted row away one at a time. The
    caller empties the base tables, then calls ``rebuild`` (cheap: they are empty)."""
    drop_triggers(conn)
    for table in TABLES:
        conn.execute(f"DELETE FROM {table}")


def differences(conn: sqlite3.Connection) -> dict[str, int]:
    """{table: rows that differ from a recomputation}; empty when the rollups are exact."""
    out = {}
    for table, select in EXPECTED.items():
        n = conn.execute(f"SELECT COUNT(*) FROM (SELECT * FROM {table} EXCEPT {select} "
                         f"UNION ALL SELECT * FROM ({select} EXCEPT SELECT * FROM {table}))").fetchone()[0]
        if n:
            out[table] = int(n)
    return out


__all__ = ["TABLES", "STATE_KEY", "VERSION", "quarter", "rebuild", "clear", "differences", "create_triggers",
           "drop_triggers"]
