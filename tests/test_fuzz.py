"""Property-based fuzzing (hypothesis) of the two inputs nobody controls:
stream entries (anyone with the socket can XADD) and hook stdin (whatever the
assistant sends).

- Whatever the entries, each ends as exactly one row or one dead letter, and
  the consumer stays running.
- Whatever the stdin, the real hook exits 0 within its budget.

Bounded: a fixed number of examples, each with a deadline, one real server.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import RedisProc, wait_for
from engine_util import db, running_engine
from test_hook_events import hook_env, run_hook
from tray_app.redis_conn import DLQ_STREAM, EVENTS_STREAM, ensure_streams

FIELD_NAMES = ["event_id", "platform", "event_type", "timestamp", "session_id", "external_session_id",
               "hook_type", "workspace_hash", "payload", "metadata", "schema_version", "reason", "error",
               "original_id", "dlq:reason", "extra"]

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2 ** 200), max_value=2 ** 200),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=40))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=30)


@st.composite
def payload_text(draw: Any) -> bytes:
    kind = draw(st.sampled_from(["object", "deep", "bigint", "garbage", "not-object", "empty"]))
    if kind == "object":
        return json.dumps(draw(st.dictionaries(st.text(max_size=10), json_value, max_size=5))).encode()
    if kind == "deep":
        n = draw(st.integers(min_value=200, max_value=1100))
        return b'{"d": ' + b"[" * n + b"]" * n + b"}"
    if kind == "bigint":
        return b'{"n": ' + str(draw(st.integers(min_value=2 ** 64, max_value=2 ** 400))).encode() + b"}"
    if kind == "garbage":
        return draw(st.binary(max_size=60))
    if kind == "not-object":
        return json.dumps(draw(json_value)).encode()
    return b""


@st.composite
def entry(draw: Any) -> dict[bytes, bytes]:
    """A valid event, then some of its fields dropped, replaced or added."""
    fields: dict[bytes, bytes] = {
        b"event_id": str(uuid.uuid4()).encode(), b"platform": b"claude_code", b"event_type": b"tool_use",
        b"timestamp": b"2026-12-01T10:00:00.000Z", b"session_id": b"s-fuzz",
        b"payload": draw(payload_text()), b"metadata": b'{"source": "fuzz"}',
    }
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        name = draw(st.sampled_from(FIELD_NAMES)).encode()
        action = draw(st.sampled_from(["drop", "bytes", "text"]))
        if action == "drop":
            fields.pop(name, None)
        elif action == "bytes":
            fields[name] = draw(st.binary(max_size=40))
        else:
            fields[name] = draw(st.text(max_size=40)).encode("utf-8", "surrogatepass")
        if name == b"event_id" and action != "drop":
            # unique per entry, so "one row" is this entry's row and never an
            # earlier example's with the same id (a duplicate is stored once)
            fields[name] = uuid.uuid4().hex.encode() + fields[name]
    if not fields:
        fields[b"extra"] = b"x"
    return fields


def outcome_counts(database: Path, client: Any, ids: list[str]) -> dict[str, int]:
    rows: set[str] = set()
    if database.exists():
        with closing(db(database)) as conn:
            try:
                rows = {r[0] for r in conn.execute(
                    f"SELECT stream_id FROM raw_traces WHERE stream_id IN ({','.join('?' * len(ids))})", ids)}
            except sqlite3.OperationalError:  # the engine has not created the table yet
                pass
    dead: dict[str, int] = {}
    for _, f in client.xrange(DLQ_STREAM):
        original = f.get(b"dlq:original_id", f.get(b"original_id", b"")).decode()
        dead[original] = dead.get(original, 0) + 1
    return {sid: (sid in rows) + dead.get(sid, 0) for sid in ids}


def test_any_stream_entries_end_as_exactly_one_row_or_dead_letter(app_env, redis_server: RedisProc) -> None:
    c = redis_server.client()
    ensure_streams(c)
    with running_engine(redis_server.url) as eng:
        database = eng.cfg.paths.database

        @settings(max_examples=150, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(st.lists(entry(), min_size=1, max_size=6))
        def check(batch: list[dict[bytes, bytes]]) -> None:
            ids = [c.xadd(EVENTS_STREAM, f).decode() for f in batch]  # type: ignore[arg-type]
            wait_for(lambda: all(n >= 1 for n in outcome_counts(database, c, ids).values()), timeout=15,
                     what="every entry settled")
            counts = outcome_counts(database, c, ids)
            assert all(n == 1 for n in counts.values()), counts
            assert eng.consumer.is_alive() and eng.health().state == "running", eng.health().reasons

        check()
        assert not eng.health().thread_errors


hook_stdin = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda v: json.dumps(v).encode(), json_value),
    st.builds(lambda event, extra: json.dumps({"hook_event_name": event, "session_id": "s", **extra}).encode(),
              st.sampled_from(["PreToolUse", "PostToolUse", "UserPromptSubmit", "Stop", "Nope", ""]),
              st.dictionaries(st.sampled_from(["tool_input", "prompt", "cwd", "transcript_path", "tool_name"]),
                              json_value, max_size=4)),
    st.integers(min_value=200, max_value=2000).map(lambda n: b'{"tool_input": ' + b"[" * n + b"]" * n + b"}"),
)


@pytest.mark.parametrize("assistant", ["claude", "cursor"])
def test_the_hook_exits_0_within_its_budget_whatever_stdin(assistant: str, app_home: Path,
                                                            redis_server: RedisProc) -> None:
    env = hook_env(app_home, redis_server.url)

    @settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
    @given(hook_stdin)
    def check(stdin: bytes) -> None:
        started = time.monotonic()
        proc, _ = run_hook(assistant, stdin, env, timeout=10)
        took = time.monotonic() - started
        assert proc.returncode == 0, proc.stderr[-500:]
        assert took < 5.0, f"hook took {took:.2f} s"
        if assistant == "cursor":
            assert json.loads(proc.stdout) == {}
        else:
            assert proc.stdout == b""

    check()
