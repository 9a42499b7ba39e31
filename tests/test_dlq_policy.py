"""Dead letters: the DLQ's own fields never replace an original field; an
oversized entry's dead letter is cut to size (metadata whole, a prefix, the
size and a digest of the big fields) and is never re-queued as if whole; the
DLQ is capped by bytes as well as by count, and what the cap drops is counted."""

from __future__ import annotations

import hashlib
import json

import pytest

from conftest import RedisProc, run_cli, wait_for
from engine_util import make_event, push, running_engine
from tray_app import events
from tray_app.engine import dlq
from tray_app.engine.maintenance import trim_dlq_bytes
from tray_app.redis_conn import DLQ_DROPPED_KEY, DLQ_STREAM, EVENTS_STREAM, ensure_streams
from tray_app.engine import dlq_ops as dlq_ops
from tray_app.engine.dlq_ops import DeadLetterTruncated

#: every name the DLQ uses (new and old format), as original fields
CLASHING = {b"reason": b"user reason", b"error": b"\xff user error", b"consumer": b"u", b"delivery_count": b"x",
            b"failed_at": b"never", b"original_id": b"mine", b"dlq:reason": b"a producer's own dlq: field",
            b"dlq:field:x": b"nested", b"event_id": b"e1", b"payload": b"\xff not utf8"}


def as_stored(d: dict) -> dict[bytes, bytes]:
    """What XADD then XRANGE give back: bytes names and values."""
    return {(k.encode() if isinstance(k, str) else k): (v.encode() if isinstance(v, str) else v)
            for k, v in d.items()}


def test_dlq_fields_never_replace_original_fields() -> None:
    d = dlq.dead_letter(CLASHING, reason="invalid_utf8", error="x" * 900, delivery_count=3, consumer="c1",
                        original_id="1-1")
    stored = as_stored(d)
    assert dlq.original_fields(stored) == CLASHING
    assert dlq.original_fields(d) == CLASHING
    assert dlq.failure(stored) == {"reason": "invalid_utf8", "error": "x" * 500, "delivery_count": "3",
                                   "failed_at": d["dlq:failed_at"], "consumer": "c1", "original_id": "1-1"}
    assert set(dlq.DLQ_FIELDS) <= set(d) and not dlq.truncated(stored)
    assert d[b"reason"] == b"user reason"  # the original, untouched


def test_old_format_dead_letters_are_still_read() -> None:
    old = {b"event_id": b"e1", b"payload": b"p", b"reason": b"invalid_json", b"error": b"bad",
           b"delivery_count": b"2", b"failed_at": b"t", b"consumer": b"c", b"original_id": b"5-0"}
    assert dlq.is_legacy(old)
    assert dlq.original_fields(old) == {b"event_id": b"e1", b"payload": b"p"}
    assert dlq.reason_of(old) == "invalid_json" and dlq.failure(old)["original_id"] == "5-0"


def test_an_oversized_entry_keeps_metadata_a_prefix_its_size_and_digest() -> None:
    big = b"\xfe" + b"A" * (5 * 1024 * 1024)
    other_big = b"B" * (300 * 1024)
    fields = {b"event_id": b"e-big", b"platform": b"cursor", b"metadata": b'{"source":"cursor_hook"}',
              b"payload": big, b"extra": other_big, b"dlq:odd": b"C" * 100_000}
    d = as_stored(dlq.dead_letter(fields, reason=events.R_OVERSIZED, error="too big", delivery_count=1,
                                  consumer="c", original_id="9-0"))
    assert events.entry_size(d) < dlq.MAX_DEAD_LETTER_BYTES + 2048, "capped: not the whole payload"
    assert dlq.truncated(d) and d[b"dlq:truncated"] == b"3"
    assert int(d[b"dlq:entry_bytes"]) == events.entry_size(fields)
    back = dlq.original_fields(d)
    assert {k: back[k] for k in (b"event_id", b"platform", b"metadata")} == \
        {k: fields[k] for k in (b"event_id", b"platform", b"metadata")}, "small fields whole"
    for name, value in ((b"payload", big), (b"extra", other_big), (b"dlq:odd", fields[b"dlq:odd"])):
        assert value.startswith(back[name]) and 0 < len(back[name]) < len(value)
    assert dlq.cut_fields(d) == {n: (len(v), hashlib.sha256(v).hexdigest())
                                 for n, v in (("payload", big), ("extra", other_big), ("dlq:odd", fields[b"dlq:odd"]))}
    small = {b"event_id": b"e", b"payload": b"x" * 1000}
    assert not dlq.truncated(as_stored(dlq.dead_letter(small, reason="r", error="", delivery_count=1,
                                                      consumer="c", original_id="1-0")))


def test_only_oversized_entries_are_cut() -> None:
    """A large event that died for another reason (a crash loop, a mapping bug)
    stays whole, so `dlq retry` can bring it back; past what the engine would
    accept at all it is cut whatever the reason."""
    large = {b"event_id": b"e", b"payload": b"y" * (500 * 1024)}
    kept = as_stored(dlq.dead_letter(large, reason=events.R_RETRIES, error="", delivery_count=6,
                                     consumer="c", original_id="1-0"))
    assert not dlq.truncated(kept) and dlq.original_fields(kept) == large
    cut = as_stored(dlq.dead_letter(large, reason=events.R_OVERSIZED, error="", delivery_count=1,
                                    consumer="c", original_id="1-0"))
    assert dlq.truncated(cut)
    huge = {b"event_id": b"e", b"payload": b"y" * (dlq.KEEP_WHOLE_BYTES + 1)}
    assert dlq.truncated(as_stored(dlq.dead_letter(huge, reason="unstorable", error="", delivery_count=1,
                                                   consumer="c", original_id="1-0")))


