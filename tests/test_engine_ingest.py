"""The engine against a real server and a real database file."""

from __future__ import annotations

import sqlite3
import zlib
import json
from pathlib import Path

import pytest

from conftest import RedisProc, wait_for
from engine_util import make_event, pending_count, push, row_count
from tray_app.config import load_config
from tray_app.engine.engine import Engine
from tray_app.redis_conn import CDC_STREAM, DLQ_STREAM, EVENTS_STREAM, endpoint_from_url, ensure_streams


@pytest.fixture()
def engine_factory(app_env, redis_server: RedisProc):  # type: ignore[no-untyped-def]
    made: list[Engine] = []

    def make(**kw) -> Engine:  # type: ignore[no-untyped-def]
        cfg = load_config()
        ep = endpoint_from_url(redis_server.url)
        ensure_streams(ep.client())
        eng = Engine(cfg, ep, with_monitors=False, **kw)
        made.append(eng)
        eng.start()
        return eng

    yield make
    for e in made:
        e.stop(5)


def test_10k_events_exact_rows_and_roundtrip(engine_factory, redis_server: RedisProc) -> None:
    eng = engine_factory()
    cfg = eng.cfg
    evs = [make_event(i) for i in range(10_000)]
    ids = push(redis_server.client(), evs)
    wait_for(lambda: row_count(cfg.paths.database) >= 10_000, timeout=60, what="10,000 rows")
    c = redis_server.client()
    wait_for(lambda: pending_count(c) == 0, what="all acknowledged")
    assert row_count(cfg.paths.database) == 10_000
    by_id = {e["event_id"]: e for e in evs}
    with sqlite3.connect(cfg.paths.database) as conn:
        rows = conn.execute("SELECT event_id, session_id, external_session_id, event_type, platform, "
                            "hook_type, timestamp, workspace_hash, source, stream_id, event_data "
                            "FROM raw_traces").fetchall()
    stream_ids = dict(zip((e["event_id"] for e in evs), ids))
    for (eid, sid, ext, etype, plat, hook, ts, ws, source, stream_id, blob) in rows:
        ev = by_id[eid]
        assert (sid, ext, etype, plat, hook, ts, ws) == (
            ev["session_id"], ev["external_session_id"], ev["event_type"], ev["platform"],
            ev["hook_type"], ev["timestamp"], ev["workspace_hash"])
        assert source == "test_producer"
        assert stream_id == stream_ids[eid]
        assert json.loads(zlib.decompress(blob)) == ev
    # one CDC entry per row, with the fields the slow path needs
    cdc = c.xrange(CDC_STREAM, count=5)
    assert c.xlen(CDC_STREAM) == 10_000
    assert set(cdc[0][1]) == {b"sequence", b"event_id", b"session_id", b"event_type", b"platform", b"timestamp"}
    assert c.xlen(DLQ_STREAM) == 0


def test_duplicates_make_one_row_and_do_not_reject_the_batch(engine_factory, redis_server: RedisProc) -> None:
    eng = engine_factory()
    base = [make_event(i) for i in range(50)]
    dup = dict(base[0])
    push(redis_server.client(), base + [dup, dup] + [make_event(100)])
    db_path = eng.cfg.paths.database
    wait_for(lambda: row_count(db_path) == 51, what="51 distinct rows")
    c = redis_server.client()
    wait_for(lambda: pending_count(c) == 0, what="all acknowledged")
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM raw_traces WHERE event_id=?", (dup["event_id"],)).fetchone()[0] == 1
    assert c.xlen(DLQ_STREAM) == 0
    wait_for(lambda: eng.health().total_duplicates == 2, what="2 duplicates counted")


def test_poison_entries_go_to_dlq_good_ones_land(engine_factory, redis_server: RedisProc) -> None:
    eng = engine_factory()
    c = redis_server.client()
    good = [make_event(i) for i in range(20)]
    from tray_app import events

    def fields(**over):  # type: ignore[no-untyped-def]
        f = events.encode(make_event(999))
        f.update(over)
        return {k: v for k, v in f.items() if v is not None}

    poison = {
        "missing_field": {k: v for k, v in fields().items() if k != "session_id"},
        "invalid_json": fields(payload="{not json"),
        "invalid_utf8": {**fields(), "payload": b'{"text": "\xff\xfe broken"}'},
        "wrong_type": fields(metadata="[1, 2, 3]"),
        "invalid_platform": fields(platform="vim"),
        "invalid_event_type": fields(event_type="launch_missiles"),
        "invalid_timestamp": fields(timestamp="yesterday"),
        "oversized": fields(payload=json.dumps({"blob": "x" * (5 * 1024 * 1024)})),
    }
    push(c, good[:10])
    sent = {}
    for reason, f in poison.items():
        sent[c.xadd(EVENTS_STREAM, f).decode()] = reason
    push(c, good[10:])
    wait_for(lambda: row_count(eng.cfg.paths.database) == 20, what="20 good rows")
    wait_for(lambda: c.xlen(DLQ_STREAM) == len(poison), what="every poison entry dead-lettered")
    wait_for(lambda: pending_count(c) == 0, what="poison acknowledged")
    dead = {f[b"dlq:original_id"].decode(): f for _, f in c.xrange(DLQ_STREAM)}
    for sid, reason in sent.items():
        d = dead[sid]
        assert d[b"dlq:reason"].decode() == reason
        for key in (b"dlq:error", b"dlq:delivery_count", b"dlq:failed_at", b"dlq:consumer"):
            assert d[key], key
    # original fields kept byte for byte (even invalid UTF-8)
    utf8 = next(d for d in dead.values() if d[b"dlq:reason"] == b"invalid_utf8")
    assert utf8[b"payload"] == b'{"text": "\xff\xfe broken"}'
    # the consumer keeps running
    push(c, [make_event(5000)])
    wait_for(lambda: row_count(eng.cfg.paths.database) == 21, what="a later event still lands")
    assert eng.health().total_dead_letters == len(poison)


