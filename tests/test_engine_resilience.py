"""Nothing that belongs to one entry may stop ingest, and no thread death may
leave a live process that ingests nothing (issue: reliability hardening, part 1).

Real parts: a real valkey server, a real telemetry.db, the real hook as a
subprocess. Faults that real input can no longer produce (the fixes removed
them) are injected in-process by replacing one method, to show the safety net
behind the fix still holds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zlib
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, RedisProc, wait_for
from engine_util import db, make_event, pending_count, push, row_count, running_engine, stored_events
from test_hook_events import hook_env, run_hook
from tray_app import events
from tray_app.engine import consumer as consumer_mod
from tray_app.engine.maintenance import Maintenance
from tray_app.engine.writer import SQLiteBatchWriter
from tray_app.redis_conn import DLQ_STREAM, EVENTS_STREAM, ensure_streams


def dlq_reasons(client: Any) -> dict[str, str]:
    """original stream id -> reason, for every dead letter (either field format)."""
    out = {}
    for _, f in client.xrange(DLQ_STREAM):
        reason = f.get(b"dlq:reason", f.get(b"reason", b"")).decode()
        original = f.get(b"dlq:original_id", f.get(b"original_id", b"")).decode()
        out[original] = reason
    return out


def session_rows(database: Path, session_id: str) -> int:
    with closing(db(database)) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM sessions WHERE session_id = ?", (session_id,)).fetchone()[0])


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


# ----------------------------------------------------------------------------- payloads kept exact

def test_deep_and_huge_integer_payloads_are_stored_exactly_and_ingest_goes_on(app_env, redis_server: RedisProc) -> None:
    c = redis_server.client()
    ensure_streams(c)
    raw_payload = '{"nested": ' + deep(300) + ', "big": 123456789012345678901234567890, "neg": -98765432109876543210}'
    poison_like = events.encode(make_event(1))
    poison_like["payload"] = raw_payload
    first = c.xadd(EVENTS_STREAM, poison_like).decode()
    after = push(c, [make_event(i) for i in range(2, 52)])
    with running_engine(redis_server.url) as eng:
        cfg = eng.cfg
        wait_for(lambda: row_count(cfg.paths.database) == 51, timeout=20, what="all 51 rows")
        wait_for(lambda: pending_count(c) == 0, what="everything acknowledged")
        assert eng.health().state == "running"
    assert c.xlen(DLQ_STREAM) == 0
    with closing(db(cfg.paths.database)) as conn:
        blob, = conn.execute("SELECT event_data FROM raw_traces WHERE stream_id = ?", (first,)).fetchone()
    text = zlib.decompress(blob).decode()
    assert '"payload":' + raw_payload in text  # the input's own text, byte for byte
    stored = json.loads(text)
    assert stored["payload"]["big"] == 123456789012345678901234567890
    assert stored["payload"]["neg"] == -98765432109876543210
    assert len(after) == 50


def test_deep_tool_input_through_the_real_claude_hook_is_stored(app_env, app_home: Path, redis_server: RedisProc) -> None:
    """The reproduction from the issue: a PreToolUse call whose tool_input is
    nested 300 levels deep, through the installed hook command."""
    c = redis_server.client()
    ensure_streams(c)
    stdin = ('{"session_id": "s-deep", "transcript_path": "/tmp/t.jsonl", "cwd": "/tmp/p", '
             '"hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": {"x": ' + deep(300) + '}}')
    proc, _ = run_hook("claude", stdin, hook_env(app_home, redis_server.url))
    assert proc.returncode == 0, proc.stderr
    assert c.xlen(EVENTS_STREAM) == 1
    push(c, [make_event(7)])
    with running_engine(redis_server.url) as eng:
        cfg = eng.cfg
        wait_for(lambda: row_count(cfg.paths.database) == 2, timeout=20, what="the deep event and the next")
        wait_for(lambda: pending_count(c) == 0, what="acknowledged")
    rows = stored_events(cfg.paths.database)
    deep_rows = [e for e in rows.values() if e["session_id"] != make_event(7)["session_id"]]
    assert deep_rows and json.dumps(deep_rows[0]["payload"]).count("[") >= 300


# ----------------------------------------------------------------------------- one entry's failure

def test_an_entry_that_cannot_be_serialised_is_dead_lettered_alone(app_env, redis_server: RedisProc,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    real = SQLiteBatchWriter.prepare

    def prepare(stream_id: str, event: dict[str, Any], fields: Any = None) -> Any:
        if event.get("hook_type") == "explode":
            raise TypeError("Recursion limit reached")
        return real(stream_id, event, fields)

    monkeypatch.setattr(SQLiteBatchWriter, "prepare", staticmethod(prepare))
    c = redis_server.client()
    ensure_streams(c)
    evs = [make_event(i) for i in range(40)]
    evs[17]["hook_type"] = "explode"
    ids = push(c, evs)
    with running_engine(redis_server.url) as eng:
        cfg = eng.cfg
        wait_for(lambda: row_count(cfg.paths.database) == 39, timeout=20, what="39 rows")
        wait_for(lambda: c.xlen(DLQ_STREAM) == 1, what="one dead letter")
        wait_for(lambda: pending_count(c) == 0, what="all acknowledged")
        assert eng.health().state == "running" and eng.consumer.is_alive()
    assert dlq_reasons(c) == {ids[17]: "unserializable"}


def test_an_insert_failing_for_one_entry_is_bisected_to_that_entry(app_env, redis_server: RedisProc,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    real = SQLiteBatchWriter.write_prepared

    def write_prepared(self: SQLiteBatchWriter, batch: Any, settled: Any = ()) -> Any:
        if any(p.event.get("hook_type") == "unbindable" for p in batch):
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        return real(self, batch, settled)

    monkeypatch.setattr(SQLiteBatchWriter, "write_prepared", write_prepared)
    c = redis_server.client()
    ensure_streams(c)
    evs = [make_event(i) for i in range(64)]
    evs[5]["hook_type"] = evs[50]["hook_type"] = "unbindable"
    ids = push(c, evs)
    with running_engine(redis_server.url) as eng:
        cfg = eng.cfg
        wait_for(lambda: row_count(cfg.paths.database) == 62, timeout=20, what="62 rows")
        wait_for(lambda: c.xlen(DLQ_STREAM) == 2, what="two dead letters")
        wait_for(lambda: pending_count(c) == 0, what="all acknowledged")
        assert eng.health().state == "running"
    assert dlq_reasons(c) == {ids[5]: "unstorable", ids[50]: "unstorable"}


# ----------------------------------------------------------------------------- crash loops across restarts

CRASHY_ENGINE = textwrap.dedent("""
    import os, sys, time
    from tray_app.config import load_config
    from tray_app.engine.engine import Engine
    from tray_app.engine.writer import SQLiteBatchWriter
    from tray_app.redis_conn import endpoint_from_url

    real = SQLiteBatchWriter.prepare
    def prepare(stream_id, event, fields=None):
        if event.get("hook_type") == "kills-the-process":
            os._exit(9)  # like a segfault or the OOM killer: no cleanup at all
        return real(stream_id, event, fields)
    SQLiteBatchWriter.prepare = staticmethod(prepare)

    eng = Engine(load_config(), endpoint_from_url(sys.argv[1]), with_monitors=False)
    eng.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        h = eng.health()
        if h.pending == 0 and h.backlog == 0 and h.total_acked and h.updated_at:
            break
        time.sleep(0.05)
    eng.stop(5)
    os._exit(0)
