"""The offline spool: drained oldest first into a real Redis, files deleted
only after their XADD succeeded, unparseable files set aside and counted,
health stats from a directory listing; and the whole way round through the
engine: Redis stopped -> hook spools; Redis started -> engine drains -> row
in raw_traces."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from conftest import RedisProc, wait_for
from test_hook_events import (CLAUDE_BASE, CURSOR_BASE, assert_clean_exit, hook_env, run_hook, spool_files,
                              stream_entries as stream)
from tray_app import events
from tray_app.capture import spoolfile
from tray_app.engine import spool_drain as spool
from tray_app.redis_conn import EVENTS_STREAM


def spool_event(spool_dir: Path, i: int, now_ns: int | None = None) -> dict[str, str]:
    """Write one spool file the way the hook does; return its fields."""
    fields = events.encode({
        "event_id": events.new_event_id(), "platform": "claude_code", "event_type": "user_prompt",
        "timestamp": events.utc_now_iso(), "session_id": "s", "payload": {"n": i},
        "metadata": {"source": "claude_hook"}})
    spool_dir.mkdir(parents=True, exist_ok=True)
    name = spoolfile.file_name(fields["event_id"], now_ns)
    (spool_dir / name).write_bytes(json.dumps(fields).encode())
    return fields


def test_drain_oldest_first_then_delete(tmp_path: Path, redis_server: RedisProc) -> None:
    d = tmp_path / "spool"
    base = time.time_ns() - 10_000_000_000
    # written out of order: the name (creation time) decides
    written = {i: spool_event(d, i, base + (5 - i) * 1000) for i in range(6)}
    client = redis_server.client()
    result = spool.drain(d, client)
    assert result == spool.DrainResult(sent=6, bad=0, remaining=0, error=None)
    assert [int(json.loads(e["payload"])["n"]) for e in stream(client)] == [5, 4, 3, 2, 1, 0]
    assert {e["event_id"] for e in stream(client)} == {f["event_id"] for f in written.values()}
    assert list(d.iterdir()) == []
    assert spool.drain(d, client) == spool.DrainResult()  # nothing left: a cheap no-op


def test_drain_limit(tmp_path: Path, redis_server: RedisProc) -> None:
    d = tmp_path / "spool"
    for i in range(7):
        spool_event(d, i)
    client = redis_server.client()
    assert spool.drain(d, client, limit=3) == spool.DrainResult(sent=3, remaining=4)
    assert spool.drain(d, client, limit=3) == spool.DrainResult(sent=3, remaining=1)
    assert spool.drain(d, client, limit=3) == spool.DrainResult(sent=1, remaining=0)
    assert [int(json.loads(e["payload"])["n"]) for e in stream(client)] == list(range(7))


def test_redis_down_keeps_every_file(tmp_path: Path, redis_server: RedisProc) -> None:
    d = tmp_path / "spool"
    for i in range(3):
        spool_event(d, i)
    client = redis_server.client(socket_connect_timeout=1)
    redis_server.stop()
    result = spool.drain(d, client)
    assert result.sent == 0 and result.remaining == 3 and result.error
    assert len(list(d.glob("*.json"))) == 3


def test_xadd_refused_midway_keeps_the_rest(tmp_path: Path, redis_server: RedisProc) -> None:
    """The stream key holds a string: XADD fails with WRONGTYPE. Nothing is
    deleted that did not reach the stream."""
    d = tmp_path / "spool"
    for i in range(4):
        spool_event(d, i)
    client = redis_server.client()
    client.set(EVENTS_STREAM, "not a stream")
    result = spool.drain(d, client)
    assert result.sent == 0 and result.remaining == 4 and "WRONGTYPE" in (result.error or "")
    client.delete(EVENTS_STREAM)
    assert spool.drain(d, client).sent == 4
    assert len(stream(client)) == 4


def test_unparseable_files_go_to_bad_and_are_counted(tmp_path: Path, redis_server: RedisProc) -> None:
    d = tmp_path / "spool"
    good = spool_event(d, 1)
    bad_contents = [b"", b"{truncated", b"[1, 2]", b'{"event_id": 5}', b'{"no_id": "x"}',
                    b'{"event_id": "e", "payload": {"nested": 1}}']
    for i, data in enumerate(bad_contents):
        (d / spoolfile.file_name(f"bad-{i}")).write_bytes(data)
    (d / "README.txt").write_text("not ours: ignored")
    client = redis_server.client()
    result = spool.drain(d, client)
    assert (result.sent, result.bad, result.remaining) == (1, len(bad_contents), 0)
    assert stream(client) == [good]
    assert len(list((d / "bad").iterdir())) == len(bad_contents)
    st = spool.stats(d)
    assert (st.files, st.bad) == (0, len(bad_contents))
    assert spool.drain(d, client) == spool.DrainResult()  # never retried
    assert (d / "README.txt").exists()


def test_stale_temp_files_are_set_aside_fresh_ones_left(tmp_path: Path, redis_server: RedisProc) -> None:
    d = tmp_path / "spool"
    d.mkdir()
    stale = d / ".123-abc.json.tmp"
    fresh = d / ".456-def.json.tmp"
    stale.write_bytes(b'{"event_id": "half')
    fresh.write_bytes(b'{"event_id": "being written')
    old = time.time() - spool.STALE_TMP_S - 60
    os.utime(stale, (old, old))
    result = spool.drain(d, redis_server.client())
    assert result.bad == 1 and result.sent == 0
    assert fresh.exists() and not stale.exists()
    assert [p.name for p in (d / "bad").iterdir()] == ["123-abc.json.tmp"]


def test_stats(tmp_path: Path) -> None:
    d = tmp_path / "spool"
    assert spool.stats(d) == spool.SpoolStats(files=0, bad=0, oldest_age_s=0.0, bytes=0)
    now = time.time_ns()
    a = spool_event(d, 1, now - 30_000_000_000)
    spool_event(d, 2, now - 5_000_000_000)
    (d / ".x.json.tmp").write_text("in progress")
    (d / "bad").mkdir()
    (d / "bad" / "junk.json").write_text("x")
    st = spool.stats(d, now_ns=now)
    assert (st.files, st.bad) == (2, 1)
    assert st.oldest_age_s == pytest.approx(30.0)
    assert st.bytes == sum(p.stat().st_size for p in d.glob("*.json"))
    assert a["event_id"] in "".join(p.name for p in d.glob("*.json"))


def test_hook_spool_files_are_what_drain_reads(app_home: Path, redis_server: RedisProc) -> None:
    env = hook_env(app_home, redis_server.url)
    redis_server.stop()
    for assistant, sample in (("cursor", {**CURSOR_BASE, "hook_event_name": "stop", "status": "completed",
                                           "loop_count": 0}),
                              ("claude", {**CLAUDE_BASE, "hook_event_name": "Stop", "stop_hook_active": False})):
        assert_clean_exit(assistant, run_hook(assistant, json.dumps(sample), env)[0])
    files = spool_files(app_home)
    assert len(files) == 2
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in files)
    assert not [p for p in files[0].parent.iterdir() if p.name.startswith(".")]  # no temp left behind
    st = spool.stats(app_home / "state" / "spool")
    assert st.files == 2 and st.bytes > 0 and st.oldest_age_s >= 0
    redis_server.start()
    client = redis_server.client()
    assert spool.drain(app_home / "state" / "spool", client).sent == 2
    for _, fields in client.xrange(EVENTS_STREAM):
        events.decode(fields)


# ----------------------------------------------------------------------------- through the engine

def test_engine_drains_the_spool_into_raw_traces(app_env: dict[str, str], app_home: Path,
                                                 redis_server: RedisProc, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine_util import row_count, stored_events
    from tray_app.config import load_config
    from tray_app.engine.engine import Engine
    from tray_app.redis_conn import endpoint_from_url, ensure_streams

    monkeypatch.setenv("TELEMETRY_TRAY_INGEST_SPOOL_DRAIN_INTERVAL_S", "0.2")
    monkeypatch.setenv("TELEMETRY_TRAY_INGEST_HEALTH_PUBLISH_INTERVAL_S", "0.2")
    env = hook_env(app_home, redis_server.url)
    # Redis stopped: the hook spools
    redis_server.stop()
    sample = {**CLAUDE_BASE, "hook_event_name": "UserPromptSubmit", "prompt": "spooled while Redis was down"}
    proc, _ = run_hook("claude", json.dumps(sample), env)
    assert_clean_exit("claude", proc)
    [path] = spool_files(app_home)
    event_id = json.loads(path.read_bytes())["event_id"]

    # Redis started: the engine drains it, and the row appears
    redis_server.start()
    cfg = load_config()
    ep = endpoint_from_url(redis_server.url)
    ensure_streams(ep.client())
    engine = Engine(cfg, ep, with_monitors=False)
    engine.start()
    try:
        wait_for(lambda: row_count(cfg.paths.database) == 1, 20, what="the spooled event's row")
        stored = stored_events(cfg.paths.database)
        assert list(stored) == [event_id]
        row = stored[event_id]
        assert row["payload"]["prompt"] == sample["prompt"] and row["platform"] == "claude_code"
        assert spool_files(app_home) == []
        wait_for(lambda: engine.health().spool_files == 0, 10, what="health to show an empty spool")
    finally:
        engine.stop(10)
