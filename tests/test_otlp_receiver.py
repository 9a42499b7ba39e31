"""The OTLP/HTTP receiver end to end: Claude Code shaped logs and metrics, built
and sent by the real OpenTelemetry Python SDK and its OTLP/HTTP exporters, to
the receiver of a real engine (real Redis, real telemetry.db); the rows in
raw_traces checked field by field. Then every bad input, each followed by a
good request that still works, and a port in use."""

from __future__ import annotations

import gzip
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.metrics.export import MetricExportResult

from conftest import RedisProc, run_cli, wait_for
from engine_util import running_engine
from otlp_util import (SESSION, claude_event, log_records, logs_json, metrics_data, metrics_json,
                       otlp_json, otlp_rows, post)
from tray_app.config import load_config
from tray_app.errors import ConfigError

pytestmark = pytest.mark.timeout(120)


class Receiver:
    """A running engine's receiver: its URL, database and health."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.url = engine.otlp.url
        self.db = engine.cfg.paths.database

    def health(self) -> Any:
        return self.engine.health()

    def rows(self, n: int, what: str = "otlp rows") -> list[dict[str, Any]]:
        """Wait until ``n`` otlp rows are stored; return them (and check no more came)."""
        rows = wait_for(lambda: (r if len(r := otlp_rows(self.db)) >= n else None), timeout=20, what=what)
        assert len(rows) == n, rows
        return rows

    def export_logs(self, records: list[Any], **kw: Any) -> LogRecordExportResult:
        exporter = OTLPLogExporter(endpoint=f"{self.url}/v1/logs", timeout=10, **kw)
        try:
            return exporter.export(records)
        finally:
            exporter.shutdown()

    def export_metrics(self, data: Any, **kw: Any) -> MetricExportResult:
        exporter = OTLPMetricExporter(endpoint=f"{self.url}/v1/metrics", timeout=10, **kw)
        try:
            return exporter.export(data)
        finally:
            exporter.shutdown()


@pytest.fixture()
def receiver(app_home: Path, redis_server: RedisProc, monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    monkeypatch.setenv("TELEMETRY_TRAY_REDIS_URL", redis_server.url)
    with running_engine(redis_server.url) as eng:
        assert eng.otlp.listening.wait(10), eng.health().otlp_receiver
        yield Receiver(eng)


def by_type(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["event_type"]: r for r in rows}


# ----------------------------------------------------------------------------- logs

def claude_session() -> list[dict[str, Any]]:
    """One prompt's worth of Claude Code events (attribute values as Claude sends them:
    numbers of api_request as strings, as its exporter has)."""
    return [
        claude_event("user_prompt", 0, prompt_length=24, prompt="add a test for the parser"),
        claude_event("api_request", 1, model="claude-sonnet-4-5-20250929", cost_usd="0.0123",
                     duration_ms="2150", input_tokens="1200", output_tokens=340, cache_read_tokens="51000",
                     cache_creation_tokens="0", request_id="req_011", speed="normal",
                     query_source="repl_main_thread", cost_usd_micros=12300),
        claude_event("tool_decision", 2, tool_name="Write", tool_use_id="toolu_01", decision="accept",
                     source="user_temporary", tool_source="builtin"),
        claude_event("tool_result", 3, tool_name="Write", tool_use_id="toolu_01", success="true",
                     duration_ms=12, decision_type="accept", decision_source="user_temporary",
                     tool_input_size_bytes=80,
                     tool_input=json.dumps({"file_path": "/p/test_parser.py", "content": "def test(): pass\n"})),
        claude_event("api_error", 4, model="claude-sonnet-4-5-20250929", error="Overloaded", status_code=529,
                     duration_ms=900, attempt=3),
        claude_event("mcp_server_connection", 5, status="connected", transport_type="stdio"),
        claude_event("brand_new_event", 6, detail="x"),
    ]


def test_claude_logs_become_events_of_the_contract(receiver: Receiver) -> None:
    records = log_records(claude_session())
    assert receiver.export_logs(records) == LogRecordExportResult.SUCCESS
    rows = receiver.rows(7)
    assert {r["session_id"] for r in rows} == {SESSION}
    assert {r["source"] for r in rows} == {"otlp"}
    got = by_type(rows)
    assert set(got) == {"user_prompt", "api_request", "tool_decision", "tool_result", "api_error",
                        "mcp_server_connection", "otel_event"}
    assert got["otel_event"]["hook_type"] == "claude_code.brand_new_event"

    api = got["api_request"]
    assert api["hook_type"] == "claude_code.api_request"
    assert api["timestamp"] == "2025-12-02T08:00:01.001000Z"          # event.timestamp, not the record time
    p = api["payload"]
    typed = {k: p[k] for k in ("model", "cost_usd", "input_tokens", "output_tokens", "cache_read_tokens",
                               "cache_creation_tokens", "duration_ms")}
    assert typed == {"model": "claude-sonnet-4-5-20250929", "cost_usd": 0.0123, "input_tokens": 1200,
                     "output_tokens": 340, "cache_read_tokens": 51000, "cache_creation_tokens": 0,
                     "duration_ms": 2150}
    assert type(p["cost_usd"]) is float and type(p["input_tokens"]) is int
    # every other attribute, under Claude's own name
    assert p["request_id"] == "req_011" and p["cost_usd_micros"] == 12300 and p["prompt.id"] == "p-1"
    assert p["user.id"] == "a" * 64 and p["event.sequence"] == 1
    meta = api["metadata"]
    assert meta["source"] == "otlp" and meta["otel_event_name"] == "claude_code.api_request"
    assert meta["service_name"] == "claude-code" and meta["service_version"] == "2.1.250"
    assert meta["model"] == "claude-sonnet-4-5-20250929" and meta["prompt_id"] == "p-1"

    assert got["user_prompt"]["payload"]["prompt"] == "add a test for the parser"   # [capture] full
    assert got["tool_decision"]["payload"]["decision"] == "accept"
    assert got["tool_decision"]["metadata"]["tool_use_id"] == "toolu_01"
    assert json.loads(got["tool_result"]["payload"]["tool_input"])["content"] == "def test(): pass\n"
    assert got["api_error"]["payload"]["status_code"] == 529
    snap = receiver.health()
    assert snap.otlp_requests_accepted == 1 and snap.otlp_events_received == 7
    assert snap.otlp_receiver == f"listening on {receiver.url}"


def test_a_resent_request_makes_no_second_row(receiver: Receiver) -> None:
    records = log_records(claude_session()[:3])
    assert receiver.export_logs(records) == LogRecordExportResult.SUCCESS
    first = receiver.rows(3)
    assert receiver.export_logs(records) == LogRecordExportResult.SUCCESS   # an exporter's retry
    # the JSON encoding of the same records is the same events too
    status, _, _ = post(f"{receiver.url}/v1/logs", logs_json(records), "application/json")
    assert status == 200
    wait_for(lambda: receiver.health().total_duplicates >= 6, what="the resent entries as duplicates")
    assert [r["event_id"] for r in otlp_rows(receiver.db)] == [r["event_id"] for r in first]


def test_json_encoding_and_gzip(receiver: Receiver) -> None:
    records = log_records([claude_event("user_prompt", 1, prompt_length=2, prompt="hi")])
    body = logs_json(records)
    assert b'"stringValue": "claude_code.user_prompt"' in body      # the OTLP JSON encoding
    status, reply, headers = post(f"{receiver.url}/v1/logs", body, "application/json; charset=utf-8")
    assert status == 200 and headers["Content-Type"] == "application/json"
    json_format.Parse(reply, ExportLogsServiceResponse())           # a proper OTLP reply
    assert receiver.rows(1)[0]["payload"]["prompt"] == "hi"

    gz = log_records([claude_event("user_prompt", 2, prompt_length=5, prompt="again")])
    assert receiver.export_logs(gz, compression=Compression.Gzip) == LogRecordExportResult.SUCCESS
    status, _, _ = post(f"{receiver.url}/v1/logs",
                        gzip.compress(logs_json(log_records([claude_event("auth", 3, action="login")]))),
                        "application/json", headers={"Content-Encoding": "gzip"})
    assert status == 200
    rows = receiver.rows(3)
    assert [r["event_type"] for r in rows] == ["user_prompt", "user_prompt", "auth"]


def test_trace_ids_in_json_are_hex_and_match_the_protobuf_ones(receiver: Receiver) -> None:
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs

    request = encode_logs(log_records([claude_event("tool_result", 1, tool_name="Read", success="true")]))
    rec = request.resource_logs[0].scope_logs[0].log_records[0]
    rec.trace_id = bytes.fromhex("5b8efff798038103d269b633813fc60c")
    rec.span_id = bytes.fromhex("eee19b7ec3c1b174")
    body = otlp_json(request)
    assert b'"traceId": "5b8efff798038103d269b633813fc60c"' in body
    assert post(f"{receiver.url}/v1/logs", body, "application/json")[0] == 200
    assert post(f"{receiver.url}/v1/logs", request.SerializeToString())[0] == 200   # same record, protobuf
    row = receiver.rows(1)[0]
    assert row["metadata"]["trace_id"] == "5b8efff798038103d269b633813fc60c"
    assert row["metadata"]["span_id"] == "eee19b7ec3c1b174"
    wait_for(lambda: receiver.health().total_duplicates == 1, what="the protobuf copy as a duplicate")


def test_unmappable_record_is_kept_as_an_error_and_the_rest_is_stored(receiver: Receiver) -> None:
    records = log_records([
        claude_event("user_prompt", 1, prompt_length=1, prompt="a"),
        {"attributes": {"session.id": SESSION, "what": "no event name at all"}, "timestamp": 1},
        claude_event("api_request", 2, model="m", cost_usd="not a number", input_tokens=5),
    ])
    others = log_records([{"body": "GET /index.html 200", "attributes": {"http.status": 200}}],
                         resource={"service.name": "some-web-app"})
    body = otlp_json(_merged(records, others))
    status, reply, _ = post(f"{receiver.url}/v1/logs", body, "application/json")
    assert status == 200
    partial = json.loads(reply)["partialSuccess"]
    assert partial["rejectedLogRecords"] == "2"           # the bad one, and the web app's (int64 as string)
    assert "not Claude Code events" in partial["errorMessage"]
    rows = receiver.rows(3)
    assert [r["event_type"] for r in rows] == ["user_prompt", "error", "api_request"]
    err = rows[1]
    assert err["session_id"] == SESSION and err["hook_type"] == "invalid_otlp_record"
    assert "no event name" in err["payload"]["error"]
    api = rows[2]
    assert "cost_usd" not in api["payload"] and api["metadata"]["otel_unparsed"] == {"cost_usd": "not a number"}
    assert api["payload"]["input_tokens"] == 5
    assert receiver.health().otlp_records_rejected == 2


def _merged(*batches: list[Any]) -> Any:
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs

    request = encode_logs(batches[0])
    for batch in batches[1:]:
        request.resource_logs.extend(encode_logs(batch).resource_logs)
    return request


# ----------------------------------------------------------------------------- privacy

@pytest.mark.parametrize("mode", ["hash", "none"])
def test_capture_settings_apply_to_claude_content(mode: str, app_home: Path, redis_server: RedisProc,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEMETRY_TRAY_REDIS_URL", redis_server.url)
    monkeypatch.setenv("TELEMETRY_TRAY_CAPTURE_PROMPTS", mode)
    monkeypatch.setenv("TELEMETRY_TRAY_CAPTURE_FILE_CONTENTS", mode)
    monkeypatch.setenv("TELEMETRY_TRAY_CAPTURE_SHELL_OUTPUT", mode)
    with running_engine(redis_server.url) as eng:
        assert eng.otlp.listening.wait(10)
        r = Receiver(eng)
        content = "def secret(): return 42\n"
        records = log_records([
            claude_event("user_prompt", 1, prompt_length=12, prompt="my secret plan"),
            claude_event("tool_result", 2, tool_name="Write", success="true",
                         tool_input=json.dumps({"file_path": "/p/a.py", "content": content}),
                         tool_parameters=json.dumps({"file_path": "/p/a.py"})),
            claude_event("tool_result", 3, tool_name="Bash", success="false", error="cat: x: secret output",
                         tool_parameters=json.dumps({"bash_command": "cat", "full_command": "cat x"})),
        ])
        assert r.export_logs(records) == LogRecordExportResult.SUCCESS
        prompt, write, bash = r.rows(3)
    sha = __import__("hashlib").sha256
    if mode == "hash":
        assert prompt["payload"]["prompt"] == "sha256:" + sha(b"my secret plan").hexdigest()
        assert json.loads(write["payload"]["tool_input"])["content"] == "sha256:" + sha(content.encode()).hexdigest()
        assert bash["payload"]["error"].startswith("sha256:")
    else:
        assert "prompt" not in prompt["payload"]
        assert "content" not in json.loads(write["payload"]["tool_input"])
        assert "error" not in bash["payload"]
    assert prompt["payload"]["prompt_length"] == 12                # not content: kept
    assert json.loads(write["payload"]["tool_input"])["file_path"] == "/p/a.py"
    assert prompt["metadata"]["redacted"] == {"prompt": mode}
    assert write["metadata"]["redacted"] == {"tool_input.content": mode}
    assert bash["metadata"]["redacted"] == {"error": mode}
    assert "secret" not in json.dumps([prompt, write, bash])


# ----------------------------------------------------------------------------- metrics

def claude_metrics(meter: Any) -> None:
    base = {"session.id": SESSION, "user.id": "u", "organization.id": "org-1"}
    meter.create_counter("claude_code.session.count").add(1, {**base, "start_type": "fresh"})
    cost = meter.create_counter("claude_code.cost.usage", unit="USD")
    cost.add(0.0123, {**base, "model": "claude-sonnet-4-5", "query_source": "main"})
    cost.add(0.002, {**base, "model": "claude-haiku-4-5", "query_source": "auxiliary"})
    tokens = meter.create_counter("claude_code.token.usage", unit="tokens")
    for kind, n in (("input", 1200), ("output", 340), ("cacheRead", 51000), ("cacheCreation", 0)):
        tokens.add(n, {**base, "type": kind, "model": "claude-sonnet-4-5"})
    meter.create_counter("claude_code.lines_of_code.count").add(12, {**base, "type": "added"})
    meter.create_counter("claude_code.active_time.total", unit="s").add(4.5, {**base, "type": "cli"})


def test_metric_data_points_become_otel_metric_events(receiver: Receiver) -> None:
    data = metrics_data(claude_metrics)
    assert receiver.export_metrics(data) == MetricExportResult.SUCCESS
    rows = receiver.rows(9)
    assert {r["event_type"] for r in rows} == {"otel_metric"} and {r["session_id"] for r in rows} == {SESSION}
    cost = sorted((r for r in rows if r["hook_type"] == "claude_code.cost.usage"),
                  key=lambda r: r["payload"]["attributes"]["model"])
    assert [c["payload"]["value"] for c in cost] == [0.002, 0.0123]
    c = cost[1]["payload"]
    assert c["metric"] == "claude_code.cost.usage" and c["unit"] == "USD" and c["kind"] == "sum"
    assert c["temporality"] == "delta" and c["monotonic"] is True
    assert c["attributes"]["query_source"] == "main" and c["time"] and c["start_time"]
    tokens = {r["payload"]["attributes"]["type"]: r["payload"]["value"]
              for r in rows if r["hook_type"] == "claude_code.token.usage"}
    assert tokens == {"input": 1200, "output": 340, "cacheRead": 51000, "cacheCreation": 0}
    # resent (the exporter's retry) and as JSON: the same data points, no new rows
    assert receiver.export_metrics(data) == MetricExportResult.SUCCESS
    status, reply, _ = post(f"{receiver.url}/v1/metrics", metrics_json(data), "application/json")
    assert status == 200 and json.loads(reply) == {}
    wait_for(lambda: receiver.health().total_duplicates >= 18, what="duplicates")
    assert len(otlp_rows(receiver.db)) == 9


# ----------------------------------------------------------------------------- bad input

def raw_request(url: str, head: bytes, body_part: bytes = b"", *, end: bool = False) -> tuple[int, bytes]:
    """Send ``head`` (and part of a body; ``end``: then close our side) on a raw
    socket; the status and body of the reply."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head + body_part)
        if end:
            s.shutdown(socket.SHUT_WR)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head_part, _, rest = data.partition(b"\r\n\r\n")
        length = int(next((line.split(b":")[1] for line in head_part.split(b"\r\n")
                           if line.lower().startswith(b"content-length")), b"0"))
        while len(rest) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
    return int(head_part.split(b" ")[1]), rest