""")


def test_an_entry_that_kills_the_process_is_dead_lettered_after_max_retries_across_server_restarts(
        app_env, redis_server: RedisProc, tmp_path: Path) -> None:
    """Each run dies on the same entry; the private server is restarted between
    runs too, so its delivery counters cannot be what stops the loop. The entry
    ends in the DLQ after max_retries attempts, every other entry is stored once."""
    script = tmp_path / "crashy.py"
    script.write_text(CRASHY_ENGINE)
    env = {**app_env, "TELEMETRY_TRAY_INGEST_MAX_RETRIES": "3", "PYTHONPATH": str(ROOT)}
    c = redis_server.client()
    ensure_streams(c)
    evs = [make_event(i) for i in range(120)]
    evs[60]["hook_type"] = "kills-the-process"
    ids = push(c, evs)
    c.close()
    codes = []
    for _ in range(10):  # bounded: 3 retries need about 5 runs
        proc = subprocess.run([sys.executable, str(script), redis_server.url], env=env, cwd=str(ROOT),
                              capture_output=True, timeout=60)
        codes.append(proc.returncode)
        if proc.returncode == 0:
            break
        redis_server.stop()   # SHUTDOWN: the AOF keeps the stream, not the delivery counters
        redis_server.start()
    assert codes[-1] == 0 and 9 in codes, codes
    c = redis_server.client()
    assert dlq_reasons(c) == {ids[60]: "retries_exhausted"}
    from tray_app.config import load_config

    database = load_config().paths.database
    assert row_count(database) == 119
    assert pending_count(c) == 0
    with closing(db(database)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM ingest_attempts").fetchone()[0] == 0


# ----------------------------------------------------------------------------- threads that die

def test_a_consumer_thread_that_dies_is_restarted_and_shown_in_health(app_env, redis_server: RedisProc,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEMETRY_TRAY_INGEST_BACKOFF_INITIAL_S", "0.05")
    real = consumer_mod.FastPathConsumer._flush
    calls = {"n": 0}

    def flush(self: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("a bug in the flush path")
        real(self)

    monkeypatch.setattr(consumer_mod.FastPathConsumer, "_flush", flush)
    c = redis_server.client()
    ensure_streams(c)
    with running_engine(redis_server.url) as eng:
        cfg = eng.cfg
        first = eng.consumer
        push(c, [make_event(1)])
        wait_for(lambda: row_count(cfg.paths.database) == 1, timeout=10, what="first batch")
        assert calls["n"] == 1 and eng.consumer is first
        push(c, [make_event(2)])  # its flush raises: the thread dies
        wait_for(lambda: eng.consumer is not first and eng.consumer.is_alive(), timeout=10,
                 what="a new consumer thread")
        push(c, [make_event(i) for i in range(3, 30)])
        wait_for(lambda: row_count(cfg.paths.database) == 29, timeout=20, what="every row, after the restart")
        wait_for(lambda: pending_count(c) == 0, what="all acknowledged")
        snap = eng.health()
        assert snap.thread_restarts >= 1
        assert any(line.startswith("consumer: RuntimeError: a bug in the flush path") for line in snap.thread_errors)
        wait_for(lambda: eng.health().state == "running", what="running again")


def test_maintenance_and_publisher_deaths_are_noticed_and_replaced(app_env, redis_server: RedisProc,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEMETRY_TRAY_INGEST_BACKOFF_INITIAL_S", "0.05")
    real_tick = Maintenance.tick
    ticks = {"n": 0}

    def tick(self: Maintenance, final: bool = False) -> None:
        ticks["n"] += 1
        if ticks["n"] == 2:
            raise MemoryError("maintenance fault")
        real_tick(self, final)

    monkeypatch.setattr(Maintenance, "tick", tick)
    from tray_app.engine import publisher as publisher_mod

    real_loop = publisher_mod.CDCPublisher._loop
    loops = {"n": 0}

    def loop(self: Any) -> None:
        loops["n"] += 1
        if loops["n"] == 1:
            raise RuntimeError("publisher fault")
        real_loop(self)

    monkeypatch.setattr(publisher_mod.CDCPublisher, "_loop", loop)
    c = redis_server.client()
    ensure_streams(c)
    with running_engine(redis_server.url) as eng:
        cfg = eng.cfg
        push(c, [make_event(i) for i in range(100)])
        wait_for(lambda: row_count(cfg.paths.database) == 100, timeout=20, what="rows")
        wait_for(lambda: pending_count(c) == 0, timeout=20, what="acknowledged by a new publisher")
        wait_for(lambda: len(eng.health().thread_errors) == 2, timeout=10, what="both deaths in health")
        errors = " | ".join(eng.health().thread_errors)
        assert "maintenance: MemoryError: maintenance fault" in errors
        assert "cdc-publisher: RuntimeError: publisher fault" in errors
        wait_for(lambda: eng.maintenance.is_alive() and ticks["n"] > 3, timeout=10, what="maintenance ticking again")
        wait_for(lambda: eng.health().total_acked == 100, timeout=10, what="acked counter current")


def test_health_counters_follow_the_acknowledgements(app_env, redis_server: RedisProc) -> None:
    """total_acked and total_dead_letters move when the round trip ends, not at
    some later batch (they lagged by a batch, and stayed behind when idle)."""
    c = redis_server.client()
    ensure_streams(c)
    with running_engine(redis_server.url) as eng:
        cfg = eng.cfg
        push(c, [make_event(i) for i in range(200)])
        c.xadd(EVENTS_STREAM, {"event_id": "x", "platform": "nope"})
        c.xadd(EVENTS_STREAM, {"garbage": "yes"})
        wait_for(lambda: row_count(cfg.paths.database) == 200, timeout=20, what="rows")
        wait_for(lambda: eng.health().total_acked == 202 and eng.health().total_dead_letters == 2,
                 timeout=5, what="counters current while idle")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM from /proc")
def test_large_entries_are_drained_in_bounded_memory(app_env, redis_server: RedisProc, tmp_path: Path) -> None:
    """25 queued entries of 20 MB each (over max_entry_bytes: dead letters) are
    drained by a headless engine whose peak RSS stays under 300 MB."""
    c = redis_server.client()
    ensure_streams(c)
    blob = "x" * (20 * 1024 * 1024)
    for i in range(25):
        fields = events.encode(make_event(i))
        fields["payload"] = '{"d": "' + blob + '"}'
        c.xadd(EVENTS_STREAM, fields)
    push(c, [make_event(100 + i) for i in range(20)])
    proc = subprocess.Popen([sys.executable, "-m", "tray_app", "run", "--headless", "--no-monitors"],
                            env=app_env, cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        from tray_app.config import load_config

        database = load_config().paths.database
        wait_for(lambda: c.xlen(DLQ_STREAM) == 25 and row_count(database) == 20, timeout=90,
                 interval=0.2, what="drained")
        wait_for(lambda: pending_count(c) == 0, timeout=20, what="acknowledged")
        status = Path(f"/proc/{proc.pid}/status").read_text()
        peak_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert peak_kb < 300 * 1024, f"engine peak RSS {peak_kb / 1024:.0f} MB"
    assert set(dlq_reasons(c).values()) == {"oversized"}


def test_a_monitor_thread_that_dies_is_restarted_with_its_commit_listener(app_env, redis_server: RedisProc,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEMETRY_TRAY_INGEST_BACKOFF_INITIAL_S", "0.05")
    monkeypatch.setenv("TELEMETRY_TRAY_MONITORS_POLL_INTERVAL_S", "0.05")
    from tray_app.config import load_config
    from tray_app.engine.engine import Engine
    from tray_app.monitors.sessions import SessionMonitor
    from tray_app.redis_conn import endpoint_from_url

    real = SessionMonitor.next_wait_s
    calls = {"n": 0}

    def next_wait_s(self: SessionMonitor) -> float:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("sessions loop fault")
        return real(self)

    monkeypatch.setattr(SessionMonitor, "next_wait_s", next_wait_s)
    c = redis_server.client()
    ensure_streams(c)
    eng = Engine(load_config(), endpoint_from_url(redis_server.url), with_monitors=True)
    first = next(m for m in eng.monitors if m.name == "sessions")
    eng.start()
    try:
        wait_for(lambda: any(m.name == "sessions" and m is not first and m.is_alive() for m in eng.monitors),
                 timeout=10, what="a new sessions monitor")
        new = next(m for m in eng.monitors if m.name == "sessions")
        assert new.on_commit in eng.consumer.listeners and first.on_commit not in eng.consumer.listeners
        push(c, [make_event(i, session="s-after-restart") for i in range(5)])
        wait_for(lambda: row_count(eng.cfg.paths.database) == 5, timeout=10, what="rows")
        wait_for(lambda: session_rows(eng.cfg.paths.database, "s-after-restart") == 2, timeout=10,
                 what="the new monitor tracks the session of committed events")
        assert any(line.startswith("sessions: RuntimeError: sessions loop fault")
                   for line in eng.health().thread_errors)
    finally:
        eng.stop(5)


def test_monitors_that_cannot_start_are_shown_and_ingest_goes_on(app_env, redis_server: RedisProc,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from tray_app.config import load_config
    from tray_app.engine import engine as engine_mod
    from tray_app.redis_conn import endpoint_from_url

    def broken(cfg: Any, endpoint: Any) -> list[Any]:
        raise ImportError("cannot import name 'CursorDatabaseMonitor'")

    monkeypatch.setattr(engine_mod, "build_monitors", broken)
    c = redis_server.client()
    ensure_streams(c)
    eng = engine_mod.Engine(load_config(), endpoint_from_url(redis_server.url), with_monitors=True)
    eng.start()
    try:
        push(c, [make_event(i) for i in range(3)])
        wait_for(lambda: row_count(eng.cfg.paths.database) == 3, timeout=10, what="rows without monitors")
        assert "monitors: could not start: ImportError: cannot import name 'CursorDatabaseMonitor'" \
            in eng.health().thread_errors
    finally:
        eng.stop(5)


def test_a_flushed_script_cache_is_reloaded_without_redelivery(app_env, redis_server: RedisProc) -> None:
    """After a server restart (or SCRIPT FLUSH) the CDC/ack script is gone: the
    publisher loads it again in the same round trip, so nothing is redelivered
    and no dead letter is written twice."""
    c = redis_server.client()
    ensure_streams(c)
    with running_engine(redis_server.url) as eng:
        cfg = eng.cfg
        push(c, [make_event(i) for i in range(10)])
        wait_for(lambda: pending_count(c) == 0 and row_count(cfg.paths.database) == 10, what="first rows")
        c.script_flush()
        push(c, [make_event(i) for i in range(10, 20)])
        c.xadd(EVENTS_STREAM, {"event_id": "poison-after-flush", "platform": "nope"})
        wait_for(lambda: pending_count(c) == 0 and row_count(cfg.paths.database) == 20, what="rows after the flush")
        assert eng.health().total_duplicates == 0
    assert c.xlen(DLQ_STREAM) == 1