def test_byte_cap_policy() -> None:
    assert dlq.over_byte_cap(900, 10, 1000) == 0
    assert dlq.over_byte_cap(0, 0, 1000) == 0
    # 2000 bytes in 20 entries (100 each), cap 1000: down to 900 -> 11 go
    assert dlq.over_byte_cap(2000, 20, 1000) == 11
    assert dlq.over_byte_cap(10**9, 3, 1000) == 3  # never more than there is
    assert dlq.over_byte_cap(1001, 1000, 1000) >= 1


@pytest.fixture()
def client(redis_server: RedisProc):
    c = redis_server.client()
    ensure_streams(c)
    yield c
    c.close()


def test_dlq_is_capped_by_bytes_oldest_first_and_counted(client) -> None:
    ids = [client.xadd(DLQ_STREAM, dlq.dead_letter({b"event_id": f"e{i}".encode(), b"payload": b"p" * 20_000},
                                                   reason="invalid_json", error="", delivery_count=1,
                                                   consumer="c", original_id=f"{i}-0")).decode()
           for i in range(100)]
    assert client.memory_usage(DLQ_STREAM, samples=0) > 1_500_000
    dropped = trim_dlq_bytes(client, 1024 * 1024)
    assert 0 < dropped < 100
    assert client.memory_usage(DLQ_STREAM, samples=0) <= 1024 * 1024
    left = [i.decode() for i, _ in client.xrange(DLQ_STREAM)]
    assert left == ids[dropped:], "the oldest went first"
    assert int(client.get(DLQ_DROPPED_KEY)) == dropped
    assert trim_dlq_bytes(client, 1024 * 1024) == 0


def test_engine_caps_the_dlq_by_bytes(app_env, redis_server: RedisProc, monkeypatch) -> None:
    monkeypatch.setenv("TELEMETRY_TRAY_INGEST_DLQ_MAX_BYTES", str(512 * 1024))
    monkeypatch.setenv("TELEMETRY_TRAY_INGEST_TRIM_INTERVAL_S", "0.2")
    monkeypatch.setenv("TELEMETRY_TRAY_INGEST_HEALTH_PUBLISH_INTERVAL_S", "0.1")
    c = redis_server.client()
    with running_engine(redis_server.url) as eng:
        for i in range(40):  # poison (no event_type ...) and ~30 KB each: 1.2 MB of dead letters
            c.xadd(EVENTS_STREAM, {"event_id": f"bad-{i}", "platform": "vim", "payload": "x" * 30_000})
        wait_for(lambda: eng.health().dlq_dropped > 0 and c.memory_usage(DLQ_STREAM, samples=0) <= 512 * 1024,
                 timeout=20, what="the DLQ trimmed to its byte cap")
        wait_for(lambda: c.xlen(DLQ_STREAM) + eng.health().dlq_dropped == 40, timeout=10,
                 what="every dead letter either kept or counted as dropped")
        kept = [dlq_ops.DeadLetter(i.decode(), tuple(f.items())) for i, f in c.xrange(DLQ_STREAM)]
        assert kept[-1].get("event_id") == "bad-39", "the newest are kept"
    c.close()


def test_oversized_entry_through_the_engine_and_retry(app_env, redis_server: RedisProc, monkeypatch) -> None:
    monkeypatch.setenv("TELEMETRY_TRAY_INGEST_MAX_ENTRY_BYTES", str(1024 * 1024))
    c = redis_server.client()
    ev = make_event(1)
    ev["payload"] = {"text": "z" * (3 * 1024 * 1024)}
    fields = events.encode(ev)
    with running_engine(redis_server.url) as eng:
        push(c, [ev, make_event(2)])
        wait_for(lambda: c.xlen(DLQ_STREAM) == 1, timeout=20, what="the oversized entry dead-lettered")
        wait_for(lambda: eng.health().total_acked >= 2, timeout=10, what="both acknowledged")
    [(dead_id, stored)] = c.xrange(DLQ_STREAM)
    dead_id = dead_id.decode()
    assert events.entry_size(stored) < dlq.MAX_DEAD_LETTER_BYTES + 2048
    assert stored[b"dlq:reason"] == b"oversized" and stored[b"dlq:truncated"] == b"1"
    payload = fields["payload"].encode()
    assert dlq.cut_fields(stored) == {"payload": (len(payload), hashlib.sha256(payload).hexdigest())}
    assert stored[b"event_id"] == ev["event_id"].encode() and stored[b"platform"] == ev["platform"].encode()

    r = run_cli("dlq", "list", "--json", env=app_env)
    [entry] = json.loads(r.stdout)["entries"]
    assert entry["truncated"] is True and entry["reason"] == "oversized"
    assert entry["payload_bytes"] == len(payload) and entry["entry_bytes"] == events.entry_size(fields)

    with pytest.raises(DeadLetterTruncated, match="nothing was re-queued"):
        dlq_ops.retry(c, [dead_id])
    r = run_cli("dlq", "retry", dead_id, env=app_env)
    assert r.returncode == 64 and "only part of the entry was kept" in r.stderr
    assert r.stderr.strip().count("\n") == 0
    before = c.xlen(EVENTS_STREAM)
    r = run_cli("dlq", "retry", "--all", env=app_env)
    assert r.returncode == 0 and "re-queued 0 dead letters" in r.stdout and "1 dead letter left" in r.stderr
    assert c.xlen(DLQ_STREAM) == 1 and c.xlen(EVENTS_STREAM) == before
    c.close()