def test_bad_requests_are_refused_and_the_receiver_goes_on(receiver: Receiver) -> None:
    url = receiver.url
    good = log_records([claude_event("user_prompt", 1, prompt_length=1, prompt="ok")])
    cases: list[tuple[int, int]] = []

    status, body, _ = post(f"{url}/v1/logs", b"\xff\x00garbage\x13", "application/x-protobuf")
    cases.append((status, 400))
    assert body.startswith(b"\x08\x03\x12")            # google.rpc.Status, protobuf, INVALID_ARGUMENT
    status, body, _ = post(f"{url}/v1/logs", b'{"resourceLogs": [', "application/json")
    cases.append((status, 400))
    assert json.loads(body)["code"] == 3 and "OTLP JSON" in json.loads(body)["message"]
    cases.append((post(f"{url}/v1/logs", b"hello", "text/plain")[0], 415))
    cases.append((post(f"{url}/v1/traces", b"", "application/x-protobuf")[0], 404))
    cases.append((post(f"{url}/", b"", "application/x-protobuf")[0], 404))
    status, _, headers = post(f"{url}/v1/logs", b"", method="GET")
    cases.append((status, 405))
    assert headers["Allow"] == "POST"
    cases.append((post(f"{url}/v1/logs", b"\x1f\x8bnot gzip", headers={"Content-Encoding": "gzip"})[0], 400))
    cases.append((post(f"{url}/v1/logs", b"x", headers={"Content-Encoding": "br"})[0], 415))
    # a gzip bomb: 9 MB of zeros in a few KB, over the 8 MB cap once decompressed
    bomb = gzip.compress(b"\x00" * (9 * 1024 * 1024))
    assert len(bomb) < 100_000
    cases.append((post(f"{url}/v1/logs", bomb, headers={"Content-Encoding": "gzip"})[0], 413))
    # 50 MB announced: refused after the headers and one MB, never read whole
    head = (b"POST /v1/logs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf\r\n"
            b"Content-Length: %d\r\n\r\n" % (50 * 1024 * 1024))
    started = time.monotonic()
    status, body = raw_request(url, head, b"\x00" * (1024 * 1024))
    cases.append((status, 413))
    assert b"over the limit of 8388608 bytes" in body and time.monotonic() - started < 5
    # chunked, no Content-Length
    chunked = (b"POST /v1/logs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n")
    cases.append((raw_request(url, chunked, b"2\r\n{}\r\n0\r\n\r\n")[0], 411))
    # a body that ends early (the client gives up)
    status, _ = raw_request(url, head.replace(b"%d" % (50 * 1024 * 1024), b"100"), b"{}", end=True)
    cases.append((status, 400))
    assert [c[0] for c in cases] == [c[1] for c in cases]

    assert receiver.export_logs(good) == LogRecordExportResult.SUCCESS   # still works
    assert receiver.rows(1)[0]["payload"]["prompt"] == "ok"
    snap = receiver.health()
    assert snap.otlp_requests_rejected == len(cases) and snap.otlp_requests_accepted == 1
    assert snap.otlp_last_rejection.startswith("400 body ended after 2 of 100 bytes")
    assert not snap.thread_errors and receiver.engine.otlp.is_alive()


