"""Dead letters: list (payloads as sizes), retry (re-queue, then delete), purge."""

from __future__ import annotations

import json
import os

import pytest
import redis

from conftest import run_cli
from tray_app.engine import dlq as engine_dlq
from tray_app.errors import UsageError
from tray_app.redis_conn import DLQ_STREAM, EVENTS_STREAM, ensure_streams
from tray_app.engine import dlq_ops as dlq
from tray_app.engine.dlq_ops import DeadLetterNotFound, RedisCommandError

SECRET_PROMPT = "the prompt text nobody should see in a listing"


def original(i: int, **extra: str) -> dict[str, str]:
    fields = {
        "event_id": f"ev-{i}", "platform": "cursor", "event_type": "user_prompt",
        "timestamp": "2026-01-01T00:00:00Z", "session_id": "s-1", "hook_type": "beforeSubmitPrompt",
        "payload": json.dumps({"prompt": SECRET_PROMPT, "i": i}), "metadata": json.dumps({"source": "cursor_hook"}),
        "schema_version": "1",
    }
    fields.update(extra)
    return fields


def add_dead(c: redis.Redis, i: int, reason: str = "invalid_event_type", **extra: str) -> str:
    dead = engine_dlq.dead_letter(original(i, **extra), reason=reason, error=f"error {i}", delivery_count=3,
                                  consumer="laptop-1", original_id=f"{1000 + i}-0")
    return c.xadd(DLQ_STREAM, dead).decode()


@pytest.fixture()
def client(redis_server):
    c = redis_server.client()
    ensure_streams(c)
    yield c
    c.close()


def stream_fields(c: redis.Redis, stream: str) -> list[dict[bytes, bytes]]:
    return [f for _id, f in c.xrange(stream)]


def test_original_fields_named_like_dlq_fields_survive_list_and_retry(client) -> None:
    """An event with its own `reason` and `error` fields: the listing shows the
    DLQ's reason, and a retry re-queues the event's own fields exactly."""
    theirs = original(5, reason="their reason", error="theirs")
    dead = engine_dlq.dead_letter(theirs, reason="invalid_event_type", error="error 5", delivery_count=1,
                                  consumer="laptop-1", original_id="1005-0")
    dead_id = client.xadd(DLQ_STREAM, dead).decode()
    [dl] = dlq.list_entries(client, 10)
    s = dl.summary(show_payload=True)
    assert s["reason"] == "invalid_event_type" and s["error"] == "error 5"
    assert s["field:reason"] == "their reason" and s["field:error"] == "theirs"
    assert dlq.counts_by_reason(client) == {"invalid_event_type": 1}
    assert dlq.retry(client, [dead_id]) == 1
    assert stream_fields(client, EVENTS_STREAM) == [{k.encode(): v.encode() for k, v in theirs.items()}]


def test_list_filters_limits_and_hides_content(client) -> None:
    ids = [add_dead(client, i, reason="invalid_event_type" if i % 2 else "retries_exhausted") for i in range(7)]
    got = dlq.list_entries(client, 3)
    assert [d.id for d in got] == ids[:3]
    only = dlq.list_entries(client, 10, reason="retries_exhausted")
    assert [d.id for d in only] == [ids[0], ids[2], ids[4], ids[6]]
    assert dlq.list_entries(client, 2, reason="retries_exhausted")[1].id == ids[2]
    s = got[0].summary()
    assert s["reason"] == "retries_exhausted" and s["delivery_count"] == 3 and s["original_id"] == "1000-0"
    assert s["event_id"] == "ev-0" and s["platform"] == "cursor"
    assert s["payload_bytes"] == len(original(0)["payload"]) and "payload" not in s
    assert SECRET_PROMPT not in json.dumps(s)
    assert SECRET_PROMPT in got[0].summary(show_payload=True)["payload"]
    assert dlq.counts_by_reason(client) == {"retries_exhausted": 4, "invalid_event_type": 3}
    assert dlq.list_entries(client, 0) == []