def test_pause_stops_rows_and_resume_drains(engine_factory, redis_server: RedisProc) -> None:
    eng = engine_factory()
    c = redis_server.client()
    db_path = eng.cfg.paths.database
    push(c, [make_event(i) for i in range(100)])
    wait_for(lambda: row_count(db_path) == 100, what="first 100 rows")
    eng.pause()
    wait_for(lambda: eng.health().state == "paused", what="paused state")
    push(c, [make_event(i) for i in range(300)])
    # the engine must not read while paused: the group's lag shows them unread
    wait_for(lambda: c.xinfo_groups(EVENTS_STREAM)[0]["lag"] == 300, what="300 entries waiting")
    assert row_count(db_path) == 100
    eng.resume()
    wait_for(lambda: row_count(db_path) == 400, what="backlog drained")
    wait_for(lambda: eng.health().state == "running", what="running again")


def test_low_load_latency_well_under_a_second(engine_factory, redis_server: RedisProc) -> None:
    import time

    eng = engine_factory()
    c = redis_server.client()
    push(c, [make_event(0)])
    wait_for(lambda: row_count(eng.cfg.paths.database) == 1, what="warm-up row")
    worst = 0.0
    for i in range(5):
        t0 = time.monotonic()
        push(c, [make_event(i)])
        wait_for(lambda: row_count(eng.cfg.paths.database) == 2 + i, timeout=5, interval=0.005)
        worst = max(worst, time.monotonic() - t0)
    assert worst < 0.75, f"an event took {worst:.3f}s from XADD to row"


def test_newer_schema_is_refused_and_left_untouched(app_env, redis_server: RedisProc) -> None:
    cfg = load_config()
    cfg.paths.data_dir.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(cfg.paths.database) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TEXT)")
        conn.execute("INSERT INTO schema_version VALUES (99, 'future')")
    before = cfg.paths.database.read_bytes()
    eng = Engine(cfg, endpoint_from_url(redis_server.url), with_monitors=False)
    eng.start()
    wait_for(lambda: eng.wait_fatal() is not None, what="fatal schema error")
    eng.stop(5)
    assert "newer than this app supports" in str(eng.wait_fatal())
    assert cfg.paths.database.read_bytes() == before
    assert not Path(str(cfg.paths.database) + "-wal").exists()


def test_trimming_never_removes_unacknowledged(app_env, redis_server: RedisProc) -> None:
    from tray_app.engine.maintenance import safe_trim_id, trim_events
    from tray_app.redis_conn import stream_id_key as _id_tuple

    c = redis_server.client()
    ensure_streams(c)
    ids = push(c, [make_event(i) for i in range(1000)])
    # a consumer reads 600, acknowledges only the first 300
    got = c.xreadgroup("processors", "worker-a", {EVENTS_STREAM: ">"}, count=600)
    read = [i.decode() for i, _ in got[0][1]]
    c.xack(EVENTS_STREAM, "processors", *read[:300])
    # a second group has read nothing at all: nothing may go
    c.xgroup_create(EVENTS_STREAM, "audit", id="0")
    assert safe_trim_id(c) is None
    trim_events(c)
    assert c.xlen(EVENTS_STREAM) == 1000
    c.xgroup_destroy(EVENTS_STREAM, "audit")
    # the floor is the lowest pending entry
    assert safe_trim_id(c) == read[300]
    trim_events(c)
    remaining = {i.decode() for i, _ in c.xrange(EVENTS_STREAM)}
    assert set(read[300:]) <= remaining, "pending entries must survive"
    assert set(ids[600:]) <= remaining, "unread entries must survive"
    assert len(remaining) < 1000, "acknowledged entries below the floor are trimmed"
    # all acknowledged: the floor moves past the last delivered entry, never past an unread one
    c.xack(EVENTS_STREAM, "processors", *read[300:])
    assert _id_tuple(safe_trim_id(c)) > _id_tuple(read[-1])
    assert _id_tuple(safe_trim_id(c)) <= _id_tuple(ids[600])
