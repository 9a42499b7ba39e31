"""Pure policy units (backoff, dead letters, batching by age) and the caps."""

from __future__ import annotations

import random

from conftest import RedisProc, wait_for
from engine_util import FakeClock, make_event, pending_count, push, row_count, running_engine
from tray_app import events
from tray_app.engine.backoff import Backoff
from tray_app.engine.dlq import DLQ_FIELDS, dead_letter, original_fields, retries_exhausted
from tray_app.engine.health import RateMeter
from tray_app.redis_conn import CDC_STREAM, DLQ_STREAM, EVENTS_STREAM


def test_backoff_is_capped_jittered_and_resets() -> None:
    b = Backoff(0.5, 8.0, rng=random.Random(1))
    delays = [b.next_delay() for _ in range(12)]
    assert all(0.25 <= d <= 8.0 for d in delays)
    assert delays[0] <= 0.5 and max(delays[-4:]) > 4.0  # grows, up to the cap
    assert len({round(d, 6) for d in delays[-4:]}) > 1   # jittered, not lockstep
    b.reset()
    assert b.next_delay() <= 0.5


def test_dead_letter_keeps_original_bytes_and_adds_why() -> None:
    original = {b"event_id": b"e1", b"payload": b"\xff not utf8", b"reason": b"user field"}
    d = dead_letter(original, reason="invalid_utf8", error="x" * 900, delivery_count=3,
                    consumer="c1", original_id="1-1")
    assert d[b"payload"] == b"\xff not utf8"
    assert d["dlq:reason"] == "invalid_utf8" and d["dlq:delivery_count"] == "3" and len(d["dlq:error"]) == 500
    assert set(DLQ_FIELDS) <= set(d)
    back = original_fields({(k.encode() if isinstance(k, str) else k): v for k, v in d.items()})
    assert back == original, "every original field, the one named like a DLQ field too"


def test_retry_policy() -> None:
    assert not retries_exhausted(5, 5)
    assert retries_exhausted(6, 5)


def test_rate_meter_with_injected_clock() -> None:
    now = [1000.0]
    m = RateMeter(lambda: now[0])
    m.add(100)
    now[0] += 5
    m.add(100)
    assert m.rate(10) == 20.0 and round(m.rate(60), 2) == round(200 / 60, 2)
    now[0] += 30
    assert m.rate(10) == 0.0
    now[0] += 60
    assert m.rate(60) == 0.0


def test_validate_names_wrong_types() -> None:
    ev = make_event(1)
    assert events.validate(ev) is None
    assert events.validate({**ev, "session_id": 7})[0] == "wrong_type"
    assert events.validate({**ev, "payload": [1]})[0] == "wrong_type"
    assert events.validate({**ev, "platform": "emacs"})[0] == "invalid_platform"
    assert events.validate({k: v for k, v in ev.items() if k != "timestamp"})[0] == "missing_field"


def test_batch_flushes_on_age_measured_by_the_injected_clock(app_env, redis_server: RedisProc,
                                                            monkeypatch) -> None:
    """A small batch waits for flush_interval_ms on the engine's clock, not the
    wall's (with flush_on_drain off; on, it would be flushed at once)."""
    monkeypatch.setenv("TELEMETRY_TRAY_INGEST_FLUSH_ON_DRAIN", "false")
    monkeypatch.setenv("TELEMETRY_TRAY_INGEST_FLUSH_INTERVAL_MS", "60000")
    monkeypatch.setenv("TELEMETRY_TRAY_INGEST_BLOCK_MS", "20")
    clock = FakeClock()
    c = redis_server.client()
    with running_engine(redis_server.url, clock=clock) as eng:
        push(c, [make_event(i) for i in range(3)])
        wait_for(lambda: pending_count(c) == 3, what="the 3 entries read into the batch")
        assert row_count(eng.cfg.paths.database) == 0, "a young, small batch is not flushed yet"
        clock.advance(61.0)
        wait_for(lambda: row_count(eng.cfg.paths.database) == 3, what="flushed once old enough")


def test_cdc_and_dlq_caps(app_env, redis_server: RedisProc, monkeypatch) -> None:
    monkeypatch.setenv("TELEMETRY_TRAY_INGEST_CDC_MAXLEN", "100")
    monkeypatch.setenv("TELEMETRY_TRAY_INGEST_DLQ_MAXLEN", "10")
    c = redis_server.client()
    with running_engine(redis_server.url) as eng:
        push(c, [make_event(i) for i in range(2000)])
        for i in range(15):
            c.xadd(EVENTS_STREAM, {"event_id": f"bad-{i}", "platform": "vim"})
        wait_for(lambda: row_count(eng.cfg.paths.database) == 2000, timeout=30, what="rows")
        wait_for(lambda: eng.health().dlq_dropped == 5, timeout=15, what="5 dead letters counted as dropped")
        assert c.xlen(DLQ_STREAM) == 10
        assert 100 <= c.xlen(CDC_STREAM) < 2000  # approximate MAXLEN: trimmed by whole nodes


def test_rates_fall_to_zero_when_ingest_stops(app_env, redis_server: RedisProc, monkeypatch) -> None:
    """The tray's "Ingest: N events/s" must not freeze at the last burst's rate."""
    monkeypatch.setenv("TELEMETRY_TRAY_INGEST_HEALTH_PUBLISH_INTERVAL_S", "0.1")
    monkeypatch.setenv("TELEMETRY_TRAY_INGEST_FLUSH_INTERVAL_MS", "1")
    monkeypatch.setenv("TELEMETRY_TRAY_INGEST_FLUSH_ON_DRAIN", "false")  # flushes follow the fake clock
    clock = FakeClock(1000.0)
    c = redis_server.client()
    with running_engine(redis_server.url, clock=clock) as eng:
        push(c, [make_event(i) for i in range(120)])
        wait_for(lambda: pending_count(c) == 120, what="the batch read")
        clock.advance(0.5)  # old enough to flush, same second
        wait_for(lambda: row_count(eng.cfg.paths.database) == 120, what="rows")
        wait_for(lambda: eng.health().rate_1m == 2.0, what="120 events in the last minute = 2.0/s")
        clock.advance(61)
        wait_for(lambda: eng.health().rate_1m == 0.0 and eng.health().rate_10s == 0.0,
                 what="rates back to 0 a minute later")