def test_retry_ids_requeues_exact_fields_then_deletes(client) -> None:
    a = add_dead(client, 1)
    b = add_dead(client, 2, extra_field="kept")
    # a poison entry whose bytes are not UTF-8 must come back byte for byte
    raw = {b"event_id": b"ev-raw", b"payload": b"\xff\xfe{bad", b"reason": b"invalid_utf8", b"error": b"x",
           b"delivery_count": b"1", b"failed_at": b"t", b"consumer": b"c", b"original_id": b"1-1"}
    c_id = client.xadd(DLQ_STREAM, raw).decode()

    assert dlq.retry(client, [b, c_id]) == 2
    assert [d.id for d in dlq.list_entries(client, 10)] == [a]
    requeued = stream_fields(client, EVENTS_STREAM)
    assert requeued[0] == {k.encode(): v.encode() for k, v in original(2, extra_field="kept").items()}
    assert requeued[1] == {b"event_id": b"ev-raw", b"payload": b"\xff\xfe{bad"}


def test_retry_checks_every_id_before_requeuing_any(client) -> None:
    a = add_dead(client, 1)
    with pytest.raises(DeadLetterNotFound, match="not in telemetry:dlq: 1-999; nothing was re-queued"):
        dlq.retry(client, [a, "1-999"])
    with pytest.raises(UsageError, match="not a stream entry id: 'abc'"):
        dlq.retry(client, ["abc"])
    assert client.xlen(EVENTS_STREAM) == 0 and client.xlen(DLQ_STREAM) == 1


def test_retry_keeps_the_dead_letter_when_the_requeue_fails(client) -> None:
    a = add_dead(client, 1)
    client.delete(EVENTS_STREAM)
    client.set(EVENTS_STREAM, "not a stream")  # XADD now fails with WRONGTYPE
    with pytest.raises(RedisCommandError, match="after re-queuing 0 dead letters"):
        dlq.retry(client, [a])
    assert [d.id for d in dlq.list_entries(client, 10)] == [a]


class DeadLetteringAgain:
    """A client whose every re-queued event dies again at once (as a still-broken
    event would): retry --all must not chase its own tail."""

    def __init__(self, c: redis.Redis) -> None:
        self._c = c

    def __getattr__(self, name: str):
        return getattr(self._c, name)

    def xadd(self, stream, fields, *a, **kw):
        new_id = self._c.xadd(stream, fields, *a, **kw)
        if stream == EVENTS_STREAM:
            self._c.xadd(DLQ_STREAM, {**fields, "reason": "retries_exhausted", "error": "again"})
        return new_id


def test_retry_all_takes_what_exists_when_it_starts(client) -> None:
    for i in range(450):  # more than one page
        add_dead(client, i)
    assert dlq.retry(DeadLetteringAgain(client), None) == 450
    assert client.xlen(EVENTS_STREAM) == 450
    again = dlq.list_entries(client, 1000)
    assert len(again) == 450 and {d.reason for d in again} == {"retries_exhausted"}
    assert dlq.retry(client, None) == 450 and dlq.length(client) == 0
    assert dlq.retry(client, None) == 0


class ArrivesDuringPurge:
    """A dead letter lands between purge's look at the DLQ and its XTRIM."""

    def __init__(self, c: redis.Redis) -> None:
        self._c = c
        self.late_id = ""

    def __getattr__(self, name: str):
        return getattr(self._c, name)

    def xtrim(self, *a, **kw):
        self.late_id = add_dead(self._c, 99)
        return self._c.xtrim(*a, **kw)


def test_purge_removes_only_what_existed(client) -> None:
    for i in range(5):
        add_dead(client, i)
    racing = ArrivesDuringPurge(client)
    assert dlq.purge(racing) == 5
    assert [d.id for d in dlq.list_entries(client, 10)] == [racing.late_id]
    assert dlq.purge(client) == 1
    assert client.exists(DLQ_STREAM) == 1 and client.xlen(DLQ_STREAM) == 0
    assert dlq.purge(client) == 0


# --------------------------------------------------------------------------- the commands