def _non_loopback_address() -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))   # TEST-NET: nothing is sent
            addr = s.getsockname()[0]
    except OSError:
        return None
    return None if addr.startswith("127.") else addr


def test_a_client_that_is_not_on_loopback_gets_403(app_home: Path, redis_server: RedisProc,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The config keeps the receiver on loopback; should a peer still come from
    elsewhere (a future bind, a proxy), it is refused. Bound here, for the test
    only, to this machine's network address."""
    from tray_app.engine.health import Health
    from tray_app.otlp.receiver import OtlpReceiver
    from tray_app.redis_conn import endpoint_from_url

    addr = _non_loopback_address()
    if addr is None:
        pytest.skip("this machine has no non-loopback address")
    monkeypatch.setenv("TELEMETRY_TRAY_REDIS_URL", redis_server.url)
    health = Health()
    rx = OtlpReceiver(load_config(), endpoint_from_url(redis_server.url), health, host=addr)
    rx.start()
    try:
        assert rx.listening.wait(10), health.snapshot().otlp_receiver
        body = logs_json(log_records([claude_event("user_prompt", 1, prompt="from afar")]))
        status, reply, _ = post(f"{rx.url}/v1/logs", body, "application/json")
        assert status == 403 and b"only loopback clients" in reply
        assert post(f"{rx.url}/v1/logs", body, "application/json")[0] == 403   # and again: still up
        assert health.snapshot().otlp_requests_rejected == 2
        assert redis_server.client().xlen("telemetry:events") == 0
    finally:
        rx.stop()
        rx.join(5)
    assert not rx.is_alive() and health.snapshot().otlp_receiver == "stopped"


# ----------------------------------------------------------------------------- Redis down, port in use, config

def test_redis_down_events_are_spooled_then_stored(app_home: Path, redis_server: RedisProc,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEMETRY_TRAY_REDIS_URL", redis_server.url)
    monkeypatch.setenv("TELEMETRY_TRAY_INGEST_SPOOL_DRAIN_INTERVAL_S", "0.2")
    monkeypatch.setenv("TELEMETRY_TRAY_REDIS_SOCKET_TIMEOUT_S", "1")
    with running_engine(redis_server.url) as eng:
        assert eng.otlp.listening.wait(10)
        r = Receiver(eng)
        redis_server.kill()
        records = log_records([claude_event("api_request", 1, model="m", cost_usd=0.5, input_tokens=3)])
        assert r.export_logs(records) == LogRecordExportResult.SUCCESS   # accepted: kept on disk
        spool = eng.cfg.paths.spool_dir
        files = [f for f in os.listdir(spool) if f.endswith(".json")]
        assert len(files) == 1 and oct(os.stat(spool / files[0]).st_mode & 0o777) == "0o600"
        redis_server.start()
        row = r.rows(1, "the spooled event stored")[0]
        assert row["event_type"] == "api_request" and row["payload"]["cost_usd"] == 0.5
        wait_for(lambda: not [f for f in os.listdir(spool) if f.endswith(".json")], what="spool drained")


def test_port_in_use_the_engine_still_ingests_hook_events(app_home: Path, redis_server: RedisProc,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from engine_util import stored_events
    from test_hook_events import hook_env, run_hook

    monkeypatch.setenv("TELEMETRY_TRAY_REDIS_URL", redis_server.url)
    port = int(os.environ["TELEMETRY_TRAY_OTLP_RECEIVER_PORT"])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with running_engine(redis_server.url) as eng:
            wait_for(lambda: eng.health().otlp_receiver.startswith(f"port {port} in use"),
                     what="the receiver's complaint")
            assert eng.otlp.is_alive() and not eng.otlp.listening.is_set()
            prompt = {"session_id": "s-1", "hook_event_name": "UserPromptSubmit", "prompt": "still here",
                      "cwd": "/p", "transcript_path": "/p/t.jsonl"}
            proc, _ = run_hook("claude", json.dumps(prompt), hook_env(app_home, redis_server.url))
            assert proc.returncode == 0
            def stored() -> dict[str, Any] | None:
                try:
                    return stored_events(eng.cfg.paths.database)
                except sqlite3.OperationalError:   # the engine has not made its tables yet
                    return None

            hook_events = wait_for(stored, what="the hook event")
            assert [e["payload"]["prompt"] for e in hook_events.values()] == ["still here"]

            def status_shows_it() -> Any:
                proc = run_cli("status")
                return proc.returncode == 0 and f"port {port} in use" in proc.stdout and proc

            status = wait_for(status_shows_it, timeout=20, what="status showing the receiver")
            assert f"otlp:         receiver port {port} in use" in status.stdout


def test_a_non_loopback_host_is_a_one_line_config_error(app_home: Path) -> None:
    env = dict(os.environ, TELEMETRY_TRAY_OTLP_RECEIVER_HOST="0.0.0.0")
    with pytest.raises(ConfigError, match="otlp.receiver_host: expected a loopback address"):
        load_config(environ=env)
    proc = run_cli("status", env=env)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "TELEMETRY_TRAY_OTLP_RECEIVER_HOST" in proc.stderr
    for ok in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert load_config(environ=dict(os.environ, TELEMETRY_TRAY_OTLP_RECEIVER_HOST=ok)).otlp.receiver_host == ok


def test_a_receiver_thread_that_dies_is_restarted_and_health_shows_it(receiver: Receiver,
                                                                     tmp_path: Path) -> None:
    import zipfile

    from tray_app.diagnostics.bundle import export_bundle

    assert receiver.export_logs(log_records([claude_event("auth", 1, action="login")])) \
        == LogRecordExportResult.SUCCESS
    old = receiver.engine.otlp
    old.server.socket.close()        # the listening socket goes away under the serving loop
    wait_for(lambda: receiver.engine.otlp is not old and receiver.engine.otlp.listening.is_set(),
             what="a new receiver thread, listening")
    snap = receiver.health()
    assert any(line.startswith("otlp-receiver: ") and "restarted 1 time" in line for line in snap.thread_errors)
    assert snap.otlp_requests_accepted == 1                     # counters kept across the restart
    assert receiver.export_logs(log_records([claude_event("auth", 2, action="logout")])) \
        == LogRecordExportResult.SUCCESS
    assert [r["payload"]["action"] for r in receiver.rows(2)] == ["login", "logout"]
    # the diagnostics bundle carries the receiver's health (as the engine publishes it)
    wait_for(lambda: _bundle_health(export_bundle, tmp_path).get("otlp_requests_accepted") == 2,
             what="the published health in a bundle")
    health = _bundle_health(export_bundle, tmp_path)
    assert health["otlp_receiver"].startswith("listening on http://127.0.0.1:")
    assert zipfile.is_zipfile(next(tmp_path.glob("*.zip")))


def _bundle_health(export_bundle: Any, out: Path) -> dict[str, Any]:
    import zipfile

    for old in out.glob("*.zip"):
        old.unlink()
    path = export_bundle(load_config(), out)
    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if n.endswith("health.json"))
        return dict(json.loads(z.read(name))["snapshot"])


def test_run_headless_receives_claude_telemetry_and_status_json_shows_it(app_env: dict[str, str],
                                                                        tmp_path: Path) -> None:
    """The real face: `telemetry-tray run --headless` (EngineRuntime), the SDK's
    exporter, `status --json`, SIGTERM; the rows stay."""
    import subprocess
    import sys

    from conftest import ROOT
    from engine_util import terminate

    port = app_env["TELEMETRY_TRAY_OTLP_RECEIVER_PORT"]
    db = load_config().paths.database
    with open(tmp_path / "headless.log", "a") as log:
        proc = subprocess.Popen([sys.executable, "-m", "tray_app", "run", "--headless", "--no-monitors"],
                                env=app_env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log, text=True)
        try:
            def listening() -> Any:
                out = run_cli("status", "--json", env=app_env)
                snap = json.loads(out.stdout) if out.returncode == 0 else {}
                return snap.get("otlp_receiver") == f"listening on http://127.0.0.1:{port}" and snap

            wait_for(listening, timeout=30, what="status --json: the receiver listening")
            exporter = OTLPLogExporter(endpoint=f"http://127.0.0.1:{port}/v1/logs", timeout=10)
            records = log_records([claude_event("api_request", 1, model="m", cost_usd=0.25, output_tokens=9)])
            assert exporter.export(records) == LogRecordExportResult.SUCCESS
            exporter.shutdown()
            wait_for(lambda: len(otlp_rows(db)) == 1, what="the row")
            snap = wait_for(lambda: (s := listening()) and s["otlp_events_received"] == 1 and s,
                            what="the count in status --json")
            assert snap["otlp_requests_accepted"] == 1 and snap["otlp_requests_rejected"] == 0
        finally:
            terminate(proc)
    assert proc.returncode == 0
    row = otlp_rows(db)[0]
    assert row["payload"]["cost_usd"] == 0.25 and row["payload"]["output_tokens"] == 9


def test_receiver_disabled_binds_nothing(app_home: Path, redis_server: RedisProc,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEMETRY_TRAY_REDIS_URL", redis_server.url)
    monkeypatch.setenv("TELEMETRY_TRAY_OTLP_RECEIVER_ENABLED", "false")
    port = int(os.environ["TELEMETRY_TRAY_OTLP_RECEIVER_PORT"])
    with running_engine(redis_server.url) as eng:
        assert eng.otlp is None and eng.health().otlp_receiver == ""
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0      # nobody listens


def test_a_request_for_another_host_name_is_refused(receiver: Receiver) -> None:
    """DNS rebinding: a web page at evil.example whose name its DNS turned into
    127.0.0.1 sends its (same-origin) POST with Host: evil.example. Refused, and
    nothing is stored; Claude Code's exporter (Host: 127.0.0.1:port) gets through."""
    body = logs_json(log_records([claude_event("user_prompt", 1, prompt="from a web page")]))
    port = receiver.url.rsplit(":", 1)[1]
    for host in (b"evil.example:" + port.encode(), b"127.0.0.1.evil.example"):
        head = (b"POST /v1/logs HTTP/1.1\r\nHost: " + host + b"\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body))
        status, reply = raw_request(receiver.url, head, body)
        assert status == 403 and b"is not this machine" in reply, reply
    for host in (b"localhost:" + port.encode(), b"[::1]:" + port.encode(), b"127.0.0.1"):
        head = (b"POST /v1/logs HTTP/1.1\r\nHost: " + host + b"\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body))
        assert raw_request(receiver.url, head, body)[0] == 200
    rows = receiver.rows(1)   # the three good ones are one record: stored once
    assert rows[0]["payload"]["prompt"] == "from a web page"
    assert receiver.health().otlp_requests_rejected == 2