def test_cli_list_retry_purge(app_env, redis_server) -> None:
    c = redis_server.client()
    ensure_streams(c)
    ids = [add_dead(c, i, reason="invalid_event_type" if i < 3 else "retries_exhausted") for i in range(5)]

    r = run_cli("dlq", "list", env=app_env)
    assert r.returncode == 0, r.stderr
    assert "5 dead letters shown, 5 in total" in r.stdout
    assert f"{ids[0]}  invalid_event_type" in r.stdout and "payload_bytes: " in r.stdout
    assert SECRET_PROMPT not in r.stdout

    r = run_cli("dlq", "list", "--reason", "retries_exhausted", "--limit", "1", "--json", env=app_env)
    data = json.loads(r.stdout)
    assert data["total"] == 5 and [e["id"] for e in data["entries"]] == [ids[3]]
    assert SECRET_PROMPT not in r.stdout

    r = run_cli("dlq", "list", "--limit", "1", "--show-payload", env=app_env)
    assert SECRET_PROMPT in r.stdout

    r = run_cli("dlq", "retry", ids[1], ids[4], env=app_env)
    assert r.returncode == 0 and "re-queued 2 dead letters" in r.stdout
    assert [f[b"event_id"] for f in stream_fields(c, EVENTS_STREAM)] == [b"ev-1", b"ev-4"]

    r = run_cli("dlq", "retry", "1-1", env=app_env)
    assert r.returncode == 64 and r.stderr.strip() == \
        "telemetry-tray: error: not in telemetry:dlq: 1-1; nothing was re-queued"

    r = run_cli("dlq", "purge", env=app_env)
    assert r.returncode == 64 and r.stderr.strip().count("\n") == 0 and "--yes" in r.stderr
    assert c.xlen(DLQ_STREAM) == 3

    r = run_cli("dlq", "retry", "--all", env=app_env)
    assert r.returncode == 0 and "re-queued 3 dead letters" in r.stdout

    add_dead(c, 9)
    r = run_cli("dlq", "purge", "--yes", env=app_env)
    assert r.returncode == 0 and "purged 1 dead letter" in r.stdout and c.xlen(DLQ_STREAM) == 0
    r = run_cli("dlq", "list", env=app_env)
    assert "no dead letters (0 in total)" in r.stdout
    c.close()


def test_cli_errors_are_one_line(app_home, monkeypatch) -> None:
    monkeypatch.setenv("TELEMETRY_TRAY_REDIS_URL", "redis://127.0.0.1:1/0")
    env = dict(os.environ)
    for args in (("dlq", "list"), ("dlq", "retry", "--all"), ("dlq", "purge", "--yes")):
        r = run_cli(*args, env=env)
        assert r.returncode == 69, (args, r.stderr)
        assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("telemetry-tray: error: Redis unreachable")
    r = run_cli("dlq", "list", "--limit", "0", env=env)
    assert r.returncode == 64 and len(r.stderr.strip().splitlines()) == 1
    assert "expected a positive integer, found 0" in r.stderr
    for args in (("dlq", "--help"), ("dlq", "list", "--help"), ("dlq", "retry", "--help"),
                 ("dlq", "purge", "--help")):
        r = run_cli(*args, env=env)
        assert r.returncode == 0 and len(r.stdout.splitlines()) > 3


def test_cli_starts_the_private_server_for_itself_and_stops_it(app_home) -> None:
    """No redis.url and the app not running: the command starts the private
    server, answers, and leaves nothing running."""
    from conftest import need
    from tray_app.config import load_config
    from tray_app.errors import ServerBinaryNotFound
    from tray_app.fileutil import pid_alive
    from tray_app.redis_server import find_server_binary

    try:
        find_server_binary()
    except ServerBinaryNotFound as exc:
        need(False, str(exc))
    env = dict(os.environ)
    r = run_cli("dlq", "list", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "no dead letters (0 in total)"
    cfg = load_config()
    pidfile = cfg.paths.redis_dir / "redis.pid"
    assert not pidfile.exists() or not pid_alive(int(pidfile.read_text().strip() or 0))
    assert not cfg.paths.endpoint_file.exists()
